# shellcheck shell=bash
# Shared by the toolchain steps (sourced, bash): the cache layout, step bookkeeping, source snapshots and Go
# module helpers.
# Every step writes only under $CACHE, keyed by version, and leaves a stamp once complete, so a second
# `make e2e-toolchain` with everything built returns in seconds.

: "${TRAINSTACK_E2E_CACHE:=$HOME/.cache/trainstack/e2e}"
CACHE=$TRAINSTACK_E2E_CACHE
BIN=$CACHE/bin           # what `make e2e` puts first on PATH
LOGS=$CACHE/logs         # one log per step
STAMPS=$CACHE/stamps     # one file per completed step (its name carries the versions)
IMAGES=$CACHE/images     # image archives (docker save), also loaded into the local engine
CHARTS=$CACHE/charts     # assembled Helm charts
SRC=$CACHE/src           # writable copies of modules whose replace directives stop `go install`
mkdir -p "$BIN" "$LOGS" "$STAMPS" "$IMAGES" "$CHARTS" "$SRC"

# Source snapshots: bare git directories of public repositories, brought to this machine beforehand (the
# scripts never download source). $TRAINSTACK_SNAPSHOTS/<owner>+<name>/repo, or one variable per repository,
# e.g. SNAPSHOT_pulumi_pulumi=/path/to/pulumi.git (owner and name with every non-alphanumeric as `_`).
: "${TRAINSTACK_SNAPSHOTS:=/work/.mirror}"

export GOFLAGS="${GOFLAGS:--modcacherw}"
export GOPROXY="${GOPROXY:-https://proxy.golang.org}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

_toolchain_started=${_toolchain_started:-$(date +%s)}

elapsed() { local s=$(($(date +%s) - _toolchain_started)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# step NAME COMMAND...: runs COMMAND (a function or program) once; its output goes to $LOGS/NAME.log.
# Prints progress every 30 s while it runs; on failure names the step and its log and exits 1.
step() {
    local name=$1
    shift
    if [[ -e $STAMPS/$name ]]; then
        echo "[$(elapsed)] $name: cached"
        return 0
    fi
    local log=$LOGS/$name.log start=$SECONDS
    echo "[$(elapsed)] $name: building (log: $log)"
    ("$@") >"$log" 2>&1 &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        for _ in $(seq 30); do
            sleep 1
            kill -0 "$pid" 2>/dev/null || break
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "[$(elapsed)] $name: still building, $((SECONDS - start)) s so far; last line: $(tail -n 1 "$log" | cut -c1-120)"
        fi
    done
    if ! wait "$pid"; then
        echo "[$(elapsed)] step $name FAILED after $((SECONDS - start)) s; its log: $log" >&2
        tail -n 30 "$log" | sed 's/^/    /' >&2
        exit 1
    fi
    date -u +%FT%TZ >"$STAMPS/$name"
    echo "[$(elapsed)] $name: done in $((SECONDS - start)) s"
}

# module_dir MODULE VERSION: downloads MODULE@VERSION through the Go module proxy, prints its directory.
module_dir() {
    go mod download -json "$1@$2" | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["Error"]) if d.get("Error") else print(d["Dir"])'
}

# module_origin_hash MODULE VERSION: the commit a tagged module was made from (for untagged siblings).
module_origin_hash() {
    go mod download -json "$1@$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Origin"]["Hash"])'
}

# writable_copy SRC_DIR DEST_DIR: a writable copy of a module tree (the module cache is read-only).
writable_copy() {
    rm -rf "$2"
    mkdir -p "$(dirname "$2")"
    cp -r "$1" "$2"
    chmod -R u+w "$2"
}

# ensure_docker: a Docker engine answers, starting dockerd in its own session when none does.
ensure_docker() {
    docker info >/dev/null 2>&1 && return 0
    command -v dockerd >/dev/null || { echo "dockerd is not installed (apt-get install docker.io)" >&2; return 1; }
    setsid dockerd >"$CACHE/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    echo "dockerd did not come up; see $CACHE/dockerd.log" >&2
    return 1
}

# debootstrap_rootfs DIR SUITE PACKAGE...: a minimal Debian SUITE with PACKAGEs in DIR (replaced), without apt's
# lists and downloaded packages (not needed in an image).
debootstrap_rootfs() {
    local dir=$1 suite=$2 packages
    shift 2
    packages=$(
        IFS=,
        echo "$*"
    )
    rm -rf "$dir"
    debootstrap --variant=minbase --include="$packages" "$suite" "$dir"
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
}

# import_rootfs DIR TAG [CHANGE...]: DIR (owned by root) as a one-layer image, each CHANGE a Dockerfile
# instruction (`docker import --change`).
import_rootfs() {
    local dir=$1 tag=$2 changes=() change
    shift 2
    for change in "$@"; do changes+=(--change "$change"); done
    tar --owner=0 --group=0 --numeric-owner -C "$dir" -c . | docker import "${changes[@]}" - "$tag"
}

