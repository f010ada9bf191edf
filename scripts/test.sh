#!/usr/bin/env bash
# The test command: build what the tests need (cached outside the repo) and run them all.
#   scripts/test.sh [pytest args...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$(scripts/venv.sh)"
tests/cluster/build.sh >/dev/null   # kube-apiserver & co., kwok, helm from Go modules (cached)
export LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$venv/bin/python" -m pytest "$@"
