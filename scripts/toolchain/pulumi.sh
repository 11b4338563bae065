# shellcheck shell=bash
# Pulumi: the CLI, its Python language host and the three resource plugins the Python SDKs ask for
# (kubernetes, command, docker), built from source snapshots at the versions versions.py reads from the pins,
# with their Go dependencies from the module proxy. Sourced by e2e_toolchain.sh (lib.sh first).
#
# Snapshots used (brought beforehand, see lib.sh): pulumi/pulumi, pulumi/pulumi-command,
# pulumi/pulumi-kubernetes, pulumi/pulumi-docker, kreuzwerker/terraform-provider-docker, fluxcd/pkg,
# pulumi/pulumi-dotnet. The recipe and its timings were first worked out in shared/notes/real-toolchain.md.
#
# The environment `make e2e` sets so that the CLI runs these binaries and never downloads anything:
#   PATH=$BIN:$PATH         plugins on PATH ("ambient") are taken before ~/.pulumi/plugins, whatever version the
#                           SDK asks for (sdk/go/common/workspace/plugins.go, getPluginInfoAndPath), and the engine's
#                           install step then sees them as installed (pkg/engine/plugins.go).
#   PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=1   a plugin not found is an error instead of a download
#   PULUMI_SKIP_UPDATE_CHECK=1                      no request for the latest CLI version
#   PULUMI_HOME=<a temp dir>                        no plugins, credentials or settings from the user's ~/.pulumi
#   PULUMI_BACKEND_URL=file://<dir>, PULUMI_CONFIG_PASSPHRASE=<any>   a local backend, no Pulumi Cloud login
#
# Every function here is prefixed pulumi_ so that it cannot shadow a helper of another part.

PULUMI_DIR=$CACHE/pulumi-$PULUMI_VERSION
PULUMI_SRC=$SRC/pulumi-$PULUMI_VERSION
KUBERNETES_PROVIDER_DIR=$CACHE/pulumi-resource-kubernetes-$PULUMI_KUBERNETES_VERSION
KUBERNETES_PROVIDER_SRC=$SRC/pulumi-kubernetes-$PULUMI_KUBERNETES_VERSION
COMMAND_PROVIDER_DIR=$CACHE/pulumi-resource-command-$PULUMI_COMMAND_VERSION
COMMAND_PROVIDER_SRC=$SRC/pulumi-command-$PULUMI_COMMAND_VERSION
DOCKER_PROVIDER_DIR=$CACHE/pulumi-resource-docker-$PULUMI_DOCKER_VERSION
DOCKER_PROVIDER_SRC=$SRC/pulumi-docker-$PULUMI_DOCKER_VERSION

# As upstream builds its release binaries (static, no tracing of gRPC), with the version stamped in.
pulumi_go_build() {
    CGO_ENABLED=0 go build -tags osusergo,grpcnotrace \
        -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" "$@"
}

# The release tag's tree: pkg/'s go.mod replaces sdk/v3 with ../sdk, and the language host's replaces
# (../../../../pkg, ../../..) resolve as they are.
pulumi_source_tree() {
    [[ -e $PULUMI_SRC/.complete ]] && return 0
    snapshot_tree pulumi/pulumi "v$PULUMI_VERSION" "$PULUMI_SRC" pkg sdk
    touch "$PULUMI_SRC/.complete"
}

pulumi_build_cli() {
    pulumi_source_tree
    (cd "$PULUMI_SRC/pkg" && go mod download && pulumi_go_build -o "$PULUMI_DIR/bin/pulumi" ./cmd/pulumi)
    "$PULUMI_DIR/bin/pulumi" version | grep -Fx "v$PULUMI_VERSION"
    link_bin "$PULUMI_DIR/bin/pulumi"
}

# The host runs the Python program through pulumi-language-python-exec, and dynamic providers through
# pulumi-resource-pulumi-python (both scripts in the sdk tree), looked up next to it and on PATH.
pulumi_build_language_python() {
    pulumi_source_tree
    (cd "$PULUMI_SRC/sdk/python/cmd/pulumi-language-python" &&
        pulumi_go_build -o "$PULUMI_DIR/bin/pulumi-language-python" .)
    install -m 755 "$PULUMI_SRC/sdk/python/cmd/pulumi-language-python-exec" \
        "$PULUMI_SRC/sdk/python/dist/pulumi-resource-pulumi-python" "$PULUMI_DIR/bin/"
    link_bin "$PULUMI_DIR/bin/pulumi-language-python" "$PULUMI_DIR/bin/pulumi-language-python-exec" \
        "$PULUMI_DIR/bin/pulumi-resource-pulumi-python"
}

