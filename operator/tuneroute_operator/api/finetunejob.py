"""FineTuneJob: LoRA fine-tuning of a base model on a dataset, run as a batch/v1 Job.

The LoRA, training and checkpoint sections and the progress in status are the trainer's own
models (tuneroute_trainer.config), so the CRD schema and the trainer's contract cannot drift;
so are the method/dataset rules. The rules only a FineTuneJob has are here, CEL and Python side
by side (see tuneroute_trainer.contract.Rule).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tuneroute_trainer.config import (
    METHOD_RULES,
    VLLM_WITH_ENGINE,
    CheckpointSpec,
    DatasetFormat,
    EvaluationSpec,
    GrpoSettings,
    LoraSpec,
    Method,
    RewardKinds,
    TrainerStatus,
    TrainingSpec,
    check_method,
)
from tuneroute_trainer.contract import Rule, check, rules

from .common import (
    DNS_LABEL,
    ApiModel,
    ClaimPath,
    Condition,
    ExtendedResourceName,
    Image,
    NodeSelector,
    ObjectName,
    Quantity,
    SecretKeyRef,
    SecretRef,
    Toleration,
)

HF_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$"

# A model or dataset comes from the hub (id) or from a claim (pvc + path): the same rules for both.
ID_OR_PVC = Rule(
    "has(self.id) != has(self.pvc)",
    "set exactly one of id (a Hugging Face repository) or pvc (a PersistentVolumeClaim)",
)
PATH_NEEDS_PVC = Rule("!has(self.path) || has(self.pvc)", "path is a path inside pvc; set pvc too")
PVC_NEEDS_PATH = Rule("!has(self.pvc) || has(self.path)", "pvc needs path (the location inside the claim)")
# The triton kernel runs on CUDA only: a CPU job asking for it would fail in the trainer.
TRITON_NEEDS_GPU = Rule(
    "!has(self.lora) || !has(self.lora.kernel) || self.lora.kernel != 'triton' || "
    "!has(self.resources) || !has(self.resources.gpus) || self.resources.gpus > 0",
    "triton runs on GPUs only: set resources.gpus to 1 or more, or use auto, grouped or loop",
    "lora.kernel",
)
# The GRPO trainer (its rollouts, its vLLM sidecar) runs in one process; sft and dpo shard across ranks.
GRPO_ONE_RANK = Rule(
    "!has(self.method) || self.method != 'grpo' || !has(self.resources) || "
    "((!has(self.resources.nodes) || self.resources.nodes == 1) && "
    "(!has(self.resources.gpus) || self.resources.gpus <= 1))",
    "method grpo trains in one process: set resources.nodes to 1 and resources.gpus to 0 or 1 "
    "(several ranks are supported for sft and dpo)",
    "resources",
)


class _Source(ApiModel):
    """Where a model or dataset comes from: the hub (id) or a claim (pvc + path)."""

    model_config = rules(ID_OR_PVC, PATH_NEEDS_PVC, PVC_NEEDS_PATH)
    id: str | None
    pvc: str | None
    path: str | None

    @model_validator(mode="after")
    def _rules(self) -> _Source:
        check((self.id is None) != (self.pvc is None), ID_OR_PVC)
        check(self.path is None or self.pvc is not None, PATH_NEEDS_PVC)
        check(self.pvc is None or self.path is not None, PVC_NEEDS_PATH)
        return self


class BaseModelSpec(_Source):
    """Where the base model's weights come from: a Hugging Face id, or a directory on a PVC."""

    id: str | None = Field(
        None, max_length=256, pattern=HF_ID, description="Hugging Face model id, e.g. Qwen/Qwen3-30B-A3B."
    )
    revision: str = Field(
        "main",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._/-]+$",
        description="Hugging Face revision (branch, tag or commit) of id.",
    )
    pvc: ObjectName | None = Field(None, description="PersistentVolumeClaim holding the model, mounted read-only.")
    path: ClaimPath | None = Field(None, description="Directory of the model inside pvc (relative).")


class DatasetSpec(_Source):
    """Training data: a Hugging Face dataset id, or json / jsonl / parquet files on a PVC."""

    id: str | None = Field(None, max_length=256, pattern=HF_ID, description="Hugging Face dataset id.")
    pvc: ObjectName | None = Field(None, description="PersistentVolumeClaim holding the data, mounted read-only.")
    path: ClaimPath | None = Field(None, description="File or directory inside pvc (relative): json, jsonl or parquet.")
    split: str = Field("train", min_length=1, max_length=64, description="Dataset split to train on.")
    format: DatasetFormat = Field(
        description="Record layout: chat (messages), instruction (instruction/input/output), completion (prompt/completion), preference (prompt/chosen/rejected; for dpo)."
    )


