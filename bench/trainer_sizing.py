#!/usr/bin/env python
"""GPU memory per rank of a FineTuneJob, computed from the model's architecture (no weights needed).

The model is built on the meta device from its published config and wrapped with PEFT exactly as the
trainer does (LoRA on q/k/v/o and on the fused experts), so parameter counts are exact. Per GPU, with
R = nodes x gpus ranks sharing the model (FSDP2, one unit per decoder layer):

  frozen base      bf16 weights / R
  LoRA state       16 bytes per LoRA parameter / R (fp32 weight, gradient, AdamW's two moments)
  FSDP working set R > 1 only: two decoder layers gathered whole (the one computing and the next,
                   prefetched), one layer's LoRA gradients whole, and the root unit (embeddings,
                   LM head) whole, which FSDP2 keeps gathered from forward to backward
  activations      with activation checkpointing (trl's default): every layer's input kept
                   (tokens x hidden, bf16), one layer recomputed at a time (attention and routed MoE
                   tensors of that layer, twice for their gradients); trl's chunked LM head keeps
                   the logits to one tile. This part is a model of the code, not a measurement.

Not included: the CUDA context and NCCL buffers (about 1-3 GiB), allocator fragmentation. Rank 0
also needs host memory for the whole bf16 model while it hands out the shards (the CPU column).

  python bench/trainer_sizing.py                       # shipped defaults: r 16, batch 1, seq 2048
  python bench/trainer_sizing.py --batch 4 --seq 4096  # examples/10-finetunejob-qwen3-moe.yaml
"""

from __future__ import annotations

import argparse
import warnings

GiB = 2**30

# Published architectures (config.json of each hub repository), enough to build them on meta.
MODELS = {
    "Qwen3-30B-A3B": (
        "Qwen3MoeConfig",
        dict(
            vocab_size=151936,
            hidden_size=2048,
            intermediate_size=6144,
            moe_intermediate_size=768,
            num_hidden_layers=48,
            num_attention_heads=32,
            num_key_value_heads=4,
            head_dim=128,
            num_experts=128,
            num_experts_per_tok=8,
            tie_word_embeddings=False,
        ),
    ),
    "Qwen3-235B-A22B": (
        "Qwen3MoeConfig",
        dict(
            vocab_size=151936,
            hidden_size=4096,
            intermediate_size=12288,
            moe_intermediate_size=1536,
            num_hidden_layers=94,
            num_attention_heads=64,
            num_key_value_heads=4,
            head_dim=128,
            num_experts=128,
            num_experts_per_tok=8,
            tie_word_embeddings=False,
        ),
    ),
    "DeepSeek-V3": (
        "DeepseekV3Config",
        dict(
            vocab_size=129280,
            hidden_size=7168,
            intermediate_size=18432,
            moe_intermediate_size=2048,
            num_hidden_layers=61,
            num_attention_heads=128,
            num_key_value_heads=128,
            n_shared_experts=1,
            n_routed_experts=256,
            num_experts_per_tok=8,
            n_group=8,
            topk_group=4,
            first_k_dense_replace=3,
            q_lora_rank=1536,
            kv_lora_rank=512,
            qk_rope_head_dim=64,
            qk_nope_head_dim=128,
            v_head_dim=128,
        ),
    ),
}
LAYOUTS = [(1, 1), (1, 8), (2, 8), (4, 8), (8, 8)]  # (nodes, gpus per node)


