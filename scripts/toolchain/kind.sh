# shellcheck shell=bash
# kind part of the real toolchain (sourced by scripts/e2e_toolchain.sh after lib.sh and versions.py): the kind
# CLI at KIND_VERSION (the release whose node image the stack pins, versions.py) from the Go module proxy
# (sigs.k8s.io/kind), built as kind's own Makefile builds it, into $CACHE/kind-<version>/kind, linked into $BIN.
#
# Every function here is prefixed kind_ so that it cannot shadow a helper of another part.

KIND_MODULE=sigs.k8s.io/kind
KIND_WORK=$CACHE/kind-v$KIND_VERSION
KIND_DEBIAN_SUITE=bookworm
# kind's base image (images/base/Dockerfile @ v$KIND_VERSION): the packages its Dockerfile installs, plus
# Debian's containerd, runc and CNI plugins in place of the ones it builds from source (containerd v2.1.1,
# runc v1.3.0, CNI plugins v1.7.1: their sources are not brought here); crictl and the fuse-overlayfs
# snapshotter (only for rootless Docker) are left out.
KIND_BASE_PACKAGES=(systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod libseccomp2 pigz
    fuse-overlayfs nfs-common open-iscsi bash ca-certificates curl jq procps)
KIND_BASE_DEBIAN_PACKAGES=(containerd runc containernetworking-plugins)
KIND_BASE_TAG=v$KIND_VERSION-$KIND_DEBIAN_SUITE-$(printf '%s\n' "${KIND_BASE_PACKAGES[@]}" "${KIND_BASE_DEBIAN_PACKAGES[@]}" |
    sha256sum | cut -c1-12)
KIND_BASE_IMAGE=trainstack-e2e/kind-base:$KIND_BASE_TAG
# The node image: Kubernetes of the kubernetes part, with the images kubeadm and kind's manifests name.
KIND_KUBERNETES_VERSION=v1.33.13
KIND_KUBERNETES_BIN=$CACHE/kubernetes-$KIND_KUBERNETES_VERSION/bin

# kind_kubeadm_constant NAME: a version kubeadm pins for this release (cmd/kubeadm/app/constants/constants.go),
# e.g. DefaultEtcdVersion 3.5.24-0, CoreDNSVersion v1.12.0.
kind_kubeadm_constant() {
    grep -oP "^\s+$1 = \"\K[^\"]+" \
        "$(module_dir k8s.io/kubernetes "$KIND_KUBERNETES_VERSION")/cmd/kubeadm/app/constants/constants.go"
}
KIND_ETCD_VERSION=$(kind_kubeadm_constant DefaultEtcdVersion)
KIND_COREDNS_VERSION=$(kind_kubeadm_constant CoreDNSVersion)
KIND_NODE_IMAGE=trainstack-e2e/kind-node:$KIND_KUBERNETES_VERSION-kind-v$KIND_VERSION

# kind_build: upstream's Makefile flags (-trimpath, -buildid= -w, the commit baked into its version package;
# a release build has no commit count), CGO off as its Makefile sets it.
kind_build() {
    local dir commit
    dir=$(module_dir "$KIND_MODULE" "v$KIND_VERSION")
    commit=$(module_origin_hash "$KIND_MODULE" "v$KIND_VERSION")
    mkdir -p "$KIND_WORK"
    (cd "$dir" && CGO_ENABLED=0 go build -v -mod=mod -trimpath \
        -ldflags "-buildid= -w -X=$KIND_MODULE/pkg/cmd/kind/version.gitCommit=$commit" -o "$KIND_WORK/kind.partial" .)
    mv -f "$KIND_WORK/kind.partial" "$KIND_WORK/kind"
    link_bin "$KIND_WORK/kind"
    kind_check
}

# kind_check: the binary on $BIN reports the pinned release.
kind_check() {
    local report
    report=$("$BIN/kind" version)
    echo "$report"
    [[ $report == "kind v$KIND_VERSION "* ]]
}

# kind_source: kind's source tree at the release (the snapshot), for its base files, kindnetd and manifests.
kind_source() {
    snapshot_tree kubernetes-sigs/kind "v$KIND_VERSION" "$KIND_WORK/kind-source" images pkg/build/nodeimage
}

