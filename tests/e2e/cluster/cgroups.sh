# shellcheck shell=bash
# Sourced by up.sh and down.sh: the host's cgroup hierarchies the test cluster may make its cgroups in.

# cgroup_mounts BASE: each cgroup (v1) or cgroup2 mount point directly under BASE (/sys/fs/cgroup), or BASE
# itself on a unified (cgroup v2 only) host, one per line, from /proc/self/mountinfo ($CGROUP_MOUNTINFO for
# tests). Anything else under BASE is skipped: a symlink (cpu -> cpu,cpuacct) or a plain directory a systemd
# with a read-write view of the host's cgroups left on its tmpfs, which is no hierarchy and may be read-only.
cgroup_mounts() {
    local base=$1
    # mountinfo: "ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS".
    awk -v base="$base" '{
        for (i = 7; i <= NF && $i != "-"; i++) {}
        fstype = $(i + 1)
        if (fstype != "cgroup" && fstype != "cgroup2") next
        mount_point = $5
        parent = mount_point
        sub("/[^/]*$", "", parent)
        if (parent == base || mount_point == base) print mount_point
    }' "${CGROUP_MOUNTINFO:-/proc/self/mountinfo}"
}
