"""The k3s patch for Kubeflow Trainer: every admission webhook of Trainer and JobSet gets failurePolicy Ignore.

A pure function over Kubernetes objects, and a Helm post-renderer around it (`python -m components.webhook_patch`
reads the rendered manifests on stdin and writes the patched ones to stdout). Imports only the standard
library and PyYAML: Helm runs it while the provider installs the chart.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from typing import Any

import yaml

WEBHOOK_CONFIGURATION_KINDS = frozenset({"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"})


def is_webhook_configuration(manifest: Mapping[str, Any]) -> bool:
    """Whether the object is an admissionregistration.k8s.io webhook configuration."""
    api_version = str(manifest.get("apiVersion", ""))
    return (
        api_version.startswith("admissionregistration.k8s.io/")
        and manifest.get("kind") in WEBHOOK_CONFIGURATION_KINDS
    )


def ignore_webhook_failures(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the object in which every admission webhook has failurePolicy Ignore.

    Any other object comes back as an equal copy; the argument is never modified.
    """
    patched = copy.deepcopy(dict(manifest))
    if is_webhook_configuration(patched):
        for webhook in patched.get("webhooks") or []:
            webhook["failurePolicy"] = "Ignore"
    return patched


def patch_manifest_stream(text: str) -> str:
    """A multi-document YAML stream with ignore_webhook_failures applied to every document."""
    documents = [ignore_webhook_failures(doc) for doc in yaml.safe_load_all(text) if doc]
    return yaml.safe_dump_all(documents, sort_keys=False)


def main() -> None:
    """Helm post-renderer entry point: rendered manifests on stdin, patched manifests on stdout."""
    sys.stdout.write(patch_manifest_stream(sys.stdin.read()))


if __name__ == "__main__":
    main()
