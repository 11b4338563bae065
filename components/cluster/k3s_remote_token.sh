#!/bin/sh
# On the k3s server: prints the node token the agents join with. POSIX sh; needs components/root.sh first.
as_root cat /var/lib/rancher/k3s/server/node-token
