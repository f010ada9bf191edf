"""Point a PEFT model's expert ParamWrappers at our experts implementation.

PEFT's ParamWrapper.forward parametrizes the expert weight as W + ΔW for the whole stack; the
fused wrapper skips that and lets the registered experts forward read the LoRA factors directly.
Module tree and parameter names are untouched, so save/load stays stock PEFT.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..config import FusedKernel, Kernel
from .experts import IMPLEMENTATIONS, register_implementations, registry_name

_EXPERT_PARAMS = ("gate_up_proj", "up_proj", "down_proj")


def is_experts_module(module: nn.Module) -> bool:
    # classes decorated with transformers' @use_experts_implementation get these attributes
    return hasattr(module, "has_gate") and hasattr(module, "is_transposed") and hasattr(module, "num_experts")


def experts_target_parameters(model: nn.Module) -> list[str]:
    """PEFT target_parameters for every fused-experts module of `model` (empty for dense models)."""
    names = set()
    for mname, module in model.named_modules():
        if is_experts_module(module):
            leaf = mname.rsplit(".", 1)[-1]
            for p in _EXPERT_PARAMS:
                param = getattr(module, p, None)
                if isinstance(param, nn.Parameter) and param.dim() == 3:
                    names.add(f"{leaf}.{p}")
    return sorted(names)


def resolve_kernel(kernel: Kernel, device: torch.device | str) -> FusedKernel | Literal["peft"]:
    """`auto` -> triton on CUDA when triton imports, grouped otherwise."""
    if kernel != "auto":
        return kernel
    if torch.device(device).type == "cuda":
        try:
            import triton  # noqa: F401

            return "triton"
        except ImportError:
            pass
    return "grouped"


def _fused_wrapper_class(base: type[nn.Module]) -> type[nn.Module]:
    def forward(self, x, *args, **kwargs):
        self._check_forward_args(x, *args, **kwargs)
        kwargs.pop("adapter_names", None)
        experts = self.get_base_layer()
        if experts.config._experts_implementation not in IMPLEMENTATIONS:
            return base.forward(self, x, *args, **kwargs)
        if self.disable_adapters and self.merged:
            self.unmerge()
        # factors are read inside the experts forward; skipping _activate_lora skips W + ΔW
        return experts(x, *args, **kwargs)

    # same class name: PEFT recognises wrappers by name when adding a second adapter (trl's DPO "ref")
    return type(base.__name__, (base,), {"forward": forward, "__module__": __name__, "_tuneroute_fused": True})


_FUSED_CLASSES: dict[type, type] = {}


def enable_fused_moe_lora(model: nn.Module, kernel: FusedKernel | Literal["peft"]) -> str:
    """Switch `model` (a PeftModel or plain transformers model) to our experts kernel; returns its name.

    kernel "peft" keeps the stock path (transformers' grouped_mm experts with PEFT's merged weight).
    """
    from peft.tuners.lora.layer import ParamWrapper

    base_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    if kernel == "peft":
        set_experts_implementation(base_model, "grouped_mm")
        return "grouped_mm"
    register_implementations()
    name = registry_name(kernel)
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown MoE-LoRA kernel {kernel!r}")
    for module in base_model.modules():
        if isinstance(module, ParamWrapper):
            cls = type(module)
            if not getattr(cls, "_tuneroute_fused", False):
                _FUSED_CLASSES.setdefault(cls, _fused_wrapper_class(cls))
                module.__class__ = _FUSED_CLASSES[cls]
            experts = module.get_base_layer()
            if not hasattr(experts, "_tuneroute_wrappers"):
                experts._tuneroute_wrappers = {}
            experts._tuneroute_wrappers[module.parameter_name] = module
    set_experts_implementation(base_model, name)
    return name


def set_experts_implementation(model: nn.Module, name: str) -> None:
    """transformers' setter on a PreTrainedModel; on a bare module (benchmarks) set each experts' config."""
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation(name)
        return
    for module in model.modules():
        if is_experts_module(module):
            module.config._experts_implementation = name
