"""Fused MoE-LoRA: LoRA on transformers' fused 3D expert weights without materialising W + ΔW.

Registered in transformers' experts registry as ``tuneroute_loop`` (per-expert oracle),
``tuneroute_grouped`` (pure torch, the CPU default) and ``tuneroute_triton`` (CUDA kernels);
`enable_fused_moe_lora` points a PEFT model at one of them while keeping PEFT's parameter names.
"""

from .bridge import enable_fused_moe_lora, experts_target_parameters, resolve_kernel
from .experts import IMPLEMENTATIONS, register_implementations

__all__ = [
    "IMPLEMENTATIONS",
    "enable_fused_moe_lora",
    "experts_target_parameters",
    "register_implementations",
    "resolve_kernel",
]
