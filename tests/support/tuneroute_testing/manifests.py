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
        re.escape("should match '^[^/].*$'"),
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
    Case("ftj-method-grpo", "ftj", setp("spec.method", "grpo"), r"spec\.method", "grpo is reserved .*use sft or dpo"),
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
        "set exactly one of url, service or fineTuneJob",
    ),
    Case(
        "mroute-backend-none",
        "mroute",
        setp("spec.pool.0.backend", {}),
        r"spec\.pool\[0\]\.backend",
        "set exactly one of url, service or fineTuneJob",
    ),
    Case(
        "mroute-finetunejob-base-missing",
        "mroute",
        setp("spec.pool.2.backend.fineTuneJob.base", "qwen3-30b"),
        r"spec\.pool",
        "fineTuneJob.base must name another pool entry with a url or service backend",
    ),
    Case(
        "mroute-finetunejob-base-is-adapter",
        "mroute",
        setp("spec.pool.2.backend.fineTuneJob.base", "qwen3-support"),
        r"spec\.pool",
        "fineTuneJob.base must name another pool entry with a url or service backend",
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
]
