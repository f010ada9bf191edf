"""Invalid FineTuneJobs and ModelRoutes, each a valid example with exactly one thing broken.

The API server must refuse each (tests/e2e/test_invalid_manifests.py), and so must the
operator's and the configs' own validation, with the same rules (tests/operator/test_rules_agree.py).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .k8s import example

FTJ = example("10-finetunejob")
MROUTE = example("20-modelroute")


# --- one-thing mutations ---------------------------------------------------------------------


def setp(path: str, value: Any) -> Callable[[dict], None]:
    """Set a dotted path (list indexes as numbers), creating dicts on the way."""

    def mutate(obj: dict) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for p in parents:
            node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
        node[int(last) if last.isdigit() else last] = value

    return mutate


def delp(path: str) -> Callable[[dict], None]:
    def mutate(obj: dict) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        del node[int(last) if last.isdigit() else last]

    return mutate


def both(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(obj: dict) -> None:
        for m in mutations:
            m(obj)

    return mutate


def dup_pool_entry(obj: dict) -> None:
    entry = copy.deepcopy(obj["spec"]["pool"][0])
    entry["tier"] = 3  # same name, otherwise different: still one key
    obj["spec"]["pool"].append(entry)


@dataclass(frozen=True)
class Case:
    """One invalid manifest: `mutate` breaks one thing in a valid example of `kind` (ftj or
    mroute); `field` and `allowed` are regexes that must both match the API server's error."""

    id: str
    kind: str
    mutate: Callable[[dict], None]
    field: str
    allowed: str


def manifest(kind: str, mutate: Callable[[dict], None] | None = None) -> dict:
    """A deep copy of the valid example of `kind`, with `mutate` applied."""
    obj = copy.deepcopy(FTJ if kind == "ftj" else MROUTE)
    if mutate:
        mutate(obj)
    return obj


def grpo(**over: Any) -> Callable[[dict], None]:
    """The SFT example turned into a valid GRPO job, with `over` merged into spec.grpo."""
    section = {"rewards": [{"name": "correct", "numericMatch": {}}, {"name": "format", "regex": {"pattern": "x"}}]}
    return both(
        setp("spec.method", "grpo"), setp("spec.dataset.format", "completion"), setp("spec.grpo", {**section, **over})
    )


GE = "greater than or equal to"
LE = "less than or equal to"

