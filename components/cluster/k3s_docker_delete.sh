#!/usr/bin/env bash
# Removes the cluster but its checkpoints: it runs before a resize too. k3s_docker_lib.sh first.
# Environment: CLUSTER, LABEL.
set -euo pipefail
remove_cluster_objects
