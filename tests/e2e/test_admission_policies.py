"""The chart's ValidatingAdmissionPolicies, enforced by the real API server."""

from __future__ import annotations

import json
import re

import pytest

from tuneroute_operator.api.finetunejob import FineTuneJobStatus
from tuneroute_testing import REPO, running_operators
from tuneroute_testing.control_plane import wait_until
from tuneroute_testing.k8s import apply, small_finetunejob

pytestmark = pytest.mark.cluster
CHART = str(REPO / "charts" / "tuneroute")


def _patch_status(cp, namespace: str, name: str, status: dict, as_user: str):
    return cp.kubectl(
        "-n", namespace, "patch", "ftj", name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}), "--as", as_user, check=False,
    )  # fmt: skip


def test_the_training_pod_may_report_progress_but_not_claim_success(control_plane, operator, namespace):
    """The per-job ServiceAccount can patch status (RBAC cannot narrow a patch to one field);
    the policy keeps it to status.progress, so a compromised or buggy trainer cannot mark the
    job Succeeded or point status.adapter at other weights for a route to serve."""
    cp = control_plane
    apply(cp, namespace, small_finetunejob("guarded"))
    cp.kubectl("-n", namespace, "wait", "--for=create", "role/guarded-trainer", "--timeout=60s")
    trainer = f"system:serviceaccount:{namespace}:guarded-trainer"

    ok = _patch_status(cp, namespace, "guarded", {"progress": {"step": 7, "totalSteps": 10}}, trainer)
    assert ok.returncode == 0, ok.stderr
    for status, field in [
        ({"phase": "Succeeded"}, "status.phase"),
        ({"adapter": {"name": "x", "pvc": "other", "path": "weights", "uri": "pvc://other/weights"}}, "status.adapter"),
        ({"progress": {"step": 8}, "message": "done"}, "status.message"),
    ]:
        refused = _patch_status(cp, namespace, "guarded", status, trainer)
        assert refused.returncode != 0 and field in refused.stderr, refused.stderr
    got = cp.get("ftj", "guarded", "-n", namespace)["status"]
    assert got["progress"]["step"] == 7 and got.get("phase") != "Succeeded" and "adapter" not in got


def test_the_first_progress_report_may_come_before_the_operator_wrote_any_status(control_plane, release, namespace):
    """The CRD defaults status.conditions to [], so the trainer's first patch of a status the
    operator has not written yet creates an empty list; that is no change to the operator's
    fields and is allowed (it was refused once, in a race between the operator's Role and its
    first status write). The operators are paused so that no status exists when the pod reports."""
    cp = control_plane
    trainer = f"system:serviceaccount:{namespace}:early-trainer"
    with running_operators.paused(cp):
        apply(cp, namespace, small_finetunejob("early"))
        role = ("early-trainer", "--verb=get,patch", "--resource=finetunejobs.tuneroute.io/status")
        cp.kubectl("-n", namespace, "create", "role", *role)
        cp.kubectl("-n", namespace, "create", "rolebinding", "early-trainer", "--role=early-trainer",
                   f"--serviceaccount={namespace}:early-trainer")  # fmt: skip
        assert "status" not in cp.get("ftj", "early", "-n", namespace)
        ok = _patch_status(cp, namespace, "early", {"progress": {"step": 1, "totalSteps": 10}}, trainer)
        assert ok.returncode == 0, ok.stderr
        claimed = _patch_status(cp, namespace, "early", {"conditions": [_condition("Succeeded")]}, trainer)
        assert claimed.returncode != 0 and "status.conditions" in claimed.stderr, claimed.stderr
        assert cp.get("ftj", "early", "-n", namespace)["status"]["progress"]["step"] == 1


def _condition(kind: str) -> dict:
    return {"type": kind, "status": "True", "reason": "Done", "lastTransitionTime": "2026-01-01T00:00:00Z"}


def test_the_status_policy_covers_every_field_the_operator_owns():
    """The policy names the fields it protects; a status field added to the API without being
    added there would be writable by the training pod."""
    template = (REPO / "charts" / "tuneroute" / "templates" / "admission-policies.yaml").read_text()
    listed = set(re.findall(r'"(\w+)"', re.search(r"\$operatorOwned := list ([^-]*)-}}", template).group(1)))
    fields = {f.alias or name for name, f in FineTuneJobStatus.model_fields.items()}
    assert listed == fields - {"progress", "routingProfile"}


def test_an_image_allow_list_refuses_other_images_naming_the_field(control_plane, namespace):
    """Creating a FineTuneJob or ModelRoute runs its image in the namespace (docs/security.md);
    a cluster admin can limit which images by setting imagePolicy.allowedPrefixes."""
    cp = control_plane
    cp.helm(
        "install", "imgpolicy", CHART, "-n", namespace, "--skip-crds", "--set", "replicas=0",
        "--set", "imagePolicy.allowedPrefixes={registry.example/ml/}", "--wait", "--timeout", "60s",
    )  # fmt: skip
    try:
        # the API server compiles a new policy and its binding asynchronously (helm --wait does not
        # wait for that): wait until a server-side dry run is refused before the real attempt
        evil = json.dumps(small_finetunejob("elsewhere", image="evil.example/miner:1"))

        def dry_run_refused() -> bool:
            probe = cp.kubectl("-n", namespace, "apply", "--dry-run=server", "-f", "-", check=False, input=evil)
            return probe.returncode != 0

        wait_until(dry_run_refused, timeout=30, interval=0.5, what="the image policy to take effect")
        refused = cp.kubectl("-n", namespace, "apply", "-f", "-", check=False, input=evil)
        assert refused.returncode != 0
        assert "spec.image evil.example/miner:1 is not allowed" in refused.stderr
        assert "registry.example/ml/" in refused.stderr
        gate = cp.kubectl(
            "-n", namespace, "apply", "-f", "-", check=False,
            input=json.dumps(small_finetunejob("gate", image="registry.example/ml/trainer:1", verify={"image": "evil.example/vllm:1"})),
        )  # fmt: skip
        assert gate.returncode != 0 and "spec.verify.image evil.example/vllm:1 is not allowed" in gate.stderr
        apply(cp, namespace, small_finetunejob("ours", image="registry.example/ml/trainer:1"))
        apply(cp, namespace, small_finetunejob("default-image"))  # no spec.image: the operator's default
    finally:
        cp.helm("uninstall", "imgpolicy", "-n", namespace, "--wait")