# ---- method grpo: the trainer's GRPO settings and reward kinds; the Python file and the vLLM server are
# Kubernetes objects here (a ConfigMap key, a sidecar container) where the trainer sees a path and a URL.


class PythonRewardRef(ApiModel):
    """A reward function in a ConfigMap key, mounted into the training pod (it runs there, as the user's code)."""

    config_map: ObjectName = Field(description="ConfigMap holding the Python file.")
    key: str = Field(max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key of the file in the ConfigMap.")
    function: str = Field(
        "reward",
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="fn(prompts, completions, completion_ids, **columns) -> list[float | None] in that file.",
    )


class Reward(RewardKinds):
    python: PythonRewardRef | None = Field(None, description="A user function from a ConfigMap's Python file.")


class VllmSidecar(ApiModel):
    """A vLLM OpenAI server started beside the trainer in the training pod (a native sidecar); each policy version
    reaches it as adapter files in a shared volume, loaded at run time under a new name."""

    image: Image = Field(description="vLLM OpenAI server image, e.g. vllm/vllm-openai:v0.32.0.")
    gpus: int = Field(1, ge=0, le=16, description="GPUs of the vLLM server (on top of resources.gpus for training).")
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="Share of its GPUs' memory vLLM may use (weights and KV cache)."
    )
    max_model_len: int = Field(4096, ge=64, le=1048576, description="Longest prompt + completion vLLM accepts.")
    extra_args: list[str] = Field(
        default_factory=list, max_length=32, description="More vLLM server flags, e.g. --tensor-parallel-size 2."
    )


class Rollouts(ApiModel):
    model_config = rules(VLLM_WITH_ENGINE)

    engine: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="transformers = generate in the trainer (small models); vllm = a vLLM server beside the trainer.",
    )
    vllm: VllmSidecar | None = Field(None, description="The vLLM server (engine vllm).")

    @model_validator(mode="after")
    def _rules(self) -> Rollouts:
        check((self.engine == "vllm") == (self.vllm is not None), VLLM_WITH_ENGINE)
        return self


class GrpoSpec(GrpoSettings):
    """Reinforcement learning with verifiable rewards (GRPO): sample `generations` completions per prompt, score
    them with the weighted rewards, push the policy towards the better ones."""

    rewards: list[Reward] = Field(
        min_length=1, max_length=16, description="Weighted reward functions; their weighted sum is the reward."
    )
    rollouts: Rollouts = Field(default_factory=Rollouts, description="Which engine samples the rollouts.")


class ResourcesSpec(ApiModel):
    """What each training pod asks the scheduler for, and how many pods."""

    gpus: int = Field(
        1,
        ge=0,
        le=16,
        description=(
            "GPUs per training pod, one trainer process (rank) each; 0 trains on the CPU, one rank per pod "
            "(tiny models only)."
        ),
    )
    nodes: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Training pods, each with `gpus` GPUs: nodes x gpus ranks share the model (FSDP2) and the batch "
            "(each rank takes batchSize sequences per step). More than 1 runs an Indexed Job that restarts "
            "every pod from the last checkpoint when one fails, and needs claims every node can mount: the "
            "output ReadWriteMany (each rank writes its checkpoint shard), a model or dataset claim "
            "ReadOnlyMany or ReadWriteMany."
        ),
    )
    gpu_resource: ExtendedResourceName = Field("nvidia.com/gpu", description="Extended resource name of the GPU.")
    cpu: Quantity | None = Field(None, description="CPU request and limit, e.g. '8'.")
    memory: Quantity | None = Field(None, description="Memory request and limit, e.g. 64Gi.")
    shared_memory: Quantity = Field(
        "16Gi", description="Size of the memory-backed /dev/shm (data loader workers, NCCL)."
    )
    node_selector: NodeSelector = Field(default_factory=dict, description="Node labels the pod must match.")
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints the pod tolerates (GPU nodes are often tainted)."
    )
    model_cache: Quantity = Field(
        "100Gi",
        description=(
            "Disk for the base model downloaded from the hub (baseModel.id): the size limit of the pod's model "
            "cache and its ephemeral-storage request, so that it lands on a node with that much disk."
        ),
    )


