# shellcheck shell=bash
# Kubernetes part of the real toolchain (sourced by scripts/e2e_toolchain.sh after lib.sh and versions.py).
#
# Builds the Kubernetes server binaries a node image needs (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy) and kubectl from the k8s.io/kubernetes module, Go module proxy only,
# into $CACHE/kubernetes-<version>/bin; kubectl is also linked into $BIN. kubeadm (for kind's node image) joins
# them in a step of its own.
#
# k3s itself cannot be built here (the proxy refuses github.com/k3s-io/k3s), so the node image is put
# together from these upstream binaries instead.
#
# Why the version is not derived from K3S_VERSION (v1.33.6+k3s1): the proxy refuses 10 of the staging
# modules v1.33.6 needs at v0.33.6 (cri-client, endpointslice, kube-proxy, mount-utils, ...) and the
# checksum database has no entry for 4 more (cri-api, kms, ...). v1.33.13, the newest 1.33 patch it
# serves, has every staging module it builds from served and verified, so the whole tree is one release.
#
# Every function here is prefixed kubernetes_ so that it cannot shadow a helper of another part.

KUBERNETES_MODULE=k8s.io/kubernetes
KUBERNETES_VERSION=v1.33.13
# Staging modules are published as k8s.io/<name> v0.<minor>.<patch> for Kubernetes v1.<minor>.<patch>.
KUBERNETES_STAGING_VERSION=v0.${KUBERNETES_VERSION#v1.}
KUBERNETES_WORK=$CACHE/kubernetes-$KUBERNETES_VERSION
KUBERNETES_TREE=$SRC/kubernetes-$KUBERNETES_VERSION
KUBERNETES_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

# The module tree's go.work lists ./staging/src/k8s.io/*, which the module zip leaves out: ignore it.
export GOWORK=off

# kubernetes_staging_replaces: the modules go.mod replaces with a ./staging/src/k8s.io/* directory.
kubernetes_staging_replaces() {
    go mod edit -json | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"]["Path"].startswith("./staging/"):
        print(r["Old"]["Path"])'
}

# kubernetes_prepare_tree: a writable copy of the module whose go.mod builds without staging/: each
# staging replace is dropped and the module required at the published version of the same release,
# as any consumer of k8s.io/* requires it (the v0.0.0 placeholders would fail -mod=readonly once the
# published modules' own requirements raise them). A dependency wanting a newer k8s.io/* would make
# `go build` ask for a go.mod update and fail, rather than mix releases silently. The sample-* modules
# are only imported by tests and the proxy does not serve them, so they are dropped altogether.
kubernetes_prepare_tree() {
    writable_copy "$(module_dir "$KUBERNETES_MODULE" "$KUBERNETES_VERSION")" "$KUBERNETES_TREE"
    cd "$KUBERNETES_TREE" || return
    # go.work/go.work.sum name the missing staging dirs; vendor/ holds only OWNERS, yet its presence
    # would switch the go command to -mod=vendor.
    rm -rf go.work go.work.sum vendor
    local edits=() published=() m
    for m in $(kubernetes_staging_replaces); do
        edits+=("-dropreplace=$m")
        case $m in
        k8s.io/sample-*) edits+=("-droprequire=$m") ;;
        *)
            edits+=("-require=$m@$KUBERNETES_STAGING_VERSION")
            published+=("$m")
            ;;
        esac
    done
    go mod edit "${edits[@]}"
    # Downloading them by name records both of their go.sum lines (go.mod and tree), verified against
    # the checksum database; go.sum already covers every other dependency.
    go mod download "${published[@]}"
    grep -E '^\s+k8s\.io/' go.mod
}

# kubernetes_ldflags: the version variables hack/lib/version.sh sets (client-go's and component-base's),
# plus -s -w as its non-debug build does. The module zip carries no commit, so gitCommit and
# gitTreeState stay unset, as that script leaves them without one; buildDate is the release's commit
# time (what the proxy's .info reports), so a rebuild is byte-identical.
kubernetes_ldflags() {
    local date minor flags=() key value
    date=$(go mod download -json "$KUBERNETES_MODULE@$KUBERNETES_VERSION" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["Info"])' |
        xargs python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["Time"])')
    minor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")
    for key in gitVersion=$KUBERNETES_VERSION gitMajor=1 gitMinor=$minor buildDate=$date; do
        value=${key#*=}
        key=${key%%=*}
        flags+=("-X 'k8s.io/client-go/pkg/version.$key=$value'" "-X 'k8s.io/component-base/version.$key=$value'")
    done
    echo "all=${flags[*]} -s -w"
}

# kubernetes_build: the six commands in one `go build` (shared compile work), static as
# hack/lib/golang.sh builds its static binaries: CGO off, -trimpath, tags selinux,notest. -v lists
# packages as they compile, so the step's progress line moves. Built into bin.partial, then renamed.
# The local Go (1.26) builds it although .go-version names 1.25.11: go.mod's `godebug default=go1.24`
# keeps the runtime defaults the release was tested with, so no older toolchain is fetched.
kubernetes_build() {
    local out=$KUBERNETES_WORK/bin pkgs=() c
    cd "$KUBERNETES_TREE" || return
    go version
    for c in "${KUBERNETES_COMMANDS[@]}"; do pkgs+=("./cmd/$c"); done
    rm -rf "$out.partial"
    mkdir -p "$out.partial"
    CGO_ENABLED=0 go build -v -trimpath -tags selinux,notest -ldflags "$(kubernetes_ldflags)" \
        -o "$out.partial/" "${pkgs[@]}"
    rm -rf "$out"
    mv "$out.partial" "$out"
    ln -sfn "$out/kubectl" "$BIN/kubectl"
    kubernetes_check
}

# kubernetes_check: every binary is static and reports the release version.
kubernetes_check() {
    local out=$KUBERNETES_WORK/bin c report
    ls -l "$out"
    for c in "${KUBERNETES_COMMANDS[@]}"; do
        report=$(file "$out/$c")
        echo "$report"
        [[ $report == *"statically linked"* ]] || return 1
    done
    for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
        report=$("$out/$c" --version)
        echo "$c: $report"
        [[ $report == "Kubernetes $KUBERNETES_VERSION" ]] || return 1
    done
    report=$("$BIN/kubectl" version --client)
    echo "$report"
    grep -qx "Client Version: $KUBERNETES_VERSION" <<<"$report"
}

step "kubernetes-tree-$KUBERNETES_VERSION" kubernetes_prepare_tree
# kubernetes_build_kubeadm: kubeadm (kind's node image runs it; scripts/toolchain/kind.sh) with the same
# flags into the same bin/, a step of its own so that a cache built without it gains it alone.
kubernetes_build_kubeadm() {
    local out=$KUBERNETES_WORK/bin report
    cd "$KUBERNETES_TREE" || return
    CGO_ENABLED=0 go build -v -trimpath -tags selinux,notest -ldflags "$(kubernetes_ldflags)" \
        -o "$out/kubeadm.partial" ./cmd/kubeadm
    mv -f "$out/kubeadm.partial" "$out/kubeadm"
    file "$out/kubeadm" | grep -q "statically linked"
    report=$("$out/kubeadm" version -o short)
    echo "kubeadm: $report"
    [[ $report == "$KUBERNETES_VERSION" ]]
}

step "kubernetes-$KUBERNETES_VERSION" kubernetes_build
step "kubeadm-$KUBERNETES_VERSION" kubernetes_build_kubeadm
