"""Load the base model and tokenizer, wrap them with PEFT LoRA and pick the MoE-LoRA kernel."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch

from .config import FusedKernel, LoraSpec, ModelSource, TrainingSpec
from .errors import InputError
from .moe_lora import enable_fused_moe_lora, experts_target_parameters, resolve_kernel

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_dtype(training: TrainingSpec) -> torch.dtype:
    # half precision on CPU is slow and poorly supported by the grouped kernels: train in fp32 there
    return _DTYPES[training.precision] if device().type == "cuda" else torch.float32


def _source(src: ModelSource) -> tuple[str, dict]:
    if src.path is not None:
        if not Path(src.path).is_dir():
            raise InputError("model.path", f"directory {src.path} not found")
        return src.path, {}
    if src.id is None:  # ModelSource's own rule: exactly one of id and path
        raise InputError("model", "set id or path")
    return src.id, {"revision": src.revision, "token": hf_token()}


def _field(src: ModelSource) -> str:
    return "model.path" if src.path is not None else "model.id"


def load_tokenizer(src: ModelSource):
    from transformers import AutoTokenizer

    name, kw = _source(src)
    try:
        tok = AutoTokenizer.from_pretrained(name, **kw)
    except Exception as e:
        raise InputError(_field(src), f"cannot load tokenizer of {name}: {str(e).splitlines()[0][:300]}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model_config(src: ModelSource):
    """The model's config, checked first: an unknown model type fails before anything heavy loads."""
    from transformers import AutoConfig

    name, kw = _source(src)
    try:
        return AutoConfig.from_pretrained(name, **kw)
    except (ValueError, KeyError) as e:  # unknown model_type lands here
        raise InputError(_field(src), f"unsupported model: {str(e).splitlines()[0][:300]}") from e
    except OSError as e:
        raise InputError(_field(src), f"cannot read model config: {str(e).splitlines()[0][:300]}") from e


def load_base_model(src: ModelSource, config, training: TrainingSpec, on_device: bool = True):
    """The pretrained model, on the training device (or left on the CPU for rank 0 to hand out shards)."""
    from transformers import AutoModelForCausalLM

    name, kw = _source(src)
    field = _field(src)
    try:
        model = AutoModelForCausalLM.from_pretrained(name, config=config, dtype=compute_dtype(training), **kw)
    except ValueError as e:  # a config class with no causal-LM head
        raise InputError(
            field, f"model type {config.model_type!r} has no causal LM: {str(e).splitlines()[0][:200]}"
        ) from e
    return model.to(device()) if on_device else model


def empty_base_model(config, training: TrainingSpec):
    """The same architecture on the meta device: no memory, no weights (they arrive as shards from rank 0)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=compute_dtype(training))


def lora_config(model, lora: LoraSpec):
    """PEFT LoraConfig for `model` (a real or meta-device instance) and the MoE kernel to use with it.

    LoRA goes on the attention modules and, for MoE models, on the fused expert weights."""
    from peft import LoraConfig

    names = [n for n, _ in model.named_modules()]
    missing = [t for t in lora.target_modules if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        raise InputError("lora.targetModules", f"no module named {', '.join(missing)} in {model.config.model_type}")
    target_parameters = experts_target_parameters(model) if lora.experts else []
    kernel = resolve_kernel(lora.kernel, device())
    if kernel == "triton" and device().type != "cuda":
        raise InputError("lora.kernel", "triton needs a CUDA device; use auto or grouped")
    cfg = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        target_parameters=target_parameters or None,
        task_type="CAUSAL_LM",
    )
    return cfg, kernel


def fuse_experts(peft_model, cfg, kernel: FusedKernel | Literal["peft"]) -> str:
    """Switch a PEFT model's expert LoRA to the fused kernel; returns the experts implementation in use."""
    return enable_fused_moe_lora(peft_model, kernel) if cfg.target_parameters else "none"


def apply_lora(model, lora: LoraSpec):
    """PEFT LoRA on the attention modules and (for MoE models) the fused expert weights; returns (model, kernel)."""
    from peft import get_peft_model

    cfg, kernel = lora_config(model, lora)
    try:
        peft_model = get_peft_model(model, cfg)
    except ValueError as e:  # e.g. none of targetModules exists in the model
        raise InputError("lora.targetModules", str(e).splitlines()[0][:300]) from e
    return peft_model, fuse_experts(peft_model, cfg, kernel)