class OutputSpec(ApiModel):
    """Where the trained adapter is written."""

    pvc: ObjectName = Field(description="PersistentVolumeClaim the adapter and checkpoints are written to.")
    path: ClaimPath | None = Field(
        None,
        description=(
            "Directory inside pvc (relative); defaults to adapters/<adapter name> (status.adapterName). No two "
            "FineTuneJobs may share one."
        ),
    )
    adapter_name: str | None = Field(
        None,
        max_length=54,
        pattern=DNS_LABEL,
        description=(
            "Stem of the name the adapter is served under (default: the FineTuneJob's name). The served name is "
            "<stem>-<8 hex digits of the job's uid and spec> (status.adapterName): a retrained job gets a new name, "
            "so vLLM's prefix cache, keyed by adapter name, never serves the old one's entries."
        ),
    )
    merge: bool = Field(
        False,
        description=(
            "Also write the adapter merged into the base weights (<path>/merged), for engines or hardware that cannot "
            "run LoRA on MoE layers; status.adapter.mergedPath says where."
        ),
    )


class SecretsSpec(ApiModel):
    hf_token: SecretKeyRef | None = Field(
        None, description="Secret key holding a Hugging Face token (for gated models), passed as HF_TOKEN."
    )
    storage: SecretRef | None = Field(
        None, description="Secret whose keys become environment variables (object-store credentials)."
    )


class VerifySpec(ApiModel):
    """The train-to-serve parity gate: a short Job with the pinned vLLM image loads the finished adapter
    with vLLM's own code and compares it with what the trainer meant (condition ServingVerified)."""

    enabled: bool = Field(
        True, description="Run the gate; a ModelRoute serves an unverified adapter only with allowUnverified."
    )
    image: Image | None = Field(None, description="vLLM image; defaults to the operator's (the chart pins it).")
    gpus: int = Field(
        1,
        ge=0,
        le=16,
        description=(
            "GPUs for the gate. With 0 only the weight level runs for adapters on MoE experts (vLLM has no CPU "
            "MoE-LoRA kernel); the output level needs the same hardware as serving."
        ),
    )
    lora_target_modules: list[str] | None = Field(
        None,
        max_length=32,
        description=(
            "The serving engine's --lora-target-modules (unset: every module vLLM supports). Adapter tensors "
            "outside them fail the gate by name: vLLM would drop them silently."
        ),
    )
    max_lora_rank: int | None = Field(None, ge=1, le=512, description="The serving engine's --max-lora-rank.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="The serving engine's --dtype."
    )
    outputs: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "Output level (greedy tokens and logprobs, with and without the adapter): auto = where the hardware "
            "allows, on = required, off = weight level only."
        ),
    )
    resources: dict[str, Quantity] = Field(
        default_factory=dict, max_length=8, description="Extra requests and limits of the gate's pod (cpu, memory)."
    )


class FineTuneJobSpec(ApiModel):
    model_config = rules(*METHOD_RULES, TRITON_NEEDS_GPU, GRPO_ONE_RANK)

    base_model: BaseModelSpec = Field(description="The model to fine-tune.")
    dataset: DatasetSpec = Field(description="The training data.")
    method: Method = Field(
        "sft",
        description="Training method: sft (supervised), dpo (preference) or grpo (RL with verifiable rewards).",
    )
    grpo: GrpoSpec | None = Field(None, description="GRPO settings: rewards, rollouts, sampling (method grpo).")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA adapter shape and where it attaches.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Optimisation hyper-parameters.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="Checkpoint interval and resume.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="GPUs, CPU, memory and placement.")
    output: OutputSpec = Field(description="Where the adapter is written.")
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec,
        description="Held-out rows: eval loss against the base, the parity gate's prompts, the routing profile.",
    )
    verify: VerifySpec = Field(default_factory=VerifySpec, description="The train-to-serve parity gate.")
    secrets: SecretsSpec = Field(default_factory=SecretsSpec, description="Credentials from Secrets.")
    image: Image | None = Field(None, description="Trainer image; defaults to the operator's configured image.")
    suspend: bool = Field(
        False,
        description="Suspend the training Job (pods are deleted, progress is kept in checkpoints); set false to resume.",
    )
    backoff_limit: int = Field(
        3,
        ge=0,
        le=100,
        description=(
            "Pod failures tolerated before the FineTuneJob fails; each retry resumes from the last checkpoint. "
            "With resources.nodes > 1 a failed pod ends the attempt and every pod restarts: retries of the whole set."
        ),
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Wall-clock limit for the whole job, in seconds."
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        description="Delete the finished Job (not this resource or its adapter) this many seconds after it ends.",
    )

    @model_validator(mode="after")
    def _rules(self) -> FineTuneJobSpec:
        check_method(self.method, self.dataset.format, self.grpo is not None)
        check(self.lora.kernel != "triton" or self.resources.gpus > 0, TRITON_NEEDS_GPU)
        check(self.method != "grpo" or (self.resources.nodes == 1 and self.resources.gpus <= 1), GRPO_ONE_RANK)
        return self


