# shellcheck shell=bash
# Loads the image archive ARCHIVE (trainer_image_archive.sh, put first) into every node of the kind cluster
# KIND_CLUSTER. An archive, because `kind load docker-image` fails with Docker's containerd image store
# (kubernetes-sigs/kind#3795).
kind load image-archive "$ARCHIVE" --name "$KIND_CLUSTER" >&2
