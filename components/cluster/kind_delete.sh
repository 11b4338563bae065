#!/usr/bin/env bash
# Deletes the kind cluster $KIND_CLUSTER. It runs at destroy and before a replacement (any change of the
# config, a resize included), which must keep the checkpoints: the shared directory is kind_shared_delete.sh's,
# run at destroy only.
kind delete cluster --name "$KIND_CLUSTER"
