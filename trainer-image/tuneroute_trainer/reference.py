"""What the serving engine must reproduce, published next to the adapter for the parity gate.

The gate runs in the vLLM image (tuneroute_operator/gate/verify_adapter.py, which has no tuneroute
code to import), so these two files are the whole contract between trainer and gate:

tuneroute-reference.safetensors
    probe.<n>        [n, K]              K random unit vectors of length n, one set per dimension n
    delta.<module>   [K, K] or [E, K, K] Uᵀ·ΔW·V with U = probe.<out>, V = probe.<in>; ΔW is the
                                         module's (per-expert) update in (out, in) orientation as
                                         PEFT computes it (get_delta_weight)
tuneroute-reference.json
    modules: {<module>: {kind: linear | experts, shape: [(E,) out, in], tensors: [names in
              adapter_model.safetensors], gateUp: concat | interleave (fused expert gate/up only)}}
    outputs: {dtype, maxNewTokens, prompts: [{promptTokenIds, adapter: {tokens, logprobs},
              base: {tokens, logprobs}}]}   greedy decoding with and without the adapter

Why a fingerprint and not ΔW itself: the ΔW of every expert of a 30B MoE model is as large as the
experts. Uᵀ·ΔW·V with K random unit probes is K² numbers per expert, and a misread tensor (dropped,
transposed, scaled wrong, experts out of order) moves it by about the size of ΔW.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

REFERENCE_JSON = "tuneroute-reference.json"
REFERENCE_TENSORS = "tuneroute-reference.safetensors"
K = 8
SEED = 20261128
PEFT_PREFIX = "base_model.model."


def probes(dim: int) -> torch.Tensor:
    """K unit vectors of length `dim` (seeded, so every run writes the same ones)."""
    g = torch.Generator().manual_seed(SEED + dim)
    p = torch.randn(dim, K, generator=g, dtype=torch.float64)
    return (p / p.norm(dim=0, keepdim=True)).float()


def _module_key(peft_name: str, wrapper) -> str:
    """The reference name of a LoRA module: its path in the base model; an expert parameter's is the
    experts module's path plus the parameter (nested ParamWrappers add `.base_layer` levels)."""
    name = peft_name.removeprefix(PEFT_PREFIX)
    if wrapper is None:
        return name
    while name.endswith(".base_layer"):
        name = name.removesuffix(".base_layer")
    return f"{name}.{wrapper.parameter_name}"


def lora_deltas(model, adapter: str = "default"):
    """Yield (key, info, ΔW) for every LoRA module of a PeftModel; ΔW is (out, in) or (E, out, in)."""
    from peft.tuners.lora.layer import LoraLayer, ParamWrapper

    interleaved = getattr(model.config, "model_type", None) == "gpt_oss"  # GPT-OSS interleaves gate/up
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or adapter not in module.lora_A:
            continue
        tensors = [f"{name}.lora_A.weight", f"{name}.lora_B.weight"]
        with torch.no_grad():
            delta = module.get_delta_weight(adapter).float()
        if isinstance(module, ParamWrapper) and delta.dim() == 3:
            experts = module.get_base_layer()
            if getattr(experts, "is_transposed", False):  # stored (E, in, out)
                delta = delta.transpose(1, 2)
            info = {"kind": "experts", "shape": list(delta.shape), "tensors": tensors}
            if module.parameter_name == "gate_up_proj":
                info["gateUp"] = "interleave" if interleaved else "concat"
            yield _module_key(name, module), info, delta
        else:
            yield _module_key(name, None), {"kind": "linear", "shape": list(delta.shape), "tensors": tensors}, delta


def fingerprints(model, adapter: str = "default") -> tuple[dict, dict[str, torch.Tensor]]:
    """(modules json, tensors) of the reference: a probe set per dimension and Uᵀ·ΔW·V per module."""
    modules: dict[str, dict] = {}
    tensors: dict[str, torch.Tensor] = {}
    for key, info, delta in lora_deltas(model, adapter):
        out_dim, in_dim = delta.shape[-2], delta.shape[-1]
        for d in (out_dim, in_dim):
            tensors.setdefault(f"probe.{d}", probes(d))
        u = tensors[f"probe.{out_dim}"].to(delta.device)
        v = tensors[f"probe.{in_dim}"].to(delta.device)
        fp = torch.einsum("ok,...oi,il->...kl", u, delta, v)
        tensors[f"delta.{key}"] = fp.cpu().contiguous()
        modules[key] = info
    return modules, tensors


@torch.no_grad()
def greedy(model, prompt_ids: list[int], n: int) -> dict:
    """Greedy continuation of `prompt_ids`: n tokens and each one's logprob (no stop at EOS: the gate
    asks vLLM for exactly n tokens too)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)
    past, tokens, logprobs = None, [], []
    for _ in range(n):
        out = model(input_ids=ids if past is None else ids[:, -1:], past_key_values=past, use_cache=True)
        past = out.past_key_values
        lp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        t = int(lp.argmax())
        tokens.append(t)
        logprobs.append(round(float(lp[t]), 6))
        ids = torch.cat([ids, torch.tensor([[t]], device=device)], dim=1)
    return {"tokens": tokens, "logprobs": logprobs}


def outputs(model, prompts: list[list[int]], max_new_tokens: int) -> dict:
    """Greedy tokens and logprobs of the held-out prompts, with the adapter and with it disabled."""
    was_training = model.training
    model.eval()
    rows = []
    for ids in prompts:
        adapter = greedy(model, ids, max_new_tokens)
        with model.disable_adapter():
            base = greedy(model, ids, max_new_tokens)
        rows.append({"promptTokenIds": list(ids), "adapter": adapter, "base": base})
    model.train(was_training)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return {"dtype": dtype, "maxNewTokens": max_new_tokens, "prompts": rows}


def prompt_token_ids(tokenizer, messages: list[dict] | None, text: str) -> list[int]:
    if messages is not None and tokenizer.chat_template:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)  # transformers 5: a BatchEncoding
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def write(directory: Path, modules: dict, tensors: dict[str, torch.Tensor], outs: dict | None) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(directory / REFERENCE_TENSORS))
    data = {"format": 1, "k": K, "modules": modules, "outputs": outs}
    (directory / REFERENCE_JSON).write_text(json.dumps(data, indent=1, sort_keys=True))
