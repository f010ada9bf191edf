#!/usr/bin/env bash
# Distributed training on GPUs: FSDP2 over NCCL, what CI (no GPU, gloo on the CPU) cannot run. The real
# trainer's command lines (`python -m tuneroute_trainer` for 1 GPU, `python -m tuneroute_trainer.torchrun
# --standalone --nproc-per-node N` for N) on a small random Qwen3-MoE (bf16, 8 layers, 48 experts, seq 2048):
# tokens/s and peak memory per GPU for N GPUs against 1, and the loss curve of N GPUs against 1 GPU with the
# same global batch. Needs at least 2 GPUs on one machine (NCCL refuses two ranks on one GPU).
# Run by hand on a GPU machine, from the repository root:
#
#   tests/gpu/fetch_wheels.sh            # here (with PyPI): the pinned packages a bare GPU image lacks, into .whl/
#   tests/gpu/distributed.sh [OUT_DIR]   # there: installs .whl/ if present, runs, writes figures to OUT_DIR
#
# Not yet run: no machine with two GPUs has been available. Expect a few minutes per N (three trainer runs).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" /tmp/tuneroute-distributed-gpu "$@"
gpus=$(python3 -c 'import torch; print(torch.cuda.device_count())')
if [ "$gpus" -lt 2 ]; then
  say "this machine has $gpus GPU; FSDP2 over NCCL needs 2 or more (one rank per GPU): nothing to measure"
  exit 1
fi

say "FSDP2, 2 GPUs against 1 (and the loss curve against 1 GPU with the same global batch)"
python3 bench/trainer_distributed.py --device cuda --ranks 2 2>&1 | tee "$out/bench-2.txt"
if [ "$gpus" -ge 4 ]; then
  n=$((gpus > 8 ? 8 : gpus))
  say "FSDP2, $n GPUs against 1"
  python3 bench/trainer_distributed.py --device cuda --ranks "$n" 2>&1 | tee "$out/bench-$n.txt"
fi
say "done: $out"
