#!/bin/bash
# PID 1 of one node container of the end-to-end test cluster (started by up.sh; not part of the product).
#
# Every node runs containerd (+ runc, the CNI bridge), the kubelet and kube-proxy; the first also runs etcd and
# the control plane (kube-apiserver, kube-controller-manager, kube-scheduler). Upstream Kubernetes binaries
# (scripts/toolchain/kubernetes.sh) are mounted at /k8s, the PKI and kubeconfig at /pki, the image archives to
# import at /images, the shared storage at $SHARED_PATH. Logs go to /var/log/trainstack-e2e.
#
# Environment (set by up.sh): NODE_NAME, NODE_IP, NODE_INDEX (1-based), NODE_IPS (every node's address, in
# order), CONTROL_PLANE_IP, POD_CIDR_PREFIX (node i gets <prefix>.<i>.0/24), SERVICE_CIDR, CLUSTER_DNS,
# CGROUP_ROOT, REGISTRY_HOST (the name pods use for the local registry, host:port), REGISTRY_URL (where the
# node reaches it), SHARED_PATH.
#
# What this host lacks or must not have changed, and what is done about it (shared/notes/real-toolchain.md):
#   - no CAP_SYS_RESOURCE, so no negative oom_score_adj: containerd clamps it (restrict_oom_score_adj);
#   - the kubelet sets host-wide sysctls (vm.overcommit_memory, kernel.panic, ...) unless it already sees its
#     values: files holding them are bind-mounted over those /proc/sys entries inside this container only;
#   - kube-proxy would raise the host-wide conntrack table size: its conntrack settings are 0 (leave alone).
set -euo pipefail

: "${NODE_NAME:?}" "${NODE_IP:?}" "${NODE_INDEX:?}" "${NODE_IPS:?}" "${CONTROL_PLANE_IP:?}"
: "${POD_CIDR_PREFIX:?}" "${SERVICE_CIDR:?}" "${CLUSTER_DNS:?}" "${CGROUP_ROOT:?}" "${REGISTRY_HOST:?}"
: "${REGISTRY_URL:?}" "${SHARED_PATH:?}"

K8S=/k8s
LOGS=/var/log/trainstack-e2e
ADMIN_KUBECONFIG=/pki/admin.kubeconfig
mkdir -p "$LOGS"

log() { echo "[node $NODE_NAME] $*"; }