CASES = [
    # ---------------- FineTuneJob: OpenAPI schema ----------------
    Case("ftj-lora-rank-0", "ftj", setp("spec.lora.rank", 0), r"spec\.lora\.rank", f"{GE} 1"),
    Case("ftj-lora-rank-2000", "ftj", setp("spec.lora.rank", 2000), r"spec\.lora\.rank", f"{LE} 1024"),
    Case("ftj-missing-output", "ftj", delp("spec.output"), r"spec\.output", "Required value"),
    Case("ftj-missing-dataset-format", "ftj", delp("spec.dataset.format"), r"spec\.dataset\.format", "Required value"),
    Case(
        "ftj-dataset-format-bogus",
        "ftj",
        setp("spec.dataset.format", "bogus"),
        r"spec\.dataset\.format",
        r'supported values: "chat", "instruction", "completion", "preference"',
    ),
    Case(
        "ftj-learning-rate-0",
        "ftj",
        setp("spec.training.learningRate", 0),
        r"spec\.training\.learningRate",
        "greater than 0",
    ),
    Case(
        "ftj-learning-rate-negative",
        "ftj",
        setp("spec.training.learningRate", -1e-4),
        r"spec\.training\.learningRate",
        "greater than 0",
    ),
    Case(
        "ftj-sequence-length-8",
        "ftj",
        setp("spec.training.sequenceLength", 8),
        r"spec\.training\.sequenceLength",
        f"{GE} 16",
    ),
    Case("ftj-gpus-17", "ftj", setp("spec.resources.gpus", 17), r"spec\.resources\.gpus", f"{LE} 16"),
    Case("ftj-nodes-0", "ftj", setp("spec.resources.nodes", 0), r"spec\.resources\.nodes", f"{GE} 1"),
    Case("ftj-nodes-65", "ftj", setp("spec.resources.nodes", 65), r"spec\.resources\.nodes", f"{LE} 64"),
    Case("ftj-backoff-limit-negative", "ftj", setp("spec.backoffLimit", -1), r"spec\.backoffLimit", f"{GE} 0"),
    Case(
        "ftj-precision-fp8",
        "ftj",
        setp("spec.training.precision", "fp8"),
        r"spec\.training\.precision",
        r'supported values: "bf16", "fp16", "fp32"',
    ),
    Case(
        "ftj-lora-kernel-cuda",
        "ftj",
        setp("spec.lora.kernel", "cuda"),
        r"spec\.lora\.kernel",
        r'supported values: "auto", "triton", "grouped", "loop", "peft"',
    ),
    Case(
        "ftj-unknown-field-lora-rnak",
        "ftj",
        setp("spec.lora.rnak", 8),
        r"spec\.lora\.rnak",
        r"unknown field|field not declared in schema",
    ),
    Case(
        "ftj-lora-target-modules-empty",
        "ftj",
        setp("spec.lora.targetModules", []),
        r"spec\.lora\.targetModules",
        "at least 1 items",
    ),
    Case(
        "ftj-base-model-absolute-path",
        "ftj",
        both(delp("spec.baseModel.id"), setp("spec.baseModel.pvc", "models"), setp("spec.baseModel.path", "/qwen3")),
        r"spec\.baseModel\.path",
        "must be a relative path inside the claim",
    ),
    Case(
        "ftj-grpo-one-generation",
        "ftj",
        grpo(generations=1),
        r"spec\.grpo\.generations",
        f"{GE} 2",
    ),
    Case(
        "ftj-grpo-unknown-reward-kind",
        "ftj",
        grpo(rewards=[{"name": "bleu", "bleuScore": {}}]),
        r"spec\.grpo\.rewards\[0\]\.bleuScore",
        r"unknown field|field not declared in schema",
    ),
    Case(
        "ftj-grpo-http-reward-not-a-url",
        "ftj",
        grpo(rewards=[{"name": "judge", "http": {"url": "judge.ml.svc/score"}}]),
        r"spec\.grpo\.rewards\[0\]\.http\.url",
        "should match",
    ),
    Case(
        "ftj-adapter-name-uppercase",
        "ftj",
        setp("spec.output.adapterName", "Qwen3"),
        r"spec\.output\.adapterName",
        "should match",
    ),
    # ---------------- FineTuneJob: CEL ----------------
    Case(
        "ftj-base-model-id-and-pvc",
        "ftj",
        both(setp("spec.baseModel.pvc", "models"), setp("spec.baseModel.path", "qwen3")),
        r"spec\.baseModel",
        "set exactly one of id .* or pvc",
    ),
    Case(
        "ftj-base-model-neither",
        "ftj",
        setp("spec.baseModel", {"revision": "main"}),
        r"spec\.baseModel",
        "set exactly one of id .* or pvc",
    ),
    Case(
        "ftj-base-model-pvc-without-path",
        "ftj",
        both(delp("spec.baseModel.id"), setp("spec.baseModel.pvc", "models")),
        r"spec\.baseModel",
        "pvc needs path",
    ),
    Case(
        "ftj-dataset-path-without-pvc",
        "ftj",
        setp("spec.dataset.path", "train.jsonl"),
        r"spec\.dataset",
        "path is a path inside pvc; set pvc too",
    ),
    Case(
        "ftj-dataset-pvc-without-path",
        "ftj",
        both(delp("spec.dataset.id"), setp("spec.dataset.pvc", "data")),
        r"spec\.dataset",
        "pvc needs path",
    ),
    Case(
        "ftj-grpo-without-section",
        "ftj",
        setp("spec.method", "grpo"),
        r"spec\.grpo",
        "method grpo needs the grpo section",
    ),
    Case(
        "ftj-sft-with-grpo-section",
        "ftj",
        both(grpo(), setp("spec.method", "sft")),
        r"spec\.grpo",
        "only method grpo takes one",
    ),
    Case(
        "ftj-grpo-with-preference-dataset",
        "ftj",
        both(grpo(), setp("spec.dataset.format", "preference")),
        r"spec\.dataset\.format",
        "a preference dataset needs method dpo",
    ),
    Case(
        "ftj-grpo-reward-two-kinds",
        "ftj",
        grpo(rewards=[{"name": "correct", "numericMatch": {}, "exactMatch": {}}]),
        r"spec\.grpo\.rewards\[0\]",
        "set exactly one of exactMatch, numericMatch",
    ),
    Case(
        "ftj-grpo-reward-names-twice",
        "ftj",
        grpo(rewards=[{"name": "r", "numericMatch": {}}, {"name": "r", "regex": {"pattern": "x"}}]),
        r"spec\.grpo\.rewards",
        "reward names must be unique",
    ),
    Case(
        "ftj-grpo-async-with-beta",
        "ftj",
        grpo(beta=0.04),
        r"spec\.grpo\.beta",
        "asynchronous GRPO has no reference model",
    ),
    Case(
        "ftj-grpo-length-target-past-the-limit",
        "ftj",
        grpo(maxCompletionLength=64, rewards=[{"name": "short", "lengthPenalty": {"targetTokens": 64}}]),
        r"spec\.grpo\.rewards",
        "lengthPenalty.targetTokens must be below maxCompletionLength",
    ),
    Case(
        "ftj-grpo-vllm-engine-without-server",
        "ftj",
        grpo(rollouts={"engine": "vllm"}),
        r"spec\.grpo\.rollouts\.vllm",
        "set vllm exactly when engine is vllm",
    ),
    Case(
        "ftj-dpo-with-chat-dataset",
        "ftj",
        setp("spec.method", "dpo"),
        r"spec\.dataset\.format",
        "method dpo needs a dataset with format preference",
    ),
    Case(
        "ftj-sft-with-preference-dataset",
        "ftj",
        setp("spec.dataset.format", "preference"),
        r"spec\.dataset\.format",
        "a preference dataset needs method dpo",
    ),
    Case(
        "ftj-dropout-with-experts",
        "ftj",
        setp("spec.lora.dropout", 0.05),
        r"spec\.lora\.dropout",
        "must be 0 when experts is true",
    ),
    Case(
        "ftj-name-53-chars",
        "ftj",
        setp("metadata.name", "a" * 53),
        r"metadata\.name",
        "at most 52 characters|may not be more than 52",
    ),
    Case(
        "ftj-memory-negative",
        "ftj",
        setp("spec.resources.memory", "-200Gi"),
        r"spec\.resources\.memory",
        "must be a non-negative quantity",
    ),
    # ---------------- ModelRoute: OpenAPI schema ----------------
    Case("mroute-tier-0", "mroute", setp("spec.pool.0.tier", 0), r"spec\.pool\[0\]\.tier", f"{GE} 1"),
    Case("mroute-tier-11", "mroute", setp("spec.pool.0.tier", 11), r"spec\.pool\[0\]\.tier", f"{LE} 10"),
    Case(
        "mroute-max-concurrency-0",
        "mroute",
        setp("spec.pool.0.maxConcurrency", 0),
        r"spec\.pool\[0\]\.maxConcurrency",
        f"{GE} 1",
    ),
    Case(
        "mroute-timeout-seconds-0",
        "mroute",
        setp("spec.pool.0.timeoutSeconds", 0),
        r"spec\.pool\[0\]\.timeoutSeconds",
        "greater than 0",
    ),
    Case(
        "mroute-policy-mode-cheap",
        "mroute",
        setp("spec.policy.mode", "cheap"),
        r"spec\.policy\.mode",
        r'supported values: "cost", "balanced", "quality"',
    ),
    Case(
        "mroute-url-without-scheme",
        "mroute",
        setp("spec.pool.3.backend.url", "vllm-qwen3-235b:8000/v1"),
        r"spec\.pool\[3\]\.backend\.url",
        re.escape(r"should match '^https?://\S+$'"),
    ),
    Case(
        "mroute-server-max-in-flight-0",
        "mroute",
        setp("spec.server.maxInFlight", 0),
        r"spec\.server\.maxInFlight",
        f"{GE} 1",
    ),
    Case("mroute-empty-pool", "mroute", setp("spec.pool", []), r"spec\.pool", "at least 1 items|Required value"),
    Case(
        "mroute-duplicate-pool-names",
        "mroute",
        dup_pool_entry,
        r"spec\.pool",
        r'Duplicate value: \{"name":"qwen3-4b"\}|duplicate entries for key \[name="qwen3-4b"\]',
    ),
    Case(
        "mroute-service-port-0",
        "mroute",
        setp("spec.pool.0.backend.service.port", 0),
        r"spec\.pool\[0\]\.backend\.service\.port",
        f"{GE} 1",
    ),
    Case(
        "mroute-unknown-field-pool-teir",
        "mroute",
        setp("spec.pool.0.teir", 1),
        r"spec\.pool\[0\]\.teir|spec\.pool\.teir|teir",
        r"unknown field|field not declared in schema",
    ),
    # ---------------- ModelRoute: CEL ----------------
    Case(
        "mroute-backend-url-and-service",
        "mroute",
        setp("spec.pool.0.backend.url", "http://vllm:8000/v1"),
        r"spec\.pool\[0\]\.backend",
        "set exactly one of url, service, fineTuneJob or vllm",
    ),
    Case(
        "mroute-backend-none",
        "mroute",
        setp("spec.pool.0.backend", {}),
        r"spec\.pool\[0\]\.backend",
        "set exactly one of url, service, fineTuneJob or vllm",
    ),
    Case(
        "mroute-finetunejob-base-missing",
        "mroute",
        setp("spec.pool.2.backend.fineTuneJob.base", "qwen3-30b"),
        r"spec\.pool",
        r"spec\.pool\[2\]: backend\.fineTuneJob\.base must name another pool entry with a url, service or vllm backend",
    ),
    Case(
        "mroute-finetunejob-base-is-adapter",
        "mroute",
        setp("spec.pool.2.backend.fineTuneJob.base", "qwen3-support"),
        r"spec\.pool",
        r"spec\.pool\[2\]: backend\.fineTuneJob\.base must name another pool entry with a url, service or vllm backend",
    ),
    Case(
        "mroute-thresholds-1.5",
        "mroute",
        setp("spec.policy.thresholds", [1.5]),
        r"spec\.policy\.thresholds",
        "strictly between 0 and 1",
    ),
    Case(
        "mroute-default-model-not-in-pool",
        "mroute",
        setp("spec.policy.defaultModel", "gpt-4o"),
        r"spec\.policy\.defaultModel",
        "must name a pool entry",
    ),
    Case(
        "mroute-fallback-unknown-name",
        "mroute",
        setp("spec.policy.fallbackOrder", ["qwen3-4b", "llama-70b"]),
        r"spec\.policy\.fallbackOrder",
        "must name pool entries only",
    ),
    Case(
        "mroute-model-equals-pool-name",
        "mroute",
        setp("spec.model", "qwen3-4b"),
        r"spec\.model",
        "must differ from every pool entry's name",
    ),
    Case(
        "mroute-name-51-chars",
        "mroute",
        setp("metadata.name", "r" * 51),
        r"metadata\.name",
        "at most 50 characters|may not be more than 50",
    ),
    Case(
        "mroute-finetunejob-backend-with-api-key",
        "mroute",
        setp("spec.pool.2.backend.apiKey", {"name": "keys", "key": "adapter"}),
        r"spec\.pool\[2\]\.backend\.apiKey",
        "must be unset for a fineTuneJob backend: its base entry's backend serves the adapter",
    ),
    # ---- authentication is stated, never an open default (issue 11) ----
    Case(
        "mroute-auth-unset",
        "mroute",
        delp("spec.auth"),
        r"spec\.auth",
        r"required: set auth\.apiKeySecret .*, or write auth: \{mode: none\}",
    ),
    Case(
        "mroute-auth-empty",
        "mroute",
        setp("spec.auth", {}),
        r"spec\.auth\.apiKeySecret",
        "required unless mode is none",
    ),
    Case(
        "mroute-auth-none-with-secret",
        "mroute",
        setp("spec.auth.mode", "none"),
        r"spec\.auth\.mode",
        "none serves without authentication: apiKeySecret and allowedModels must be unset",
    ),
    Case(
        "mroute-auth-mode-open",
        "mroute",
        setp("spec.auth.mode", "open"),
        r"spec\.auth\.mode",
        r'supported values: "apiKey", "none"',
    ),
    # ---- the router's own cross-field checks (tuneroute_router.config), restated as CEL ----
    Case(
        "mroute-thresholds-descending",
        "mroute",
        setp("spec.policy.thresholds", [0.7, 0.3]),
        r"spec\.policy\.thresholds",
        "strictly ascending",
    ),
    Case(
        "mroute-thresholds-count-mismatch",
        "mroute",
        setp("spec.policy.thresholds", [0.5]),
        r"spec\.policy\.thresholds",
        "one cut point fewer than the pool has distinct tiers",
    ),
    Case(
        "mroute-example-tier-not-in-pool",
        "mroute",
        setp("spec.policy.examples.0.tier", 7),
        r"spec\.policy\.examples",
        "must be the tier of some pool entry",
    ),
    # ---- what the API server used to accept and then refuse in a child (issue 11) ----
    Case(
        "ftj-gpu-resource-unqualified",
        "ftj",
        setp("spec.resources.gpuResource", "gpu"),
        r"spec\.resources\.gpuResource",
        "must be an extended resource name: domain/name, e.g. nvidia.com/gpu",
    ),
    Case(
        "ftj-gpu-resource-kubernetes-io",
        "ftj",
        setp("spec.resources.gpuResource", "kubernetes.io/gpu"),
        r"spec\.resources\.gpuResource",
        "must not be in the kubernetes.io domain",
    ),
    Case(
        "ftj-node-selector-key-with-space",
        "ftj",
        setp("spec.resources.nodeSelector", {"gpu type": "h100"}),
        r"spec\.resources\.nodeSelector",
        "key gpu type is not a label key: .prefix/.name",
    ),
    Case(
        "ftj-node-selector-value-with-space",
        "ftj",
        setp("spec.resources.nodeSelector", {"gpu": "h100 sxm"}),
        r"spec\.resources\.nodeSelector",
        "values must be label values",
    ),
    Case(
        "ftj-secret-key-with-space",
        "ftj",
        setp("spec.secrets.hfToken.key", "hf token"),
        r"spec\.secrets\.hfToken\.key",
        "must be a Secret key: letters, digits",
    ),
    Case(
        "ftj-toleration-equal-without-key",
        "ftj",
        setp("spec.resources.tolerations", [{"operator": "Equal", "value": "x"}]),
        r"spec\.resources\.tolerations\[0\]\.operator",
        "must be Exists when key is empty",
    ),
    Case(
        "ftj-toleration-exists-with-value",
        "ftj",
        setp("spec.resources.tolerations", [{"key": "gpu", "operator": "Exists", "value": "x"}]),
        r"spec\.resources\.tolerations\[0\]\.value",
        "must be empty when operator is Exists",
    ),
    Case(
        "ftj-toleration-seconds-without-noexecute",
        "ftj",
        setp(
            "spec.resources.tolerations",
            [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30}],
        ),
        r"spec\.resources\.tolerations\[0\]\.tolerationSeconds",
        "applies to effect NoExecute only",
    ),
    Case(
        "ftj-toleration-key-with-space",
        "ftj",
        setp("spec.resources.tolerations", [{"key": "gpu vendor", "operator": "Exists"}]),
        r"spec\.resources\.tolerations\[0\]\.key",
        "must be a label key",
    ),
    Case(
        "ftj-toleration-value-with-space",
        "ftj",
        setp("spec.resources.tolerations", [{"key": "gpu", "value": "a b"}]),
        r"spec\.resources\.tolerations\[0\]\.value",
        "must be a label value",
    ),
    Case(
        "ftj-image-trailing-newline",
        "ftj",
        setp("spec.image", "registry.example/tuneroute/trainer:1.0\n"),
        r"spec\.image",
        "must be an image reference: registry/repository.*no whitespace",
    ),
    Case(
        "ftj-dataset-path-escapes-the-claim",
        "ftj",
        both(delp("spec.dataset.id"), setp("spec.dataset.pvc", "data"), setp("spec.dataset.path", "../other/x.jsonl")),
        r"spec\.dataset\.path",
        "must not contain a '..' segment",
    ),
    Case(
        "ftj-output-path-escapes-the-claim",
        "ftj",
        setp("spec.output.path", "adapters/../../etc"),
        r"spec\.output\.path",
        "must not contain a '..' segment",
    ),
    Case("ftj-seed-negative", "ftj", setp("spec.training.seed", -1), r"spec\.training\.seed", f"{GE} 0"),
    Case(
        "ftj-learning-rate-absurd",
        "ftj",
        setp("spec.training.learningRate", 3.0),
        r"spec\.training\.learningRate",
        "must be at most 0.1",
    ),
    Case(
        "ftj-triton-without-gpu",
        "ftj",
        both(setp("spec.lora.kernel", "triton"), setp("spec.resources.gpus", 0)),
        r"spec\.lora\.kernel",
        "triton runs on GPUs only",
    ),
    Case(
        "ftj-grpo-on-two-nodes",
        "ftj",
        both(grpo(), setp("spec.resources.nodes", 2)),
        r"spec\.resources",
        "method grpo trains in one process",
    ),
    Case(
        "ftj-target-module-empty-name",
        "ftj",
        setp("spec.lora.targetModules", ["q_proj", ""]),
        r"spec\.lora\.targetModules\[1\]",
        "must be a module name such as q_proj",
    ),
    Case(
        "ftj-revision-empty",
        "ftj",
        setp("spec.baseModel.revision", ""),
        r"spec\.baseModel\.revision",
        "at least 1 chars",
    ),
    Case("ftj-split-empty", "ftj", setp("spec.dataset.split", ""), r"spec\.dataset\.split", "at least 1 chars"),
    Case(
        "ftj-name-with-a-dot",
        "ftj",
        setp("metadata.name", "qwen3.support"),
        r"metadata\.name",
        "must be a DNS label: lowercase letters, digits and '-'",
    ),
    Case(
        "mroute-name-with-a-dot",
        "mroute",
        setp("metadata.name", "assistant.v2"),
        r"metadata\.name",
        "must start with a lowercase letter .*router's Service",
    ),
    Case(
        "mroute-name-with-a-leading-digit",
        "mroute",
        setp("metadata.name", "2-assistant"),
        r"metadata\.name",
        "must start with a lowercase letter",
    ),
    Case(
        "mroute-url-with-credentials",
        "mroute",
        setp("spec.pool.3.backend.url", "http://admin:s3cret@vllm-qwen3-235b:8000/v1"),
        r"spec\.pool\[3\]\.backend\.url",
        "must not contain credentials",
    ),
    Case(
        "mroute-url-without-host",
        "mroute",
        setp("spec.pool.3.backend.url", "http://:8000/v1"),
        r"spec\.pool\[3\]\.backend\.url",
        "must name a host",
    ),
    Case(
        "mroute-url-port-out-of-range",
        "mroute",
        setp("spec.pool.3.backend.url", "http://vllm-qwen3-235b:99999/v1"),
        r"spec\.pool\[3\]\.backend\.url",
        "port must be 1 to 65535",
    ),
    Case(
        "mroute-router-image-with-space",
        "mroute",
        setp("spec.router.image", "registry.example/router:1 latest"),
        r"spec\.router\.image",
        "must be an image reference",
    ),
    Case(
        "mroute-mount-path-escapes",
        "mroute",
        setp("spec.pool.2.backend.fineTuneJob.mountPath", "/adapters/../etc"),
        r"spec\.pool\[2\]\.backend\.fineTuneJob\.mountPath",
        "must not contain a '..' segment",
    ),
    Case(
        "mroute-mount-path-relative",
        "mroute",
        setp("spec.pool.2.backend.fineTuneJob.mountPath", "adapters"),
        r"spec\.pool\[2\]\.backend\.fineTuneJob\.mountPath",
        "must be an absolute path",
    ),
]
