"""The trainer's input and output contract with the operator: its config (one pydantic model,
rendered by the operator into the ConfigMap and embedded in the FineTuneJob CRD schema) and the
progress it reports into the FineTuneJob's status. The cross-field rules of a FineTuneJob that
the trainer must also enforce are here, CEL and Python side by side (see contract.Rule).
Must not import torch or transformers (the operator imports it)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from .contract import ApiModel, Matches, Pattern, Rule, cel, check, rules

__all__ = [
    "METHOD_RULES",
    "NEEDS_REFERENCE",
    "REWARD_KINDS",
    "AdapterOutput",
    "CheckpointSpec",
    "DatasetFormat",
    "DatasetSource",
    "EvaluationSpec",
    "FusedKernel",
    "GrpoSettings",
    "GrpoSpec",
    "HttpReward",
    "Kernel",
    "LoraSpec",
    "Method",
    "ModelSource",
    "Progress",
    "PythonReward",
    "ReportSpec",
    "RewardKinds",
    "RewardSpec",
    "RolloutSpec",
    "RoutingProfile",
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
Method = Literal["sft", "dpo", "grpo"]
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
    "self.dataset.format != 'preference' || self.method == 'dpo'",
    "a preference dataset needs method dpo",
    "dataset.format",
)
GRPO_NEEDS_SECTION = Rule(
    "(self.method == 'grpo') == has(self.grpo)",
    "method grpo needs the grpo section (rewards, generations, ...), and only method grpo takes one",
    "grpo",
)
METHOD_RULES = (DPO_NEEDS_PREFERENCE, PREFERENCE_NEEDS_DPO, GRPO_NEEDS_SECTION)


def check_method(method: str, dataset_format: str, has_grpo: bool) -> None:
    """The Python side of METHOD_RULES."""
    check(method != "dpo" or dataset_format == "preference", DPO_NEEDS_PREFERENCE)
    check(dataset_format != "preference" or method == "dpo", PREFERENCE_NEEDS_DPO)
    check((method == "grpo") == has_grpo, GRPO_NEEDS_SECTION)


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
    merge: bool = Field(
        False,
        description=(
            "Also write the adapter merged into the base weights (<dir>/merged, a full model), for engines or "
            "hardware that cannot run LoRA on MoE layers."
        ),
    )


class EvaluationSpec(ApiModel):
    held_out: int = Field(
        16,
        ge=0,
        le=4096,
        description=(
            "Dataset rows kept out of training: the held-out eval loss (adapter vs base) and the parity gate's "
            "prompts come from them. 0 turns both off (the route then never prefers this adapter by its profile)."
        ),
    )
    reference_prompts: int = Field(
        4, ge=0, le=64, description="Held-out prompts whose greedy tokens and logprobs the parity gate compares."
    )
    max_new_tokens: int = Field(8, ge=1, le=256, description="Greedy tokens generated per reference prompt.")
    profile_prompts: int = Field(
        64,
        ge=0,
        le=256,
        description="Training prompts embedded (with the router's embedder) into the adapter's routing profile.",
    )


class ReportSpec(ApiModel):
    namespace: str = Field(..., min_length=1, description="Namespace of the FineTuneJob whose status gets progress.")
    name: str = Field(..., min_length=1, description="Name of the FineTuneJob whose status gets progress.")
    interval_seconds: float = Field(10.0, gt=0, description="Minimum seconds between two status patches.")


# ---- GRPO (method grpo): rewards and rollouts --------------------------------------------------------------

REWARD_NAME = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
REWARD_KINDS = ("exactMatch", "numericMatch", "regex", "jsonSchema", "lengthPenalty", "python", "http")
NEEDS_REFERENCE = ("exactMatch", "numericMatch")  # compare with the dataset's reference answer

ONE_REWARD_KIND = Rule(
    "[" + ", ".join(f"has(self.{k})" for k in REWARD_KINDS) + "].filter(x, x).size() == 1",
    "set exactly one of " + ", ".join(REWARD_KINDS),
)
UNIQUE_REWARD_NAMES = Rule(
    "self.rewards.all(r, self.rewards.filter(s, s.name == r.name).size() == 1)",
    "reward names must be unique (they key the metrics and status.progress.rewards)",
    "rewards",
)
ASYNC_WITHOUT_BETA = Rule(
    "!self.async || self.beta == 0.0",
    "asynchronous GRPO has no reference model: set beta to 0, or async to false",
    "beta",
)
LENGTH_TARGET_BELOW_MAX = Rule(
    "self.rewards.all(r, !has(r.lengthPenalty) || r.lengthPenalty.targetTokens < self.maxCompletionLength)",
    "lengthPenalty.targetTokens must be below maxCompletionLength",
    "rewards",
)
VLLM_WITH_ENGINE = Rule(  # has(): the API server checks the rule on the schema's default {} too
    "(has(self.engine) && self.engine == 'vllm') == has(self.vllm)",
    "set vllm exactly when engine is vllm",
    "vllm",
)


class ExactMatchReward(ApiModel):
    """1 when the answer (the last \\boxed{...} content, else the whole completion) equals the reference."""

    case_sensitive: bool = Field(False, description="Compare case-sensitively (surrounding whitespace never counts).")


class NumericMatchReward(ApiModel):
    """1 when the answer's number (the last \\boxed{...} content, else the last number) equals the reference."""

    tolerance: float = Field(1e-6, ge=0, description="Largest absolute difference still counted as equal.")


