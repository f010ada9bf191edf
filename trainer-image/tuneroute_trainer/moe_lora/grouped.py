"""Pure-torch grouped MoE-LoRA linear: y = x·W_e + s·(x·A_e^T)·Bt_e on expert-sorted rows.

One autograd function: the frozen W gets no gradient (unless it asks for one), A and Bt get
theirs from the rank-r intermediate, and W + ΔW is never formed.
"""

from __future__ import annotations

import torch

from .factors import LoraFactors
from .routing import Routes


def _aligned(t: torch.Tensor) -> bool:
    es = t.element_size()
    return t.data_ptr() % 16 == 0 and all(s == 1 or (s * es) % 16 == 0 for s in t.stride())


def gmm(x: torch.Tensor, w: torch.Tensor, routes: Routes) -> torch.Tensor:
    """x [S, K] (rows sorted by expert) times w [E, K, N] per expert -> [S, N]."""
    if hasattr(torch.nn.functional, "grouped_mm") and _aligned(x) and _aligned(w) and x.dtype == w.dtype:
        try:
            return torch.nn.functional.grouped_mm(x, w, offs=routes.offsets)
        except RuntimeError:
            pass  # shape/stride/dtype the kernel refuses: the loop below is always right
    out = x.new_zeros(x.shape[0], w.shape[-1])
    start = 0
    for e, n in enumerate(routes.counts):
        if n:
            torch.mm(x[start : start + n], w[e], out=out[start : start + n])
        start += n
    return out


def gmm_wgrad(a: torch.Tensor, b: torch.Tensor, routes: Routes) -> torch.Tensor:
    """Per-expert a_e^T b_e for a [S, M], b [S, N] sorted by expert -> [E, M, N]."""
    at = a.t()
    if hasattr(torch.nn.functional, "grouped_mm") and _aligned(at) and _aligned(b) and a.dtype == b.dtype:
        try:
            out = torch.nn.functional.grouped_mm(at, b, offs=routes.offsets)
            empty = [e for e, n in enumerate(routes.counts) if n == 0]
            if empty:
                out[empty] = 0  # do not rely on the kernel writing zeros for empty groups
            return out
        except RuntimeError:
            pass
    out = a.new_zeros(len(routes.counts), a.shape[1], b.shape[1])
    start = 0
    for e, n in enumerate(routes.counts):
        if n:
            torch.mm(a[start : start + n].t(), b[start : start + n], out=out[e])
        start += n
    return out


class GroupedLoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_kn, a, bt, scaling, routes):
        # x [S, K] sorted rows; w_kn [E, K, N] (a view of the stored weight); a [E, r, K]; bt [E, r, N]
        y = gmm(x, w_kn, routes)
        u = None
        if a is not None:
            a_ = a.to(x.dtype)
            u = gmm(x, a_.transpose(1, 2), routes)  # [S, r]
            y.add_(gmm(u, bt.to(x.dtype).contiguous(), routes), alpha=scaling)  # in place: no [S, N] temporaries
        ctx.save_for_backward(x, w_kn, a, bt, u)
        ctx.scaling = scaling
        ctx.routes = routes
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w_kn, a, bt, u = ctx.saved_tensors
        s, routes = ctx.scaling, ctx.routes
        dy = dy.contiguous()
        dx = dw = da = dbt = None
        du = None
        if a is not None:
            bt_ = bt.to(dy.dtype).contiguous()
            du = gmm(dy, bt_.transpose(1, 2), routes).mul_(s)  # [S, r]
            if ctx.needs_input_grad[3]:
                dbt = gmm_wgrad(u, dy, routes).mul_(s).to(bt.dtype)
            if ctx.needs_input_grad[2]:
                da = gmm_wgrad(du, x, routes).to(a.dtype)
        if ctx.needs_input_grad[0]:
            dx = gmm(dy, w_kn.transpose(1, 2), routes)
            if du is not None:
                dx.add_(gmm(du, a.to(dy.dtype).contiguous(), routes))
        if ctx.needs_input_grad[1]:
            dw = gmm_wgrad(x, dy, routes).to(w_kn.dtype)
        return dx, dw, da, dbt, None, None


def grouped_linear(x, rows, w_kn, lora: LoraFactors | None, routes: Routes) -> torch.Tensor:
    """Gather token rows (when `rows` is given) then apply the grouped LoRA linear."""
    xs = x[rows] if rows is not None else x
    if lora is None:
        return GroupedLoraLinear.apply(xs, w_kn, None, None, 0.0, routes)
    return GroupedLoraLinear.apply(xs, w_kn, lora.a, lora.bt, lora.scaling, routes)