class AdapterLocation(ApiModel):
    name: str = Field(description="Adapter name (for serving).")
    pvc: str = Field(description="PersistentVolumeClaim holding the adapter.")
    path: str = Field(description="Directory of the adapter inside pvc.")
    uri: str = Field(description="pvc://<claim>/<path>.")
    merged_path: str | None = Field(None, description="Directory of the merged model inside pvc (output.merge).")


class LevelFigures(ApiModel):
    """One side of the output level: vLLM against the trainer's PEFT model."""

    token_agreement: float | None = Field(None, description="Share of greedy tokens equal to the trainer's.")
    max_logprob_diff: float | None = Field(None, description="Largest |logprob difference| of the trainer's tokens.")


class WeightFigures(ApiModel):
    modules: int | None = Field(None, description="LoRA modules compared.")
    tensors: int | None = Field(None, description="Adapter tensors, all accounted for.")
    max_abs_diff: float | None = Field(None, description="Largest |difference| of the ΔW fingerprints.")
    max_rel_diff: float | None = Field(None, description="The same, relative to the fingerprint's size.")
    dtype: str | None = Field(None, description="Engine dtype.")


class OutputFigures(ApiModel):
    ran: bool | None = Field(None, description="Whether the output level ran.")
    skipped: str | None = Field(None, description="Why it did not.")
    prompts: int | None = Field(None, description="Held-out prompts compared.")
    tokens: int | None = Field(None, description="Greedy tokens per prompt.")
    dtype: str | None = Field(None, description="Engine dtype.")
    adapter: LevelFigures | None = Field(None, description="Requests with the adapter.")
    base: LevelFigures | None = Field(None, description="Requests without it, on the LoRA-enabled engine.")


class ServingVerification(ApiModel):
    """What the parity gate found (also summarised by the ServingVerified condition)."""

    verified: bool | None = Field(None, description="vLLM reads the adapter as the trainer meant it.")
    reason: str | None = Field(None, description="Verified, or why not (CamelCase).")
    message: str | None = Field(None, description="The gate's words.")
    tensor: str | None = Field(None, description="The adapter tensor that failed, by name.")
    vllm_version: str | None = Field(None, description="vLLM version of the gate (the serving image's).")
    targets: str | None = Field(None, description="The engine's LoRA target modules the gate assumed.")
    weights: WeightFigures | None = Field(None, description="Weight level figures.")
    outputs: OutputFigures | None = Field(None, description="Output level figures.")
    job_name: str | None = Field(None, description="The verify Job.")


Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]


class FineTuneJobStatus(TrainerStatus):
    """Written by the operator; `progress` (from TrainerStatus) by the trainer."""

    phase: Phase | None = Field(None, description="Pending, Running, Succeeded, Failed or Suspended.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Observed states: Ready, Running, Succeeded, Failed, Suspended, ServingVerified.",
    )
    observed_generation: int | None = Field(None, description="metadata.generation the operator last acted on.")
    job_name: str | None = Field(
        None, description="The batch/v1 Job running the trainer (with several pods, the latest attempt's)."
    )
    start_time: str | None = Field(None, description="When training started (RFC 3339).")
    completion_time: str | None = Field(None, description="When training finished (RFC 3339).")
    attempts: int | None = Field(
        None, description="Training attempts so far (1 + retries): pods started, or with several pods, sets of pods."
    )
    message: str | None = Field(None, description="Last noteworthy message, e.g. the trainer's error.")
    adapter_name: str | None = Field(
        None, description="The versioned name the adapter is served under (<stem>-<hash of uid and spec>)."
    )
    adapter: AdapterLocation | None = Field(None, description="Where the finished adapter is.")
    serving: ServingVerification | None = Field(None, description="The parity gate's result.")
