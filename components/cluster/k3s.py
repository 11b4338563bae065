"""What the k3s kinds share (not a kind itself): the API port, the server's flags, installing and uninstalling.

k3s_install.sh and k3s_uninstall.sh are POSIX sh: the same text runs on this machine (k3s_local) and in a
remote login shell (k3s_remote).
"""

from __future__ import annotations

import yaml

from components.cluster.scripts import ROOT_PRELUDE, cluster_script

K3S_API_PORT = 6443
# k3s add-ons a training cluster does not need (and whose images an offline cluster would not have).
K3S_DISABLED = "traefik,servicelb,metrics-server"

# Installs a k3s server (prints its kubeconfig) or agent (joins with the token on stdin); see install_environment.
INSTALL_SCRIPT = cluster_script(ROOT_PRELUDE, "k3s_install.sh")
# k3s's own uninstaller of the node; see uninstall_environment.
UNINSTALL_SCRIPT = cluster_script(ROOT_PRELUDE, "k3s_uninstall.sh")


def k3s_server_flags(advertised_host: str | None) -> list[str]:
    """k3s server flags: a kubeconfig readable by root alone (it holds cluster-admin credentials; the install
    script reads it through sudo), no unneeded add-ons, and the remote address in the API certificate."""
    flags = ["--write-kubeconfig-mode=600", f"--disable={K3S_DISABLED}"]
    if advertised_host is not None:
        flags.append(f"--tls-san={advertised_host}")
    return flags


def install_environment(
    version: str, role: str, flags: list[str], *, join_url: str | None = None
) -> dict[str, str]:
    """INSTALL_SCRIPT's inputs: the pinned release, server or agent, k3s's flags and an agent's server URL.

    Raises ValueError for a flag with whitespace in it (the script splits K3S_FLAGS on whitespace).
    """
    if any(len(flag.split()) != 1 for flag in flags):
        raise ValueError(f"k3s flags must be single words, got {flags!r}")
    environment = {"K3S_ROLE": role, "INSTALL_K3S_VERSION": version, "K3S_FLAGS": " ".join(flags)}
    if join_url is not None:
        environment["K3S_URL"] = join_url
    return environment


def uninstall_environment(role: str) -> dict[str, str]:
    """UNINSTALL_SCRIPT's input: server or agent."""
    return {"K3S_ROLE": role}


def rewrite_kubeconfig_server(kubeconfig: str, server_url: str) -> str:
    """The kubeconfig with every cluster's API server set to server_url (k3s writes https://127.0.0.1:6443)."""
    document = yaml.safe_load(kubeconfig)
    for entry in document.get("clusters") or []:
        entry["cluster"]["server"] = server_url
    return yaml.safe_dump(document, sort_keys=False)
