"""The MoE-LoRA linear op against a float64 per-row oracle: the parity check tests/trainer runs on
the CPU (Triton under its interpreter) and tests/gpu runs on a GPU with the real block sizes."""

from __future__ import annotations

import torch

from tuneroute_trainer.moe_lora.factors import LoraFactors
from tuneroute_trainer.moe_lora.grouped import grouped_linear
from tuneroute_trainer.moe_lora.routing import sort_routes

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FP32_TOL = dict(atol=1e-5, rtol=1e-5)
# Half precision against a float64 oracle on the same (rounded) inputs: rtol twice the dtype's
# epsilon, atol about 2.5x the largest absolute error measured over seeds (fp16: 2e-3, bf16:
# 1.7e-2, both on dX, under the interpreter).
HALF_TOL = {torch.float16: dict(atol=5e-3, rtol=2e-3), torch.bfloat16: dict(atol=4e-2, rtol=1.6e-2)}


def op_inputs(dtype, experts=6, tokens=40, k=2, hidden=24, out=20, r=3, seed=0, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=g)
    w = torch.randn(experts, out, hidden, generator=g) * 0.3  # stored [E, out, in] like gate_up_proj
    a = torch.randn(experts, r, hidden, generator=g) * 0.3
    bt = torch.randn(experts, r, out, generator=g) * 0.3
    # expert 0 gets no token: empty groups must be skipped cleanly
    idx = torch.randint(1, experts, (tokens, k), generator=g)
    return tuple(t.to(device=device, dtype=dtype) for t in (x, w, a, bt)) + (idx.to(device),)


def oracle_op(x, w, a, bt, s, idx):
    """Row by row in float64, rows sorted by expert as the kernels order them."""
    idx = idx.cpu()
    rows = []
    for t, e in zip(*[v.reshape(-1) for v in (torch.arange(idx.numel()) // idx.shape[1], idx)]):
        rows.append((t.item(), e.item()))
    rows.sort(key=lambda p: p[1])
    return torch.stack([x[t] @ w[e].t() + s * (x[t] @ a[e].t()) @ bt[e] for t, e in rows])


def check_linear_op(kernel: str, dtype: torch.dtype, r: int, **shape) -> None:
    """The op's output and its dX, dA, dB against the oracle, on DEVICE."""
    from tuneroute_trainer.moe_lora.triton_ops import triton_linear

    x, w, a, bt, idx = op_inputs(dtype, r=r, **shape)
    s = 1.7
    routes = sort_routes(idx, w.shape[0])
    leaves = [t.clone().requires_grad_(True) for t in (x, a, bt)]
    fn = grouped_linear if kernel == "grouped" else triton_linear
    y = fn(leaves[0], routes.token, w.transpose(1, 2), LoraFactors(leaves[1], leaves[2], s), routes)
    probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(device=y.device, dtype=dtype)
    (y.float() * probe.float()).sum().backward()

    ref_leaves = [t.detach().cpu().double().requires_grad_(True) for t in (x, a, bt)]
    y_ref = oracle_op(ref_leaves[0], w.cpu().double(), ref_leaves[1], ref_leaves[2], s, idx)
    (y_ref * probe.cpu().double()).sum().backward()
    tol = FP32_TOL if dtype == torch.float32 else HALF_TOL[dtype]
    torch.testing.assert_close(y.cpu().double(), y_ref.detach(), **tol)
    for got, ref, name in zip(leaves, ref_leaves, ("dX", "dA", "dB")):
        torch.testing.assert_close(got.grad.cpu().double(), ref.grad, **tol, msg=lambda m, n=name: f"{n}: {m}")
