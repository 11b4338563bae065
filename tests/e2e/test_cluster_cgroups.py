"""The test cluster's cgroup hierarchies (tests/e2e/cluster/cgroups.sh): only real cgroup mounts.

A systemd node that saw the host's /sys/fs/cgroup read-write once left plain directories (`cpu,cpuacct`,
`hugetlb`, ...) and symlinks on the host's cgroup tmpfs, then remounted it read-only; up.sh, which made its
kubelet cgroup root in every /sys/fs/cgroup/*/, failed at once on them (../shared/notes/kind-probe.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.e2e.harness import CLUSTER_SCRIPTS

# /proc/self/mountinfo of this machine (cgroup v1 with a cgroup2 `unified`, 2026-12-05), plus a cgroup mount
# of a container's that lies deeper, and optional fields (shared:N) as systemd hosts have them.
HYBRID = """\
23 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / {base} rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / {base}/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
33 31 0:30 / {base}/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / {base}/memory rw,relatime shared:11 master:2 - cgroup cgroup rw,memory
40 31 0:37 / {base}/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / {base}/unified rw,relatime - cgroup2 cgroup2 rw
90 23 0:29 /docker/abc /var/lib/docker/x/cgroup/cpu ro,relatime - cgroup cgroup rw,cpu
91 32 0:29 /nested {base}/cpu/nested rw,relatime - cgroup cgroup rw,cpu
"""
UNIFIED = """\
23 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / {base} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""


def cgroup_mounts(tmp_path: Path, mountinfo: str, base: Path) -> list[str]:
    (tmp_path / "mountinfo").write_text(mountinfo.format(base=base))
    result = subprocess.run(
        ["bash", "-c", 'source "$0"; cgroup_mounts "$1"', str(CLUSTER_SCRIPTS / "cgroups.sh"), str(base)],
        env={"PATH": "/usr/bin:/bin", "CGROUP_MOUNTINFO": str(tmp_path / "mountinfo")},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.splitlines()


def test_only_the_cgroup_mounts_under_the_base_not_what_a_systemd_node_left_there(tmp_path: Path) -> None:
    base = tmp_path / "cgroup"
    for entry in ("cpu", "cpuacct", "memory", "systemd", "unified", "cpu,cpuacct", "hugetlb", "perf_event"):
        (base / entry).mkdir(parents=True)
    (base / "net_cls").symlink_to("net_cls,net_prio")
    assert cgroup_mounts(tmp_path, HYBRID, base) == [
        f"{base}/{name}" for name in ("cpu", "cpuacct", "memory", "systemd", "unified")
    ]


def test_a_unified_host_has_one_hierarchy_the_base_itself(tmp_path: Path) -> None:
    base = tmp_path / "cgroup"
    (base / "system.slice").mkdir(parents=True)  # a child cgroup, not a hierarchy
    assert cgroup_mounts(tmp_path, UNIFIED, base) == [str(base)]


def test_up_and_down_walk_only_those_hierarchies() -> None:
    """Both scripts make and remove the kubelets' cgroups in cgroup_mounts' list, never in a glob of the base."""
    for script in ("up.sh", "down.sh"):
        text = (CLUSTER_SCRIPTS / script).read_text()
        assert "mapfile -t hierarchies < <(cgroup_mounts /sys/fs/cgroup)" in text, script
        assert "/sys/fs/cgroup/*" not in text, script
