"""Read PEFT's ParamWrapper LoRA weights as per-expert factors, without copying the base weight.

PEFT stores, for a 3D expert parameter with E experts: lora_A.weight [r*E, in] (row e*r + k) and
lora_B.weight [out, r*E] (column k*E + e). Whatever the base layout, the update of expert e is
y += s * (x @ A_e^T) @ B_e^T, so we hand out A [E, r, in] and Bt [E, r, out] as autograd views:
the gradients land in PEFT's own parameters and adapters save as usual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LoraFactors:
    a: torch.Tensor  # [E, r, in]
    bt: torch.Tensor  # [E, r, out]
    scaling: float


def wrapper_factors(wrapper) -> LoraFactors | None:
    """Factors of the single active, unmerged adapter of a PEFT ParamWrapper (None when LoRA is off)."""
    if wrapper.disable_adapters or wrapper.merged:
        return None
    active = [name for name in wrapper.active_adapters if name in wrapper.lora_A]
    if not active:
        return None
    if len(active) > 1:
        raise NotImplementedError("fused MoE-LoRA supports one active adapter per layer")
    name = active[0]
    e = wrapper.num_experts
    wa = wrapper.lora_A[name].weight
    wb = wrapper.lora_B[name].weight
    a = wa.view(e, wa.shape[0] // e, wa.shape[1])
    bt = wb.view(wb.shape[0], wb.shape[1] // e, e).permute(2, 1, 0)
    return LoraFactors(a=a, bt=bt, scaling=float(wrapper.scaling[name]))


def active_factors(experts) -> dict[str, LoraFactors]:
    """LoRA factors per parameter name ("gate_up_proj", "down_proj", ...) attached by the bridge."""
    wrappers = getattr(experts, "_tuneroute_wrappers", None) or {}
    out = {}
    for pname, wrapper in wrappers.items():
        f = wrapper_factors(wrapper)
        if f is not None:
            out[pname] = f
    return out
