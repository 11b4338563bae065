#!/bin/bash
# Starts the end-to-end test cluster: a fixture, not part of the product (like kind's own test clusters or
# envtest). One or more Kubernetes nodes, each a near-privileged container running node.sh, on a Docker
# network of their own; CoreDNS; a StorageClass whose volumes every node shares (ReadWriteMany); and a local
# OCI registry the host pushes to and the nodes pull from. Everything comes from `make e2e-toolchain`.
#
# Environment:
#   TRAINSTACK_E2E_CACHE  the toolchain cache (default ~/.cache/trainstack/e2e)
#   E2E_CLUSTER           name, prefix of every Docker object (default trainstack-e2e)
#   E2E_NODES             number of nodes (default 1)
#   E2E_STATE             directory for the PKI, kubeconfig, shared storage and logs (default $CACHE/run/$E2E_CLUSTER)
#   E2E_SUBNET_PREFIX     the Docker network is <prefix>.0/24 (default 10.213.7)
# Writes $E2E_STATE/kubeconfig (admin, for the host) and $E2E_STATE/cluster.env (REGISTRY, STORAGE_CLASS, ...).
# down.sh removes all of it. Nothing on the host changes but Docker objects, the cgroups the kubelets make
# in each cgroup hierarchy under $E2E_CLUSTER (cgroups.sh; removed by down.sh) and $E2E_STATE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${TRAINSTACK_E2E_CACHE:-$HOME/.cache/trainstack/e2e}
CLUSTER=${E2E_CLUSTER:-trainstack-e2e}
NODES=${E2E_NODES:-1}
STATE=${E2E_STATE:-$CACHE/run/$CLUSTER}
PREFIX=${E2E_SUBNET_PREFIX:-10.213.7}
LABEL=dev.trainstack.e2e-cluster=$CLUSTER
POD_CIDR_PREFIX=10.244
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
CLUSTER_DNS=10.96.0.10
SHARED_PATH=/var/lib/trainstack-e2e/shared
STORAGE_CLASS=trainstack-e2e-shared
REGISTRY_IP=$PREFIX.250
KUBECTL=$CACHE/bin/kubectl
KUBERNETES_BIN=$CACHE/kubernetes-v1.33.13/bin

for needed in "$KUBECTL" "$KUBERNETES_BIN/kubelet" "$CACHE/node-images.env"; do
    [[ -e $needed ]] || { echo "e2e cluster: $needed is missing: run make e2e-toolchain first" >&2; exit 1; }
done
# shellcheck source=/dev/null
source "$CACHE/node-images.env"
# shellcheck source=tests/e2e/cluster/cgroups.sh
source "$here/cgroups.sh"

log() { echo "[e2e-cluster $(date -u +%T)] $*"; }

# load_image TAG ARCHIVE: the image in the engine, loaded from the toolchain's archive if the engine lost it.
load_image() {
    docker image inspect "$1" >/dev/null 2>&1 || docker load -i "$2" >/dev/null
}

if docker ps -aq --filter "label=$LABEL" | grep -q .; then
    echo "e2e cluster $CLUSTER exists already: run tests/e2e/cluster/down.sh first" >&2
    exit 1
fi
rm -rf "$STATE"
mkdir -p "$STATE/pki" "$STATE/shared"
# Training pods run as uid 1000 and write their checkpoints here.
chmod 0777 "$STATE/shared"
load_image "$NODE_IMAGE" "$CACHE/node/node.tar"
load_image "$REGISTRY_IMAGE" "$CACHE/node/registry.tar"

log "network $CLUSTER ($PREFIX.0/24) and the registry"
docker network create --label "$LABEL" --subnet "$PREFIX.0/24" "$CLUSTER" >/dev/null
docker volume create --label "$LABEL" "$CLUSTER-registry" >/dev/null
# A loopback port Docker picks (the run reads it once; the registry is not restarted while it lives).
docker run -d --name "$CLUSTER-registry" --label "$LABEL" --network "$CLUSTER" --ip "$REGISTRY_IP" \
    -p "127.0.0.1::5000" -v "$CLUSTER-registry:/var/lib/registry" "$REGISTRY_IMAGE" >/dev/null
REGISTRY=$(docker port "$CLUSTER-registry" 5000/tcp | head -n 1)

node_ips=()
for ((i = 1; i <= NODES; i++)); do node_ips+=("$PREFIX.$((i + 1))"); done
control_plane_ip=${node_ips[0]}

