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


def tiny_config(arch: str):
    import transformers as tf

    if arch == "qwen3_moe":
        return tf.Qwen3MoeConfig(
            **COMMON,
            intermediate_size=64,
            moe_intermediate_size=16,
            num_experts=8,
            num_experts_per_tok=2,
            norm_topk_prob=True,
        )
    if arch == "qwen2_moe":
        return tf.Qwen2MoeConfig(
            **COMMON,
            intermediate_size=64,
            moe_intermediate_size=16,
            num_experts=8,
            num_experts_per_tok=2,
            shared_expert_intermediate_size=32,
        )
    if arch == "mixtral":
        return tf.MixtralConfig(**COMMON, intermediate_size=16, num_local_experts=4, num_experts_per_tok=2)
    if arch == "olmoe":
        return tf.OlmoeConfig(**COMMON, intermediate_size=16, num_experts=8, num_experts_per_tok=2)
    if arch == "deepseek_v3":
        return tf.DeepseekV3Config(
            **{**COMMON, "num_key_value_heads": 4},
            intermediate_size=64,
            moe_intermediate_size=16,
            n_routed_experts=8,
            num_experts_per_tok=2,
            n_shared_experts=1,
            n_group=2,
            topk_group=1,
            first_k_dense_replace=1,
            q_lora_rank=16,
            kv_lora_rank=16,
            qk_rope_head_dim=8,
            qk_nope_head_dim=8,
            v_head_dim=8,
        )
    if arch == "glm4_moe":
        return tf.Glm4MoeConfig(
            **COMMON,
            intermediate_size=64,
            moe_intermediate_size=16,
            n_routed_experts=8,
            num_experts_per_tok=2,
            n_shared_experts=1,
            n_group=1,
            topk_group=1,
            first_k_dense_replace=1,
        )
    if arch == "gemma4":
        return tf.Gemma4TextConfig(
            **COMMON,
            intermediate_size=64,
            moe_intermediate_size=16,
            num_experts=8,
            top_k_experts=2,
            enable_moe_block=True,
            num_global_key_value_heads=2,
            global_head_dim=8,
            hidden_size_per_layer_input=0,
        )
    if arch == "gpt_oss":
        return tf.GptOssConfig(
            **COMMON, intermediate_size=16, num_local_experts=4, num_experts_per_tok=2, sliding_window=16
        )
    if arch == "qwen3_dense":  # a dense model: LoRA on attention only, no expert parameters
        return tf.Qwen3Config(**COMMON, intermediate_size=64)
    raise ValueError(arch)


ARCHS = ["qwen3_moe", "qwen2_moe", "mixtral", "olmoe", "deepseek_v3", "glm4_moe", "gemma4", "gpt_oss"]


def tiny_model(arch: str, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch), dtype=torch.float32)
    # random init leaves expert weights tiny; make them matter so parity checks are not trivially met
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "experts" in name:
                p.normal_(0, 0.2)
    return model.eval()
