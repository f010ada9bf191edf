"""GRPO with a KL penalty on the fused MoE-LoRA kernel: the reference pass (adapter disabled) and the gradients
of the whole objective (clipped policy term, k3 KL estimator, router aux loss) equal stock PEFT's."""

import copy

import pytest
import torch


def _objective(model, ids, adv, beta=0.04, temperature=0.9):
    from trl.trainer.utils import use_adapter

    def logps():
        out = model(ids, output_router_logits=True)
        logits = out.logits[:, :-1] / temperature
        return logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0], out.aux_loss

    with torch.no_grad(), use_adapter(model, None):  # trl's reference for a fresh adapter: adapters disabled
        ref, _ = logps()
    lp, aux = logps()
    kl = torch.exp(ref - lp) - (ref - lp) - 1
    return (-(adv * torch.exp(lp - lp.detach())) + beta * kl).mean() + 0.001 * aux, ref, kl.mean()


@pytest.mark.parametrize("kernel", ["grouped", "loop", "triton"])
def test_kl_objective_and_reference_match_stock_peft(kernel):
    from peft import LoraConfig, get_peft_model

    from tuneroute_testing.tiny_models import tiny_model
    from tuneroute_trainer.moe_lora import enable_fused_moe_lora, experts_target_parameters

    if kernel == "triton" and not torch.cuda.is_available():
        pytest.skip("the triton kernel's GPU run (tests/gpu/grpo.sh); CPU CI covers it in the moe_lora parity tests")
    device = "cuda" if kernel == "triton" else "cpu"
    torch.set_num_threads(1)
    base = tiny_model("qwen3_moe").to(device)
    cfg = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        target_parameters=experts_target_parameters(base),
    )
    torch.manual_seed(0)
    trained = {}  # a policy some steps into training: non-zero B everywhere, so the KL is not trivially 0
    ids = torch.randint(3, 120, (8, 20), generator=torch.Generator().manual_seed(1)).to(device)
    adv = torch.randn(8, 1, generator=torch.Generator().manual_seed(2)).to(device)
    results = {}
    for k in ["peft", kernel]:
        model = get_peft_model(copy.deepcopy(base), cfg)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:  # the same A and B in both models (B non-zero)
                    p.copy_(trained.setdefault(name, p.clone() if "lora_A" in name else torch.randn_like(p) * 0.05))
        enable_fused_moe_lora(model, k)
        loss, ref, kl = _objective(model, ids, adv)
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results[k] = (loss, ref, kl, grads)
        with torch.no_grad():
            base_logits = base(ids).logits
        with torch.no_grad(), model.disable_adapter():
            torch.testing.assert_close(model(ids).logits, base_logits)  # disabled really is the base model
    (l0, r0, k0, g0), (l1, r1, _, g1) = results["peft"], results[kernel]
    assert k0 > 1e-3  # the penalty is active
    torch.testing.assert_close(r1, r0)
    torch.testing.assert_close(l1, l0)
    assert set(g1) == set(g0) and any("experts" in n for n in g0)
    for name in g0:
        rel = (g1[name] - g0[name]).norm() / g0[name].norm()
        assert rel < 1e-5, (name, rel.item())
