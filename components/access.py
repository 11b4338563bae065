"""Who the training pods are and what they may read: namespace, ServiceAccount, Role and the secrets they use."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.settings import DNS_LABEL, DNS_LABEL_RULE, Values, error, matching

HF_TOKEN_SECRET = "hf-token"
HF_TOKEN_KEY = "token"
REGISTRY_SECRET = "registry-credentials"
TRAINING_SERVICE_ACCOUNT = "trainer"


@dataclass(frozen=True)
class RegistryCredentials:
    """A private registry login; the password a Pulumi secret."""

    server: str
    username: str
    password: pulumi.Input[str]


@dataclass(frozen=True)
class AccessArgs:
    """The namespace and identity of the training pods."""

    namespace: str
    service_account: str
    config_map: str  # the training config, the one object the pods may read through the API
    hf_token: pulumi.Input[str] | None = None  # a Pulumi secret; None creates no Secret
    registry: RegistryCredentials | None = None  # None creates no image pull secret


def docker_config_json(server: str, username: str, password: str) -> str:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {server: {"username": username, "password": password, "auth": auth}}})


def namespace(values: Values) -> str:
    return matching(values, "namespace", DNS_LABEL, DNS_LABEL_RULE)


def registry_credentials(values: Values, password: pulumi.Input[str] | None) -> RegistryCredentials | None:
    server, username = str(values["registryServer"]), str(values["registryUsername"])
    if password is None:
        if username:
            raise error(
                "registryPassword",
                "must be set (pulumi config set --secret registryPassword ...) when registryUsername is set",
            )
        return None
    if not server or not username:
        raise error(
            "registryServer",
            "registryServer and registryUsername must both be set when registryPassword is set",
        )
    return RegistryCredentials(server, username, password)


class Access(pulumi.ComponentResource):
    """Namespace, ServiceAccount, a read-only Role bound to it, the Hugging Face token and the pull secret."""

    namespace: pulumi.Output[str]
    service_account: pulumi.Output[str]
    hf_token_secret: pulumi.Output[str] | None
    image_pull_secret: pulumi.Output[str] | None

    def __init__(self, name: str, args: AccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("trainstack:index:Access", name, None, opts)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace", metadata={"name": args.namespace}, opts=pulumi.ResourceOptions(parent=self)
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        self.namespace = namespace.metadata.name
        identity = k8s.meta.v1.ObjectMetaArgs(name=args.service_account, namespace=args.namespace)
        account = k8s.core.v1.ServiceAccount(f"{name}-service-account", metadata=identity, opts=in_namespace)
        self.service_account = account.metadata.name
        self.hf_token_secret = None
        if args.hf_token is not None:
            token = k8s.core.v1.Secret(
                f"{name}-hf-token",
                metadata={"name": HF_TOKEN_SECRET, "namespace": args.namespace},
                type="Opaque",
                string_data={HF_TOKEN_KEY: pulumi.Output.secret(args.hf_token)},
                opts=in_namespace,
            )
            self.hf_token_secret = token.metadata.name
        self.image_pull_secret = None
        if args.registry is not None:
            registry = args.registry
            payload = pulumi.Output.secret(registry.password).apply(
                lambda password: docker_config_json(registry.server, registry.username, password)
            )
            pull = k8s.core.v1.Secret(
                f"{name}-registry",
                metadata={"name": REGISTRY_SECRET, "namespace": args.namespace},
                type="kubernetes.io/dockerconfigjson",
                string_data={".dockerconfigjson": payload},
                opts=in_namespace,
            )
            self.image_pull_secret = pull.metadata.name
        # Least privilege: read its own config and token by name, nothing cluster-scoped, no wildcards.
        readable = [("configmaps", args.config_map)]
        if args.hf_token is not None:
            readable.append(("secrets", HF_TOKEN_SECRET))
        rules = [
            k8s.rbac.v1.PolicyRuleArgs(
                api_groups=[""], resources=[kind], resource_names=[name], verbs=["get"]
            )
            for kind, name in readable
        ]
        role = k8s.rbac.v1.Role(f"{name}-role", metadata=identity, rules=rules, opts=in_namespace)
        k8s.rbac.v1.RoleBinding(
            f"{name}-role-binding",
            metadata=identity,
            role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": args.service_account},
            subjects=[{"kind": "ServiceAccount", "name": args.service_account, "namespace": args.namespace}],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[role, account]),
        )
        self.register_outputs({"namespace": self.namespace, "serviceAccount": self.service_account})