log "PKI and credentials"
(
    cd "$STATE/pki"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 7 -subj "/CN=$CLUSTER-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
    printf 'subjectAltName=IP:%s,IP:%s,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n' \
        "$control_plane_ip" "$API_SERVICE_IP" >san.cnf
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 7 \
        -extfile san.cnf 2>/dev/null
    token() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
    admin_token=$(token)
    proxy_token=$(token)
    {
        echo "$admin_token,admin,admin,system:masters"
        echo "$proxy_token,system:kube-proxy,kube-proxy"
    } >tokens.csv
    # kubeconfig FILE USER TOKEN
    kubeconfig() {
        "$KUBECTL" config --kubeconfig="$1" set-cluster "$CLUSTER" --server="https://$control_plane_ip:6443" \
            --certificate-authority=ca.crt --embed-certs=true >/dev/null
        "$KUBECTL" config --kubeconfig="$1" set-credentials "$2" --token="$3" >/dev/null
        "$KUBECTL" config --kubeconfig="$1" set-context "$CLUSTER" --cluster="$CLUSTER" --user="$2" >/dev/null
        "$KUBECTL" config --kubeconfig="$1" use-context "$CLUSTER" >/dev/null
    }
    kubeconfig admin.kubeconfig admin "$admin_token"
    kubeconfig kube-proxy.kubeconfig system:kube-proxy "$proxy_token"
    for ((i = 1; i <= NODES; i++)); do
        node_token=$(token)
        echo "$node_token,system:node:node$i,node$i,system:nodes" >>tokens.csv
        kubeconfig "kubelet-node$i.kubeconfig" "system:node:node$i" "$node_token"
    done
    chmod 0600 ./*.key tokens.csv ./*.kubeconfig
)
cp "$STATE/pki/admin.kubeconfig" "$STATE/kubeconfig"
export KUBECONFIG=$STATE/kubeconfig

log "$NODES node(s)"
mapfile -t hierarchies < <(cgroup_mounts /sys/fs/cgroup)
for ((i = 1; i <= NODES; i++)); do
    node=node$i
    cgroup_root=/$CLUSTER/$node
    # The kubelet's cgroup root must exist in every hierarchy (cgroup v1 here; the node sees the host's).
    for hierarchy in "${hierarchies[@]}"; do mkdir -p "$hierarchy$cgroup_root"; done
    # --privileged is refused here (the host's root lacks CAP_SYS_RESOURCE): everything else it grants.
    docker run -d --name "$CLUSTER-$node" --hostname "$node" --label "$LABEL" \
        --network "$CLUSTER" --ip "${node_ips[$((i - 1))]}" \
        --cap-add=ALL --cap-drop=SYS_RESOURCE --security-opt seccomp=unconfined \
        --security-opt apparmor=unconfined --security-opt systempaths=unconfined \
        --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --device-cgroup-rule='a *:* rwm' \
        --device /dev/kmsg --tmpfs /run --tmpfs /tmp \
        -v /var/lib/containerd -v /var/lib/kubelet -v /var/lib/etcd -v /var/log/trainstack-e2e \
        -v "$KUBERNETES_BIN:/k8s:ro" -v "$STATE/pki:/pki:ro" -v "$CACHE/images:/images:ro" \
        -v "$STATE/shared:$SHARED_PATH" -v "$here/node.sh:/node.sh:ro" \
        -e NODE_NAME="$node" -e NODE_IP="${node_ips[$((i - 1))]}" -e NODE_INDEX="$i" \
        -e NODE_IPS="${node_ips[*]}" -e CONTROL_PLANE_IP="$control_plane_ip" \
        -e POD_CIDR_PREFIX="$POD_CIDR_PREFIX" -e SERVICE_CIDR="$SERVICE_CIDR" -e CLUSTER_DNS="$CLUSTER_DNS" \
        -e CGROUP_ROOT="$cgroup_root" -e REGISTRY_HOST="$REGISTRY" -e REGISTRY_URL="http://$REGISTRY_IP:5000" \
        -e SHARED_PATH="$SHARED_PATH" \
        --entrypoint /node.sh "$NODE_IMAGE" >/dev/null
done

ready_nodes() { "$KUBECTL" get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l; }
deadline=$((SECONDS + 240))
until [[ $(ready_nodes) -ge $NODES ]]; do
    if ((SECONDS > deadline)); then
        echo "e2e cluster: not all $NODES nodes are Ready after 240 s; node logs under $STATE/logs" >&2
        "$here/logs.sh" "$STATE/logs" >&2 || true
        exit 1
    fi
    for ((i = 1; i <= NODES; i++)); do
        if [[ $(docker inspect -f '{{.State.Running}}' "$CLUSTER-node$i") != true ]]; then
            echo "e2e cluster: node$i stopped:" >&2
            docker logs --tail 30 "$CLUSTER-node$i" >&2
            exit 1
        fi
    done
    sleep 2
done
log "nodes Ready: $("$KUBECTL" get nodes --no-headers | awk '{print $1}' | tr '\n' ' ')"

log "CoreDNS and shared storage"
sed -e "s#__COREDNS_IMAGE__#$COREDNS_IMAGE#" -e "s#__LOCAL_PATH_IMAGE__#$LOCAL_PATH_IMAGE#" \
    -e "s#__BUSYBOX_IMAGE__#$BUSYBOX_IMAGE#" -e "s#__CLUSTER_DNS__#$CLUSTER_DNS#" \
    -e "s#__SHARED_PATH__#$SHARED_PATH#" -e "s#__STORAGE_CLASS__#$STORAGE_CLASS#" \
    "$here/addons.yaml" | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" -n kube-system rollout status deployment/coredns --timeout=180s >/dev/null
"$KUBECTL" -n local-path-storage rollout status deployment/local-path-provisioner --timeout=180s >/dev/null

cat >"$STATE/cluster.env" <<EOF
E2E_CLUSTER=$CLUSTER
E2E_NODES=$NODES
KUBECONFIG=$STATE/kubeconfig
REGISTRY=$REGISTRY
STORAGE_CLASS=$STORAGE_CLASS
SHARED_DIR=$STATE/shared
EOF
log "ready: KUBECONFIG=$STATE/kubeconfig, registry $REGISTRY, storage class $STORAGE_CLASS"
