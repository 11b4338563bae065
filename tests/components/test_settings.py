"""Stack settings: Pulumi.yaml's declared keys, coercion, defaults and the rules between keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.cluster import RemoteHosts
from components.settings import (
    StackConfigError,
    available_presets,
    declared_keys,
    parse_settings,
    resolve_values,
)
from components.trainer_image import K3sImport, KindLoad


def test_every_declared_key_has_a_type_default_and_description() -> None:
    keys = declared_keys()
    assert {
        "clusterKind",
        "nodeCount",
        "gpusPerNode",
        "trainerVersion",
        "gpuOperatorVersion",
        "k3sVersion",
    } <= set(keys)
    for name, key in keys.items():
        assert key.type in ("string", "integer", "boolean", "array"), name
        assert key.default is not None, name
        assert key.description, name


def test_versions_installed_into_the_cluster_are_pinned() -> None:
    keys = declared_keys()
    assert keys["trainerVersion"].default == "2.3.0"
    assert keys["gpuOperatorVersion"].default == "v25.10.1"
    assert keys["k3sVersion"].default == "v1.33.6+k3s1"
    assert "@sha256:" in keys["kindNodeImage"].default


def test_values_arrive_as_strings_and_are_coerced_to_their_declared_type() -> None:
    values = resolve_values({"nodeCount": "3", "imagePush": "true", "k3sAgentHosts": '["a", "b"]'})
    assert values["nodeCount"] == 3
    assert values["imagePush"] is True
    assert values["k3sAgentHosts"] == ["a", "b"]
    assert values["clusterKind"] == "kind"  # the default


def test_defaults_make_a_cpu_kind_stack() -> None:
    settings = parse_settings({})
    assert settings.cluster.kind == "kind" and settings.cluster.node_count == 1
    assert settings.gpu_operator is None
    assert settings.trainer.ignore_webhook_failures is False
    assert settings.image.delivery == KindLoad("trainstack")
    assert settings.access.config_map == settings.job.config_map


def test_training_config_is_the_preset_with_the_stack_paths() -> None:
    settings = parse_settings({"trainingOverrides": '["train.max_steps=7"]'})
    config = yaml.safe_load(settings.job.train_config)
    assert config["train"]["max_steps"] == 7
    assert config["model"]["preset"] == "tiny"
    assert config["checkpoint"]["dir"] == "/mnt/checkpoints/gpt-train/checkpoints"
    assert config["output"]["dir"] == "/mnt/checkpoints/gpt-train/output"
    assert config["data"]["cache_dir"] == "/mnt/checkpoints/gpt-train/cache"


def test_a_new_training_config_gets_a_new_config_map() -> None:
    assert (
        parse_settings({}).job.config_map
        != parse_settings({"trainingOverrides": '["train.max_steps=7"]'}).job.config_map
    )


def test_presets_are_the_trainer_config_files() -> None:
    assert {"tiny", "gpt2-124m"} <= set(available_presets())


def test_gpu_k3s_stack_installs_the_gpu_operator_without_a_driver() -> None:
    settings = parse_settings({"clusterKind": "k3s", "gpusPerNode": "2", "gpuTimeSlicingReplicas": "4"})
    assert settings.gpu_operator is not None
    assert settings.gpu_operator.on_k3s and not settings.gpu_operator.install_driver
    assert settings.gpu_operator.time_slicing_replicas == 4
    assert settings.trainer.ignore_webhook_failures is True
    assert settings.image.delivery == K3sImport(None)


def test_remote_k3s_reads_its_hosts(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("key")
    settings = parse_settings(
        {
            "clusterKind": "k3s",
            "k3sMode": "remote",
            "k3sServerHost": "192.0.2.1",
            "k3sAgentHosts": '["192.0.2.2"]',
            "sshPrivateKeyPath": str(key),
            "nodeCount": "2",
            "checkpointStorageClass": "nfs-client",
        }
    )
    hosts = RemoteHosts("192.0.2.1", ("192.0.2.2",), "ubuntu", 22, key)
    assert settings.cluster.remote == hosts
    assert settings.image.delivery == K3sImport(hosts)
    assert settings.job.num_nodes == 2


def test_more_nodes_than_remote_hosts_is_an_error(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("key")
    with pytest.raises(
        StackConfigError, match=r"^trainstack:nodeCount: must be at most the number of remote hosts"
    ):
        parse_settings(
            {
                "clusterKind": "k3s",
                "k3sMode": "remote",
                "k3sServerHost": "h",
                "sshPrivateKeyPath": str(key),
                "nodeCount": "2",
                "checkpointStorageClass": "nfs",
            }
        )


def test_secrets_pass_through_to_access_and_image() -> None:
    settings = parse_settings(
        {
            "registryServer": "ghcr.io",
            "registryUsername": "bot",
            "imageRepository": "ghcr.io/acme/trainer",
            "imagePush": "true",
        },
        hf_token="hf",
        registry_password="pw",
    )
    assert settings.access.hf_token == "hf"
    assert settings.access.registry is not None and settings.access.registry.password == "pw"
    assert settings.image.registry == settings.access.registry
    assert settings.image.push and settings.image.delivery is None


def test_registry_user_without_password_is_an_error() -> None:
    with pytest.raises(StackConfigError, match=r"^trainstack:registryPassword: must be set"):
        parse_settings({"registryServer": "ghcr.io", "registryUsername": "bot"})


def test_bad_k3s_version_names_the_expected_form() -> None:
    with pytest.raises(
        StackConfigError, match=r"^trainstack:k3sVersion: must be a k3s release such as v1.33.6\+k3s1"
    ):
        parse_settings({"clusterKind": "k3s", "k3sVersion": "latest"})


def test_an_existing_cluster_is_reached_through_its_kubeconfig_and_pulls_the_pushed_image(
    tmp_path: Path,
) -> None:
    from tests.fake_apiserver import fake_api_server

    with fake_api_server() as server:
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(server.kubeconfig())
        settings = parse_settings(
            {
                "clusterKind": "existing",
                "kubeconfigPath": str(kubeconfig),
                "imagePush": "true",
                "imageRepository": "registry.example.com/trainer",
                "nodeCount": "2",
                "checkpointStorageClass": "nfs-client",
            }
        )
        assert server.requests == [("/version", "token")]  # asked before any resource
    assert settings.cluster.existing is not None and settings.cluster.existing.context == "fake"
    assert not settings.cluster.shared_storage and settings.job.checkpoint_storage_class == "nfs-client"
    assert settings.image.push and settings.image.delivery is None
    assert settings.trainer.ignore_webhook_failures is False and settings.gpu_operator is None
