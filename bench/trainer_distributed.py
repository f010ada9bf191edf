#!/usr/bin/env python
"""FSDP2 scaling of the real trainer: 1 rank against N ranks on one small random MoE, same batch per rank.

Each run is the trainer's own command line in a subprocess: `python -m tuneroute_trainer` for one
rank, `python -m tuneroute_trainer.torchrun --standalone --nproc-per-node N` for N (NCCL on GPUs,
gloo on the CPU). The model is a Qwen3-MoE with random weights built here (no hub); the data are
generated text rows long enough to fill every sequence. Printed per run: tokens/s of all ranks and
per rank in the steady state (from the trainer's progress lines, warm-up steps excluded), peak
memory per rank (CUDA allocator on GPUs, resident set on the CPU), and the ratios against 1 rank.
With --parity (default on CUDA) one more 1-rank run takes the N ranks' global batch, and the loss
curves of the two are compared (same data order; bf16 on GPUs, so expect ~1e-2, not 1e-6).

  python bench/trainer_distributed.py                               # CPU: gloo, 2 ranks, tiny MoE
  python bench/trainer_distributed.py --device cuda --ranks 2       # 2 GPUs: NCCL, bf16, small MoE
  python bench/trainer_distributed.py --device cuda --ranks 8 --layers 16
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (hidden, layers, experts, moe intermediate, top-k, sequence length, batch per rank, steps)
PRESETS = {
    "cpu": (128, 2, 8, 64, 2, 128, 2, 14),
    "cuda": (2048, 8, 48, 768, 8, 2048, 4, 24),
}


def log(t0: float, msg: str) -> None:
    print(f"[{time.monotonic() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def build_model(path: Path, hidden: int, layers: int, experts: int, inter: int, top_k: int, dtype: str) -> None:
    import torch
    import transformers as tf

    from tuneroute_testing.trainer_fixtures import char_tokenizer

    heads = max(4, hidden // 128)
    config = tf.Qwen3MoeConfig(
        vocab_size=32768,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        moe_intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 8),
        head_dim=128 if hidden >= 1024 else hidden // heads,
        num_experts=experts,
        num_experts_per_tok=top_k,
        max_position_embeddings=4096,
        router_aux_loss_coef=0.0,  # per-rank aux loss would make --parity meaningless
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = tf.AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(path)
    char_tokenizer().save_pretrained(path)


def write_data(path: Path, rows: int, chars: int) -> None:
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(500)]
    with path.open("w") as f:
        for _ in range(rows):
            text = ""
            while len(text) < chars:
                text += rng.choice(words) + " "
            f.write(json.dumps({"text": text}) + "\n")


def steady_rate(progress: list[dict], skip: int) -> float:
    """Tokens/s between step `skip` and the last step before the end, from the trainer's progress lines.

    Each line carries tokens/s and ETA since training began; elapsed = steps done / step rate."""
    total = progress[-1]["totalSteps"]
    points = []
    for p in progress:
        if skip <= p["step"] < total and p.get("etaSeconds"):
            elapsed = p["step"] * p["etaSeconds"] / (total - p["step"])
            points.append((elapsed, p["tokensPerSecond"] * elapsed))
    (e0, k0), (e1, k1) = points[0], points[-1]
    return (k1 - k0) / (e1 - e0)


def run(t0, name, ranks, cfg, work: Path, device: str) -> dict:
    cfg_path = work / f"{name}.json"
    cfg_path.write_text(json.dumps(cfg))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if device == "cpu":  # share the cores fairly: N ranks get cores / N threads each
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // ranks))
    if ranks == 1:
        cmd = [sys.executable, "-m", "tuneroute_trainer", "--config", str(cfg_path)]
    else:
        cmd = [sys.executable, "-m", "tuneroute_trainer.torchrun", "--standalone", f"--nproc-per-node={ranks}"]
        cmd += ["-m", "tuneroute_trainer", "--config", str(cfg_path)]
    log(t0, f"{name}: {' '.join(cmd[1:4])} ... ({ranks} rank(s), batch {cfg['training']['batchSize']} per rank)")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith('{"event"')]
    progress = [e for e in events if e["event"] == "progress"][:-1]  # the last line repeats the end with the mean
    manifest = json.loads((Path(cfg["output"]["dir"]) / "tuneroute-manifest.json").read_text())
    peaks = [e["peakBytes"] for e in events if e["event"] == "memory"] or [manifest["metrics"]["peakMemoryBytes"]]
    rate = steady_rate(progress, skip=4)
    log(t0, f"{name}: {rate:,.0f} tokens/s, peak {max(peaks) / 2**30:.2f} GiB per rank")
    return {
        "name": name,
        "ranks": ranks,
        "rate": rate,
        "peak": max(peaks),
        "losses": {p["step"]: p["loss"] for p in progress},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--layers", type=int, help="decoder layers (preset otherwise)")
    ap.add_argument("--steps", type=int, help="optimizer steps per run (preset otherwise)")
    ap.add_argument("--parity", action=argparse.BooleanOptionalAction, default=None)
    args = ap.parse_args()
    t0 = time.monotonic()
    hidden, layers, experts, inter, top_k, seq, batch, steps = PRESETS[args.device]
    layers, steps = args.layers or layers, args.steps or steps
    parity = args.parity if args.parity is not None else args.device == "cuda"
    if args.device == "cuda":
        import torch

        have = torch.cuda.device_count()
        if have < args.ranks:
            sys.exit(f"--ranks {args.ranks} needs {args.ranks} GPUs; this machine has {have}")
    dtype = "bfloat16" if args.device == "cuda" else "float32"

    with tempfile.TemporaryDirectory(prefix="tr-bench-dist-") as tmp:
        work = Path(tmp)
        log(t0, f"building a random Qwen3-MoE: hidden {hidden}, {layers} layers, {experts} experts (top-{top_k})")
        build_model(work / "model", hidden, layers, experts, inter, top_k, dtype)
        rows = steps * batch * args.ranks * 2
        write_data(work / "data.jsonl", rows, chars=seq * 2)

        def cfg(name: str, per_rank_batch: int) -> dict:
            return {
                "model": {"path": str(work / "model")},
                "dataset": {"path": str(work / "data.jsonl"), "format": "completion"},
                "lora": {"rank": 16, "alpha": 32},
                "training": {
                    "maxSteps": steps,
                    "batchSize": per_rank_batch,
                    "sequenceLength": seq,
                    "precision": "bf16" if args.device == "cuda" else "fp32",
                    "learningRate": 1e-4,
                    "seed": 0,
                },
                "checkpoint": {"everySteps": 10_000},
                "output": {"dir": str(work / f"out-{name}"), "adapterName": "bench"},
            }

        runs = [run(t0, "1 rank", 1, cfg("one", batch), work, args.device)]
        runs.append(run(t0, f"{args.ranks} ranks", args.ranks, cfg("many", batch), work, args.device))
        if parity:
            runs.append(run(t0, "1 rank, global batch", 1, cfg("parity", batch * args.ranks), work, args.device))

    base = runs[0]
    print(
        f"\n## FSDP2 scaling ({args.device}, {layers} layers, {experts} experts, seq {seq}, batch {batch} per rank)\n"
    )
    if args.device == "cpu":
        print(
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end (shared cores skew CPU figures)\n"
        )
    print("| run | ranks | tokens/s | tokens/s per rank | x 1 rank | peak memory per rank | x 1 rank |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['name']} | {r['ranks']} | {r['rate']:,.0f} | {r['rate'] / r['ranks']:,.0f} | "
            f"{r['rate'] / base['rate']:.2f} | {r['peak'] / 2**30:.2f} GiB | {r['peak'] / base['peak']:.2f} |"
        )
    if parity:
        a, b = runs[1]["losses"], runs[2]["losses"]
        diff = max(abs(a[s] - b[s]) for s in a.keys() & b.keys())
        print(f"\nloss curves, {args.ranks} ranks vs 1 rank with the same global batch: max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
