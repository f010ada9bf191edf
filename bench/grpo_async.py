#!/usr/bin/env python
"""GRPO: asynchronous vs synchronous rollouts on the same tiny random MoE model, config and step budget.

Each mode runs tuneroute's real GRPO trainer (trl GRPOTrainer for sync, trl AsyncGRPOTrainer + tuneroute's
rollout worker for async) from a fresh adapter; a run's clock starts at trainer.train() (model loading and
the rollout engine's start-up are not in it). Figures per mode:

  steps/s            optimiser steps per second of training wall time
  rollout tok/s      completion tokens trained on, per second of training wall time
  gen tok/s          the engine's speed while it generates (sync: generation is on the critical path)
  reward             mean over the first and last five steps; the full curve is printed

The reward is a format reward (the completion contains a character the untrained model writes in about a fifth
of its completions), so its rise shows both modes learn, and whether staleness costs anything.

Engines:
  transformers  generation in the training process (async: a background thread on a private model copy);
                CPU runs use one torch thread per busy thread (sync also runs with two, the fair baseline)
  vllm          a vLLM server (started here from scripts/vllm-venv.sh unless --vllm-url); attention-only LoRA on
                the CPU build, since vLLM 0.32 has no CPU MoE-LoRA kernel

  python bench/grpo_async.py                                   # CPU, transformers engine
  python bench/grpo_async.py --engine vllm --write docs/grpo-benchmark.md
  python bench/grpo_async.py --device cuda --size medium       # on a GPU (transformers engine, triton kernel)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from tuneroute_testing.serving import ATTENTION, rollout_server

# tiny random Qwen3-MoE shapes: hidden, layers, experts, top-k, moe intermediate, heads, kv heads, head_dim
SIZES = {
    "small": (128, 2, 8, 2, 32, 4, 2, 32),
    "medium": (1024, 8, 32, 4, 512, 16, 4, 64),
}


T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def build_model(root: Path, size: str) -> Path:
    import torch
    import transformers as tf

    from tuneroute_testing.tiny_models import COMMON
    from tuneroute_testing.trainer_fixtures import char_tokenizer

    hidden, layers, experts, top_k, inter, heads, kv, head_dim = SIZES[size]
    dims = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv)
    config = tf.Qwen3MoeConfig(
        **{**COMMON, **dims, "head_dim": head_dim},
        intermediate_size=inter,
        moe_intermediate_size=inter,
        num_experts=experts,
        num_experts_per_tok=top_k,
        norm_topk_prob=True,
    )
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "experts" in name:
                p.normal_(0, 0.2)
        model.lm_head.weight.normal_(0, 0.5)  # lets the policy concentrate its mass (see test_grpo_training)
    model.save_pretrained(root / "model")
    char_tokenizer().save_pretrained(root / "model")
    rows = [{"prompt": f"say {i}:", "answer": str(i)} for i in range(256)]
    (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "model"


def pick_target(model_dir: Path, length: int) -> tuple[str, float]:
    """The character whose presence rate in the untrained model's completions is closest to 0.2."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    enc = tok([f"say {i}:" for i in range(16)], return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, top_k=0, max_new_tokens=length, num_return_sequences=8)
    texts = tok.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    counts = collections.Counter(ch for t in texts for ch in set(t) if ch.isalnum())
    ch, n = min(counts.items(), key=lambda kv: (abs(kv[1] / len(texts) - 0.2), kv[0]))
    return ch, n / len(texts)


def config(args, root: Path, mode: str, target: str, url: str | None) -> dict:
    rollouts: dict[str, object] = {"engine": "transformers"}
    if url:
        rollouts = {"engine": "vllm", "vllm": {"url": url, "adapterDir": str(root / "adapters")}}
    return {
        "model": {"path": str(root / "model")},
        "dataset": {"path": str(root / "prompts.jsonl"), "format": "completion"},
        "method": "grpo",
        "lora": {"rank": 8, "alpha": 16, "targetModules": ATTENTION, "experts": args.engine == "transformers"},
        "training": {
            "maxSteps": args.steps,
            "learningRate": args.lr,
            "batchSize": args.prompts,
            "precision": "bf16" if args.device == "cuda" else "fp32",
            "seed": 0,
        },
        "checkpoint": {"everySteps": 100000},
        "output": {"dir": str(root / f"out-{mode}"), "adapterName": "bench"},
        "grpo": {
            "generations": args.generations,
            "maxCompletionLength": args.length,
            "async": mode == "async",
            "maxStaleness": args.staleness,
            "rollouts": rollouts,
            "rewards": [{"name": "format", "regex": {"pattern": target}}],
        },
    }


