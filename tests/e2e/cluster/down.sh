#!/bin/bash
# Removes the end-to-end test cluster up.sh started: the host's images named after its registry, its
# containers (with their anonymous volumes), the registry's volume, the network, the kubelets' cgroups and
# $E2E_STATE. Safe to run when nothing is there.
# Environment: as up.sh (TRAINSTACK_E2E_CACHE, E2E_CLUSTER, E2E_STATE).
set -euo pipefail
CACHE=${TRAINSTACK_E2E_CACHE:-$HOME/.cache/trainstack/e2e}
CLUSTER=${E2E_CLUSTER:-trainstack-e2e}
STATE=${E2E_STATE:-$CACHE/run/$CLUSTER}
LABEL=dev.trainstack.e2e-cluster=$CLUSTER

# The images the host pushed to this cluster's registry (named after its port, which dies with it): each is
# gigabytes, and a later cluster gets another port, so they would only pile up.
if [[ -f $STATE/cluster.env ]]; then
    registry=$(sed -n 's/^REGISTRY=//p' "$STATE/cluster.env")
    if [[ -n $registry ]]; then
        # Pushed as <registry>/<project>/<name>:<tag> (trainstack/trainer); the filter's * stops at a slash.
        mapfile -t pushed < <(docker image ls --filter "reference=$registry/*/*" --format '{{.Repository}}:{{.Tag}}')
        if ((${#pushed[@]})); then docker image rm "${pushed[@]}" >/dev/null; fi
    fi
fi
mapfile -t containers < <(docker ps -aq --filter "label=$LABEL")
if ((${#containers[@]})); then docker rm -f -v "${containers[@]}" >/dev/null; fi
mapfile -t volumes < <(docker volume ls -q --filter "label=$LABEL")
if ((${#volumes[@]})); then docker volume rm "${volumes[@]}" >/dev/null; fi
mapfile -t networks < <(docker network ls -q --filter "label=$LABEL")
if ((${#networks[@]})); then docker network rm "${networks[@]}" >/dev/null; fi
# The kubelets' cgroups, deepest first (their processes died with the node containers' PID namespaces).
# shellcheck source=tests/e2e/cluster/cgroups.sh
source "$(dirname "$0")/cgroups.sh"
mapfile -t hierarchies < <(cgroup_mounts /sys/fs/cgroup)
for hierarchy in "${hierarchies[@]}"; do
    root=$hierarchy/$CLUSTER
    if [[ -d $root ]]; then
        find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
        if [[ -d $root ]]; then echo "e2e cluster: could not remove $root (a process is still in it)" >&2; fi
    fi
done
rm -rf "$STATE"
echo "e2e cluster $CLUSTER removed"
