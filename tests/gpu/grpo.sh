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
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" /tmp/tuneroute-grpo-gpu "$@"

say "GRPO learns with expert LoRA on the triton kernel (sync and async), KL parity of the triton kernel"
python3 -m pytest -p no:cacheprovider -q -o addopts="" \
  tests/trainer/test_grpo_training.py tests/trainer/test_grpo_kernel_parity.py tests/trainer/test_grpo_tree_attention.py \
  2>&1 | tee "$out/pytest.txt"

say "benchmark: async vs sync on a medium model"
python3 bench/grpo_async.py --device cuda --size medium --steps 30 --prompts 8 --length 64 \
  --write "$out/grpo-benchmark-gpu.md" 2>&1 | tee "$out/bench.txt"
say "done: $out"
