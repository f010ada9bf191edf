"""Experts implementations registered in transformers' registry (ALL_EXPERTS_FUNCTIONS)."""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import torch

from ..config import FusedKernel
from .factors import active_factors
from .grouped import grouped_linear
from .loop import loop_experts_forward
from .routing import combine, sort_routes


def _weight_kn(module, name: str) -> torch.Tensor:
    """The stored weight as a [E, in, out] view (no copy)."""
    w = getattr(module, name)
    return w if module.is_transposed else w.transpose(1, 2)


def _fused_forward(linear: Callable) -> Callable:
    def forward(self, hidden_states, top_k_index, top_k_weights):
        lora = active_factors(self)
        routes = sort_routes(top_k_index, self.num_experts)
        up_name = "gate_up_proj" if self.has_gate else "up_proj"
        h = linear(hidden_states, routes.token, _weight_kn(self, up_name), lora.get(up_name), routes)
        if self.has_bias:
            h = h + getattr(self, f"{up_name}_bias")[routes.expert]
        h = self._apply_gate(h) if self.has_gate else self.act_fn(h)
        y = linear(h, None, _weight_kn(self, "down_proj"), lora.get("down_proj"), routes)
        if self.has_bias:
            y = y + self.down_proj_bias[routes.expert]
        if self.has_post_expert_norm:
            y = self.post_expert_norm(y)
        return combine(y, top_k_weights, routes, hidden_states.shape[0]).to(hidden_states.dtype)

    return forward


def _triton_linear(*args):
    from .triton_ops import triton_linear  # triton is imported only when this backend runs

    return triton_linear(*args)


def registry_name(kernel: FusedKernel) -> str:
    """The name a kernel is registered under in transformers' experts registry."""
    return f"tuneroute_{kernel}"


# The code of each kernel the config names (config.FusedKernel is the one list of names).
_FORWARDS: dict[FusedKernel, Callable] = {
    "loop": loop_experts_forward,
    "grouped": _fused_forward(grouped_linear),
    "triton": _fused_forward(_triton_linear),
}
IMPLEMENTATIONS: dict[str, Callable] = {registry_name(k): _FORWARDS[k] for k in get_args(FusedKernel)}


def register_implementations() -> None:
    from transformers.integrations.moe import ExpertsInterface

    for name, fn in IMPLEMENTATIONS.items():
        ExpertsInterface.register(name, fn)
