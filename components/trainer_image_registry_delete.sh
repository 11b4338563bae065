#!/usr/bin/env bash
# Deletes the pushed trainer image from its registry: the delete of components/trainer_image.py's
# registry-delete command, run on `pulumi destroy` and when a new image replaces this one. It deletes the
# manifest by digest with the registry's HTTP API (distribution spec: DELETE /v2/<name>/manifests/<digest>),
# which removes every tag that points at it; the registry frees the layers at its next garbage collection.
# Loopback registries (127.0.0.0/8, localhost) are spoken to over HTTP, as Docker does; every other over HTTPS.
# A registry that refuses deletes (405), or asks for a token login this script does not do, keeps the image:
# the script says so on stderr and succeeds, so that `pulumi destroy` goes on (docs/stack.md says how to
# delete it by hand).
# Environment: IMAGE_DIGEST (host/repository@sha256:...), optional REGISTRY_USERNAME and REGISTRY_PASSWORD.
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