# save_image TAG DIR/NAME: docker save into DIR/NAME.tar, renamed into place at the end (nodes may be reading DIR).
save_image() {
    docker save -o "$2.tar.partial" "$1"
    chmod 0644 "$2.tar.partial"
    mv -f "$2.tar.partial" "$2.tar"
}

# go_static_binary MODULE VERSION PACKAGE OUTPUT [GO BUILD FLAGS...]: a static build of PACKAGE inside the
# module's tree from the proxy, with the module's own go.mod and go.sum. -mod=mod: a module zip may carry a
# vendor/ directory without its modules.txt (local-path-provisioner's does), which would switch on vendoring.
go_static_binary() {
    local dir
    dir=$(module_dir "$1" "$2")
    mkdir -p "$(dirname "$4")"
    (cd "$dir" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "-s -w" -o "$4" "${@:5}" "$3")
}

# coredns_image VERSION ROOTFS ARCHIVE: registry.k8s.io/coredns/coredns:VERSION, its static build FROM scratch
# as upstream's image has it (/coredns), saved as ARCHIVE.tar (the test cluster's and kind's node images).
coredns_image() {
    local image=registry.k8s.io/coredns/coredns:$1
    rm -rf "$2"
    go_static_binary github.com/coredns/coredns "$1" . "$2/coredns"
    "$2/coredns" -version
    ensure_docker
    import_rootfs "$2" "$image" 'ENTRYPOINT ["/coredns"]'
    save_image "$image" "$3"
}

# module_tree DEST MODULE@VERSION=SUBDIR...: writable copies of modules placed in DEST as in their upstream
# repository, so relative replaces (`=> ../sdk`) resolve; go.sum comes along. For modules `go install` refuses.
module_tree() {
    local dest=$1 spec module dir
    shift
    for spec in "$@"; do
        module=${spec%%=*}
        dir=$(module_dir "${module%@*}" "${module#*@}")
        writable_copy "$dir" "$dest/${spec#*=}"
    done
}

# link_bin FILE...: puts each built binary on $BIN (a symlink: the binary stays in its versioned directory).
link_bin() {
    local f
    for f in "$@"; do ln -sfn "$f" "$BIN/$(basename "$f")"; done
}

# snapshot_git OWNER/NAME: the git directory of that repository's snapshot; fails with one line naming what to
# bring when it is absent.
snapshot_git() {
    local var="SNAPSHOT_${1//[^A-Za-z0-9]/_}" dir
    dir=${!var:-$TRAINSTACK_SNAPSHOTS/${1/\//+}/repo}
    if ! git --git-dir="$dir" rev-parse --verify -q HEAD >/dev/null 2>&1; then
        echo "no snapshot of github.com/$1 at $dir: bring one there (the search tool's fetch) or set $var" >&2
        return 1
    fi
    echo "$dir"
}

# snapshot_tree OWNER/NAME REF DEST [PATH...]: the files of REF (or of PATHs under it) written to DEST. A
# snapshot lacks its largest blobs; a file whose blob is absent is left out and listed on stderr, so a build
# that needs one fails on the missing file by name. (`git archive` stops at the first absent blob, and its
# exclude pathspecs do not help: it reads every blob under the paths it is given.)
snapshot_tree() {
    local name=$1 ref=$2 dest=$3 git index
    git=$(snapshot_git "$name") || return 1
    shift 3
    git --git-dir="$git" rev-parse --verify -q "$ref^{commit}" >/dev/null ||
        { echo "the snapshot of $name has no $ref" >&2; return 1; }
    rm -rf "$dest"
    mkdir -p "$dest"
    index=$(mktemp)
    GIT_INDEX_FILE=$index git --git-dir="$git" read-tree "$ref"
    # ls-files -s: "mode hash stage<TAB>path"; the batch check answers "hash missing" for an absent blob.
    # (FILENAME, not NR == FNR: the list of absent blobs is usually empty.)
    GIT_INDEX_FILE=$index git --git-dir="$git" ls-files -s -- "$@" |
        awk '{ print $2 }' | git --git-dir="$git" cat-file --batch-check | awk '$2 == "missing" { print $1 }' |
        sort -u >"$index.missing"
    GIT_INDEX_FILE=$index git --git-dir="$git" ls-files -s -- "$@" |
        awk -F '\t' 'FILENAME == ARGV[1] { gone[$1] = 1; next } { split($1, f, " ") } (f[2] in gone) {
            print "absent from the snapshot of '"$name"' at '"$ref"': " $2 > "/dev/stderr"; next } { print $2 }' \
            "$index.missing" - |
        GIT_INDEX_FILE=$index git --git-dir="$git" --work-tree="$dest" checkout-index --stdin
    rm -f "$index" "$index.missing"
}
