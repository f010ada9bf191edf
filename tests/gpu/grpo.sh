#!/usr/bin/env bash
# GRPO on a GPU: what CI (no GPU) cannot run. Expert LoRA through the triton MoE-LoRA kernel in both GRPO
# modes, the KL-objective parity of the triton kernel, and the async-vs-sync benchmark on a medium model.
# Run by hand on a GPU machine, from the repository root:
#
#   tests/gpu/fetch_wheels.sh          # here (with PyPI): the pinned packages a bare GPU image lacks, into .whl/
#   tests/gpu/grpo.sh [OUT_DIR]        # there: installs .whl/ if present, runs, writes figures to OUT_DIR
#
# Takes about 5 minutes on one H100/H200. The vLLM rollout path with expert LoRA needs a GPU build of vLLM
# (started with --enable-lora --enable-mixed-moe-lora-format); it is not part of this script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out="${1:-${OUT:-/tmp/tuneroute-grpo-gpu}}"
mkdir -p "$out"
t0=$SECONDS
say() { echo "grpo.sh: $* ($((SECONDS - t0)) s)" >&2; }

if compgen -G ".whl/*.whl" >/dev/null; then
  say "installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/trainer-image:$PWD/tests/support${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1
python3 -c 'import torch, transformers, trl, peft; assert torch.cuda.is_available(), "no GPU"; print("torch", torch.__version__, torch.cuda.get_device_name(0), "transformers", transformers.__version__, "trl", trl.__version__, "peft", peft.__version__)' | tee "$out/versions.txt"

say "GRPO learns with expert LoRA on the triton kernel (sync and async), KL parity of the triton kernel"
python3 -m pytest -p no:cacheprovider -q -o addopts="" \
  tests/trainer/test_grpo_training.py tests/trainer/test_grpo_kernel_parity.py tests/trainer/test_grpo_tree_attention.py \
  2>&1 | tee "$out/pytest.txt"

say "benchmark: async vs sync on a medium model"
python3 bench/grpo_async.py --device cuda --size medium --steps 30 --prompts 8 --length 64 \
  --write "$out/grpo-benchmark-gpu.md" 2>&1 | tee "$out/bench.txt"
say "done: $out"
