#!/usr/bin/env bash
# The test command: build what the tests need (cached outside the repo), run the lint and type
# checks, then the tests.
#   scripts/test.sh [pytest args...]        (with pytest args: only those tests, no checks)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
t0=$SECONDS
venv="$(scripts/venv.sh)"
export PATH="$venv/bin:$PATH"
echo "test.sh: control-plane binaries (a cold build takes about 10 min)..." >&2
tests/cluster/build.sh >/dev/null   # kube-apiserver & co., kwok, helm from Go modules (cached)
echo "test.sh: environment ready after $((SECONDS - t0)) s" >&2
if [ $# -eq 0 ] || [ "${TUNEROUTE_CHECKS:-}" = 1 ]; then
  echo "test.sh: ruff (lint, format)..." >&2
  ruff check --output-format concise .
  ruff format --check --quiet .
  echo "test.sh: mypy (types; about 20 s cold)..." >&2
  mypy
fi
export LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec python -m pytest "$@"