def run_mode(args, root: Path, mode: str, target: str, url: str | None, threads: int) -> dict:
    import torch

    from tuneroute_trainer.config import TrainerConfig
    from tuneroute_trainer.grpo.trainers import build
    from tuneroute_trainer.modeling import load_model_config, load_tokenizer
    from tuneroute_trainer.train import _grpo_prompts

    torch.set_num_threads(threads)
    cfg = TrainerConfig.model_validate(config(args, root, mode, target, url))
    tokenizer = load_tokenizer(cfg.model)
    run = build(cfg, load_model_config(cfg.model), tokenizer, _grpo_prompts(cfg), root / f"ckpt-{mode}", [])
    from transformers.trainer_callback import PrinterCallback

    run.trainer.remove_callback(PrinterCallback)
    t0 = time.monotonic()
    try:
        run.trainer.train()
    finally:
        run.close()
    wall = time.monotonic() - t0
    steps = [h for h in run.trainer.state.log_history if "reward" in h]
    completions = args.prompts * args.generations
    tokens = sum(h["completions/mean_length"] * completions for h in steps)
    gen_tps = [h["rollout/tokens_per_second"] for h in steps if h.get("rollout/tokens_per_second")]
    return {
        "mode": mode,
        "threads": threads,
        "steps": len(steps),
        "wall_s": round(wall, 2),
        "steps_per_s": round(len(steps) / wall, 3),
        "rollout_tok_s": round(tokens / wall, 1),
        "gen_tok_s": round(sum(gen_tps) / len(gen_tps), 1) if gen_tps else None,
        "reward_first5": round(sum(h["reward"] for h in steps[:5]) / 5, 3),
        "reward_last5": round(sum(h["reward"] for h in steps[-5:]) / 5, 3),
        "rewards": [round(h["reward"], 3) for h in steps],
    }


def table(results: list[dict]) -> str:
    rows = [
        "| mode | torch threads | steps | wall (s) | steps/s | rollout tok/s | gen tok/s | reward first 5 | last 5 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['mode']} | {r['threads']} | {r['steps']} | {r['wall_s']} | {r['steps_per_s']} | "
            f"{r['rollout_tok_s']} | {r['gen_tok_s']} | {r['reward_first5']} | {r['reward_last5']} |"
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    p.add_argument(
        "--vllm-url", help="use this vLLM server (serving the bench model as 'base') instead of starting one"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--size", choices=list(SIZES), default="small")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--length", type=int, default=32, help="max completion tokens")
    p.add_argument("--staleness", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--repeats", type=int, default=1, help="alternate sync/async runs this many times")
    p.add_argument("--write", type=Path, help="also write the report (markdown) here")
    args = p.parse_args()
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""

    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as tmp:
        root = Path(tmp)
        log(f"building the {args.size} model")
        model_dir = build_model(root, args.size)
        target, rate = pick_target(model_dir, args.length)
        log(f"format reward: completion contains {target!r} (untrained rate {rate:.2f})")
        server, url = None, args.vllm_url if args.engine == "vllm" else None
        if args.engine == "vllm" and not url:
            server = rollout_server(model_dir, root / "vllm.log").start(timeout=900, progress=log)
            url = server.root
        if url:
            log(f"vLLM at {url}")
        # sync at 1 and (CPU, transformers) 2 torch threads; async at 1 (it keeps two threads busy itself)
        plan = [("sync", 1), ("async", 1)]
        if args.device == "cpu" and args.engine == "transformers":
            plan.insert(1, ("sync", 2))
        results = []
        try:
            for rep in range(args.repeats):
                for mode, threads in plan:
                    log(f"run {rep + 1}/{args.repeats}: {mode}, {threads} thread(s), {args.steps} steps")
                    r = run_mode(args, root, mode, target, url, threads)
                    log(f"  {r['steps_per_s']} steps/s, reward {r['reward_first5']} -> {r['reward_last5']}")
                    results.append(r)
        finally:
            if server is not None:
                server.stop()

    def best(mode):
        rs = [r for r in results if r["mode"] == mode]
        return max(rs, key=lambda r: r["steps_per_s"])

    sync, asyn = best("sync"), best("async")
    ratio = asyn["steps_per_s"] / sync["steps_per_s"]
    import torch
    import trl

    device = (
        torch.cuda.get_device_name(0)
        if args.device == "cuda"
        else f"{platform.processor() or 'CPU'}, {os.cpu_count()} cores"
    )
    lines = [
        f"# GRPO: async vs sync ({args.engine} rollouts, {args.device})",
        "",
        f"`python bench/grpo_async.py {' '.join(sys.argv[1:])}` on {device}; trl {trl.__version__}, torch {torch.__version__}.",
        f"Model: tiny random Qwen3-MoE `{args.size}` {SIZES[args.size]} (hidden, layers, experts, top-k, moe inter, heads, "
        f"kv heads, head dim); LoRA r=8 on attention{' and experts (fused kernel)' if args.engine == 'transformers' else ''}; "
        f"{args.steps} steps of {args.prompts} prompts x {args.generations} completions of up to {args.length} tokens; "
        f"async maxStaleness {args.staleness}; format reward: contains {target!r} (untrained rate {rate:.2f}).",
        "",
        table(results),
        "",
        f"**Async / sync speed: {ratio:.2f}x steps/s** (best run of each mode; sync's best is {sync['threads']} thread(s)).",
        "",
        "Reward per step (best run of each mode):",
        "",
        f"- sync:  {' '.join(f'{x:.2f}' for x in sync['rewards'])}",
        f"- async: {' '.join(f'{x:.2f}' for x in asyn['rewards'])}",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        args.write.write_text(report)
        log(f"wrote {args.write}")


if __name__ == "__main__":
    main()
