# shellcheck shell=bash
# Node part of the real toolchain (sourced by scripts/e2e_toolchain.sh after lib.sh and versions.py): what the
# end-to-end test cluster (tests/e2e/cluster/) runs besides the Kubernetes binaries of kubernetes.sh.
#
#   - the node image: Debian bookworm (debootstrap, Debian's packages) with containerd, runc, etcd, the CNI
#     plugins, iptables and the tools the kubelet and kube-proxy call; `docker import`ed, nothing pulled;
#   - images every node imports into its containerd at start, FROM scratch, each tagged as the fixture's
#     manifests name it: pause (static build of the Kubernetes tree's pause.c), CoreDNS, local-path-provisioner
#     and the busybox its helper pods run (Debian's busybox-static);
#   - the local OCI registry the stack pushes the trainer image to (github.com/distribution/distribution/v3).
# Go sources come from the module proxy. The images the nodes import are saved under $IMAGES (every node
# imports that directory at start); the node and registry images, which run on the host's engine, are saved
# under $NODE_WORK, so that an engine that lost them (a new data root, `docker system prune`) gets them back
# with `docker load` instead of a rebuild.
#
# Every function here is prefixed node_ so that it cannot shadow a helper of another part.

NODE_WORK=$CACHE/node
NODE_DEBIAN_SUITE=bookworm
# What node.sh (tests/e2e/cluster/node.sh) runs or the kubelet and kube-proxy call.
NODE_PACKAGES=(containerd runc etcd-server containernetworking-plugins iproute2 iptables conntrack ipset
    ethtool socat kmod procps util-linux mount ca-certificates openssl)
NODE_IMAGE_TAG=$NODE_DEBIAN_SUITE-$(printf '%s\n' "${NODE_PACKAGES[@]}" | sha256sum | cut -c1-12)
NODE_IMAGE=trainstack-e2e/node:$NODE_IMAGE_TAG
PAUSE_VERSION=3.10
PAUSE_IMAGE=registry.k8s.io/pause:$PAUSE_VERSION
COREDNS_VERSION=v1.12.3
COREDNS_IMAGE=registry.k8s.io/coredns/coredns:$COREDNS_VERSION
# v0.0.30 is the newest the proxy serves (v0.0.31 and v0.0.32 are refused); it has sharedFileSystemPath,
# with which one class serves ReadWriteMany claims from a directory every node mounts.
LOCAL_PATH_VERSION=v0.0.30
LOCAL_PATH_IMAGE=rancher/local-path-provisioner:$LOCAL_PATH_VERSION
BUSYBOX_IMAGE=trainstack-e2e/busybox:1.35.0
REGISTRY_VERSION=v3.1.1
REGISTRY_IMAGE=trainstack-e2e/registry:$REGISTRY_VERSION
# Kubernetes release whose pause.c is built (kubernetes.sh builds the binaries of the same release).
NODE_KUBERNETES_VERSION=v1.33.13

node_build_image() {
    local rootfs=$NODE_WORK/rootfs
    ensure_docker
    debootstrap_rootfs "$rootfs" "$NODE_DEBIAN_SUITE" "${NODE_PACKAGES[@]}"
    import_rootfs "$rootfs" "$NODE_IMAGE" 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    rm -rf "$rootfs"
    docker run --rm --entrypoint /bin/sh "$NODE_IMAGE" -c 'containerd --version && runc --version | head -n 1 && etcd --version | head -n 1 && ls /usr/lib/cni'
    save_image "$NODE_IMAGE" "$NODE_WORK/node"
}

# pause: the Kubernetes tree's build/pause/linux/pause.c, static, as its Makefile builds it (-Os -Wall -Werror -static).
node_build_pause() {
    local dir rootfs=$NODE_WORK/pause
    dir=$(module_dir k8s.io/kubernetes "$NODE_KUBERNETES_VERSION")
    rm -rf "$rootfs"
    mkdir -p "$rootfs"
    gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-trainstack" -o "$rootfs/pause" "$dir/build/pause/linux/pause.c"
    strip "$rootfs/pause"
    ensure_docker
    import_rootfs "$rootfs" "$PAUSE_IMAGE" 'ENTRYPOINT ["/pause"]' 'USER 65535:65535'
    save_image "$PAUSE_IMAGE" "$IMAGES/pause"
}

