#!/usr/bin/env bash
# The S3-compatible server the object-storage checkpoint tests run against: versitygw (Versity S3 Gateway,
# Apache-2.0, github.com/versity/versitygw) with its posix backend, built from the Go module proxy at the
# version below into ${TRAINSTACK_S3_SERVER_CACHE:-~/.cache/trainstack/s3-server}/versitygw-<version>/ (never
# into the repository). Prints the binary's path. A second call finds it built and returns at once; a cold
# build (empty Go module and build caches: about 340 MB of modules downloaded) took 118 s on this project's
# 2-core machine under load (2026-11-30).
#   scripts/s3_server.sh          build if needed, print the path
# On failure: one line on stderr naming what is missing or the build log, exit 1.
set -euo pipefail

version=v1.8.0
module=github.com/versity/versitygw
cache=${TRAINSTACK_S3_SERVER_CACHE:-$HOME/.cache/trainstack/s3-server}
dir=$cache/versitygw-$version
binary=$dir/versitygw

if [[ -x $binary ]]; then
    echo "$binary"
    exit 0
fi
go=$(command -v go || true)
[[ -n $go || ! -x /usr/local/go/bin/go ]] || go=/usr/local/go/bin/go # the official tarball's place
if [[ -z $go ]]; then
    echo "s3_server: go is not on PATH nor in /usr/local/go: building versitygw $version needs Go >= 1.25 (its go.mod)" >&2
    exit 1
fi

mkdir -p "$dir"
# One build at a time (two test sessions may ask at once); the second finds the binary once the lock is free.
exec 9>"$dir/.lock"
flock 9
if [[ ! -x $binary ]]; then
    work=$(mktemp -d "$dir/.build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    log=$dir/build.log
    # A static binary (no cgo) without debug information; the module and its dependencies come through the
    # Go module proxy, checked against the checksum database.
    if ! GOBIN=$work CGO_ENABLED=0 GOFLAGS=-buildvcs=false nice "$go" install -trimpath -ldflags='-s -w' \
        "$module/cmd/versitygw@$version" >"$log" 2>&1; then
        echo "s3_server: building versitygw $version failed: $(tail -n 1 "$log") (whole log: $log)" >&2
        exit 1
    fi
    mv "$work/versitygw" "$binary.tmp" && mv "$binary.tmp" "$binary"
fi
echo "$binary"
