#!/usr/bin/env bash
# Stop the local control plane started by up.sh (the processes named by its pid
# files only) and remove its state directory.
#   tests/cluster/down.sh [DIR]   DIR defaults to ${TUNEROUTE_CLUSTER_DIR:-/tmp/tuneroute-cluster}
set -uo pipefail
dir="${1:-${TUNEROUTE_CLUSTER_DIR:-/tmp/tuneroute-cluster}}"
[ -d "$dir" ] || { echo "down.sh: nothing at $dir" >&2; exit 0; }
# The real node first (its pods, containerd, network namespace, cgroups, mounts, sysctls).
[ -f "$dir/node/net.env" ] && "$(dirname "${BASH_SOURCE[0]}")/node.sh" stop "$dir"
pids=()
# Clients first, etcd last, so nothing logs a storm of connection errors.
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  f="$dir/pids/$name.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  fi
done
for ((i = 0; i < 40; i++)); do # up to 10 s for a clean exit, then SIGKILL
  left=()
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
  [ "${#left[@]}" -eq 0 ] && break
  sleep 0.25
done
for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null; done
# Remove only what looks like our state directory.
if [ -d "$dir/pids" ] || [ -f "$dir/kubeconfig" ] || [ -f "$dir/ports" ]; then
  rm -rf "$dir"
fi
echo "down.sh: stopped ${#pids[@]} process(es), removed $dir" >&2
