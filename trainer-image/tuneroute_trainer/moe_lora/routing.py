"""Sort (token, expert) pairs by expert once per MoE layer; both projections reuse the result."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Routes:
    perm: torch.Tensor  # [S] position in the flattened (token, k) list of each sorted row
    token: torch.Tensor  # [S] token index of each sorted row
    expert: torch.Tensor  # [S] expert of each sorted row (ascending)
    offsets: torch.Tensor  # [E] int32 cumulative row counts (grouped_mm's `offs`)
    counts: list[int]  # [E] rows per expert, on the host (one sync per layer)
    top_k: int


def sort_routes(top_k_index: torch.Tensor, num_experts: int) -> Routes:
    top_k = top_k_index.shape[-1]
    flat = top_k_index.reshape(-1)
    expert, perm = torch.sort(flat, stable=True)
    counts = torch.bincount(expert, minlength=num_experts)[:num_experts]
    offsets = torch.cumsum(counts, 0).to(torch.int32)
    return Routes(perm=perm, token=perm // top_k, expert=expert, offsets=offsets, counts=counts.tolist(), top_k=top_k)


def combine(rows_out: torch.Tensor, weights: torch.Tensor, routes: Routes, num_tokens: int) -> torch.Tensor:
    """Weight each sorted row by its routing weight and sum back per token (deterministic: no atomics)."""
    weighted = rows_out * weights.reshape(-1)[routes.perm].unsqueeze(-1).to(rows_out.dtype)
    inv = torch.empty_like(routes.perm)
    inv[routes.perm] = torch.arange(routes.perm.numel(), device=routes.perm.device)
    return weighted[inv].view(num_tokens, routes.top_k, -1).sum(dim=1)
