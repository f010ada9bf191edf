"""Fused MoE-LoRA backends vs the per-expert oracle and vs PEFT's own target_parameters path.

Everything runs on the GPU when there is one (the Triton kernels compiled); without one, on the
CPU with the Triton kernels under TRITON_INTERPRET (tests/trainer/conftest.py). tests/gpu has
the checks only a GPU can run (its block sizes, kernel: auto).
"""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import layer as peft_layer

from tuneroute_testing.moe_oracle import DEVICE, check_linear_op
from tuneroute_testing.tiny_models import ARCHS, tiny_model
from tuneroute_trainer.moe_lora import enable_fused_moe_lora, experts_target_parameters, resolve_kernel

TOL = dict(atol=1e-5, rtol=1e-5)
# whole-model checks sum fp32 roundoff over every layer (attention included): same atol, looser rtol
MODEL_TOL = dict(atol=1e-5, rtol=1e-4)


def _peft_model(arch):
    base = tiny_model(arch).to(DEVICE)
    attn = ["q_a_proj"] if arch == "deepseek_v3" else ["q_proj"]
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=attn,
        target_parameters=experts_target_parameters(base),
        init_lora_weights=False,
    )  # random A and B, so the LoRA term is not zero
    torch.manual_seed(1)
    return get_peft_model(base, cfg).to(DEVICE)


def _step(model, kernel, ids):
    """Forward + backward; returns logits, dX (input embeddings) and every expert LoRA gradient."""
    enable_fused_moe_lora(model, kernel)
    model.zero_grad()
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=emb).logits
    probe = torch.linspace(-1, 1, logits.numel(), device=logits.device).view_as(logits)
    ((logits * probe).sum() / ids.numel()).backward()  # mean over tokens, like the LM loss
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and "experts" in n}
    return logits.detach(), emb.grad.clone(), grads


@pytest.fixture(scope="module", params=ARCHS)
def reference(request):
    model = _peft_model(request.param)
    ids = torch.randint(3, 120, (2, 12), generator=torch.Generator().manual_seed(0)).to(DEVICE)
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
    ids = torch.randint(3, 120, (1, 8)).to(DEVICE)

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
    ids = torch.randint(3, 120, (1, 8)).to(DEVICE)
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


@pytest.mark.parametrize("kernel", ["loop", "grouped"])
def test_a_merged_adapter_is_not_added_again(kernel):
    """Merging writes W + ΔW into the base weight: the fused path must then read no factors (it
    falls back to the base weights), or the update counts twice."""
    model = _peft_model("qwen3_moe")
    ids = torch.randint(3, 120, (1, 8), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    with torch.no_grad():
        enable_fused_moe_lora(model, kernel)
        unmerged = model(ids).logits
        model.merge_adapter()
        merged = model(ids).logits
        model.unmerge_adapter()
        again = model(ids).logits
        with model.disable_adapter():
            base = model(ids).logits
    torch.testing.assert_close(merged, unmerged, **MODEL_TOL)
    torch.testing.assert_close(again, unmerged, **MODEL_TOL)
    assert (unmerged - base).abs().max() > 1e-2  # the adapter matters, so counting it twice would show


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
    check_linear_op(kernel, dtype, r)


def test_auto_picks_the_triton_kernel_on_cuda_and_grouped_elsewhere():
    """Pure: no GPU needed to check the choice (tests/gpu runs it on one)."""
    assert resolve_kernel("auto", "cuda") == "triton"
    assert resolve_kernel("auto", "cpu") == "grouped"
    assert resolve_kernel("loop", "cuda") == "loop" and resolve_kernel("peft", "cpu") == "peft"
