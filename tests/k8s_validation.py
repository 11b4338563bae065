"""Validation of the objects the program declares: Kubernetes OpenAPI schemas and Kubeflow Trainer's API models."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
from kubeflow_trainer_api.models import TrainerV1alpha1TrainingRuntime, TrainerV1alpha1TrainJob

from tests.stack_helpers import Registration

# The clusters run Kubernetes v1.33 (kind node image, k3s release pinned in Pulumi.yaml).
KUBERNETES_VERSION = "1.33.0"
TRAINER_MODELS: dict[str, Any] = {
    "TrainJob": TrainerV1alpha1TrainJob,
    "TrainingRuntime": TrainerV1alpha1TrainingRuntime,
}


def normalise(value: Any) -> Any:
    """Numbers as the API sees them: the engine carries every number as a double (1 arrives as 1.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: normalise(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalise(item) for item in value]
    return value


def manifest(registration: Registration) -> dict[str, Any]:
    """The Kubernetes object a registered resource stands for (its inputs, secrets revealed)."""
    return normalise(registration.plain)


def is_plain_kubernetes_object(registration: Registration) -> bool:
    """A built-in Kubernetes object the program declares itself (not a provider, a Helm release or a custom resource)."""
    return (
        registration.custom
        and registration.type.startswith("kubernetes:")
        and not registration.type.startswith("kubernetes:helm.sh/")
        and registration.type.split(":")[1].split("/")[0] in ("core", "rbac.authorization.k8s.io")
    )


def validate_kubernetes_object(registration: Registration) -> None:
    """Strict OpenAPI validation (unknown fields are errors)."""
    kubernetes_validate.validate(manifest(registration), KUBERNETES_VERSION, strict=True)


def validate_trainer_object(registration: Registration) -> dict[str, Any]:
    """Parses a TrainJob or TrainingRuntime with Kubeflow's models and checks that nothing was dropped.

    The models ignore unknown fields, so a misspelt field would pass from_dict silently: the parsed object,
    dumped back with the API's field names, must equal the input.
    """
    document = manifest(registration)
    model = TRAINER_MODELS[document["kind"]]
    parsed = model.from_dict(document)
    assert parsed is not None
    round_trip = normalise(parsed.to_dict())
    assert round_trip == document, (
        f"{document['kind']} fields not in the API: {_difference(document, round_trip)}"
    )
    return document


def _difference(expected: Any, actual: Any, path: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key in expected.keys() | actual.keys():
            if key not in actual:
                found.append(f"{path}.{key}")
            elif key not in expected:
                found.append(f"{path}.{key} (added)")
            else:
                found += _difference(expected[key], actual[key], f"{path}.{key}")
        return found
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            diff
            for index, pair in enumerate(zip(expected, actual, strict=True))
            for diff in _difference(*pair, f"{path}[{index}]")
        ]
    return [] if expected == actual else [f"{path}: {expected!r} != {actual!r}"]