# provider/ at the release tag has no replaces; its go.mod takes every dependency from the proxy.
pulumi_build_command() {
    local version=$PULUMI_COMMAND_VERSION
    snapshot_tree pulumi/pulumi-command "v$version" "$COMMAND_PROVIDER_SRC" provider
    cd "$COMMAND_PROVIDER_SRC/provider" || return
    go build -ldflags "-s -w -X github.com/pulumi/pulumi-command/provider/pkg/version.Version=$version" \
        -o "$COMMAND_PROVIDER_DIR/bin/pulumi-resource-command" ./cmd/pulumi-resource-command
    link_bin "$COMMAND_PROVIDER_DIR/bin/pulumi-resource-command"
}

# pulumi_kube_version: the Kubernetes release whose API the provider's schema is generated from (KUBE_VERSION in
# upstream's Makefile), without the v.
pulumi_kube_version() {
    local version
    version=$(sed -n 's/^KUBE_VERSION[[:space:]]*?=[[:space:]]*v//p' "$KUBERNETES_PROVIDER_SRC/Makefile")
    [[ -n $version ]] || { echo "no KUBE_VERSION in $KUBERNETES_PROVIDER_SRC/Makefile" >&2; return 1; }
    echo "$version"
}

# pulumi_kubernetes_swagger DIR KUBE_VERSION: the swagger specs pulumi-gen-kubernetes reads, KUBE_VERSION's and
# the legacy releases it merges (provider/pkg/gen/schema.go), each the api/openapi-spec/swagger.json of the
# k8s.io/kubernetes module zip on the proxy (upstream's Makefile downloads the same file from GitHub).
pulumi_kubernetes_swagger() {
    local specs=$1 v zip
    mkdir -p "$specs"
    zip=$(mktemp)
    for v in 1.17.0 1.18.0 1.19.0 1.20.0 1.26.0 1.28.0 1.30.0 1.31.0 "$2"; do
        [[ -s $specs/swagger-v$v.json ]] && continue
        curl -sSf -o "$zip" "${GOPROXY%%,*}/k8s.io/kubernetes/@v/v$v.zip"
        unzip -q -p "$zip" "k8s.io/kubernetes@v$v/api/openapi-spec/swagger.json" >"$specs/swagger-v$v.json.part"
        mv "$specs/swagger-v$v.json.part" "$specs/swagger-v$v.json"
    done
    rm -f "$zip"
}

# pulumi-kubernetes: provider/ needs sdk/ beside it (replace => ../sdk); the snapshot lacks one of sdk's
# files, so sdk/ is the proxy's sdk/v4 module of the same release (its go.mod is identical). Three of
# provider's dependencies are refused by the proxy and come from snapshots at the exact versions go.mod asks
# for. schema.json (absent from the snapshot) is regenerated as upstream's Makefile does, and checked to be
# byte-identical to the release's blob; then `go generate` embeds it and the provider is built.
pulumi_build_kubernetes() {
    local version=$PULUMI_KUBERNETES_VERSION src=$KUBERNETES_PROVIDER_SRC kube_version
    local ldflags="-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$version"
    local schema=provider/cmd/pulumi-resource-kubernetes/schema.json expected
    snapshot_tree pulumi/pulumi-kubernetes "v$version" "$src" provider Makefile
    writable_copy "$(module_dir github.com/pulumi/pulumi-kubernetes/sdk/v4 "v$version")" "$src/sdk"
    snapshot_tree fluxcd/pkg "$(pulumi_pseudo_commit "$src/provider" github.com/fluxcd/pkg/ssa)" "$src/deps/fluxcd-pkg" ssa
    snapshot_tree pulumi/pulumi "$(pulumi_required "$src/provider" github.com/pulumi/pulumi/pkg/v3)" \
        "$src/deps/pulumi" pkg
    snapshot_tree pulumi/pulumi-dotnet \
        "pulumi-language-dotnet/$(pulumi_required "$src/provider" github.com/pulumi/pulumi-dotnet/pulumi-language-dotnet/v3)" \
        "$src/deps/pulumi-dotnet" pulumi-language-dotnet
    cd "$src/provider" || return
    go mod edit -replace "github.com/fluxcd/pkg/ssa=$src/deps/fluxcd-pkg/ssa" \
        -replace "github.com/pulumi/pulumi/pkg/v3=$src/deps/pulumi/pkg" \
        -replace "github.com/pulumi/pulumi-dotnet/pulumi-language-dotnet/v3=$src/deps/pulumi-dotnet/pulumi-language-dotnet"
    go mod download
    kube_version=$(pulumi_kube_version)
    pulumi_kubernetes_swagger "$src/provider/pkg/gen/openapi-specs" "$kube_version"
    CGO_ENABLED=1 go build -ldflags "$ldflags" -o "$src/bin/pulumi-gen-kubernetes" ./cmd/pulumi-gen-kubernetes
    # It writes schema.json, then stops on terraform.json (also absent from the snapshot) while it rewrites
    # terraform-mapping.json, which the tag holds already: the hash check below is what decides.
    (cd "$src" && "$src/bin/pulumi-gen-kubernetes" schema \
        "provider/pkg/gen/openapi-specs/swagger-v$kube_version.json" "$src") || true
    expected=$(git --git-dir="$(snapshot_git pulumi/pulumi-kubernetes)" rev-parse "v$version:$schema")
    [[ $(git hash-object "$src/$schema") == "$expected" ]] ||
        { echo "regenerated $schema differs from the v$version release's blob $expected" >&2; return 1; }
    (cd cmd/pulumi-resource-kubernetes && VERSION=$version go generate .)
    go build -ldflags "-s -w $ldflags" -o "$KUBERNETES_PROVIDER_DIR/bin/pulumi-resource-kubernetes" \
        ./cmd/pulumi-resource-kubernetes
    link_bin "$KUBERNETES_PROVIDER_DIR/bin/pulumi-resource-kubernetes"
}

