"""Tiny random MoE models of every architecture the fused kernel supports (no hub access)."""

from __future__ import annotations

import torch

COMMON = dict(
    vocab_size=128,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=256,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


# Each architecture's config class and its MoE settings: tiny, but every expert path exercised.
_QWEN_MOE = dict(intermediate_size=64, moe_intermediate_size=16, num_experts=8, num_experts_per_tok=2)
_DEEPSEEK_MOE = dict(
    intermediate_size=64,
    moe_intermediate_size=16,
    n_routed_experts=8,
    num_experts_per_tok=2,
    n_shared_experts=1,
    topk_group=1,
    first_k_dense_replace=1,
)
_MLA = dict(
    num_key_value_heads=4, q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8
)
_GEMMA4 = dict(
    intermediate_size=64,
    moe_intermediate_size=16,
    num_experts=8,
    top_k_experts=2,
    enable_moe_block=True,
    num_global_key_value_heads=2,
    global_head_dim=8,
    hidden_size_per_layer_input=0,
)
CONFIGS: dict[str, tuple[str, dict]] = {
    "qwen3_moe": ("Qwen3MoeConfig", {**_QWEN_MOE, "norm_topk_prob": True}),
    "qwen2_moe": ("Qwen2MoeConfig", {**_QWEN_MOE, "shared_expert_intermediate_size": 32}),
    "mixtral": ("MixtralConfig", dict(intermediate_size=16, num_local_experts=4, num_experts_per_tok=2)),
    "olmoe": ("OlmoeConfig", dict(intermediate_size=16, num_experts=8, num_experts_per_tok=2)),
    "deepseek_v3": ("DeepseekV3Config", {**_DEEPSEEK_MOE, **_MLA, "n_group": 2}),
    "glm4_moe": ("Glm4MoeConfig", {**_DEEPSEEK_MOE, "n_group": 1}),
    "gemma4": ("Gemma4TextConfig", _GEMMA4),
    "gpt_oss": (
        "GptOssConfig",
        dict(intermediate_size=16, num_local_experts=4, num_experts_per_tok=2, sliding_window=16),
    ),
    "qwen3_dense": ("Qwen3Config", dict(intermediate_size=64)),  # dense: LoRA on attention only
}


# Dimensions vLLM's CPU attention accepts (head_dim 32, not 8), for models the tests serve with vLLM.
SERVABLE = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32)


def tiny_config(arch: str, servable: bool = False):
    import transformers as tf

    cls, moe = CONFIGS[arch]
    return getattr(tf, cls)(**{**COMMON, **(SERVABLE if servable else {}), **moe})


ARCHS = ["qwen3_moe", "qwen2_moe", "mixtral", "olmoe", "deepseek_v3", "glm4_moe", "gemma4", "gpt_oss"]


def tiny_model(arch: str, seed: int = 0, servable: bool = False):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, servable), dtype=torch.float32)
    # random init leaves expert weights tiny; make them matter so parity checks are not trivially met
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "experts" in name:
                p.normal_(0, 0.2)
    return model.eval()
