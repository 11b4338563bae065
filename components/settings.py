"""The stack's config values, read once: Pulumi.yaml's declared keys, types and defaults, the stack's on top.
A bad value raises one StackConfigError naming the key and what is allowed. Imports no component.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import config as runtime_config

PROJECT = "trainstack"
REPO_ROOT = Path(__file__).resolve().parent.parent
# Secrets the program reads but Pulumi.yaml cannot declare (a declared key needs a default).
SECRET_KEYS = ("hfToken", "registryPassword", "kubeconfig")
KUBECONFIG_NOT_SECRET = 'must be a secret, as it holds the cluster\'s credentials: pulumi config set --secret kubeconfig "$(cat ...)"'

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_LABEL_RULE = "a DNS-1123 label (lowercase letters, digits, '-')"
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
QUANTITY_RULE = "a Kubernetes quantity such as 2, 500m, 8Gi"
# upstream: kubernetes/apimachinery pkg/api/resource/quantity.go (binary, decimal and milli suffixes)
_QUANTITY_SUFFIXES = {
    **{suffix: 1000**power for power, suffix in enumerate(("", "k", "M", "G", "T", "P", "E"))},
    **{suffix: 1024**power for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1)},
    "m": 0.001,
}

# The stack's values by key (without the project prefix), each in its declared type.
Values = Mapping[str, Any]


class StackConfigError(pulumi.RunError):
    """A stack config value that cannot be used; Pulumi prints the message alone, without a traceback."""


@dataclass(frozen=True)
class ConfigKey:
    """One key of Pulumi.yaml's config block."""

    type: str  # string, integer, boolean or array
    default: Any
    description: str


@cache
def declared_keys() -> dict[str, ConfigKey]:
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    return {
        key: ConfigKey(spec["type"], spec.get("default"), spec.get("description", ""))
        for key, spec in project["config"].items()
    }


def error(key: str, problem: str) -> StackConfigError:
    return StackConfigError(f"{PROJECT}:{key}: {problem}")


def _coerce(key: str, spec: ConfigKey, raw: Any) -> Any:
    """Pulumi hands every value over as a string (arrays as JSON)."""
    if spec.type == "string":
        return str(raw)
    if spec.type == "integer":
        # Whole digits only: Pulumi passes a YAML 22.5 as "22.5", which `make check` must refuse as `up` does.
        if isinstance(raw, bool) or not re.fullmatch(r"\s*[-+]?[0-9]+\s*", str(raw)):
            raise error(key, f"must be an integer, got {raw!r}")
        return int(raw)
    if spec.type == "boolean":
        text = str(raw).lower()
        if text not in ("true", "false"):
            raise error(key, f"must be true or false, got {raw!r}")
        return text == "true"
    try:
        values = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        values = None  # a plain string, as `pulumi config set KEY VALUE` writes
    if not isinstance(values, list) or not all(isinstance(item, str) for item in values):
        raise error(
            key,
            f"must be a list of strings (in the stack file [a, b]; from the CLI `pulumi config set --path"
            f" '{key}[0]' a`), got {raw!r}",
        )
    return values


def resolve_values(stack_values: Values) -> dict[str, Any]:
    """Declared defaults with the stack's values on top, each in its declared type; unknown keys are errors."""
    keys = declared_keys()
    unknown = sorted(set(stack_values) - set(keys) - set(SECRET_KEYS))
    if unknown:
        allowed = sorted([*keys, *SECRET_KEYS])
        near = [key for key in allowed if key.lower() == unknown[0].lower()]
        near = near or difflib.get_close_matches(unknown[0], allowed, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise error(unknown[0], f"unknown key{hint}; allowed keys: {', '.join(allowed)}")
    return {
        key: _coerce(key, spec, stack_values[key]) if key in stack_values else spec.default
        for key, spec in keys.items()
    }


def one_of(values: Values, key: str, allowed: list[str]) -> str:
    value = str(values[key])
    if value not in allowed:
        # An allowed empty value (a key's "follow the default") shows as "", not as nothing between commas.
        shown = ", ".join(option or '""' for option in allowed)
        raise error(key, f"must be one of {shown}, got {value!r}")
    return value


def at_least(values: Values, key: str, minimum: int) -> int:
    value = int(values[key])
    if value < minimum:
        raise error(key, f"must be an integer >= {minimum}, got {value}")
    return value


def matching(values: Values, key: str, pattern: re.Pattern[str], what: str) -> str:
    value = str(values[key])
    if not pattern.fullmatch(value):
        raise error(key, f"must be {what}, got {value!r}")
    return value


def port(values: Values, key: str, *, off: bool = True) -> int:
    number = int(values[key])
    if not (0 if off else 1) <= number <= 65535:
        allowed = "0 (off) or a port number" if off else "a port number"
        raise error(key, f"must be {allowed} between 1 and 65535, got {number}")
    return number


def quantity_bytes(quantity: str) -> float:
    """A quantity that matched QUANTITY, in base units."""
    number = quantity.rstrip("".join({c for suffix in _QUANTITY_SUFFIXES for c in suffix}))
    return float(number) * _QUANTITY_SUFFIXES[quantity[len(number) :]]


def label_value(text: str) -> str:
    """At most 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63].strip("-_.")


# pulumi.Config reads one key it is asked for; finding unknown keys needs them all, which only the runtime lists.
def stack_values() -> dict[str, Any]:
    prefix = f"{PROJECT}:"
    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return {key[len(prefix) :]: value for key, value in merged.items() if key.startswith(prefix)}


def is_secret(key: str) -> bool:
    # upstream: pulumi/pulumi sdk/python/cmd/pulumi-language-python/main.go @ v3.259.0 (PULUMI_CONFIG_SECRET_KEYS)
    full_key = f"{PROJECT}:{key}"
    return full_key in runtime_config.get_config_secret_keys_env() or runtime_config.is_config_secret(
        full_key
    )
