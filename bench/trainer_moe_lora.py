#!/usr/bin/env python
"""MoE-LoRA benchmark: one MoE experts block (forward + backward) and a whole-model training step.

Variants, each run in its own subprocess so peak memory is clean, all in the same invocation:
  floor-hf     frozen experts, no LoRA, transformers' grouped_mm experts
  floor        frozen experts, no LoRA, tuneroute's kernel (same GEMMs as `ours` minus LoRA)
               ratios "x floor" are against the faster of the two floors
  ours         PEFT LoRA on the experts through tuneroute's fused kernel (grouped on CPU, triton on CUDA)
  peft-grouped stock PEFT target_parameters + transformers' grouped_mm (the fair baseline)
  peft-eager   stock PEFT + eager per-expert loop (small shapes only: it is slow)
Extra memory = peak during the timed steps minus what was live before them, after one warm-up step
(CPU: VmHWM reset through /proc/self/clear_refs vs VmRSS after malloc_trim; CUDA: the allocator's peak).

  python bench/trainer_moe_lora.py                        # CPU fp32 defaults, prints a markdown table
  python bench/trainer_moe_lora.py --write docs/trainer-benchmark.md
  python bench/trainer_moe_lora.py --device cuda --dtype bf16 --tokens-scale 8
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (experts, hidden, intermediate, top_k, tokens on CPU)
SHAPES = {
    "Qwen3-30B-A3B": (128, 2048, 768, 8, 512),
    "OLMoE": (64, 2048, 1024, 8, 512),
    "Mixtral-8x7B": (8, 4096, 14336, 2, 128),
}
VARIANTS = ["floor-hf", "floor", "ours", "peft-grouped", "peft-eager"]
# whole model: tiny but deep (layers, experts, hidden, moe intermediate, top-k, batch, seq)
WHOLE = dict(layers=4, experts=32, hidden=1024, inter=512, top_k=4, batch=2, seq=256)


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def _release_free_heap() -> None:
    # give freed heap pages back to the OS so the baseline RSS is what is live, not what malloc cached
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class Meter:
    """Time and extra peak memory of a step, on CPU (RSS high-water mark) or CUDA (allocator)."""

    def __init__(self, device):
        import torch

        self.torch, self.cuda = torch, device == "cuda"

    def baseline(self):
        """Call after a warm-up step: one-time initialisation is not the step's memory."""
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            self.base = self.torch.cuda.memory_allocated()
        else:
            _release_free_heap()
            _reset_peak_rss()
            self.base = _status_kb("VmRSS") * 1024

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def extra_peak(self) -> int:
        peak = self.torch.cuda.max_memory_allocated() if self.cuda else _status_kb("VmHWM") * 1024
        return max(peak - self.base, 0)


def _timed(step, steps, meter) -> list[float]:
    """Per-step wall times; the table reports the fastest (robust to other load on a shared machine)."""
    times = []
    for _ in range(steps):
        meter.sync()
        t0 = time.perf_counter()
        step()
        meter.sync()
        times.append(time.perf_counter() - t0)
    return times


def _lora_config(r, targets, modules=None):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=2 * r, target_modules=modules or [], target_parameters=targets)


