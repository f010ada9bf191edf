"""Fused MoE-LoRA backends vs the per-expert oracle and vs PEFT's own target_parameters path."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import layer as peft_layer

from tuneroute_testing.tiny_models import ARCHS, tiny_model
from tuneroute_trainer.moe_lora import enable_fused_moe_lora, experts_target_parameters
from tuneroute_trainer.moe_lora.factors import LoraFactors
from tuneroute_trainer.moe_lora.grouped import grouped_linear
from tuneroute_trainer.moe_lora.routing import sort_routes

TOL = dict(atol=1e-5, rtol=1e-5)
# whole-model checks sum fp32 roundoff over every layer (attention included): same atol, looser rtol
MODEL_TOL = dict(atol=1e-5, rtol=1e-4)


def _peft_model(arch):
    base = tiny_model(arch)
    attn = ["q_a_proj"] if arch == "deepseek_v3" else ["q_proj"]
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=attn,
        target_parameters=experts_target_parameters(base),
        init_lora_weights=False,
    )  # random A and B, so the LoRA term is not zero
    torch.manual_seed(1)
    return get_peft_model(base, cfg)


def _step(model, kernel, ids):
    """Forward + backward; returns logits, dX (input embeddings) and every expert LoRA gradient."""
    enable_fused_moe_lora(model, kernel)
    model.zero_grad()
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=emb).logits
    probe = torch.linspace(-1, 1, logits.numel()).view_as(logits)
    ((logits * probe).sum() / ids.numel()).backward()  # mean over tokens, like the LM loss
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and "experts" in n}
    return logits.detach(), emb.grad.clone(), grads


@pytest.fixture(scope="module", params=ARCHS)
def reference(request):
    model = _peft_model(request.param)
    ids = torch.randint(3, 120, (2, 12), generator=torch.Generator().manual_seed(0))
    return request.param, model, ids, _step(model, "peft", ids), _step(model, "loop", ids)


@pytest.mark.parametrize("kernel", ["loop", "grouped", "triton"])
def test_backend_matches_peft_and_oracle(reference, kernel):
    arch, model, ids, peft_ref, oracle = reference
    logits, dx, grads = _step(model, kernel, ids)
    assert len(grads) >= 4 and all(g.abs().sum() > 0 for g in grads.values())  # dA and dB of both projections
    for ref in (peft_ref, oracle):
        torch.testing.assert_close(logits, ref[0], **MODEL_TOL)
        torch.testing.assert_close(dx, ref[1], **MODEL_TOL)
        assert grads.keys() == ref[2].keys()
        for name in grads:
            torch.testing.assert_close(grads[name], ref[2][name], **MODEL_TOL, msg=lambda m, n=name: f"{arch} {n}: {m}")


def test_fused_path_never_builds_merged_expert_weight(monkeypatch):
    model = _peft_model("qwen3_moe")
    ids = torch.randint(3, 120, (1, 8))

    def forbidden(*a, **k):
        raise AssertionError("W + ΔW was materialised")

    monkeypatch.setattr(peft_layer.ParamWrapper, "_activate_lora", forbidden)
    monkeypatch.setattr(peft_layer.ParamWrapper, "get_delta_weight", forbidden)
    for kernel in ("loop", "grouped"):
        _step(model, kernel, ids)
    with pytest.raises(AssertionError, match="materialised"):
        _step(model, "peft", ids)


def test_disabled_adapter_gives_base_model_output():
    model = _peft_model("qwen3_moe")
    ids = torch.randint(3, 120, (1, 8))
    with torch.no_grad():
        base_logits = model.get_base_model()(ids).logits  # PEFT layers still active here
        enable_fused_moe_lora(model, "grouped")
        with model.disable_adapter():
            disabled = model(ids).logits
        fused = model(ids).logits
        enable_fused_moe_lora(model, "peft")
        with model.disable_adapter():
            stock_disabled = model(ids).logits
    torch.testing.assert_close(disabled, stock_disabled, **TOL)
    assert not torch.allclose(fused, disabled)  # the adapter does change the output
    torch.testing.assert_close(fused, base_logits, **TOL)


def _op_inputs(dtype, experts=6, tokens=40, k=2, hidden=24, out=20, r=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=g)
    w = torch.randn(experts, out, hidden, generator=g) * 0.3  # stored [E, out, in] like gate_up_proj
    a = torch.randn(experts, r, hidden, generator=g) * 0.3
    bt = torch.randn(experts, r, out, generator=g) * 0.3
    # expert 0 gets no token: empty groups must be skipped cleanly
    idx = torch.randint(1, experts, (tokens, k), generator=g)
    return x.to(dtype), w.to(dtype), a.to(dtype), bt.to(dtype), idx


def _oracle_op(x, w, a, bt, s, idx):
    rows = []
    for t, e in zip(*[v.reshape(-1) for v in (torch.arange(idx.numel()) // idx.shape[1], idx)]):
        rows.append((t.item(), e.item()))
    rows.sort(key=lambda p: p[1])
    return torch.stack([x[t] @ w[e].t() + s * (x[t] @ a[e].t()) @ bt[e] for t, e in rows])


# the CPU grouped path trains in fp32 (rank 4: torch's grouped_mm; rank 3: rows not 16-byte aligned, so the
# per-expert fallback); the triton kernel also takes fp16 and bf16 (upcast under the interpreter)
@pytest.mark.parametrize(
    "kernel, dtype, r",
    [
        ("grouped", torch.float32, 4),
        ("grouped", torch.float32, 3),
        ("triton", torch.float32, 3),
        ("triton", torch.float16, 4),
        ("triton", torch.bfloat16, 4),
    ],
)
def test_linear_op_forward_and_gradients_match_oracle(kernel, dtype, r):
    from tuneroute_trainer.moe_lora.triton_ops import triton_linear

    x, w, a, bt, idx = _op_inputs(dtype, r=r)
    s = 1.7
    routes = sort_routes(idx, w.shape[0])
    leaves = [t.clone().requires_grad_(True) for t in (x, a, bt)]
    fn = grouped_linear if kernel == "grouped" else triton_linear
    y = fn(leaves[0], routes.token, w.transpose(1, 2), LoraFactors(leaves[1], leaves[2], s), routes)
    probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    (y.float() * probe.float()).sum().backward()

    ref_leaves = [t.detach().double().requires_grad_(True) for t in (x, a, bt)]
    y_ref = _oracle_op(ref_leaves[0], w.double(), ref_leaves[1], ref_leaves[2], s, idx)
    (y_ref * probe.double()).sum().backward()
    tol = TOL if dtype == torch.float32 else dict(atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(y.double(), y_ref.detach(), **tol)
    for got, ref, name in zip(leaves, ref_leaves, ("dX", "dA", "dB")):
        torch.testing.assert_close(got.grad.double(), ref.grad, **tol, msg=lambda m, n=name: f"{n}: {m}")
