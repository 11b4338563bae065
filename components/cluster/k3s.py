"""What the k3s kinds share: the API port, the server's flags, installing and uninstalling (POSIX sh scripts,
the same text here and in a remote login shell)."""

from __future__ import annotations

import yaml

from components.cluster.scripts import ROOT_PRELUDE, cluster_script

K3S_API_PORT = 6443
# k3s add-ons a training cluster does not need (and whose images an offline cluster would not have).
K3S_DISABLED = "traefik,servicelb,metrics-server"

INSTALL_SCRIPT = cluster_script(ROOT_PRELUDE, "k3s_install.sh")
UNINSTALL_SCRIPT = cluster_script(ROOT_PRELUDE, "k3s_uninstall.sh")


def k3s_server_flags(advertised_host: str | None) -> list[str]:
    """A root-only kubeconfig (it holds cluster-admin credentials), no unneeded add-ons, the remote address
    in the API certificate."""
    flags = ["--write-kubeconfig-mode=600", f"--disable={K3S_DISABLED}"]
    if advertised_host is not None:
        flags.append(f"--tls-san={advertised_host}")
    return flags


def install_environment(
    version: str, role: str, flags: list[str], *, join_url: str | None = None
) -> dict[str, str]:
    """INSTALL_SCRIPT's inputs; the script splits K3S_FLAGS on spaces (a host has none: cluster_config checks)."""
    environment = {"K3S_ROLE": role, "INSTALL_K3S_VERSION": version, "K3S_FLAGS": " ".join(flags)}
    if join_url is not None:
        environment["K3S_URL"] = join_url
    return environment


def rewrite_kubeconfig_server(kubeconfig: str, server_url: str) -> str:
    """Every cluster's API server set to server_url (k3s writes https://127.0.0.1:6443)."""
    document = yaml.safe_load(kubeconfig)
    for entry in document.get("clusters") or []:
        entry["cluster"]["server"] = server_url
    return yaml.safe_dump(document, sort_keys=False)
