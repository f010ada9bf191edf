"""Triton MoE-LoRA kernels (CUDA; tested on CPU under TRITON_INTERPRET=1).

lora_gmm:   out[rows of e] = X[src] @ W_e + s * (X[src] @ L1_e) @ L2_e
            the token gather is fused into the X loads, base and LoRA-A products share one K loop,
            the rank-r B projection runs in the epilogue; the rank-r intermediate is stored for backward.
            Backward dX is the same kernel on (dY, W_e^T, Bt_e^T, A_e).
lora_wgrad: out[e] = scale * P_e^T @ Q[src_e]  (dA and dB: per-expert reductions over that expert's rows)
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .factors import LoraFactors
from .routing import Routes

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# one fixed config under the interpreter (it is slow and exact); a reasonable one on GPU
BLOCK_M, BLOCK_N, BLOCK_K = (16, 16, 16) if INTERPRET else (64, 64, 32)


@triton.jit
def _tile_rows(ROWS, row0, row_end, HAS_GATHER: tl.constexpr, BM: tl.constexpr):
    """BM rows from row0 of the expert-sorted order: their indices, the mask of those before
    row_end (one past the expert's last row), and the input rows they read (through ROWS when gathered)."""
    rm = row0 + tl.arange(0, BM)
    mrow = rm < row_end
    if HAS_GATHER:
        src = tl.load(ROWS + rm, mask=mrow, other=0)
    else:
        src = rm
    return rm, mrow, src


@triton.jit
def _lora_gmm_kernel(
    X,
    ROWS,
    W,
    L1,
    L2,
    OUT,
    U,
    TILE_E,
    TILE_ROW,
    OFFS,
    K,
    N,
    R,
    scaling,
    sxm,
    sxk,
    swe,
    swk,
    swn,
    s1e,
    s1k,
    s1r,
    s2e,
    s2r,
    s2n,
    som,
    son,
    HAS_GATHER: tl.constexpr,
    HAS_LORA: tl.constexpr,
    STORE_U: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    BR: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(TILE_E + pid_t).to(tl.int64)
    row0 = tl.load(TILE_ROW + pid_t)
    row_end = tl.load(OFFS + e)
    rm, mrow, src = _tile_rows(ROWS, row0, row_end, HAS_GATHER, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    rr = tl.arange(0, BR)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    u = tl.zeros((BM, BR), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        x = tl.load(X + src[:, None] * sxm + kk[None, :] * sxk, mask=mrow[:, None] & (kk[None, :] < K), other=0.0)
        w = tl.load(
            W + e * swe + kk[:, None] * swk + rn[None, :] * swn, mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0
        )
        if UPCAST:
            x = x.to(tl.float32)
            w = w.to(tl.float32)
        acc += tl.dot(x, w, input_precision=PREC)
        if HAS_LORA:
            a = tl.load(
                L1 + e * s1e + kk[:, None] * s1k + rr[None, :] * s1r,
                mask=(kk[:, None] < K) & (rr[None, :] < R),
                other=0.0,
            )
            if UPCAST:
                a = a.to(tl.float32)
            u += tl.dot(x, a, input_precision=PREC)
    if HAS_LORA:
        b = tl.load(
            L2 + e * s2e + rr[:, None] * s2r + rn[None, :] * s2n, mask=(rr[:, None] < R) & (rn[None, :] < N), other=0.0
        )
        if UPCAST:
            b = b.to(tl.float32)
        acc += scaling * tl.dot(u.to(b.dtype), b, input_precision=PREC)
        if STORE_U and pid_n == 0:
            tl.store(U + rm[:, None] * R + rr[None, :], u, mask=mrow[:, None] & (rr[None, :] < R))
    tl.store(
        OUT + rm[:, None] * som + rn[None, :] * son,
        acc.to(OUT.dtype.element_ty),
        mask=mrow[:, None] & (rn[None, :] < N),
    )


@triton.jit
def _lora_wgrad_kernel(
    P,
    Q,
    ROWS,
    OUT,
    STARTS,
    OFFS,
    C,
    R,
    scale,
    spm,
    spr,
    sqm,
    sqc,
    soe,
    sor,
    soc,
    HAS_GATHER: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    BM: tl.constexpr,
    BC: tl.constexpr,
    BR: tl.constexpr,
):
    e = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1)
    start = tl.load(STARTS + e)
    end = tl.load(OFFS + e)
    rc = pid_c * BC + tl.arange(0, BC)
    rr = tl.arange(0, BR)
    acc = tl.zeros((BR, BC), dtype=tl.float32)
    for m0 in range(start, end, BM):
        rm, mrow, src = _tile_rows(ROWS, m0, end, HAS_GATHER, BM)
        p = tl.load(P + rm[:, None] * spm + rr[None, :] * spr, mask=mrow[:, None] & (rr[None, :] < R), other=0.0)
        q = tl.load(Q + src[:, None] * sqm + rc[None, :] * sqc, mask=mrow[:, None] & (rc[None, :] < C), other=0.0)
        if UPCAST:
            p = p.to(tl.float32)
            q = q.to(tl.float32)
        acc += tl.dot(tl.trans(p), q.to(p.dtype), input_precision=PREC)
    tl.store(
        OUT + e * soe + rr[:, None] * sor + rc[None, :] * soc,
        (acc * scale).to(OUT.dtype.element_ty),
        mask=(rr[:, None] < R) & (rc[None, :] < C),
    )


def _block_r(r: int) -> int:
    return max(16, triton.next_power_of_2(r))


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _upcast(dtype: torch.dtype) -> bool:
    # the interpreter runs tl.dot through numpy, which has no bfloat16
    return INTERPRET and dtype == torch.bfloat16


def _tiles(routes: Routes, device) -> tuple[torch.Tensor, torch.Tensor]:
    tile_e, tile_row, start = [], [], 0
    for e, n in enumerate(routes.counts):
        for r0 in range(start, start + n, BLOCK_M):
            tile_e.append(e)
            tile_row.append(r0)
        start += n
    return (
        torch.tensor(tile_e, dtype=torch.int32, device=device),
        torch.tensor(tile_row, dtype=torch.int32, device=device),
    )


def lora_gmm(x, rows, w_kn, l1, l2, scaling, routes: Routes, tiles, store_u: bool):
    """x [T or S, K] (gathered through rows when given), w_kn [E, K, N], l1 [E, K, R], l2 [E, R, N]."""
    s_rows = routes.token.numel()
    k, n = w_kn.shape[1], w_kn.shape[2]
    out = torch.empty(s_rows, n, device=x.device, dtype=x.dtype)
    has_lora = l1 is not None
    r = l1.shape[2] if has_lora else 1
    u = torch.empty(s_rows, r, device=x.device, dtype=torch.float32) if has_lora and store_u else out
    l1_, l2_ = (l1, l2) if has_lora else (w_kn, w_kn)
    tile_e, tile_row = tiles
    if tile_e.numel():
        grid = (tile_e.numel(), triton.cdiv(n, BLOCK_N))
        _lora_gmm_kernel[grid](
            x,
            rows if rows is not None else routes.token,
            w_kn,
            l1_,
            l2_,
            out,
            u,
            tile_e,
            tile_row,
            routes.offsets,
            k,
            n,
            r,
            float(scaling),
            x.stride(0),
            x.stride(1),
            *w_kn.stride(),
            *l1_.stride(),
            *l2_.stride(),
            out.stride(0),
            out.stride(1),
            HAS_GATHER=rows is not None,
            HAS_LORA=has_lora,
            STORE_U=has_lora and store_u,
            UPCAST=_upcast(x.dtype),
            PREC=_precision(x.dtype),
            BM=BLOCK_M,
            BN=BLOCK_N,
            BK=BLOCK_K,
            BR=_block_r(r),
        )
    return out, (u if has_lora and store_u else None)


def lora_wgrad(p, q, rows, scale, routes: Routes, out_dtype):
    """out[e] = scale * p_e^T @ q[rows_e]: p [S, R], q [T or S, C] -> [E, R, C]."""
    e_count, r, c = len(routes.counts), p.shape[1], q.shape[1]
    out = torch.empty(e_count, r, c, device=p.device, dtype=out_dtype)
    starts = torch.cat([routes.offsets.new_zeros(1), routes.offsets[:-1]])
    grid = (e_count, triton.cdiv(c, BLOCK_N))
    _lora_wgrad_kernel[grid](
        p,
        q,
        rows if rows is not None else routes.token,
        out,
        starts,
        routes.offsets,
        c,
        r,
        float(scale),
        p.stride(0),
        p.stride(1),
        q.stride(0),
        q.stride(1),
        *out.stride(),
        HAS_GATHER=rows is not None,
        UPCAST=_upcast(q.dtype),
        PREC=_precision(q.dtype),
        BM=BLOCK_M,
        BC=BLOCK_N,
        BR=_block_r(r),
    )
    return out


class TritonLoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rows, w_kn, a, bt, scaling, routes):
        tiles = _tiles(routes, x.device)
        l1 = a.transpose(1, 2).to(x.dtype) if a is not None else None
        l2 = bt.to(x.dtype) if bt is not None else None
        out, u = lora_gmm(x, rows, w_kn, l1, l2, scaling, routes, tiles, store_u=True)
        ctx.save_for_backward(x, rows, w_kn, a, bt, u)
        ctx.scaling, ctx.routes, ctx.tiles = scaling, routes, tiles
        return out

    @staticmethod
    def backward(ctx, dy):
        x, rows, w_kn, a, bt, u = ctx.saved_tensors
        s, routes = ctx.scaling, ctx.routes
        dy = dy.contiguous()
        has_lora = a is not None
        # dX = dY W^T + s (dY Bt^T) A, and the same launch hands back dY Bt^T for dA
        dx_rows, dyb = lora_gmm(
            dy,
            None,
            w_kn.transpose(1, 2),
            bt.transpose(1, 2).to(dy.dtype) if has_lora else None,
            a.to(dy.dtype) if has_lora else None,
            s,
            routes,
            ctx.tiles,
            store_u=True,
        )
        dx = da = dbt = None
        if ctx.needs_input_grad[0]:
            if rows is not None:
                dx = torch.zeros_like(x).index_add_(0, rows, dx_rows.to(x.dtype))
            else:
                dx = dx_rows
        if has_lora and ctx.needs_input_grad[3]:
            da = lora_wgrad(dyb, x, rows, s, routes, a.dtype)
        if has_lora and ctx.needs_input_grad[4]:
            dbt = lora_wgrad(u, dy, None, s, routes, bt.dtype)
        if ctx.needs_input_grad[2]:
            raise NotImplementedError("the triton kernel keeps expert weights frozen")
        return dx, None, None, da, dbt, None, None


def triton_linear(x, rows, w_kn, lora: LoraFactors | None, routes: Routes) -> torch.Tensor:
    if lora is None:
        return TritonLoraLinear.apply(x, rows, w_kn, None, None, 0.0, routes)
    return TritonLoraLinear.apply(x, rows, w_kn, lora.a, lora.bt, lora.scaling, routes)
