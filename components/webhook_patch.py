"""The k3s patch for Kubeflow Trainer: every admission webhook of Trainer and JobSet gets failurePolicy Ignore.
A Helm post-renderer (stdin to stdout); imports only the standard library and PyYAML."""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from typing import Any

import yaml

WEBHOOK_CONFIGURATION_KINDS = frozenset({"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"})


def is_webhook_configuration(manifest: Mapping[str, Any]) -> bool:
    api_version = str(manifest.get("apiVersion", ""))
    return (
        api_version.startswith("admissionregistration.k8s.io/")
        and manifest.get("kind") in WEBHOOK_CONFIGURATION_KINDS
    )


def ignore_webhook_failures(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A copy (never the argument) with every admission webhook's failurePolicy Ignore."""
    patched = copy.deepcopy(dict(manifest))
    if is_webhook_configuration(patched):
        for webhook in patched.get("webhooks") or []:
            webhook["failurePolicy"] = "Ignore"
    return patched


def patch_manifest_stream(text: str) -> str:
    documents = [ignore_webhook_failures(doc) for doc in yaml.safe_load_all(text) if doc]
    return yaml.safe_dump_all(documents, sort_keys=False)


def main() -> None:
    sys.stdout.write(patch_manifest_stream(sys.stdin.read()))


if __name__ == "__main__":
    main()
