#!/usr/bin/env bash
# Deletes the kind cluster $KIND_CLUSTER and the directory its nodes shared ($SHARED_DIR, when set).
kind delete cluster --name "$KIND_CLUSTER"
if [ -n "${SHARED_DIR:-}" ]; then rm -rf "$SHARED_DIR"; fi
