# shellcheck shell=bash
# kind part of the real toolchain (sourced by scripts/e2e_toolchain.sh after lib.sh and versions.py): the kind
# CLI at KIND_VERSION (the release whose node image the stack pins, versions.py) from the Go module proxy
# (sigs.k8s.io/kind), built as kind's own Makefile builds it, into $CACHE/kind-<version>/kind, linked into $BIN.
#
# Every function here is prefixed kind_ so that it cannot shadow a helper of another part.

KIND_MODULE=sigs.k8s.io/kind
KIND_WORK=$CACHE/kind-v$KIND_VERSION

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

step "kind-v$KIND_VERSION" kind_build
