"""Validation of the objects the program declares: Kubernetes OpenAPI schemas, Kubeflow Trainer's API models and
the CRD schemas of other custom resources (tests/schemas)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubeflow_trainer_api.models import TrainerV1alpha1TrainingRuntime, TrainerV1alpha1TrainJob

from tests.support.stack_helpers import Registration

# The clusters run Kubernetes v1.33 (kind node image, k3s release pinned in Pulumi.yaml).
KUBERNETES_VERSION = "1.33.0"
TRAINER_MODELS: dict[str, Any] = {
    "TrainJob": TrainerV1alpha1TrainJob,
    "TrainingRuntime": TrainerV1alpha1TrainingRuntime,
}
# API groups of the built-in objects the program declares (validated against the Kubernetes schema).
BUILT_IN_GROUPS = ("core", "rbac.authorization.k8s.io", "apps", "scheduling.k8s.io")
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
# Custom resources of other projects, by "<apiVersion>/<kind>": the upstream CRD file in tests/schemas.
CRD_FILES = {"monitoring.coreos.com/v1/PodMonitor": SCHEMAS / "monitoring.coreos.com_podmonitors.yaml"}


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
        and registration.type.split(":")[1].split("/")[0] in BUILT_IN_GROUPS
    )


def validate_kubernetes_object(registration: Registration) -> None:
    """Strict OpenAPI validation (unknown fields are errors)."""
    kubernetes_validate.validate(manifest(registration), KUBERNETES_VERSION, strict=True)


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of a served version in a CRD file of tests/schemas."""
    group, version = api_version.split("/")
    crd = yaml.safe_load(CRD_FILES[f"{api_version}/{kind}"].read_text())
    assert (crd["spec"]["group"], crd["spec"]["names"]["kind"]) == (group, kind)
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version and v["served"])
    return dict(served["schema"]["openAPIV3Schema"])


def unknown_fields(document: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not declare: the API server would prune them silently (a structural schema
    allows no others unless it says x-kubernetes-preserve-unknown-fields or additionalProperties)."""
    if isinstance(document, dict) and "properties" in schema:
        if schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("additionalProperties"):
            return []
        properties = schema["properties"]
        found = [f"{path}.{key}" for key in document if key not in properties]
        return found + [
            problem
            for key, value in document.items()
            if key in properties
            for problem in unknown_fields(value, properties[key], f"{path}.{key}")
        ]
    if isinstance(document, list) and "items" in schema:
        return [
            problem
            for index, item in enumerate(document)
            for problem in unknown_fields(item, schema["items"], f"{path}[{index}]")
        ]
    return []


def validate_custom_object(registration: Registration) -> dict[str, Any]:
    """A custom resource of another project against its CRD's schema: types, required fields, enums, and no
    field the schema lacks. metadata is checked as Kubernetes checks any object's metadata."""
    document = manifest(registration)
    schema = crd_schema(document["apiVersion"], document["kind"])
    jsonschema.validate(document, schema)
    assert unknown_fields({k: v for k, v in document.items() if k != "metadata"}, schema) == []
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": document["metadata"]},
        KUBERNETES_VERSION,
        strict=True,
    )
    return document


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
