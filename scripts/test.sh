#!/usr/bin/env bash
# The test command: build what the tests need (cached outside the repo), run the lint and type
# checks, then the tests.
#   scripts/test.sh [pytest args...]        (with pytest args: only those tests, no checks, one process)
# The full run builds the three images first, beside the Go build (one is mostly I/O, the
# other CPU); a partial run builds the images its tests need when they start.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/lib.sh
t0=$SECONDS
venv="$(scripts/venv.sh)"
export PATH="$venv/bin:$PATH"
images=
if [ $# -eq 0 ] || [ "${TUNEROUTE_IMAGES:-}" = 1 ]; then
  scripts/images.sh build operator router trainer >/dev/null &
  images=$!
fi
echo "test.sh: cluster binaries (a cold build takes about 15 min)..." >&2
tests/cluster/build.sh >/dev/null   # kube-apiserver & co., kubelet, CoreDNS, kwok, helm from Go modules (cached)
if [ -n "$images" ]; then
  echo "test.sh: waiting for the image builds..." >&2
  wait "$images"
fi
echo "test.sh: environment ready after $(fmt_seconds $((SECONDS - t0)))" >&2
if [ $# -eq 0 ] || [ "${TUNEROUTE_CHECKS:-}" = 1 ]; then
  echo "test.sh: ruff (lint, format)..." >&2
  ruff check --output-format concise .
  ruff format --check --quiet .
  echo "test.sh: mypy (types; about 20 s cold)..." >&2
  mypy
  mypy scripts/*.py bench/*.py  # the scripts users run: files, not packages, so checked on their own
fi
export LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The full run uses two workers, each with a cluster of its own: each runs one group of cluster
# tests (tuneroute_testing/test_groups.py) and, around it, the in-process tests.
# TUNEROUTE_TEST_WORKERS=0 runs everything in this process, on one cluster.
workers="${TUNEROUTE_TEST_WORKERS:-$([ $# -eq 0 ] && echo 2 || echo 0)}"
parallel=()
[ "$workers" = 0 ] || parallel=(-n "$workers" --dist loadgroup)
exec python -m pytest "${parallel[@]}" "$@"
