"""Invalid FineTuneJobs and ModelRoutes are refused by the real kube-apiserver.

Each case deep-copies a valid example (examples/10-finetunejob-qwen3-moe.yaml,
examples/20-modelroute-three-tiers.yaml), breaks exactly one thing, and sends it the way a
user would: `kubectl apply -f -` (client-side apply, strict field validation) and
`kubectl apply --server-side -f -`. The CRDs come from the Helm release. Every refusal
must exit non-zero and the message must name the field and say what is allowed; the
OpenAPI schema and the CEL rules (x-kubernetes-validations) are both exercised.

No operator runs here: this is admission only.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tuneroute_testing.k8s import example

pytestmark = pytest.mark.cluster

FTJ = example("10-finetunejob")
MROUTE = example("20-modelroute")
MODES = {"apply": (), "server-side": ("--server-side",)}


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


def case(id: str, kind: str, mutate, field: str, allowed: str):
    """field and allowed are regexes that must both match the error output."""
    return pytest.param(kind, mutate, field, allowed, id=id)


GE = "greater than or equal to"
LE = "less than or equal to"

CASES = [
    # ---------------- FineTuneJob: OpenAPI schema ----------------
    case("ftj-lora-rank-0", "ftj", setp("spec.lora.rank", 0), r"spec\.lora\.rank", f"{GE} 1"),
    case("ftj-lora-rank-2000", "ftj", setp("spec.lora.rank", 2000), r"spec\.lora\.rank", f"{LE} 1024"),
    case("ftj-missing-output", "ftj", delp("spec.output"), r"spec\.output", "Required value"),
    case("ftj-missing-dataset-format", "ftj", delp("spec.dataset.format"), r"spec\.dataset\.format", "Required value"),
    case(
        "ftj-dataset-format-bogus",
        "ftj",
        setp("spec.dataset.format", "bogus"),
        r"spec\.dataset\.format",
        r'supported values: "chat", "instruction", "completion", "preference"',
    ),
    case(
        "ftj-learning-rate-0",
        "ftj",
        setp("spec.training.learningRate", 0),
        r"spec\.training\.learningRate",
        "greater than 0",
    ),
    case(
        "ftj-learning-rate-negative",
        "ftj",
        setp("spec.training.learningRate", -1e-4),
        r"spec\.training\.learningRate",
        "greater than 0",
    ),
    case(
        "ftj-sequence-length-8",
        "ftj",
        setp("spec.training.sequenceLength", 8),
        r"spec\.training\.sequenceLength",
        f"{GE} 16",
    ),
    case("ftj-gpus-17", "ftj", setp("spec.resources.gpus", 17), r"spec\.resources\.gpus", f"{LE} 16"),
    case("ftj-backoff-limit-negative", "ftj", setp("spec.backoffLimit", -1), r"spec\.backoffLimit", f"{GE} 0"),
    case(
        "ftj-precision-fp8",
        "ftj",
        setp("spec.training.precision", "fp8"),
        r"spec\.training\.precision",
        r'supported values: "bf16", "fp16", "fp32"',
    ),
    case(
        "ftj-lora-kernel-cuda",
        "ftj",
        setp("spec.lora.kernel", "cuda"),
        r"spec\.lora\.kernel",
        r'supported values: "auto", "triton", "grouped", "loop", "peft"',
    ),
    case(
        "ftj-unknown-field-lora-rnak",
        "ftj",
        setp("spec.lora.rnak", 8),
        r"spec\.lora\.rnak",
        r"unknown field|field not declared in schema",
    ),
    case(
        "ftj-lora-target-modules-empty",
        "ftj",
        setp("spec.lora.targetModules", []),
        r"spec\.lora\.targetModules",
        "at least 1 items",
    ),
    case(
        "ftj-base-model-absolute-path",
        "ftj",
        both(delp("spec.baseModel.id"), setp("spec.baseModel.pvc", "models"), setp("spec.baseModel.path", "/qwen3")),
        r"spec\.baseModel\.path",
        re.escape("should match '^[^/].*$'"),
    ),
    case(
        "ftj-adapter-name-uppercase",
        "ftj",
        setp("spec.output.adapterName", "Qwen3"),
        r"spec\.output\.adapterName",
        "should match",
    ),
    # ---------------- FineTuneJob: CEL ----------------
    case(
        "ftj-base-model-id-and-pvc",
        "ftj",
        both(setp("spec.baseModel.pvc", "models"), setp("spec.baseModel.path", "qwen3")),
        r"spec\.baseModel",
        "set exactly one of id .* or pvc",
    ),
    case(
        "ftj-base-model-neither",
        "ftj",
        setp("spec.baseModel", {"revision": "main"}),
        r"spec\.baseModel",
        "set exactly one of id .* or pvc",
    ),
    case(
        "ftj-base-model-pvc-without-path",
        "ftj",
        both(delp("spec.baseModel.id"), setp("spec.baseModel.pvc", "models")),
        r"spec\.baseModel",
        "pvc needs path",
    ),
    case(
        "ftj-dataset-pvc-without-path",
        "ftj",
        both(delp("spec.dataset.id"), setp("spec.dataset.pvc", "data")),
        r"spec\.dataset",
        "pvc needs path",
    ),
    case("ftj-method-grpo", "ftj", setp("spec.method", "grpo"), r"spec\.method", "grpo is reserved .*use sft or dpo"),
    case(
        "ftj-dpo-with-chat-dataset",
        "ftj",
        setp("spec.method", "dpo"),
        r"spec\.dataset\.format",
        "method dpo needs a dataset with format preference",
    ),
    case(
        "ftj-sft-with-preference-dataset",
        "ftj",
        setp("spec.dataset.format", "preference"),
        r"spec\.dataset\.format",
        "a preference dataset needs method dpo",
    ),
    case(
        "ftj-dropout-with-experts",
        "ftj",
        setp("spec.lora.dropout", 0.05),
        r"spec\.lora\.dropout",
        "dropout must be 0 when experts is true",
    ),
    case(
        "ftj-name-53-chars",
        "ftj",
        setp("metadata.name", "a" * 53),
        r"metadata\.name",
        "at most 52 characters|may not be more than 52",
    ),
    case(
        "ftj-memory-negative",
        "ftj",
        setp("spec.resources.memory", "-200Gi"),
        r"spec\.resources\.memory",
        "must be a non-negative quantity",
    ),
    # ---------------- ModelRoute: OpenAPI schema ----------------
    case("mroute-tier-0", "mroute", setp("spec.pool.0.tier", 0), r"spec\.pool\[0\]\.tier", f"{GE} 1"),
    case("mroute-tier-11", "mroute", setp("spec.pool.0.tier", 11), r"spec\.pool\[0\]\.tier", f"{LE} 10"),
    case(
        "mroute-policy-mode-cheap",
        "mroute",
        setp("spec.policy.mode", "cheap"),
        r"spec\.policy\.mode",
        r'supported values: "cost", "balanced", "quality"',
    ),
    case(
        "mroute-url-without-scheme",
        "mroute",
        setp("spec.pool.3.backend.url", "vllm-qwen3-235b:8000/v1"),
        r"spec\.pool\[3\]\.backend\.url",
        re.escape(r"should match '^https?://\S+$'"),
    ),
    case("mroute-empty-pool", "mroute", setp("spec.pool", []), r"spec\.pool", "at least 1 items|Required value"),
    case(
        "mroute-duplicate-pool-names",
        "mroute",
        dup_pool_entry,
        r"spec\.pool",
        r'Duplicate value: \{"name":"qwen3-4b"\}|duplicate entries for key \[name="qwen3-4b"\]',
    ),
    case(
        "mroute-service-port-0",
        "mroute",
        setp("spec.pool.0.backend.service.port", 0),
        r"spec\.pool\[0\]\.backend\.service\.port",
        f"{GE} 1",
    ),
    case(
        "mroute-unknown-field-pool-teir",
        "mroute",
        setp("spec.pool.0.teir", 1),
        r"spec\.pool\[0\]\.teir|spec\.pool\.teir|teir",
        r"unknown field|field not declared in schema",
    ),
    # ---------------- ModelRoute: CEL ----------------
    case(
        "mroute-backend-url-and-service",
        "mroute",
        setp("spec.pool.0.backend.url", "http://vllm:8000/v1"),
        r"spec\.pool\[0\]\.backend",
        "set exactly one of url, service or fineTuneJob",
    ),
    case(
        "mroute-backend-none",
        "mroute",
        setp("spec.pool.0.backend", {}),
        r"spec\.pool\[0\]\.backend",
        "set exactly one of url, service or fineTuneJob",
    ),
    case(
        "mroute-finetunejob-base-missing",
        "mroute",
        setp("spec.pool.2.backend.fineTuneJob.base", "qwen3-30b"),
        r"spec\.pool",
        "fineTuneJob.base must name another pool entry with a url or service backend",
    ),
    case(
        "mroute-finetunejob-base-is-adapter",
        "mroute",
        setp("spec.pool.2.backend.fineTuneJob.base", "qwen3-support"),
        r"spec\.pool",
        "fineTuneJob.base must name another pool entry with a url or service backend",
    ),
    case(
        "mroute-thresholds-1.5",
        "mroute",
        setp("spec.policy.thresholds", [1.5]),
        r"spec\.policy\.thresholds",
        "strictly between 0 and 1",
    ),
    case(
        "mroute-default-model-not-in-pool",
        "mroute",
        setp("spec.policy.defaultModel", "gpt-4o"),
        r"spec\.policy\.defaultModel",
        "must name a pool entry",
    ),
    case(
        "mroute-fallback-unknown-name",
        "mroute",
        setp("spec.policy.fallbackOrder", ["qwen3-4b", "llama-70b"]),
        r"spec\.policy\.fallbackOrder",
        "must name pool entries only",
    ),
    case(
        "mroute-model-equals-pool-name",
        "mroute",
        setp("spec.model", "qwen3-4b"),
        r"spec\.model",
        "must differ from every pool entry's name",
    ),
    case(
        "mroute-name-51-chars",
        "mroute",
        setp("metadata.name", "r" * 51),
        r"metadata\.name",
        "at most 50 characters|may not be more than 50",
    ),
    # ---- the router's own cross-field checks (tuneroute_router.config), restated as CEL ----
    case(
        "mroute-thresholds-descending",
        "mroute",
        setp("spec.policy.thresholds", [0.7, 0.3]),
        r"spec\.policy\.thresholds",
        "strictly ascending",
    ),
    case(
        "mroute-thresholds-count-mismatch",
        "mroute",
        setp("spec.policy.thresholds", [0.5]),
        r"spec\.policy\.thresholds",
        "one cut point fewer than the pool has distinct tiers",
    ),
    case(
        "mroute-example-tier-not-in-pool",
        "mroute",
        setp("spec.policy.examples.0.tier", 7),
        r"spec\.policy\.examples",
        "must be the tier of some pool entry",
    ),
]


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def refusals_ns(control_plane, release):
    """One namespace for all the refusal cases: nothing is meant to be created in it, and a
    per-case namespace would cost more than the cases themselves."""
    name = f"t-invalid-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def manifest(kind: str, mutate=None) -> dict:
    obj = copy.deepcopy(FTJ if kind == "ftj" else MROUTE)
    if mutate:
        mutate(obj)
    return obj


def kubectl_apply(cp, namespace: str, obj: dict, mode: str, *extra: str):
    return cp.kubectl(
        "-n", namespace, "apply", *MODES[mode], *extra, "-f", "-", input=json.dumps(obj), check=False, timeout=30
    )


# --- tests -----------------------------------------------------------------------------------


def test_valid_examples_are_accepted(control_plane, release, namespace):
    """Without this the refusals below could be refusing everything."""
    for kind in ("ftj", "mroute"):
        for mode in MODES:
            out = kubectl_apply(control_plane, namespace, manifest(kind), mode, "--dry-run=server")
            assert out.returncode == 0, f"{kind} via {mode}: {out.stderr}"
            assert "(server dry run)" in out.stdout


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kind, mutate, field, allowed", CASES)
def test_invalid_manifest_is_refused(control_plane, refusals_ns, kind, mutate, field, allowed, mode):
    obj = manifest(kind, mutate)
    out = kubectl_apply(control_plane, refusals_ns, obj, mode)
    if out.returncode == 0:  # wrongly accepted: remove it so the other mode sees a create too
        control_plane.kubectl(
            "-n", refusals_ns, "delete", obj["kind"], obj["metadata"]["name"], "--wait=false", check=False
        )
    assert out.returncode != 0, f"accepted: {out.stdout.strip()}"
    err = out.stderr
    assert re.search(field, err), f"error does not name {field!r}:\n{err}"
    assert re.search(allowed, err), f"error does not say what is allowed ({allowed!r}):\n{err}"


@pytest.mark.parametrize("mode", list(MODES))
def test_finetunejob_spec_is_immutable_except_suspend(control_plane, release, namespace, mode):
    cp = control_plane
    ftj = manifest("ftj", setp("metadata.name", f"immutable-{mode}"))
    out = kubectl_apply(cp, namespace, ftj, mode)
    assert out.returncode == 0, out.stderr

    rank = manifest("ftj", both(setp("metadata.name", ftj["metadata"]["name"]), setp("spec.lora.rank", 32)))
    out = kubectl_apply(cp, namespace, rank, mode)
    assert out.returncode != 0, f"lora.rank change accepted: {out.stdout}"
    assert re.search(
        r"spec\.lora: Invalid value: .*spec\.lora is immutable once the FineTuneJob is created", out.stderr
    ), out.stderr
    assert "only suspend may change" in out.stderr

    model = manifest(
        "ftj", both(setp("metadata.name", ftj["metadata"]["name"]), setp("spec.baseModel.id", "Qwen/Qwen3-235B-A22B"))
    )
    out = kubectl_apply(cp, namespace, model, mode)
    assert out.returncode != 0, f"baseModel change accepted: {out.stdout}"
    assert re.search(r"spec\.baseModel: Invalid value: .*spec\.baseModel is immutable", out.stderr), out.stderr

    image = manifest(
        "ftj", both(setp("metadata.name", ftj["metadata"]["name"]), setp("spec.image", "registry.example/x:1"))
    )
    out = kubectl_apply(cp, namespace, image, mode)
    assert out.returncode != 0, f"adding spec.image accepted: {out.stdout}"
    assert "spec.image cannot be added or removed after creation" in out.stderr, out.stderr

    suspend = manifest("ftj", both(setp("metadata.name", ftj["metadata"]["name"]), setp("spec.suspend", True)))
    out = kubectl_apply(cp, namespace, suspend, mode)
    assert out.returncode == 0, f"suspend refused: {out.stderr}"
    got = cp.get("-n", namespace, "finetunejob", ftj["metadata"]["name"])
    assert got["spec"]["suspend"] is True
    assert got["spec"]["lora"]["rank"] == 16 and got["spec"]["baseModel"]["id"] == FTJ["spec"]["baseModel"]["id"]
