#!/bin/bash
# PID 1 of a kind node in the end-to-end run (the docker wrapper beside this file starts nodes with it in place
# of --privileged): what --privileged would have given the node or what this host needs, then kind's own
# entrypoint and systemd, exactly as kind's node image starts them.
#
# - Cgroups: kind starts nodes with --cgroupns=private, so Docker mounts the node's own view of each cgroup
#   hierarchy on a tmpfs of the node's own, read-only without --privileged. Both are remounted read-write
#   here (the tmpfs is the node's, and `remount,bind` changes only this mount's flag): systemd and the kubelet
#   then change only cgroups under the node's, and whatever systemd adds to /sys/fs/cgroup (cpu,cpuacct, ...)
#   lands on the node's tmpfs, not on the host's (../../../shared/notes/kind-probe.md).
# - No CAP_SYS_RESOURCE, so no negative oom_score_adj: containerd clamps it, by the same line of its config
#   that kind's entrypoint sets for rootless nodes (restrict_oom_score_adj).
# - The kubelet sets host-wide sysctls (vm.overcommit_memory, kernel.panic, ...) unless it already sees its
#   values: files holding them are bind-mounted over those /proc/sys entries, in this node's mounts only.
set -euo pipefail

mount -o remount,rw /sys/fs/cgroup
while read -r target; do
    mount -o remount,bind,rw "$target"
done < <(findmnt -lun -o target -t cgroup,cgroup2 | grep '^/sys/fs/cgroup/')

sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' /etc/containerd/config.toml

mkdir -p /run/kind-fixture-sysctls
for setting in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
    kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    key=${setting%%=*}
    file=/run/kind-fixture-sysctls/${key//\//_}
    echo "${setting#*=}" >"$file"
    mount --bind "$file" "/proc/sys/$key"
done

# The ENTRYPOINT kind's node-image build commits (upstream: kubernetes-sigs/kind
# pkg/build/nodeimage/buildcontext.go @ v0.29.0); --entrypoint dropped the image's, and kind passes no command.
exec /usr/local/bin/entrypoint /sbin/init "$@"
