"""The oracle: a plain per-expert loop with autograd, LoRA applied as x·W_e + s·(x·A_e^T)·Bt_e.

Slow but obviously right; every other backend is tested against it (and it against PEFT)."""

from __future__ import annotations

import torch

from .factors import active_factors


def _project(module, name: str, x: torch.Tensor, e: int, lora) -> torch.Tensor:
    w = getattr(module, name)[e]
    y = x @ w if module.is_transposed else x @ w.t()
    if module.has_bias:
        y = y + getattr(module, f"{name}_bias")[e]
    f = lora.get(name)
    if f is not None:
        y = y + f.scaling * ((x @ f.a[e].t().to(x.dtype)) @ f.bt[e].to(x.dtype))
    return y


def loop_experts_forward(self, hidden_states, top_k_index, top_k_weights):
    lora = active_factors(self)
    out = torch.zeros_like(hidden_states)
    up_name = "gate_up_proj" if self.has_gate else "up_proj"
    for e in range(self.num_experts):
        token, pos = torch.where(top_k_index == e)
        if token.numel() == 0:
            continue
        h = _project(self, up_name, hidden_states[token], e, lora)
        h = self._apply_gate(h) if self.has_gate else self.act_fn(h)
        y = _project(self, "down_proj", h, e, lora)
        if self.has_post_expert_norm:
            y = self.post_expert_norm(y)
        out = out.index_add(0, token, (y * top_k_weights[token, pos, None]).to(out.dtype))
    return out
