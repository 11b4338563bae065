# Pulumi: the CLI, its Python language host and the two resource plugins the Python SDKs ask for, built from
# the Go module proxy at the versions versions.py reads from the pins. Sourced by e2e_toolchain.sh (lib.sh first).
#
# The environment `make e2e` must set so that the CLI runs these binaries and never downloads anything:
#   PATH=$BIN:$PATH         plugins on PATH ("ambient") are taken before ~/.pulumi/plugins, whatever version the
#                           SDK asks for (sdk/go/common/workspace/plugins.go, getPluginInfoAndPath), and the engine's
#                           install step then sees them as installed (pkg/engine/plugins.go); so no
#                           `pulumi plugin install --file` is needed. Never set PULUMI_IGNORE_AMBIENT_PLUGINS.
#   PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=1   a plugin not found is an error instead of a download
#   PULUMI_SKIP_UPDATE_CHECK=1                      no request for the latest CLI version
#   PULUMI_HOME=<a temp dir>                        no plugins, credentials or settings from the user's ~/.pulumi
#   PULUMI_BACKEND_URL=file://<dir>, PULUMI_CONFIG_PASSPHRASE=<any>   a local backend, no Pulumi Cloud login
# The language host and its scripts sit next to the real `pulumi` binary (the CLI also looks there, through the
# symlink, for bundled plugins), so the CLI warns about no mismatch between $BIN and its own directory.

PULUMI_DIR=$CACHE/pulumi-$PULUMI_VERSION
PULUMI_SRC=$SRC/pulumi-$PULUMI_VERSION
KUBERNETES_PROVIDER_DIR=$CACHE/pulumi-resource-kubernetes-$PULUMI_KUBERNETES_VERSION
COMMAND_PROVIDER_DIR=$CACHE/pulumi-resource-command-$PULUMI_COMMAND_VERSION

# As upstream builds its release binaries (static, no tracing of gRPC), with the version stamped in.
pulumi_go_build() {
    CGO_ENABLED=0 go build -tags osusergo,grpcnotrace \
        -ldflags "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" "$@"
}

# pkg/ and sdk/ side by side, as in github.com/pulumi/pulumi: pkg's go.mod replaces sdk/v3 with ../sdk.
pulumi_source_tree() {
    [[ -e $PULUMI_SRC/.complete ]] && return 0
    module_tree "$PULUMI_SRC" \
        "github.com/pulumi/pulumi/pkg/v3@v$PULUMI_VERSION=pkg" \
        "github.com/pulumi/pulumi/sdk/v3@v$PULUMI_VERSION=sdk"
    touch "$PULUMI_SRC/.complete"
}

build_pulumi_cli() {
    pulumi_source_tree
    (cd "$PULUMI_SRC/pkg" && pulumi_go_build -o "$PULUMI_DIR/bin/pulumi" ./cmd/pulumi)
    "$PULUMI_DIR/bin/pulumi" version | grep -Fx "v$PULUMI_VERSION"
    link_bin "$PULUMI_DIR/bin/pulumi"
}

# The host has its own untagged module, fetched at the release commit; it replaces pkg and sdk with
# ../../../../pkg and ../../.., so it goes inside the tree's sdk/. It runs the Python program through
# pulumi-language-python-exec, and dynamic providers through pulumi-resource-pulumi-python (both scripts in
# the sdk module), looked up on PATH: they go next to it.
build_pulumi_language_python() {
    local commit
    commit=$(module_origin_hash github.com/pulumi/pulumi/sdk/v3 "v$PULUMI_VERSION")
    pulumi_source_tree
    module_tree "$PULUMI_SRC" \
        "github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3@$commit=sdk/python/cmd/pulumi-language-python"
    (cd "$PULUMI_SRC/sdk/python/cmd/pulumi-language-python" &&
        pulumi_go_build -o "$PULUMI_DIR/bin/pulumi-language-python" .)
    install -m 755 "$PULUMI_SRC/sdk/python/cmd/pulumi-language-python-exec" \
        "$PULUMI_SRC/sdk/python/dist/pulumi-resource-pulumi-python" "$PULUMI_DIR/bin/"
    link_bin "$PULUMI_DIR/bin/pulumi-language-python" "$PULUMI_DIR/bin/pulumi-language-python-exec" \
        "$PULUMI_DIR/bin/pulumi-resource-pulumi-python"
}

# provider/ (untagged, at the release commit of sdk/v4) replaces sdk/v4 with ../sdk. main.go embeds
# schema-embed.json and terraform-mapping-embed.json, which `go generate` writes (with VERSION stamped into
# the schema), as upstream's Makefile does before `go build`.
build_pulumi_kubernetes() {
    local version=$PULUMI_KUBERNETES_VERSION src=$SRC/pulumi-kubernetes-$PULUMI_KUBERNETES_VERSION commit
    commit=$(module_origin_hash github.com/pulumi/pulumi-kubernetes/sdk/v4 "v$version")
    module_tree "$src" \
        "github.com/pulumi/pulumi-kubernetes/provider/v4@$commit=provider" \
        "github.com/pulumi/pulumi-kubernetes/sdk/v4@v$version=sdk"
    cd "$src/provider"
    VERSION=$version go generate ./cmd/pulumi-resource-kubernetes
    go build -ldflags "-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$version" \
        -o "$KUBERNETES_PROVIDER_DIR/bin/pulumi-resource-kubernetes" ./cmd/pulumi-resource-kubernetes
    link_bin "$KUBERNETES_PROVIDER_DIR/bin/pulumi-resource-kubernetes"
}

# provider/ (untagged, at the release commit of sdk/) has no replaces: `go install` works.
build_pulumi_command() {
    local version=$PULUMI_COMMAND_VERSION commit
    commit=$(module_origin_hash github.com/pulumi/pulumi-command/sdk "v$version")
    GOBIN=$COMMAND_PROVIDER_DIR/bin go install \
        -ldflags "-X github.com/pulumi/pulumi-command/provider/pkg/version.Version=$version" \
        "github.com/pulumi/pulumi-command/provider/cmd/pulumi-resource-command@$commit"
    link_bin "$COMMAND_PROVIDER_DIR/bin/pulumi-resource-command"
}

step "pulumi-cli-$PULUMI_VERSION" build_pulumi_cli
step "pulumi-language-python-$PULUMI_VERSION" build_pulumi_language_python
step "pulumi-resource-kubernetes-$PULUMI_KUBERNETES_VERSION" build_pulumi_kubernetes
step "pulumi-resource-command-$PULUMI_COMMAND_VERSION" build_pulumi_command