# kind_build_base: kind's base image from its own files (images/base/files of the kind snapshot at the release)
# and the steps of its Dockerfile, on a debootstrapped Debian (nothing pulled from a registry).
kind_build_base() {
    local rootfs=$KIND_WORK/base-rootfs files=$KIND_WORK/kind-source
    ensure_docker
    kind_source
    debootstrap_rootfs "$rootfs" "$KIND_DEBIAN_SUITE" "${KIND_BASE_PACKAGES[@]}" "${KIND_BASE_DEBIAN_PACKAGES[@]}"
    # The Dockerfile's COPY lines: the files keep upstream's modes (0755 where executable, else 0644).
    cp -a "$files/images/base/files/." "$rootfs/"
    # Where kind's files and its source-built binaries live: /usr/local/bin/containerd, ctr and the shim,
    # /usr/local/sbin/runc, /opt/cni/bin/{host-local,loopback,ptp,portmap}.
    ln -sf /usr/bin/containerd /usr/bin/ctr /usr/bin/containerd-shim-runc-v2 "$rootfs/usr/local/bin/"
    ln -sf /usr/sbin/runc "$rootfs/usr/local/sbin/runc"
    mkdir -p "$rootfs/opt/cni/bin"
    ln -sf /usr/lib/cni/host-local /usr/lib/cni/loopback /usr/lib/cni/ptp /usr/lib/cni/portmap "$rootfs/opt/cni/bin/"
    # The Dockerfile's RUN steps, in a chroot (systemctl enable/mask only write symlinks; ctr oci spec needs no daemon).
    # shellcheck disable=SC2016 # expanded by the bash in the chroot
    chroot "$rootfs" /bin/bash -euo pipefail -c '
        chmod 755 /kind/bin
        find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete
        rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
            /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
            /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
        echo "ReadKMsg=no" >> /etc/systemd/journald.conf
        ln -s "$(command -v systemd || echo /lib/systemd/systemd)" /sbin/init
        systemctl enable kubelet.service containerd.service undo-mount-hacks.service
        systemctl mask systemd-binfmt.service
        mkdir -p /etc/kubernetes/manifests
        ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer| length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" |
            jq "del(.process.rlimits)" > /etc/containerd/cri-base.json
        containerd --version && runc --version | head -n 1'
    import_rootfs "$rootfs" "$KIND_BASE_IMAGE.rootfs" 'ENV container=docker' \
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]'
    rm -rf "$rootfs"
    # `docker import` takes no STOPSIGNAL: a one-line build on the imported image (local, nothing pulled).
    printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$KIND_BASE_IMAGE.rootfs" | docker build -q -t "$KIND_BASE_IMAGE" -
    docker image rm "$KIND_BASE_IMAGE.rootfs"
    docker save -o "$KIND_WORK/base.tar.partial" "$KIND_BASE_IMAGE"
    mv -f "$KIND_WORK/base.tar.partial" "$KIND_WORK/base.tar"
}

# kind_on_base TAG BINARY PATH [INSTRUCTION...]: TAG, the base image with BINARY at PATH, its entrypoint reset:
# the stand-in for registry.k8s.io/build-image/distroless-iptables, on which upstream's kube-proxy and kindnetd
# images are made (they run iptables, nft and conntrack, which the base has). A layer on the base's, which the
# node's containerd stores once for both; a local build, nothing pulled.
kind_on_base() {
    local context
    context=$(mktemp -d)
    install -m 0755 "$2" "$context/binary"
    {
        printf 'FROM %s\nCOPY binary %s\nENTRYPOINT []\n' "$KIND_BASE_IMAGE" "$3"
        printf '%s\n' "${@:4}"
    } >"$context/Dockerfile"
    docker build -q -t "$1" "$context"
    rm -rf "$context"
}

# The images kubeadm runs, as upstream publishes them: the binary in /usr/local/bin (kubeadm's static pods
# name the command), on scratch, or on the base (iptables) for kube-proxy.
kind_build_kube_images() {
    local name rootfs image
    ensure_docker
    for name in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
        image=registry.k8s.io/$name:$KIND_KUBERNETES_VERSION
        if [[ $name == kube-proxy ]]; then
            kind_on_base "$image" "$KIND_KUBERNETES_BIN/$name" "/usr/local/bin/$name" "ENTRYPOINT [\"/usr/local/bin/$name\"]"
        else
            rootfs=$KIND_WORK/$name
            rm -rf "$rootfs"
            install -D -m 0755 "$KIND_KUBERNETES_BIN/$name" "$rootfs/usr/local/bin/$name"
            import_rootfs "$rootfs" "$image" 'ENV PATH=/usr/local/bin' "ENTRYPOINT [\"/usr/local/bin/$name\"]"
            rm -rf "$rootfs"
        fi
        save_image "$image" "$KIND_WORK/images/$name"
    done
}