class RegexReward(ApiModel):
    """1 when the completion matches a regular expression, else 0."""

    pattern: str = Field(..., min_length=1, max_length=1024, description="Regular expression (Python re syntax).")
    full_match: bool = Field(
        False, description="The whole (trimmed) completion must match; by default the pattern is searched anywhere."
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from e
        return v


class JsonSchemaReward(ApiModel):
    """1 when the completion is one JSON value (a ```json fence is unwrapped) valid against the schema, else 0."""

    schema_: dict[str, Any] = Field(
        ...,
        alias="schema",
        description="A JSON Schema (draft 2020-12).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @field_validator("schema_")
    @classmethod
    def _is_json_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            import jsonschema
        except ImportError:  # only where jsonschema is missing; the trainer always has it and checks again
            return v
        try:
            jsonschema.Draft202012Validator.check_schema(v)
        except jsonschema.SchemaError as e:
            where = "/".join(str(p) for p in e.absolute_path) or "(root)"
            raise ValueError(f"not a JSON Schema: at {where}: {e.message}") from e
        return v


class LengthPenaltyReward(ApiModel):
    """0 up to targetTokens, then falling linearly to -1 at maxCompletionLength (DAPO's overlong penalty)."""

    target_tokens: int = Field(..., ge=1, description="Completion length (tokens) below which there is no penalty.")


class HttpReward(ApiModel):
    """An endpoint that scores a batch: POST {prompts, completions, references} -> {rewards: [number|null]}."""

    url: str = Field(..., pattern=r"^https?://", max_length=2048, description="Endpoint URL (http or https).")
    timeout_seconds: float = Field(30.0, gt=0, le=600, description="Per-request timeout.")
    max_consecutive_failures: int = Field(
        3,
        ge=1,
        le=100,
        description="Fail the job after this many batches in a row could not be scored (every failure is counted).",
    )


class PythonReward(ApiModel):
    """A function `fn(prompts, completions, completion_ids, **columns) -> list[float | None]` in a Python file."""

    path: str = Field(..., min_length=1, description="The Python file (in a FineTuneJob: from a ConfigMap).")
    function: str = Field(
        "reward", max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="The function's name."
    )


class RewardKinds(ApiModel):
    """One weighted reward: a name, a weight and exactly one kind (the FineTuneJob's python kind differs)."""

    model_config = rules(ONE_REWARD_KIND)

    name: str = Field(
        ..., max_length=40, pattern=REWARD_NAME, description="Name in metrics and status (lowercase, digits, '-')."
    )
    weight: float = Field(1.0, ge=-100, le=100, description="Weight of this reward in the summed reward.")
    exact_match: ExactMatchReward | None = Field(None, description="The answer equals the reference answer.")
    numeric_match: NumericMatchReward | None = Field(None, description="The answer's number equals the reference.")
    regex: RegexReward | None = Field(None, description="The completion matches a regular expression.")
    json_schema: JsonSchemaReward | None = Field(None, description="The completion is JSON valid against a schema.")
    length_penalty: LengthPenaltyReward | None = Field(None, description="A penalty on overlong completions.")
    http: HttpReward | None = Field(None, description="An HTTP endpoint that scores a batch.")

    @model_validator(mode="after")
    def _rules(self) -> RewardKinds:
        check(len(self.kinds()) == 1, ONE_REWARD_KIND)
        return self

    def kinds(self) -> list[str]:
        return [k for k in REWARD_KINDS if getattr(self, _snake(k), None) is not None]

    @property
    def kind(self) -> str:
        return self.kinds()[0]

    @property
    def params(self) -> ApiModel:
        return getattr(self, _snake(self.kind))


def _snake(camel: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", camel).lower()


class RewardSpec(RewardKinds):
    python: PythonReward | None = Field(None, description="A user function from a Python file.")


class VllmRollouts(ApiModel):
    """A vLLM OpenAI server that samples the rollouts and loads each policy version as a LoRA adapter."""

    url: str = Field(..., pattern=r"^https?://", max_length=2048, description="Base URL of the vLLM server.")
    adapter_dir: str = Field(
        ..., min_length=1, description="Directory shared with the server: each policy version is written here."
    )
    timeout_seconds: float = Field(300.0, gt=0, description="Timeout of one generation request.")


class RolloutSpec(ApiModel):
    model_config = rules(VLLM_WITH_ENGINE)

    engine: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="transformers = generate in the training process (tiny models, tests); vllm = a vLLM server.",
    )
    vllm: VllmRollouts | None = Field(None, description="The vLLM server (engine vllm).")

    @model_validator(mode="after")
    def _rules(self) -> RolloutSpec:
        check((self.engine == "vllm") == (self.vllm is not None), VLLM_WITH_ENGINE)
        return self


class GrpoSettings(ApiModel):
    """What GRPO needs beside the rewards and the rollout engine (shared by the FineTuneJob and the config)."""

    model_config = rules(UNIQUE_REWARD_NAMES, ASYNC_WITHOUT_BETA, LENGTH_TARGET_BELOW_MAX)

    reference_column: str = Field(
        "answer", min_length=1, max_length=128, description="Dataset column holding the reference answers."
    )
    generations: int = Field(8, ge=2, le=256, description="Completions sampled per prompt (one GRPO group).")
    max_completion_length: int = Field(256, ge=1, le=131072, description="Maximum tokens per completion.")
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature of the rollouts.")
    beta: float = Field(
        0.0, ge=0, le=10, description="KL coefficient against the base model (the adapter disabled); async false only."
    )
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clipping range of the importance ratio (lower side).")
    epsilon_high: float | None = Field(
        None, gt=0, lt=10, description="Upper clipping range; defaults to epsilon (DAPO uses 0.28)."
    )
    async_: bool = Field(
        True,
        alias="async",
        description="Generate the next batches while the current one trains (false: generate, then train).",
    )
    max_staleness: int = Field(
        1,
        ge=1,
        le=16,
        description="Async: policy versions a rollout may lag behind the policy it trains (async false is 0).",
    )

    @model_validator(mode="after")
    def _rules(self) -> GrpoSettings:
        names = [r.name for r in self.rewards]  # type: ignore[attr-defined]
        check(len(set(names)) == len(names), UNIQUE_REWARD_NAMES)
        check(not self.async_ or self.beta == 0.0, ASYNC_WITHOUT_BETA)
        lengths = [r.length_penalty.target_tokens for r in self.rewards if r.length_penalty]  # type: ignore[attr-defined]
        check(all(t < self.max_completion_length for t in lengths), LENGTH_TARGET_BELOW_MAX)
        return self


class GrpoSpec(GrpoSettings):
    rewards: list[RewardSpec] = Field(
        ..., min_length=1, max_length=16, description="Weighted reward functions; their weighted sum is the reward."
    )
    rollouts: RolloutSpec = Field(default_factory=RolloutSpec, description="Which engine samples the rollouts.")


class TrainerConfig(ApiModel):
    model: ModelSource = Field(..., description="Base model to fine-tune.")
    dataset: DatasetSource = Field(..., description="Training data.")
    method: Method = Field(
        "sft",
        description="sft = supervised fine-tuning, dpo = preference optimisation, grpo = RL from verifiable rewards.",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA adapter shape and kernel.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Optimisation hyper-parameters.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="Checkpointing and resume.")
    output: AdapterOutput = Field(..., description="Where the adapter goes.")
    grpo: GrpoSpec | None = Field(None, description="GRPO: rewards, rollouts and sampling (method grpo).")
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec,
        description="Held-out evaluation, parity-gate reference and routing profile published next to the adapter.",
    )
    report: ReportSpec | None = Field(None, description="FineTuneJob to report progress to (in-cluster only).")

    @model_validator(mode="after")
    def _rules(self) -> TrainerConfig:
        check_method(self.method, self.dataset.format, self.grpo is not None)
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
    reward: float | None = Field(None, description="GRPO: mean weighted reward of the latest step's completions.")
    rewards: dict[str, float] | None = Field(
        None, max_length=16, description="GRPO: mean of each reward function (by name) over the latest step."
    )
    reward_errors: dict[str, int] | None = Field(
        None, max_length=16, description="GRPO: batches each user reward could not score so far (by name)."
    )
    kl: float | None = Field(
        None, description="GRPO: KL to the base model (beta > 0), or to the policy that sampled the rollouts (async)."
    )
    completion_length: float | None = Field(None, description="GRPO: mean completion length (tokens).")
    rollout_tokens_per_second: float | None = Field(
        None, description="GRPO: completion tokens the rollout engine generates per second."
    )
    updated_at: str | None = Field(None, description="When the trainer last reported (RFC 3339).")


class RoutingProfile(ApiModel):
    """Where requests for this adapter come from: written by the trainer (tuneroute_trainer/profile.py),
    read by the router (tuneroute_router/adapters.py) through the route's config."""

    embedder: str = Field(..., max_length=128, description="Embedder of the embeddings; must be the router's.")
    samples: int = Field(..., ge=1, le=256, description="Training prompts embedded.")
    embeddings: str = Field(
        ...,
        min_length=1,
        max_length=120000,
        description="Unit-norm embeddings of a sample of the training prompts: int8 (x127), base64, samples x dim.",
    )
    eval_loss: float | None = Field(None, description="The adapter's loss on held-out rows of its data.")
    base_eval_loss: float | None = Field(None, description="The base model's loss on the same rows.")
    held_out: int | None = Field(None, ge=0, description="Held-out rows the losses were measured on.")

    @property
    def beats_base(self) -> bool:
        """The adapter did better than its base model on the held-out rows."""
        return self.eval_loss is not None and self.base_eval_loss is not None and self.eval_loss < self.base_eval_loss


class TrainerStatus(ApiModel):
    """The part of a FineTuneJob's status the trainer writes (the operator's status model extends it)."""

    progress: Progress | None = Field(None, description="Training progress reported by the trainer.")
    routing_profile: RoutingProfile | None = Field(
        None, description="The adapter's routing profile and held-out eval losses, reported when training ends."
    )


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
    "evaluation": "spec.evaluation",
    "output.dir": "spec.output.path",
    "output.adapterName": "spec.output.adapterName",
    "output": "spec.output",
    "grpo.rollouts.vllm.url": "spec.grpo.rollouts.vllm",  # the operator's sidecar
    "grpo": "spec.grpo",
}
# a python reward's file is the ConfigMap key the FineTuneJob names
_PYTHON_REWARD_PATH = re.compile(r"^grpo\.rewards\[(\d+)\]\.python\.path\b")


def spec_field(field: str) -> str:
    """The FineTuneJob field a trainer config field comes from (e.g. lora.rank -> spec.lora.rank)."""
    field = _PYTHON_REWARD_PATH.sub(r"grpo.rewards[\1].python.key", field)
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
