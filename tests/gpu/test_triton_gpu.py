"""The Triton MoE-LoRA kernels compiled for a GPU, with its block sizes (64x64x32, against the
interpreter's 16x16x16 on the CPU), and `kernel: auto` picking them in a real training run.

The shapes span several tiles in every dimension with ragged edges (masks), empty experts and
ranks below and at the rank block; the tolerances are the CPU parity test's."""

from __future__ import annotations

import json

import pytest
import torch

from tuneroute_testing.moe_oracle import check_linear_op
from tuneroute_testing.trainer_fixtures import save_tiny_model, trainer_config, write_config

pytestmark = pytest.mark.gpu

SHAPE = dict(experts=8, tokens=300, k=2, hidden=200, out=150)


def test_the_gpu_block_sizes_are_in_use():
    from tuneroute_trainer.moe_lora import triton_ops

    assert not triton_ops.INTERPRET and (triton_ops.BLOCK_M, triton_ops.BLOCK_N, triton_ops.BLOCK_K) == (64, 64, 32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("r", [5, 16])
def test_triton_op_matches_the_oracle_across_many_tiles(dtype, r):
    check_linear_op("triton", dtype, r, **SHAPE)


def test_auto_trains_with_the_triton_kernel_on_the_gpu(tmp_path, capsys):
    from tuneroute_trainer.cli import main

    model = save_tiny_model("qwen3_moe", tmp_path / "model")
    out = tmp_path / "out"
    cfg = trainer_config(model, out, training={"maxSteps": 10, "precision": "bf16"}, lora={"kernel": "auto"})
    assert main(["--config", str(write_config(tmp_path / "config.json", cfg))]) == 0
    progress = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith('{"event": "progress"')]
    manifest = json.loads((out / "tuneroute-manifest.json").read_text())
    assert manifest["lora"]["expertsImplementation"] == "tuneroute_triton"
    assert manifest["metrics"]["device"].startswith("cuda")
    losses = [p["loss"] for p in progress[:10]]
    assert all(x == x for x in losses) and sum(losses[-3:]) < sum(losses[:3])  # finite, and learning
