#!/usr/bin/env bash
# The demo: a local control plane, the Helm chart, the operator, examples/, and a real tiny
# training run whose progress shows in `kubectl get ftj`.   scripts/demo.sh [--down]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export TUNEROUTE_DEMO_DIR="${TUNEROUTE_DEMO_DIR:-/tmp/tuneroute-demo}"
if [ "${1:-}" = "--down" ]; then
  [ -f "$TUNEROUTE_DEMO_DIR/operator.pid" ] && kill "$(cat "$TUNEROUTE_DEMO_DIR/operator.pid")" 2>/dev/null || true
  exec tests/cluster/down.sh "$TUNEROUTE_DEMO_DIR"
fi
venv="$(scripts/venv.sh)"
export LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$venv/bin/python" scripts/demo.py