# pulumi-docker: a bridged Terraform provider. upstream/ is a submodule (terraform-provider-docker at the
# commit the tag records) with the tag's patches applied, as upstream's `make upstream` does; then the
# schema is embedded and the provider built. The module path ends in /v5: the version ldflag must name it,
# or the version stays empty and the provider panics at start.
pulumi_build_docker() {
    local version=$PULUMI_DOCKER_VERSION src=$DOCKER_PROVIDER_SRC upstream_commit patch
    snapshot_tree pulumi/pulumi-docker "v$version" "$src"
    upstream_commit=$(git --git-dir="$(snapshot_git pulumi/pulumi-docker)" rev-parse "v$version:upstream")
    snapshot_tree kreuzwerker/terraform-provider-docker "$upstream_commit" "$src/upstream"
    for patch in "$src"/patches/*.patch; do
        git -C "$src/upstream" apply "$patch"
    done
    cd "$src/provider" || return
    pulumi_stand_in "$src/deps/pulumi-java" github.com/pulumi/pulumi-java
    # No `go mod download` of the whole build list: it would fetch modules that only the bridge's code
    # generators import (pulumi-yaml, pulumi-language-dotnet), which the proxy refuses; the build fetches
    # what the plugin compiles.
    (cd cmd/pulumi-resource-docker && VERSION=$version go run generate.go)
    go build -ldflags "-s -w -X github.com/pulumi/pulumi-docker/provider/v5/pkg/version.Version=$version" \
        -o "$DOCKER_PROVIDER_DIR/bin/pulumi-resource-docker" ./cmd/pulumi-resource-docker
    link_bin "$DOCKER_PROVIDER_DIR/bin/pulumi-resource-docker"
}

# pulumi_stand_in DIR MODULE: replaces MODULE (in the go.mod of the current directory) by an empty module of
# that path in DIR. For github.com/pulumi/pulumi-java, an indirect requirement of pulumi-docker's provider
# (through the bridge's Java code generator): the proxy refuses every version of it and its snapshot is too
# large to be brought here (585 MB). No package of it is compiled into the resource plugin, only its go.mod is
# read for the module graph; the build would name any package it needed from it and fail.
pulumi_stand_in() {
    mkdir -p "$1"
    printf 'module %s\n\ngo 1.21\n' "$2" >"$1/go.mod"
    go mod edit -replace "$2=$1"
}

# pulumi_required DIR MODULE: the version DIR/go.mod requires of MODULE.
pulumi_required() {
    (cd "$1" && go mod edit -json) | python3 -c '
import json, sys
print(next(r["Version"] for r in json.load(sys.stdin)["Require"] if r["Path"] == sys.argv[1]))' "$2"
}

# pulumi_pseudo_commit DIR MODULE: the commit in the pseudo-version DIR/go.mod requires of MODULE.
pulumi_pseudo_commit() {
    local v
    v=$(pulumi_required "$1" "$2")
    echo "${v##*-}"
}

step "pulumi-cli-$PULUMI_VERSION" pulumi_build_cli
step "pulumi-language-python-$PULUMI_VERSION" pulumi_build_language_python
step "pulumi-resource-command-$PULUMI_COMMAND_VERSION" pulumi_build_command
step "pulumi-resource-kubernetes-$PULUMI_KUBERNETES_VERSION" pulumi_build_kubernetes
step "pulumi-resource-docker-$PULUMI_DOCKER_VERSION" pulumi_build_docker
