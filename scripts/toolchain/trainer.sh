# shellcheck shell=bash
# Kubeflow Trainer part of the real toolchain (sourced by scripts/e2e_toolchain.sh after lib.sh and versions.py).
#
# Builds, from the Go module proxy only:
#   - the Trainer controller image, tagged exactly as the Trainer chart references it;
#   - the JobSet controller image, at the version the Trainer chart depends on, tagged as JobSet's own
#     release packaging tags it (registry.k8s.io/jobset/jobset:vX.Y.Z);
#   - the Trainer Helm chart with its dependencies placed under charts/ (the module trees lack them);
#   - a helm v3 CLI (the e2e uses it to debug; the check step renders the chart with it).
# Images are `FROM scratch` (no pull) and saved into $IMAGES, which the stack mounts into every k3s node
# as its air-gap image directory. `trainer_stack_values` prints the Helm values the stack must pass.
#
# Every function here is prefixed trainer_ so that it cannot shadow a helper of another part.

TRAINER_MODULE=github.com/kubeflow/trainer/v2
JOBSET_MODULE=sigs.k8s.io/jobset
LWS_MODULE=sigs.k8s.io/lws
TRAINER_WORK=$CACHE/trainer   # controller binaries (by version) and the rendered chart

# trainer_yaml FILE EXPR: evaluates a Python expression over the YAML document `d` of FILE and prints it.
trainer_yaml() {
    python3 -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# trainer_chart_dependency_version CHART_DIR NAME: the version CHART_DIR/Chart.yaml requires of dependency NAME.
trainer_chart_dependency_version() {
    trainer_yaml "$1/Chart.yaml" "next(x['version'] for x in d['dependencies'] if x['name'] == '$2')"
}

# trainer_controller_image CHART_DIR: the controller image the Trainer chart renders, computed as its
# "trainer.image" helper does: <registry>/<repository>:<tag or "v" + .Chart.Version> (no appVersion).
trainer_controller_image() {
    python3 - "$1" <<'EOF'
import sys, yaml
chart = sys.argv[1]
version = yaml.safe_load(open(f"{chart}/Chart.yaml"))["version"]
image = yaml.safe_load(open(f"{chart}/values.yaml"))["image"]
tag = image.get("tag") or (version.removeprefix("0.0.0-") if version.startswith("0.0.0-") else f"v{version}")
registry = image.get("registry") or "docker.io"
print(f"{image['repository']}:{tag}" if registry == "docker.io" else f"{registry}/{image['repository']}:{tag}")
EOF
}

# Resolved at source time: the step names carry these versions.
TRAINER_DIR=$(module_dir "$TRAINER_MODULE" "v$TRAINER_VERSION")
TRAINER_CHART_SRC=$TRAINER_DIR/charts/kubeflow-trainer
JOBSET_VERSION=$(trainer_chart_dependency_version "$TRAINER_CHART_SRC" jobset)
LWS_VERSION=$(trainer_chart_dependency_version "$TRAINER_CHART_SRC" lws)
TRAINER_IMAGE=$(trainer_controller_image "$TRAINER_CHART_SRC")
# JobSet's hack/helm-chart-package.sh points a released chart at registry.k8s.io/jobset/jobset:<tag>.
JOBSET_IMAGE_REPOSITORY=registry.k8s.io/jobset/jobset
JOBSET_IMAGE=$JOBSET_IMAGE_REPOSITORY:v$JOBSET_VERSION
# LeaderWorkerSet is only a (disabled: dataCache.enabled=false) dependency: its chart is placed, its image
# is not built. Its hack/push-chart.sh points a released chart at registry.k8s.io/lws/lws:<tag>.
LWS_IMAGE_REPOSITORY=registry.k8s.io/lws/lws
TRAINER_CHART=$CHARTS/kubeflow-trainer-$TRAINER_VERSION

# trainer_helm_version: the Helm v3 library version the pulumi-kubernetes provider vendors (its provider/go.mod
# at the release tag, read from the provider's source snapshot), so the debugging CLI renders as the provider does.
trainer_helm_version() {
    git --git-dir="$(snapshot_git pulumi/pulumi-kubernetes)" show "v$PULUMI_KUBERNETES_VERSION:provider/go.mod" |
        awk '$1 == "helm.sh/helm/v3" { print $2; exit }'
}
HELM_VERSION=$(trainer_helm_version)

# trainer_scratch_image TAG BINARY: a FROM-scratch image (nothing to pull) running BINARY as /manager,
# shaped like the gcr.io/distroless/static:nonroot base both upstream Dockerfiles use: user 65532, a
# passwd/group naming it, a CA bundle, a world-writable /tmp. Built from one root-owned tarball so that
# owners and modes are exact whichever builder runs it.
trainer_scratch_image() {
    local tag=$1 binary=$2 ctx
    ctx=$(dirname "$binary")/image
    rm -rf "$ctx"
    mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" "$ctx/rootfs/home/nonroot"
    chmod 1777 "$ctx/rootfs/tmp"
    chmod 0700 "$ctx/rootfs/home/nonroot"
    install -m 0755 "$binary" "$ctx/rootfs/manager"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
        >"$ctx/rootfs/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$ctx/rootfs/etc/group"
    # The controllers only talk to the API server (CA from the service account), but distroless ships one.
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
    tar --owner=0 --group=0 --numeric-owner -C "$ctx/rootfs" --exclude=./home/nonroot -cf "$ctx/rootfs.tar" .
    # The user's home belongs to it, as in distroless.
    tar --owner=65532 --group=65532 --numeric-owner -C "$ctx/rootfs" -rf "$ctx/rootfs.tar" ./home/nonroot
    rm -rf "$ctx/rootfs" # the build context is the tarball and the Dockerfile
    cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/manager"]
EOF
    # The legacy builder: this Docker has no buildx, and FROM scratch needs none of BuildKit.
    DOCKER_BUILDKIT=0 docker build -t "$tag" "$ctx"
    rm -rf "$ctx" # kept only when the build fails, to debug; the image lives on in Docker and in $IMAGES
}

# trainer_save_image TAG NAME: docker save into $IMAGES/NAME.tar, renamed into place at the end because
# running k3s nodes may be reading that directory.
trainer_save_image() {
    docker save -o "$IMAGES/$2.tar.partial" "$1"
    chmod 0644 "$IMAGES/$2.tar.partial" # docker save writes 0600
    mv -f "$IMAGES/$2.tar.partial" "$IMAGES/$2.tar"
}

# trainer_smoke_image TAG: the image starts its binary (flag usage, exit 0) as user 65532.
trainer_smoke_image() {
    local usage
    usage=$(docker run --rm "$1" --help 2>&1)
    sed -n 1,5p <<<"$usage"
    [[ $(docker image inspect -f '{{.Config.User}}' "$1") == 65532:65532 ]]
}

# trainer_go_build MODULE VERSION PACKAGE OUTPUT [GO BUILD FLAGS...]: a static (CGO off) build of PACKAGE
# (relative to the module root) inside the module tree, with the module's own go.mod and go.sum. Not
# `go install M@V`: that also reads the module's version list (for deprecations), which the proxy refuses
# for some modules (403 for sigs.k8s.io/jobset).
trainer_go_build() {
    local dir
    dir=$(module_dir "$1" "$2")
    mkdir -p "$(dirname "$4")"
    (cd "$dir" && CGO_ENABLED=0 go build -o "$4" "${@:5}" "$3")
}

# The Trainer controller, as cmd/trainer-controller-manager/Dockerfile builds it (CGO off, no ldflags).
trainer_build_controller() {
    local out=$TRAINER_WORK/trainer-controller-manager-v$TRAINER_VERSION
    trainer_go_build "$TRAINER_MODULE" "v$TRAINER_VERSION" ./cmd/trainer-controller-manager "$out/trainer-controller-manager"
    ensure_docker
    trainer_scratch_image "$TRAINER_IMAGE" "$out/trainer-controller-manager"
    trainer_smoke_image "$TRAINER_IMAGE"
    trainer_save_image "$TRAINER_IMAGE" "kubeflow-trainer-controller-manager-v$TRAINER_VERSION"
}

# The JobSet controller: its main package is the module root; version ldflags as its Makefile sets them.
trainer_build_jobset() {
    local out=$TRAINER_WORK/jobset-v$JOBSET_VERSION version_pkg=$JOBSET_MODULE/pkg/version commit
    commit=$(module_origin_hash "$JOBSET_MODULE" "v$JOBSET_VERSION")
    trainer_go_build "$JOBSET_MODULE" "v$JOBSET_VERSION" . "$out/jobset" \
        -ldflags "-X $version_pkg.GitVersion=v$JOBSET_VERSION -X $version_pkg.GitCommit=$commit"
    ensure_docker
    trainer_scratch_image "$JOBSET_IMAGE" "$out/jobset"
    trainer_smoke_image "$JOBSET_IMAGE"
    trainer_save_image "$JOBSET_IMAGE" "jobset-v$JOBSET_VERSION"
}

# trainer_package_subchart SRC DEST VERSION IMAGE_KEY REPOSITORY: copies a dependency chart from its module
# tree and does what its release packaging does (helm package --version/--app-version, image values set to
# the released image with IfNotPresent), so that it is the chart Trainer's `helm dependency build` fetches.
# IMAGE_KEY is the dotted path of the image block in its values.yaml.
trainer_package_subchart() {
    writable_copy "$1" "$2"
    python3 - "$2" "$3" "$4" "$5" <<'EOF'
import sys, yaml
chart, version, image_key, repository = sys.argv[1:]
def rewrite(path, change):
    with open(path) as f:
        doc = yaml.safe_load(f)
    change(doc)
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
def chart_yaml(doc):
    doc["version"], doc["appVersion"] = version, f"v{version}"
def values_yaml(doc):
    image = doc
    for key in image_key.split("."):
        image = image[key]
    image.update(repository=repository, tag=f"v{version}", pullPolicy="IfNotPresent")
rewrite(f"{chart}/Chart.yaml", chart_yaml)
rewrite(f"{chart}/values.yaml", values_yaml)
EOF
}

# The Trainer chart from its module tree, with each dependency Chart.yaml lists under charts/<name>.
# Helm's dependency check (action.CheckDependencies, which pulumi-kubernetes' Release runs on a local
# chart) wants every listed dependency present by name, enabled or not; Helm then pairs each with its
# Chart.yaml entry by name and version range, so the versions are set to the ones required.
trainer_assemble_chart() {
    local jobset_dir lws_dir
    jobset_dir=$(module_dir "$JOBSET_MODULE" "v$JOBSET_VERSION")
    lws_dir=$(module_dir "$LWS_MODULE" "v$LWS_VERSION")
    writable_copy "$TRAINER_CHART_SRC" "$TRAINER_CHART.partial"
    mkdir -p "$TRAINER_CHART.partial/charts"
    trainer_package_subchart "$jobset_dir/charts/jobset" "$TRAINER_CHART.partial/charts/jobset" \
        "$JOBSET_VERSION" image "$JOBSET_IMAGE_REPOSITORY"
    trainer_package_subchart "$lws_dir/charts/lws" "$TRAINER_CHART.partial/charts/lws" \
        "$LWS_VERSION" image.manager "$LWS_IMAGE_REPOSITORY"
    rm -rf "$TRAINER_CHART"
    mv "$TRAINER_CHART.partial" "$TRAINER_CHART"
    trainer_stack_values >"$TRAINER_CHART.values.yaml"
    cat "$TRAINER_CHART.values.yaml"
}

# trainer_stack_values: the Helm values (YAML) the stack passes to this chart so that every image is one
# built here, pulled IfNotPresent, and nothing needs the internet (runtimes off: no installer hook Job on
# docker.io/alpine running `apk add kubectl`). The Trainer image values are its chart defaults, spelled
# out so that a changed default cannot silently point elsewhere.
trainer_stack_values() {
    local trainer_repo=${TRAINER_IMAGE%:*}
    cat <<EOF
runtimes:
  defaultEnabled: false
dataCache:
  enabled: false
image:
  registry: ${trainer_repo%%/*}
  repository: ${trainer_repo#*/}
  tag: ${TRAINER_IMAGE##*:}
  pullPolicy: IfNotPresent
jobset:
  install: true
  image:
    repository: $JOBSET_IMAGE_REPOSITORY
    tag: v$JOBSET_VERSION
    pullPolicy: IfNotPresent
EOF
}

# helm v3 CLI, at the version the provider vendors, with the ldflags of Helm's Makefile (version, and the
# default Kubernetes version `helm template` assumes, from its client-go).
trainer_build_helm() {
    local dir client_go major minor pkg=helm.sh/helm/v3
    dir=$(module_dir "$pkg" "$HELM_VERSION")
    client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$dir/go.mod")
    # client-go v0.N.x is Kubernetes 1.N, as the Makefile computes it.
    major=$(($(cut -d. -f1 <<<"${client_go#v}") + 1))
    minor=$(cut -d. -f2 <<<"$client_go")
    GOBIN=$BIN CGO_ENABLED=0 go install -ldflags "-w -s -X $pkg/internal/version.version=$HELM_VERSION \
-X $pkg/internal/version.metadata= -X $pkg/internal/version.gitTreeState=clean \
-X $pkg/pkg/lint/rules.k8sVersionMajor=$major -X $pkg/pkg/lint/rules.k8sVersionMinor=$minor \
-X $pkg/pkg/chartutil.k8sVersionMajor=$major -X $pkg/pkg/chartutil.k8sVersionMinor=$minor" \
        "$pkg/cmd/helm@$HELM_VERSION"
    "$BIN/helm" version
}

# Renders the assembled chart with the stack's values, as the provider does (CRDs included), and fails
# unless every image is one built here with IfNotPresent, no Helm hook remains, and the dependency check
# passes. Lists the images and the webhook configurations for the log.
trainer_check_chart() {
    local rendered=$TRAINER_WORK/kubeflow-trainer-$TRAINER_VERSION.rendered.yaml
    mkdir -p "$TRAINER_WORK"
    "$BIN/helm" dependency list "$TRAINER_CHART"
    "$BIN/helm" template kubeflow-trainer "$TRAINER_CHART" -n kubeflow-system --include-crds \
        -f "$TRAINER_CHART.values.yaml" >"$rendered"
    python3 - "$rendered" "$TRAINER_IMAGE" "$JOBSET_IMAGE" <<'EOF'
import sys, yaml
rendered, *built = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
problems, images = [], set()
def containers(spec):
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []
for d in docs:
    name = f"{d['kind']}/{d['metadata']['name']}"
    if "helm.sh/hook" in (d["metadata"].get("annotations") or {}):
        problems.append(f"{name} is a Helm hook")
    pod = (d.get("spec") or {}).get("template", {}).get("spec") or (d.get("spec") if d["kind"] == "Pod" else None)
    for c in containers(pod or {}):
        images.add(c["image"])
        print(f"image: {name} {c['name']}: {c['image']} (imagePullPolicy {c.get('imagePullPolicy')})")
        if c["image"] not in built:
            problems.append(f"{name} uses {c['image']}, not built here")
        if c.get("imagePullPolicy") != "IfNotPresent":
            problems.append(f"{name} pulls {c['image']} with {c.get('imagePullPolicy')}")
    if d["kind"] in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        print(f"webhook configuration: {name}")
    if d["kind"] == "CustomResourceDefinition":
        print(f"CRD: {d['metadata']['name']}")
problems += [f"{image} is built but not rendered" for image in built if image not in images]
print(f"{len(docs)} objects rendered")
sys.exit("\n".join(problems) or None)
EOF
}

step "kubeflow-trainer-controller-v$TRAINER_VERSION" trainer_build_controller
step "jobset-controller-v$JOBSET_VERSION" trainer_build_jobset
step "kubeflow-trainer-chart-v$TRAINER_VERSION-jobset-v$JOBSET_VERSION-lws-v$LWS_VERSION" trainer_assemble_chart
step "helm-$HELM_VERSION" trainer_build_helm
step "kubeflow-trainer-chart-check-v$TRAINER_VERSION-helm-$HELM_VERSION" trainer_check_chart