# etcd at the version kubeadm pins, from its modules placed as in etcd's repository (server/go.mod replaces
# its siblings with ../api, ../pkg, ...), as upstream's image lays it out (/usr/local/bin/etcd).
kind_build_etcd() {
    local version=${KIND_ETCD_VERSION%-*} src=$SRC/etcd-${KIND_ETCD_VERSION%-*} rootfs=$KIND_WORK/etcd commit
    module_tree "$src" "go.etcd.io/etcd/server/v3@v$version=server" "go.etcd.io/etcd/api/v3@v$version=api" \
        "go.etcd.io/etcd/client/pkg/v3@v$version=client/pkg" "go.etcd.io/etcd/client/v2@v2.305.${version##*.}=client/v2" \
        "go.etcd.io/etcd/client/v3@v$version=client/v3" "go.etcd.io/etcd/pkg/v3@v$version=pkg" \
        "go.etcd.io/etcd/raft/v3@v$version=raft"
    commit=$(module_origin_hash go.etcd.io/etcd/server/v3 "v$version")
    rm -rf "$rootfs"
    (cd "$src/server" && CGO_ENABLED=0 go build -mod=mod -trimpath \
        -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${commit:0:7}" -o "$rootfs/usr/local/bin/etcd" .)
    "$rootfs/usr/local/bin/etcd" --version
    mkdir -p "$rootfs/var/lib/etcd" "$rootfs/tmp"
    ensure_docker
    import_rootfs "$rootfs" "registry.k8s.io/etcd:$KIND_ETCD_VERSION" 'ENV PATH=/usr/local/bin' \
        'ENTRYPOINT ["/usr/local/bin/etcd"]'
    save_image "registry.k8s.io/etcd:$KIND_ETCD_VERSION" "$KIND_WORK/images/etcd"
    rm -rf "$rootfs"
}

# CoreDNS at kubeadm's pin (the test cluster's, v1.12.3, is another release).
kind_build_coredns() {
    coredns_image "$KIND_COREDNS_VERSION" "$KIND_WORK/coredns" "$KIND_WORK/images/coredns"
    rm -rf "$KIND_WORK/coredns"
}

# kindnetd, kind's CNI daemon, from its source at the release (images/kindnetd, a module of its own), on the
# base (iptables), tagged as kind's manifest names it.
kind_build_kindnetd() {
    local src=$KIND_WORK/kind-source/images/kindnetd image
    kind_source
    image=$(python3 "$here/kind_manifest.py" "$KIND_WORK/kind-source/pkg/build/nodeimage/const_cni.go" kindnetdImage)
    (cd "$src" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "-s -w" -o "$KIND_WORK/kindnetd" ./cmd/kindnetd)
    ensure_docker
    docker image inspect "$KIND_BASE_IMAGE" >/dev/null 2>&1 || docker load -i "$KIND_WORK/base.tar"
    kind_on_base "$image" "$KIND_WORK/kindnetd" /bin/kindnetd 'CMD ["/bin/kindnetd"]'
    save_image "$image" "$KIND_WORK/images/kindnetd"
}

# kind_build_node_image: what `kind build node-image` does (pkg/build/nodeimage/buildcontext.go @ v0.29.0), step
# by step, with every image it would pull given as an archive instead: a container of the base image (not
# privileged), kubeadm, kubelet and kubectl in /usr/bin, /kind/version, its CNI and storage manifests, each
# image imported into the node's containerd as kind imports them, then `docker commit` with its entrypoint.
# kind's local-path images are stood in for by the node part's (local-path-provisioner v0.0.30 and Debian's
# static busybox as its helper), tagged as kind's manifest names them.
kind_build_node_image() {
    local src=$KIND_WORK/kind-source/pkg/build/nodeimage container binary image archive required imported
    ensure_docker
    kind_source
    # The base and the node part's images, from their archives when the engine lost them.
    docker image inspect "$KIND_BASE_IMAGE" >/dev/null 2>&1 || docker load -i "$KIND_WORK/base.tar"
    docker image inspect trainstack-e2e/busybox:1.35.0 >/dev/null 2>&1 || docker load -i "$IMAGES/busybox.tar"
    docker image inspect rancher/local-path-provisioner:v0.0.30 >/dev/null 2>&1 ||
        docker load -i "$IMAGES/local-path-provisioner.tar"
    docker tag trainstack-e2e/busybox:1.35.0 "$(python3 "$here/kind_manifest.py" "$src/const_storage.go" storageHelperImage)"
    docker tag rancher/local-path-provisioner:v0.0.30 \
        "$(python3 "$here/kind_manifest.py" "$src/const_storage.go" storageProvisionerImage)"
    for image in storageHelperImage storageProvisionerImage; do
        image=$(python3 "$here/kind_manifest.py" "$src/const_storage.go" "$image")
        save_image "$image" "$KIND_WORK/images/${image//[\/:]/_}"
    done
    container=kind-build-$(date +%s)-$$
    docker run -d --entrypoint=sleep --name="$container" --security-opt seccomp=unconfined "$KIND_BASE_IMAGE" infinity
    # step runs this in a subshell of its own: the build container goes when it ends, whatever happened (the
    # name is expanded now: the local variable is gone by then).
    # shellcheck disable=SC2064
    trap "docker rm -f -v $container >/dev/null 2>&1 || true" EXIT
    for binary in kubeadm kubelet kubectl; do
        docker cp "$KIND_KUBERNETES_BIN/$binary" "$container:/usr/bin/$binary"
        docker exec "$container" chown root:root "/usr/bin/$binary"
    done
    docker exec "$container" sh -c "echo -n $KIND_KUBERNETES_VERSION > /kind/version && mkdir -p /kind/manifests"
    python3 "$here/kind_manifest.py" "$src/const_cni.go" defaultCNIManifest |
        docker exec -i "$container" sh -c 'cat > /kind/manifests/default-cni.yaml'
    python3 "$here/kind_manifest.py" "$src/const_storage.go" defaultStorageManifest |
        docker exec -i "$container" sh -c 'cat > /kind/manifests/default-storage.yaml'
    # kind waits with `ctr info`, which containerd 1.6's ctr lacks: `ctr version` asks the daemon too.
    docker exec "$container" bash -c 'nohup containerd > /dev/null 2>&1 &'
    docker exec "$container" bash -c 'for i in 0 1 2 3 4 5; do [ -S /run/containerd/containerd.sock ] && break; sleep 1; done; ctr version >/dev/null'
    # Also every archive the test cluster's nodes import at start ($IMAGES: pause, the Trainer and JobSet
    # controllers, ...), as kind's own node image carries the images its cluster runs.
    for archive in "$KIND_WORK"/images/*.tar "$IMAGES"/*.tar; do
        docker exec -i "$container" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
            --all-platforms --no-unpack --digests - <"$archive"
    done
    # Every image kubeadm and kind's manifests need is there (kind would have pulled the missing ones).
    required=$(docker exec "$container" kubeadm config images list --kubernetes-version "$KIND_KUBERNETES_VERSION")
    imported=$(docker exec "$container" ctr --namespace=k8s.io images list -q)
    echo "$imported"
    for image in $required $(docker exec "$container" sh -c "grep -ho 'image: .*' /kind/manifests/*.yaml" | awk '{ print $2 }'); do
        grep -qx "$(kind_normalized "$image")" <<<"$imported" || { echo "the node image lacks $image" >&2; return 1; }
    done
    docker exec "$container" pkill containerd
    docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
        --change 'ENV HTTP_PROXY="" HTTPS_PROXY="" NO_PROXY=""' "$container" "$KIND_NODE_IMAGE"
    save_image "$KIND_NODE_IMAGE" "$KIND_WORK/node"
}

# kind_normalized IMAGE: the name containerd lists it by (docker.io/ for a name without a registry).
kind_normalized() {
    case ${1%%/*} in
    *.*) echo "$1" ;;
    *) echo "docker.io/$1" ;;
    esac
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$KIND_WORK/images"
step "kind-v$KIND_VERSION" kind_build
step "kind-base-$KIND_BASE_TAG" kind_build_base
step "kind-etcd-$KIND_ETCD_VERSION" kind_build_etcd
step "kind-coredns-$KIND_COREDNS_VERSION" kind_build_coredns
step "kind-kindnetd-v$KIND_VERSION" kind_build_kindnetd
# The node image needs the kubernetes, node and trainer parts' output; its stamp names the archives it took in.
kind_needs=("$KIND_KUBERNETES_BIN/kubeadm" "$IMAGES/pause.tar" "$IMAGES/busybox.tar" "$IMAGES/local-path-provisioner.tar"
    "$IMAGES/kubeflow-trainer-controller-manager-v$TRAINER_VERSION.tar")
if ls "${kind_needs[@]}" >/dev/null 2>&1; then
    step "kind-kube-images-$KIND_KUBERNETES_VERSION" kind_build_kube_images
    kind_archives=$(cd "$IMAGES" && stat -c '%n %s %Y' ./*.tar | sha256sum | cut -c1-12)
    step "kind-node-image-$KIND_KUBERNETES_VERSION-kind-v$KIND_VERSION-$KIND_BASE_TAG-$kind_archives" kind_build_node_image
    echo "KIND_NODE_IMAGE=$KIND_NODE_IMAGE" >"$CACHE/kind-images.env"
else
    echo "[$(elapsed)] kind node image: not yet (the kubernetes, node and trainer parts come first: ${kind_needs[*]})"
fi