def measure(name: str, rank: int) -> dict:
    import torch
    import transformers as tf
    from peft import LoraConfig, get_peft_model

    from tuneroute_trainer.moe_lora import experts_target_parameters

    cls, kw = MODELS[name]
    config = getattr(tf, cls)(**kw)
    with torch.device("meta"):
        base = tf.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    attn = ["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"] if cls.startswith("Deepseek") else []
    lora = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=attn or ["q_proj", "k_proj", "v_proj", "o_proj"],
        target_parameters=experts_target_parameters(base),
    )
    model = get_peft_model(base, lora)  # LoRA weights in fp32 over the bf16 base, as in training

    def nbytes(params) -> int:
        return sum(p.numel() * p.element_size() for p in params)

    layers = [m for m in base.modules() if type(m).__name__ in set(base._no_split_modules)]
    in_layers = {id(p) for layer in layers for p in layer.parameters()}
    biggest = max(layers, key=lambda m: nbytes(m.parameters()))
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    c = config
    head_dim = getattr(c, "head_dim", None) or getattr(c, "qk_nope_head_dim", 0) + getattr(c, "qk_rope_head_dim", 0)
    heads_q = c.num_attention_heads * head_dim
    experts = getattr(c, "num_experts", None) or c.n_routed_experts
    return {
        "params": sum(p.numel() for p in params if not p.requires_grad),
        "frozen": nbytes(p for p in params if not p.requires_grad),
        "lora": sum(p.numel() for p in trainable),
        "layer": nbytes(biggest.parameters()),
        "layer_lora": sum(p.numel() for p in biggest.parameters() if p.requires_grad),
        "root": nbytes(p for p in params if id(p) not in in_layers),
        "layers": len(layers),
        "hidden": c.hidden_size,
        "heads_q": heads_q,
        "heads_kv": c.num_key_value_heads * (getattr(c, "head_dim", None) or getattr(c, "v_head_dim", 128)),
        "inter": c.moe_intermediate_size,
        "top_k": c.num_experts_per_tok,
        "experts": experts,
        "rank": rank,
    }


def per_gpu(m: dict, ranks: int, tokens: int) -> dict[str, float]:
    h, q, kv, i, k, r = m["hidden"], m["heads_q"], m["heads_kv"], m["inter"], m["top_k"], m["rank"]
    saved = m["layers"] * tokens * h * 2
    layer_acts = tokens * (2 * (4 * h + 2 * q + 2 * kv) + 2 * (k * (2 * h + 3 * i + 2 * r) + h) + 4 * m["experts"])
    out = {
        "frozen": m["frozen"] / ranks,
        "lora": 16 * m["lora"] / ranks,
        "fsdp": 0.0 if ranks == 1 else 2 * m["layer"] + 4 * m["layer_lora"] + m["root"],
        "acts": saved + 2 * layer_acts,
    }
    out["total"] = sum(out.values())
    return {k: v / GiB for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rank", type=int, default=16, help="lora.rank (default: the shipped default)")
    ap.add_argument("--batch", type=int, default=1, help="training.batchSize per rank")
    ap.add_argument("--seq", type=int, default=2048, help="training.sequenceLength")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    tokens = args.batch * args.seq
    print(f"## GPU memory per rank: LoRA r={args.rank} (q, k, v, o and experts), bf16, ", end="")
    print(f"batch {args.batch} x {args.seq} tokens per rank, activation checkpointing\n")
    for name in args.models:
        m = measure(name, args.rank)
        print(
            f"### {name}: {m['params'] / 1e9:.1f}B frozen parameters ({m['frozen'] / GiB:.1f} GiB bf16), "
            f"{m['lora'] / 1e6:.0f}M LoRA parameters; rank 0 host memory while loading: "
            f"{m['frozen'] / GiB:.0f} GiB\n"
        )
        print("| nodes x gpus | frozen base | LoRA + AdamW | FSDP working set | activations | total per GPU |")
        print("|---|---:|---:|---:|---:|---:|")
        for nodes, gpus in LAYOUTS:
            g = per_gpu(m, nodes * gpus, tokens)
            print(
                f"| {nodes} x {gpus} | {g['frozen']:.1f} | {g['lora']:.1f} | {g['fsdp']:.1f} | "
                f"{g['acts']:.1f} | **{g['total']:.1f} GiB** |"
            )
        print()


if __name__ == "__main__":
    main()