# run NAME COMMAND...: a daemon in the background, its output in $LOGS/NAME.log.
run() {
    local name=$1
    shift
    "$@" >"$LOGS/$name.log" 2>&1 &
    log "started $name (pid $!)"
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND every second until it succeeds; fails after SECONDS.
wait_for() {
    local what=$1 seconds=$2 i
    shift 2
    for ((i = 0; i < seconds; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    log "$what not ready after ${seconds}s"
    return 1
}

# Mounts made under the kubelet's directory (volumes) must reach the containers it starts.
mount --make-rshared /

# The kubelet's sysctls, shown to it with the values it wants (inside this mount namespace only).
mkdir -p /run/sysctl-values
for setting in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
    kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    key=${setting%%=*}
    file=/run/sysctl-values/${key//\//_}
    echo "${setting#*=}" >"$file"
    mount --bind "$file" "/proc/sys/$key"
done
tr -d - </proc/sys/kernel/random/uuid >/etc/machine-id

# Routes to every other node's pods, through that node (the Docker network is one L2 segment).
read -r -a node_ips <<<"$NODE_IPS"
for i in "${!node_ips[@]}"; do
    if [[ ${node_ips[$i]} != "$NODE_IP" ]]; then
        ip route replace "$POD_CIDR_PREFIX.$((i + 1)).0/24" via "${node_ips[$i]}"
    fi
done

# --- control plane (first node) ------------------------------------------------------------------------
if [[ $NODE_IP == "$CONTROL_PLANE_IP" ]]; then
    run etcd etcd --name "$NODE_NAME" --data-dir /var/lib/etcd \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380
    run kube-apiserver "$K8S/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
        --advertise-address="$NODE_IP" --bind-address=0.0.0.0 --secure-port=6443 \
        --tls-cert-file=/pki/apiserver.crt --tls-private-key-file=/pki/apiserver.key \
        --client-ca-file=/pki/ca.crt --token-auth-file=/pki/tokens.csv --authorization-mode=Node,RBAC \
        --service-account-key-file=/pki/sa.pub --service-account-signing-key-file=/pki/sa.key \
        --service-account-issuer=https://kubernetes.default.svc --service-cluster-ip-range="$SERVICE_CIDR" \
        --kubelet-preferred-address-types=InternalIP --allow-privileged=true
    wait_for kube-apiserver 120 "$K8S/kubectl" --kubeconfig="$ADMIN_KUBECONFIG" get --raw /readyz
    run kube-controller-manager "$K8S/kube-controller-manager" --kubeconfig="$ADMIN_KUBECONFIG" \
        --authentication-kubeconfig="$ADMIN_KUBECONFIG" --authorization-kubeconfig="$ADMIN_KUBECONFIG" \
        --service-account-private-key-file=/pki/sa.key --root-ca-file=/pki/ca.crt \
        --cluster-signing-cert-file=/pki/ca.crt --cluster-signing-key-file=/pki/ca.key \
        --use-service-account-credentials=true --service-cluster-ip-range="$SERVICE_CIDR" --leader-elect=false
    run kube-scheduler "$K8S/kube-scheduler" --kubeconfig="$ADMIN_KUBECONFIG" \
        --authentication-kubeconfig="$ADMIN_KUBECONFIG" --authorization-kubeconfig="$ADMIN_KUBECONFIG" \
        --leader-elect=false
fi

# --- containerd and the pod network ------------------------------------------------------------------------
mkdir -p /etc/containerd "/etc/containerd/certs.d/$REGISTRY_HOST" /etc/cni/net.d
cat >/etc/containerd/config.toml <<EOF
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    # Drop a pulled layer's compressed blob once it is unpacked: each node would otherwise hold the trainer
    # image twice (about 3 GB compressed beside 5.7 GB unpacked), and every node shares this host's disk.
    discard_unpacked_layers = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
EOF
# Pods name the registry as the host pushes to it ($REGISTRY_HOST, 127.0.0.1:<port> on the host); this node
# reaches it on the Docker network (containerd's hosts.toml, as kind's local-registry recipe does).
cat >"/etc/containerd/certs.d/$REGISTRY_HOST/hosts.toml" <<EOF
server = "$REGISTRY_URL"
[host."$REGISTRY_URL"]
  capabilities = ["pull", "resolve"]
EOF
cat >/etc/cni/net.d/10-trainstack-e2e.conflist <<EOF
{"cniVersion": "1.0.0", "name": "trainstack-e2e", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR_PREFIX.$NODE_INDEX.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
EOF
run containerd containerd --config /etc/containerd/config.toml
wait_for containerd 60 ctr version
for archive in /images/*.tar; do
    ctr -n k8s.io images import --all-platforms "$archive" >>"$LOGS/image-import.log" 2>&1
done
log "imported $(ctr -n k8s.io images ls -q | wc -l) image references"

# --- kubelet and kube-proxy ----------------------------------------------------------------------------------
cat >/var/lib/kubelet-config.yaml <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
clusterDNS: [$CLUSTER_DNS]
clusterDomain: cluster.local
resolvConf: ""
# The kubelet's own API (logs, exec) is reachable only on the test network: anyone there may use it.
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOF
run kubelet "$K8S/kubelet" --config=/var/lib/kubelet-config.yaml --kubeconfig="/pki/kubelet-$NODE_NAME.kubeconfig" \
    --node-ip="$NODE_IP" --hostname-override="$NODE_NAME" --v=1
cat >/var/lib/kube-proxy-config.yaml <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $POD_CIDR_PREFIX.0.0/16
hostnameOverride: $NODE_NAME
clientConnection: {kubeconfig: /pki/kube-proxy.kubeconfig}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
run kube-proxy "$K8S/kube-proxy" --config=/var/lib/kube-proxy-config.yaml
touch /run/trainstack-e2e-started

# Stops with the first daemon that exits, so the container's exit shows a broken node.
wait -n
log "a daemon exited; see $LOGS"
exit 1
