"""The trainer's input and output contract with the operator: its config (one pydantic model,
rendered by the operator into the ConfigMap and embedded in the FineTuneJob CRD schema) and the
progress it reports into the FineTuneJob's status. The cross-field rules of a FineTuneJob that
the trainer must also enforce are here, CEL and Python side by side (see contract.Rule).
Must not import torch or transformers (the operator imports it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .contract import ApiModel, Matches, Pattern, Rule, cel, check, rules

__all__ = [
    "METHOD_RULES",
    "AdapterOutput",
    "CheckpointSpec",
    "DatasetFormat",
    "DatasetSource",
    "FusedKernel",
    "Kernel",
    "LoraSpec",
    "Method",
    "ModelSource",
    "Progress",
    "ReportSpec",
    "TrainerConfig",
    "TrainerStatus",
    "TrainingSpec",
    "check_method",
    "load_config",
    "spec_field",
]

# The MoE-LoRA kernels: the one list of their names (moe_lora.experts binds each fused one to its code).
FusedKernel = Literal["triton", "grouped", "loop"]
Kernel = Literal["auto", FusedKernel, "peft"]
Method = Literal["sft", "dpo"]
DatasetFormat = Literal["chat", "instruction", "completion", "preference"]

DROPOUT_WITHOUT_EXPERTS = Rule(
    "!has(self.experts) || !self.experts || !has(self.dropout) || self.dropout == 0.0",
    "must be 0 when experts is true (PEFT has no dropout on expert weights)",
    "dropout",
)
# On the FineTuneJob spec and on the trainer config alike (both have method and dataset.format).
DPO_NEEDS_PREFERENCE = Rule(
    "self.method != 'dpo' || self.dataset.format == 'preference'",
    "method dpo needs a dataset with format preference (prompt, chosen, rejected)",
    "dataset.format",
)
PREFERENCE_NEEDS_DPO = Rule(
    "self.method != 'sft' || self.dataset.format != 'preference'",
    "a preference dataset needs method dpo",
    "dataset.format",
)
METHOD_RULES = (DPO_NEEDS_PREFERENCE, PREFERENCE_NEEDS_DPO)


def check_method(method: str, dataset_format: str) -> None:
    """The Python side of METHOD_RULES."""
    check(method != "dpo" or dataset_format == "preference", DPO_NEEDS_PREFERENCE)
    check(method != "sft" or dataset_format != "preference", PREFERENCE_NEEDS_DPO)


class ModelSource(ApiModel):
    id: str | None = Field(None, min_length=1, description="Hugging Face model id (token from HF_TOKEN).")
    revision: str = Field("main", min_length=1, description="Branch, tag or commit of the model on the hub.")
    path: str | None = Field(None, min_length=1, description="Local directory holding the model (instead of id).")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        if (self.id is None) == (self.path is None):
            raise ValueError("exactly one of model.id and model.path must be set")
        return self


class DatasetSource(ApiModel):
    id: str | None = Field(None, min_length=1, description="Hugging Face dataset id.")
    path: str | None = Field(
        None, min_length=1, description="Local json, jsonl or parquet file, or a directory of them (instead of id)."
    )
    split: str = Field("train", min_length=1, description="Split to train on.")
    format: DatasetFormat = Field(
        ...,
        description=(
            "Row layout: chat = messages[{role, content}]; instruction = instruction, [input], output; "
            "completion = prompt, completion (or text); preference = prompt, chosen, rejected (for dpo)."
        ),
    )

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSource:
        if (self.id is None) == (self.path is None):
            raise ValueError("exactly one of dataset.id and dataset.path must be set")
        return self


# A module name as PEFT matches it (e.g. q_proj, or a dotted suffix such as self_attn.q_proj).
ModuleName = Annotated[
    str,
    Field(max_length=128),
    Matches(Pattern(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$", "must be a module name such as q_proj or self_attn.q_proj")),
]


class LoraSpec(ApiModel):
    model_config = rules(DROPOUT_WITHOUT_EXPERTS)

    rank: int = Field(16, ge=1, le=1024, description="LoRA rank r.")
    alpha: int = Field(32, ge=1, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(
        0.0, ge=0.0, le=1.0, description="LoRA dropout on the attention modules (must be 0 when experts is true)."
    )
    target_modules: list[ModuleName] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="Names of the linear (attention) modules that get LoRA.",
    )
    experts: bool = Field(True, description="Also put LoRA on the MoE experts' fused weights (PEFT target_parameters).")
    kernel: Kernel = Field(
        "auto",
        description=(
            "MoE-LoRA implementation: auto = fastest available (triton on CUDA, grouped otherwise); "
            "loop = per-expert reference; peft = stock PEFT path (merged weight per forward)."
        ),
    )

    @model_validator(mode="after")
    def _rules(self) -> LoraSpec:
        check(not (self.experts and self.dropout > 0), DROPOUT_WITHOUT_EXPERTS)
        return self


# LoRA learning rates live around 1e-5..1e-3; above 0.1 a run only wastes GPU hours. A CEL rule,
# not `maximum`: the API server compares an integer value with int(maximum), so `maximum: 0.1`
# would refuse 3 saying "should be less than or equal to 0".
LEARNING_RATE_SANE = Rule("self <= 0.1", "must be at most 0.1 (LoRA learning rates are around 1e-5 to 1e-3)")


class TrainingSpec(ApiModel):
    epochs: int = Field(1, ge=1, description="Passes over the dataset (ignored when maxSteps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    learning_rate: float = Field(
        2e-4,
        gt=0,
        description="Peak learning rate (AdamW), above 0 and at most 0.1.",
        json_schema_extra=cel(LEARNING_RATE_SANE),
    )
    batch_size: int = Field(1, ge=1, description="Sequences per device per micro-batch.")
    gradient_accumulation: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    sequence_length: int = Field(
        2048, ge=16, le=131072, description="Maximum tokens per sequence (longer ones are truncated)."
    )
    precision: Literal["bf16", "fp16", "fp32"] = Field(
        "bf16", description="Compute precision of the base model (fp32 is used on CPU whatever is asked)."
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Random seed (data order, LoRA init), 0 to 2^32-1.")

    @field_validator("learning_rate")
    @classmethod
    def _learning_rate(cls, value: float) -> float:
        check(value <= 0.1, LEARNING_RATE_SANE)
        return value


class CheckpointSpec(ApiModel):
    every_steps: int = Field(100, ge=1, description="Save a resumable checkpoint every N optimizer steps.")
    resume: bool = Field(True, description="Resume from the latest checkpoint in the output directory if there is one.")


class AdapterOutput(ApiModel):
    dir: str = Field(..., min_length=1, description="Directory that receives the adapter, tokenizer and manifest.")
    run_id: str | None = Field(
        None,
        max_length=128,
        description=(
            "Identity of this run (the FineTuneJob's uid). Checkpoints are kept per run and config, and a "
            "finished run is recognised only by its own id: a re-created job never resumes or reuses another's."
        ),
    )
    adapter_name: str = Field(
        ...,
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Name of the adapter (a DNS label: lowercase letters, digits and '-').",
    )


class ReportSpec(ApiModel):
    namespace: str = Field(..., min_length=1, description="Namespace of the FineTuneJob whose status gets progress.")
    name: str = Field(..., min_length=1, description="Name of the FineTuneJob whose status gets progress.")
    interval_seconds: float = Field(10.0, gt=0, description="Minimum seconds between two status patches.")


class TrainerConfig(ApiModel):
    model: ModelSource = Field(..., description="Base model to fine-tune.")
    dataset: DatasetSource = Field(..., description="Training data.")
    method: Method = Field("sft", description="sft = supervised fine-tuning, dpo = preference optimisation.")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA adapter shape and kernel.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Optimisation hyper-parameters.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="Checkpointing and resume.")
    output: AdapterOutput = Field(..., description="Where the adapter goes.")
    report: ReportSpec | None = Field(None, description="FineTuneJob to report progress to (in-cluster only).")

    @model_validator(mode="after")
    def _rules(self) -> TrainerConfig:
        check_method(self.method, self.dataset.format)
        return self


class Progress(ApiModel):
    """Reported by the trainer while it runs."""

    step: int | None = Field(None, description="Optimizer steps done.")
    total_steps: int | None = Field(None, description="Optimizer steps planned.")
    percent: float | None = Field(None, description="step / totalSteps, in percent.")
    loss: float | None = Field(None, description="Latest training loss.")
    tokens_per_second: float | None = Field(None, description="Training throughput.")
    eta_seconds: float | None = Field(None, description="Estimated seconds to completion.")
    epoch: float | None = Field(None, description="Fractional epoch.")
    updated_at: str | None = Field(None, description="When the trainer last reported (RFC 3339).")


class TrainerStatus(ApiModel):
    """The part of a FineTuneJob's status the trainer writes (the operator's status model extends it)."""

    progress: Progress | None = Field(None, description="Training progress reported by the trainer.")


# Where each trainer config field comes from in a FineTuneJob: a trainer run for a FineTuneJob
# names the field the user wrote (spec.baseModel.revision), not the config's (model.revision).
SPEC_FIELDS = {
    "model.id": "spec.baseModel.id",
    "model.revision": "spec.baseModel.revision",
    "model.path": "spec.baseModel.path",
    "model": "spec.baseModel",
    "dataset": "spec.dataset",
    "method": "spec.method",
    "lora": "spec.lora",
    "training": "spec.training",
    "checkpoint": "spec.checkpoint",
    "output.dir": "spec.output.path",
    "output.adapterName": "spec.output.adapterName",
    "output": "spec.output",
}


def spec_field(field: str) -> str:
    """The FineTuneJob field a trainer config field comes from (e.g. lora.rank -> spec.lora.rank)."""
    for prefix, spec in SPEC_FIELDS.items():
        if field == prefix or field.startswith(prefix + "."):
            return spec + field[len(prefix) :]
    return field


def load_config(path: str | Path) -> TrainerConfig:
    """Read a YAML or JSON file into a validated TrainerConfig (pydantic's ValidationError on bad fields)."""
    text = Path(path).read_text()
    if str(path).endswith(".json"):
        data = json.loads(text)
    else:
        import yaml  # JSON is YAML too, so this also reads extension-less JSON

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return TrainerConfig.model_validate(data)
