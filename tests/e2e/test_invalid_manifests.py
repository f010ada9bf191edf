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

import json
import re
import uuid

import pytest

from tuneroute_testing.manifests import CASES, FTJ, both, grpo, manifest, setp

pytestmark = pytest.mark.cluster
MODES = {"apply": (), "server-side": ("--server-side",)}


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def refusals_ns(control_plane, release):
    """One namespace for all the refusal cases: nothing is meant to be created in it, and a
    per-case namespace would cost more than the cases themselves."""
    name = f"t-invalid-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def kubectl_apply(cp, namespace: str, obj: dict, mode: str, *extra: str):
    return cp.kubectl(
        "-n", namespace, "apply", *MODES[mode], *extra, "-f", "-", input=json.dumps(obj), check=False, timeout=30
    )


# --- tests -----------------------------------------------------------------------------------


def test_valid_examples_are_accepted(control_plane, release, namespace):
    """Without this the refusals below could be refusing everything."""
    for kind, mutate in (("ftj", None), ("ftj", grpo()), ("mroute", None)):
        for mode in MODES:
            out = kubectl_apply(control_plane, namespace, manifest(kind, mutate), mode, "--dry-run=server")
            assert out.returncode == 0, f"{kind} via {mode}: {out.stderr}"
            assert "(server dry run)" in out.stdout


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invalid_manifest_is_refused(control_plane, refusals_ns, case, mode):
    obj = manifest(case.kind, case.mutate)
    out = kubectl_apply(control_plane, refusals_ns, obj, mode)
    if out.returncode == 0:  # wrongly accepted: remove it so the other mode sees a create too
        control_plane.kubectl(
            "-n", refusals_ns, "delete", obj["kind"], obj["metadata"]["name"], "--wait=false", check=False
        )
    assert out.returncode != 0, f"accepted: {out.stdout.strip()}"
    err = out.stderr
    assert re.search(case.field, err), f"error does not name {case.field!r}:\n{err}"
    assert re.search(case.allowed, err), f"error does not say what is allowed ({case.allowed!r}):\n{err}"


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


def test_null_for_an_optional_field_is_accepted_by_server_side_apply(control_plane, release, namespace):
    """Argo CD and Flux apply manifests server-side, and a chart or kustomization often renders an
    unset optional field as `null`. Client-side apply drops nulls; server-side apply refused them
    unless the schema says nullable."""
    cases = {
        "ftj": [
            setp("spec.image", None),
            setp("spec.output.adapterName", None),
            setp("spec.activeDeadlineSeconds", None),
            setp("spec.resources.memory", None),
            setp("spec.training.maxSteps", None),
        ],
        "mroute": [
            setp("spec.pool.0.model", None),
            setp("spec.router.image", None),
            setp("spec.policy.thresholds", None),
            setp("spec.policy.defaultModel", None),
        ],
    }
    for kind, mutations in cases.items():
        out = kubectl_apply(
            control_plane, namespace, manifest(kind, both(*mutations)), "server-side", "--dry-run=server"
        )
        assert out.returncode == 0, f"{kind}: {out.stderr}"