def block_case(variant, shape, rank, device, dtype_name, steps, tokens_scale):
    import torch
    from peft import inject_adapter_in_model
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeExperts

    from tuneroute_trainer.moe_lora import enable_fused_moe_lora, resolve_kernel
    from tuneroute_trainer.moe_lora.bridge import set_experts_implementation

    e, h, i, k, tokens = SHAPES[shape]
    tokens *= tokens_scale
    dtype = getattr(torch, {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[dtype_name])
    torch.manual_seed(0)
    cfg = Qwen3MoeConfig(hidden_size=h, moe_intermediate_size=i, num_experts=e, num_experts_per_tok=k)
    block = torch.nn.Module()
    block.experts = Qwen3MoeExperts(cfg)
    with torch.no_grad():
        for p in block.experts.parameters():
            p.normal_(0, 0.02)
    block = block.to(device=device, dtype=dtype)
    block.requires_grad_(False)
    kernel = "peft"
    if variant not in ("floor", "floor-hf"):
        # PEFT's default init has B = 0; random B makes the LoRA path do real work in every variant
        lcfg = _lora_config(rank, ["experts.gate_up_proj", "experts.down_proj"])
        lcfg.init_lora_weights = False
        block = inject_adapter_in_model(lcfg, block)
        if variant == "ours":
            kernel = resolve_kernel("auto", device)
            enable_fused_moe_lora(block, kernel)
        else:
            set_experts_implementation(block, "grouped_mm" if variant == "peft-grouped" else "eager")
    elif variant == "floor":
        kernel = resolve_kernel("auto", device)
        enable_fused_moe_lora(block, kernel)  # no LoRA wrappers: the base GEMMs only
    else:
        set_experts_implementation(block, "grouped_mm")
    x = torch.randn(tokens, h, device=device, dtype=dtype, requires_grad=True)
    logits = torch.randn(tokens, e, device=device)
    top_w, top_i = torch.topk(logits.softmax(-1), k, dim=-1)
    top_w = (top_w / top_w.sum(-1, keepdim=True)).to(dtype)
    params = [p for p in block.parameters() if p.requires_grad]

    def step():
        y = block.experts(x, top_i, top_w)
        y.float().pow(2).mean().backward()
        x.grad = None
        for p in params:
            p.grad = None

    meter = Meter(device)
    if variant == "peft-eager":
        steps = 1  # about a minute a step on CPU: warm up on a tenth of the tokens, then one timed step
        x_full = x
        x = x_full[: max(1, tokens // 10)].detach().requires_grad_(True)
        top_i_full, top_w_full = top_i, top_w
        top_i, top_w = top_i[: x.shape[0]], top_w[: x.shape[0]]
        step()
        x, top_i, top_w = x_full, top_i_full, top_w_full
    else:
        step()  # warm-up: lazy init and first touch of every buffer
    meter.baseline()
    times = _timed(step, steps, meter)
    return {
        "ms": 1000 * min(times),
        "median_ms": 1000 * sorted(times)[len(times) // 2],
        "extra_mb": meter.extra_peak() / 2**20,
        "tokens": tokens,
        "kernel": kernel if variant in ("ours", "floor") else variant,
    }


def whole_case(variant, rank, device, dtype_name, steps, tokens_scale):
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, Qwen3MoeConfig

    from tuneroute_trainer.moe_lora import enable_fused_moe_lora, experts_target_parameters, resolve_kernel

    w = WHOLE
    dtype = getattr(torch, {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[dtype_name])
    torch.manual_seed(0)
    cfg = Qwen3MoeConfig(
        vocab_size=4096,
        hidden_size=w["hidden"],
        intermediate_size=4 * w["hidden"],
        moe_intermediate_size=w["inter"],
        num_hidden_layers=w["layers"],
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        num_experts=w["experts"],
        num_experts_per_tok=w["top_k"],
    )
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).to(device)
    lcfg = _lora_config(rank, experts_target_parameters(model), ["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(model, lcfg)
    enable_fused_moe_lora(model, resolve_kernel("auto", device) if variant == "ours" else "peft")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    seq = w["seq"] * tokens_scale
    ids = torch.randint(0, 4096, (w["batch"], seq), device=device)

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    meter = Meter(device)
    step()
    meter.baseline()
    dt = min(_timed(step, steps, meter))
    return {"ms": 1000 * dt, "tokens_per_s": w["batch"] * seq / dt, "extra_mb": meter.extra_peak() / 2**20}


def _estimate_peft_gb(shape, dtype_bytes):
    # PEFT materialises W + ΔW for the whole stack and back-propagates a dense gradient through it
    e, h, i, _, _ = SHAPES[shape]
    weights = e * 3 * h * i * dtype_bytes
    return 4 * weights / 2**30


def _child(args):
    kind, variant, shape = args.child
    if kind == "block":
        res = block_case(variant, shape, args.rank, args.device, args.dtype, args.steps, args.tokens_scale)
    else:
        res = whole_case(variant, args.rank, args.device, args.dtype, args.steps, args.tokens_scale)
    print("RESULT " + json.dumps(res), flush=True)


def _spawn(args, kind, variant, shape="-"):
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        variant,
        shape,
        "--rank",
        str(args.rank),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--steps",
        str(args.steps),
        "--tokens-scale",
        str(args.tokens_scale),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": tail[0][:120]}


def _ok(r) -> bool:
    return r is not None and "error" not in r and "skipped" not in r


def _fmt_ratio(v, base, key):
    if not _ok(v) or not _ok(base) or base[key] <= 0:
        return "-"
    return f"{v[key] / base[key]:.2f}x"


def _best_floor(res):
    floors = [res[f] for f in ("floor", "floor-hf") if _ok(res.get(f))]
    return min(floors, key=lambda r: r["ms"]) if floors else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant (the fastest is reported)")
    p.add_argument("--tokens-scale", type=int, default=1, help="multiply the default token counts")
    p.add_argument("--shapes", nargs="*", default=list(SHAPES))
    p.add_argument("--eager-max-experts", type=int, default=64, help="skip peft-eager above this expert count")
    p.add_argument("--no-whole", action="store_true", help="skip the whole-model step")
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--write", help="also write the markdown report to this file")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args)

    import psutil
    import torch

    avail_gb = (torch.cuda.mem_get_info()[0] if args.device == "cuda" else psutil.virtual_memory().available) / 2**30
    dbytes = 4 if args.dtype == "fp32" else 2
    rows = []
    for shape in args.shapes:
        e, h, i, k, tokens = SHAPES[shape]
        res = {}
        for v in VARIANTS:
            if v.startswith("peft") and _estimate_peft_gb(shape, dbytes) > 0.6 * avail_gb:
                res[v] = {"skipped": f"needs ~{_estimate_peft_gb(shape, dbytes):.0f} GiB"}
            elif v == "peft-eager" and e > args.eager_max_experts:
                res[v] = {"skipped": "eager is too slow at this expert count"}
            else:
                res[v] = _spawn(args, "block", v, shape)
            print(f"# {shape} {v}: {res[v]}", file=sys.stderr, flush=True)
        rows.append((shape, (e, h, i, k, tokens * args.tokens_scale), res))
    whole = {}
    if not args.no_whole:
        for v in ["ours", "peft-grouped"]:
            whole[v] = _spawn(args, "whole", v)
            print(f"# whole {v}: {whole[v]}", file=sys.stderr, flush=True)

    lines = [
        f"MoE-LoRA benchmark: device={args.device} dtype={args.dtype} r={args.rank} steps={args.steps} "
        f"torch={torch.__version__} cpu_threads={torch.get_num_threads()} host={platform.machine()}",
        "",
        "One MoE experts block, forward + backward (fastest of the timed steps; extra peak memory):",
        "",
        "| shape (E, H, I, top-k, tokens) | variant | step ms | x floor | x peft-grouped | extra MiB | "
        "x peft-grouped mem |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for shape, dims, res in rows:
        for v in VARIANTS:
            r = res[v]
            if "error" in r or "skipped" in r:
                lines.append(f"| {shape} {dims} | {v} | {r.get('error') or r.get('skipped')} | | | | |")
                continue
            name = f"{v} ({r['kernel']})" if v in ("ours", "floor") else v
            lines.append(
                f"| {shape} {dims} | {name} | {r['ms']:.1f} | {_fmt_ratio(r, _best_floor(res), 'ms')} | "
                f"{_fmt_ratio(r, res['peft-grouped'], 'ms')} | {r['extra_mb']:.0f} | "
                f"{_fmt_ratio(r, res['peft-grouped'], 'extra_mb')} |"
            )
    if whole:
        w = WHOLE
        lines += [
            "",
            f"Whole-model training step (Qwen3-MoE {w['layers']} layers x {w['experts']} experts, H={w['hidden']}, "
            f"I={w['inter']}, top-{w['top_k']}, batch {w['batch']} x {w['seq'] * args.tokens_scale} tokens, "
            "LoRA on attention + experts, AdamW):",
            "",
            "| variant | step ms | tokens/s | extra peak MiB |",
            "|---|---:|---:|---:|",
        ]
        for v, r in whole.items():
            if "error" in r:
                lines.append(f"| {v} | {r['error']} | | |")
            else:
                lines.append(f"| {v} | {r['ms']:.0f} | {r['tokens_per_s']:.0f} | {r['extra_mb']:.0f} |")
    lines += [
        "",
        "Notes: step time is the fastest of the timed steps (this 2-core machine is shared, so medians are",
        "noisy); x floor is against the faster of floor-hf / floor. Extra MiB is the step's peak minus what",
        "was live before it (activations of the frozen path included, which is why the floor is not 0).",
        "peft-* variants are skipped where PEFT's materialised W + dW would not fit next to other work.",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        Path(args.write).write_text(
            "# Trainer MoE-LoRA benchmark (latest run)\n\nGenerated by `python bench/trainer_moe_lora.py "
            + " ".join(sys.argv[1:])
            + "`.\n\n"
            + report
            + "\n"
        )


if __name__ == "__main__":
    main()
