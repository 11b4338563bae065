"""How jobsets-<version>.yaml were made from JobSet's CRD: the embedded Pod template's schema (core Kubernetes,
most of the 800 KB) cut to an object that keeps unknown fields, `status` dropped, every description dropped.

    git show <tag>:charts/jobset/crds/jobset.x-k8s.io_jobsets.yaml | python tests/upstream/jobset/trim_crd.py
"""

from __future__ import annotations

import sys
from typing import Any

import yaml


def strip(node: Any) -> None:
    """Drops every schema description (prose), keeping types, properties, enums and validations."""
    if isinstance(node, dict):
        node.pop("description", None)
        for value in node.values():
            strip(value)
    elif isinstance(node, list):
        for value in node:
            strip(value)


def trim(crd: dict[str, Any]) -> dict[str, Any]:
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        job = schema["properties"]["spec"]["properties"]["replicatedJobs"]["items"]["properties"]["template"]
        job["properties"]["spec"]["properties"]["template"] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
        schema["properties"].pop("status", None)
        strip(version["schema"])
    return crd


if __name__ == "__main__":
    sys.stdout.write(yaml.safe_dump(trim(yaml.safe_load(sys.stdin)), sort_keys=False, width=120))
