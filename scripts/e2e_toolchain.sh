#!/usr/bin/env bash
# `make e2e-toolchain`: builds everything the real end-to-end run needs, at exactly the versions the project
# pins, into ${TRAINSTACK_E2E_CACHE:-~/.cache/trainstack/e2e}: from source snapshots brought to this machine
# beforehand (${TRAINSTACK_SNAPSHOTS:-/work/.mirror}, see toolchain/lib.sh; never downloaded here), the Go module
# proxy, and Debian's packages. Nothing built or downloaded goes into the repository. A second call with everything built returns in
# seconds (each step leaves a stamp named by its versions). A failed step is named with its log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/toolchain/lib.sh
source "$here/toolchain/lib.sh"

set -a # the versions and the start time reach every part
eval "$(python3 "$here/toolchain/versions.py")"
_toolchain_started=$(date +%s)
set +a
complete_stamp=$STAMPS/complete-pulumi-$PULUMI_VERSION-k8s-$PULUMI_KUBERNETES_VERSION-command-$PULUMI_COMMAND_VERSION-docker-$PULUMI_DOCKER_VERSION-trainer-$TRAINER_VERSION-kind-$KIND_VERSION
if [[ ${1:-} == --check ]]; then
    # Exit 0 when everything `make e2e` needs is built (CI asks this before it runs the real end-to-end).
    [[ -e $complete_stamp ]] || { echo "not built: no $(basename "$complete_stamp")"; exit 1; }
    exit 0
fi

echo "toolchain cache: $CACHE"
echo "versions: pulumi $PULUMI_VERSION, pulumi-kubernetes $PULUMI_KUBERNETES_VERSION, pulumi-command $PULUMI_COMMAND_VERSION, pulumi-docker $PULUMI_DOCKER_VERSION, Kubeflow Trainer $TRAINER_VERSION, kind $KIND_VERSION"

parts=("$@")
((${#parts[@]})) || parts=(pulumi kubernetes node trainer kind)
failed=()
for part in "${parts[@]}"; do
    # Each part in a bash of its own (errexit holds there, unlike in a subshell of an `||` list): a part that
    # fails (its step names the log) does not stop the others.
    bash -euo pipefail -c 'source "$1/lib.sh"; source "$1/$2.sh"' part "$here/toolchain" "$part" || failed+=("$part")
done
if ((${#failed[@]})); then
    echo "[$(elapsed)] toolchain INCOMPLETE: failed part(s): ${failed[*]} (each failed step above names its log)" >&2
    exit 1
fi
if (($# == 0)); then date -u +%FT%TZ >"$complete_stamp"; fi
echo "[$(elapsed)] toolchain complete: put $BIN first on PATH"