node_build_coredns() {
    coredns_image "$COREDNS_VERSION" "$NODE_WORK/coredns" "$IMAGES/coredns"
}

node_build_local_path() {
    local rootfs=$NODE_WORK/local-path
    rm -rf "$rootfs"
    go_static_binary github.com/rancher/local-path-provisioner "$LOCAL_PATH_VERSION" . \
        "$rootfs/usr/bin/local-path-provisioner" -ldflags "-s -w -X main.VERSION=$LOCAL_PATH_VERSION"
    ensure_docker
    import_rootfs "$rootfs" "$LOCAL_PATH_IMAGE" 'ENTRYPOINT ["local-path-provisioner"]' \
        'ENV PATH=/usr/bin'
    save_image "$LOCAL_PATH_IMAGE" "$IMAGES/local-path-provisioner"
}

# The helper pods of local-path-provisioner run `sh` with mkdir, chmod and rm: Debian's static busybox.
node_build_busybox() {
    local rootfs=$NODE_WORK/busybox deb applet
    rm -rf "$rootfs" "$NODE_WORK/busybox-deb"
    mkdir -p "$rootfs/bin" "$NODE_WORK/busybox-deb" "$rootfs/tmp"
    (cd "$NODE_WORK/busybox-deb" && apt-get download busybox-static)
    deb=$(echo "$NODE_WORK"/busybox-deb/busybox-static_*.deb)
    dpkg-deb -x "$deb" "$NODE_WORK/busybox-deb/root"
    install -m 0755 "$NODE_WORK/busybox-deb/root/bin/busybox" "$rootfs/bin/busybox"
    for applet in sh mkdir chmod rm ls cat sleep; do ln -s busybox "$rootfs/bin/$applet"; done
    chmod 1777 "$rootfs/tmp"
    ensure_docker
    import_rootfs "$rootfs" "$BUSYBOX_IMAGE" 'ENV PATH=/bin' 'CMD ["sh"]'
    docker run --rm "$BUSYBOX_IMAGE" sh -c 'mkdir -p /tmp/a && rm -r /tmp/a && echo busybox ok'
    save_image "$BUSYBOX_IMAGE" "$IMAGES/busybox"
    rm -rf "$NODE_WORK/busybox-deb"
}

# The registry with its own sample configuration's essentials: filesystem storage, HTTP on :5000, deletes
# allowed (the end-to-end run checks that `pulumi destroy` leaves nothing in it).
node_build_registry() {
    local rootfs=$NODE_WORK/registry
    rm -rf "$rootfs"
    go_static_binary github.com/distribution/distribution/v3 "$REGISTRY_VERSION" ./cmd/registry "$rootfs/bin/registry" \
        -ldflags "-s -w -X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION"
    mkdir -p "$rootfs/etc/distribution" "$rootfs/var/lib/registry"
    cat >"$rootfs/etc/distribution/config.yml" <<'EOF'
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
EOF
    ensure_docker
    import_rootfs "$rootfs" "$REGISTRY_IMAGE" 'ENTRYPOINT ["/bin/registry"]' \
        'CMD ["serve", "/etc/distribution/config.yml"]' 'EXPOSE 5000' 'VOLUME ["/var/lib/registry"]'
    docker run --rm "$REGISTRY_IMAGE" --version
    save_image "$REGISTRY_IMAGE" "$NODE_WORK/registry"
}

# node_images: the image references the fixture uses, as shell assignments (tests/e2e reads them).
node_images() {
    cat <<EOF
NODE_IMAGE=$NODE_IMAGE
PAUSE_IMAGE=$PAUSE_IMAGE
COREDNS_IMAGE=$COREDNS_IMAGE
LOCAL_PATH_IMAGE=$LOCAL_PATH_IMAGE
BUSYBOX_IMAGE=$BUSYBOX_IMAGE
REGISTRY_IMAGE=$REGISTRY_IMAGE
EOF
}

mkdir -p "$NODE_WORK"
step "node-image-$NODE_IMAGE_TAG" node_build_image
step "pause-$PAUSE_VERSION-$NODE_KUBERNETES_VERSION" node_build_pause
step "coredns-$COREDNS_VERSION" node_build_coredns
step "local-path-provisioner-$LOCAL_PATH_VERSION" node_build_local_path
step "busybox-static" node_build_busybox
step "registry-$REGISTRY_VERSION" node_build_registry
node_images >"$CACHE/node-images.env"
