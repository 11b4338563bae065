#!/usr/bin/env bash
# Deletes the pushed IMAGE_DIGEST's manifest (optional REGISTRY_USERNAME/PASSWORD); a registry that
# refuses keeps it, said on stderr, exit 0. upstream: opencontainers/distribution-spec spec.md @ v1.1.0
set -euo pipefail
host=${IMAGE_DIGEST%%/*}
rest=${IMAGE_DIGEST#*/}
repository=${rest%@*}
digest=${rest#*@}
case $host in
localhost | localhost:* | 127.*) scheme=http ;;
*) scheme=https ;;
esac
url="$scheme://$host/v2/$repository/manifests/$digest"
# The login reaches curl on stdin (its config syntax), never on its command line.
config=""
if [ -n "${REGISTRY_USERNAME:-}" ]; then
    login="$REGISTRY_USERNAME:${REGISTRY_PASSWORD:-}"
    login=${login//\\/\\\\}
    config="user = \"${login//\"/\\\"}\""
fi
status=$(printf '%s\n' "$config" | curl -sS -K - -o /dev/null -w '%{http_code}' -X DELETE \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' \
    "$url") || status=000
case $status in
202 | 200 | 404) ;;
*) echo "trainstack: the registry kept $IMAGE_DIGEST (DELETE $url answered $status); delete it there by hand" >&2 ;;
esac
