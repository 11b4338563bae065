"""The access component: namespace, ServiceAccount, least-privilege Role and the secrets."""

from __future__ import annotations

import base64
import json

from components.access import (
    HF_TOKEN_SECRET,
    REGISTRY_SECRET,
    Access,
    AccessArgs,
    RegistryCredentials,
    docker_config_json,
)
from tests.support.stack_helpers import contains_secret, evaluate, reveal


def test_docker_config_json_has_the_login() -> None:
    payload = json.loads(docker_config_json("ghcr.io", "bot", "pw"))
    entry = payload["auths"]["ghcr.io"]
    assert entry["username"] == "bot" and entry["password"] == "pw"
    assert base64.b64decode(entry["auth"]).decode() == "bot:pw"


def test_minimal_access_has_no_secrets_and_reads_only_its_config() -> None:
    run = evaluate(lambda: Access("access", AccessArgs("team", "trainer", "job-config-1")))
    assert run.of_type("kubernetes:core/v1:Secret") == []
    role = run.one("kubernetes:rbac.authorization.k8s.io/v1:Role")
    assert role.inputs["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["job-config-1"], "verbs": ["get"]}
    ]
    account = run.one("kubernetes:core/v1:ServiceAccount")
    assert account.inputs["metadata"] == {"name": "trainer", "namespace": "team"}
    binding = run.one("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")
    assert binding.inputs["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "trainer",
    }
    assert binding.inputs["subjects"] == [{"kind": "ServiceAccount", "name": "trainer", "namespace": "team"}]
    namespace = run.one("kubernetes:core/v1:Namespace")
    for resource in (role, account, binding):
        assert run.depends_on(resource, namespace)


def test_secrets_come_from_pulumi_secrets_and_stay_secret() -> None:
    args = AccessArgs(
        "team", "trainer", "cfg", hf_token="hf_123", registry=RegistryCredentials("ghcr.io", "bot", "pw")
    )
    run = evaluate(lambda: Access("access", args))
    token = run.one("kubernetes:core/v1:Secret", "-hf-token")
    assert token.inputs["metadata"]["name"] == HF_TOKEN_SECRET
    assert contains_secret(token.inputs["stringData"]) and reveal(token.inputs["stringData"]) == {
        "token": "hf_123"
    }
    pull = run.one("kubernetes:core/v1:Secret", "-registry")
    assert pull.inputs["type"] == "kubernetes.io/dockerconfigjson"
    assert pull.inputs["metadata"]["name"] == REGISTRY_SECRET
    assert contains_secret(pull.inputs["stringData"])
    assert (
        json.loads(reveal(pull.inputs["stringData"])[".dockerconfigjson"])["auths"]["ghcr.io"]["password"]
        == "pw"
    )
    rules = run.one("kubernetes:rbac.authorization.k8s.io/v1:Role").inputs["rules"]
    assert {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": [HF_TOKEN_SECRET],
        "verbs": ["get"],
    } in rules


def test_role_grants_no_wildcards() -> None:
    args = AccessArgs("team", "trainer", "cfg", hf_token="t")
    rules = (
        evaluate(lambda: Access("access", args))
        .one("kubernetes:rbac.authorization.k8s.io/v1:Role")
        .inputs["rules"]
    )
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule[field]
        assert rule["verbs"] == ["get"]
