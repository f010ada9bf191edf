"""A FineTuneJob's status from its batch/v1 Job and the Job's pods."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from ..api.finetunejob import AdapterLocation, FineTuneJobSpec, Phase, ServingVerification
from ..builders import finetunejob as build
from . import gang
from .conditions import Cond

TYPES = ("Ready", "Running", "Succeeded", "Failed", "Suspended")


def _job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return c
    return None


def finished(job: dict[str, Any]) -> bool:
    return any(_job_condition(job, t) for t in ("Complete", "Failed", "FailureTarget"))


def _unschedulable(pods: list[dict[str, Any]]) -> str | None:
    """The scheduler's explanation when no node fits (e.g. not enough nvidia.com/gpu)."""
    for pod in pods:
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
                return c.get("message") or "no node fits the training pod"
    return None


def _termination_message(pods: list[dict[str, Any]]) -> str | None:
    """The trainer's own words from the most recently finished failed pod."""
    latest: tuple[str, str] | None = None
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if term and term.get("exitCode", 0) != 0:
                key = (term.get("finishedAt") or "", (term.get("message") or term.get("reason") or "").strip())
                if latest is None or key[0] >= latest[0]:
                    latest = key
    return latest[1] if latest and latest[1] else None


def failed_reason(job: dict[str, Any] | None) -> str | None:
    """Why the Job failed (its condition's reason), None while it has not."""
    c = job and (_job_condition(job, "Failed") or _job_condition(job, "FailureTarget"))
    return (c.get("reason") or "JobFailed") if c else None


def phase_and_conditions(
    job: dict[str, Any] | None, pods: list[dict[str, Any]], suspend: bool, nodes: int = 1
) -> tuple[Phase, list[Cond], str | None]:
    """(phase, conditions, message) of a FineTuneJob whose Job is `job` (None: not created yet).
    `nodes` > 1: an Indexed Job of that many pods, running only when all of them run."""
    if job is None:
        message = "waiting for the training Job to be created"
        return "Pending", _conds("Pending", "JobNotCreated", message), message
    st = job.get("status") or {}
    if _job_condition(job, "Complete"):
        return (
            "Succeeded",
            _conds("Succeeded", "TrainingSucceeded", "adapter written"),
            "training finished; adapter written",
        )
    if c := (_job_condition(job, "Failed") or _job_condition(job, "FailureTarget")):
        reason = c.get("reason") or "JobFailed"
        detail = gang.root_cause(pods) if nodes > 1 else _termination_message(pods)
        if nodes > 1 and reason in gang.RETRYABLE:
            n = gang.attempt(job)
            message = f"{n} attempt(s) failed, no retry left (backoffLimit)" + (f"; last: {detail}" if detail else "")
        else:
            message = f"{c.get('message') or reason}" + (f": {detail}" if detail else "")
        return "Failed", _conds("Failed", reason, message), message
    if _job_condition(job, "Suspended") or (suspend and not st.get("active")):
        return "Suspended", _conds("Suspended", "JobSuspended", "suspended; set spec.suspend=false to resume"), None
    if nodes > 1:
        if wait := gang.waiting(pods, nodes):
            return "Pending", _conds("Pending", *wait), wait[1]
        message = f"all {nodes} training pods are running"
        return "Running", _conds("Running", "TrainerRunning", message), None
    # Ready (kubelet-reported), or finished while the Job controller has yet to count it:
    # either way the trainer ran, and the phase must not step back to Pending in between.
    if st.get("ready") or any((p.get("status") or {}).get("phase") in ("Running", "Succeeded") for p in pods):
        return "Running", _conds("Running", "TrainerRunning", "the trainer pod is running"), None
    failed = st.get("failed") or 0
    reason = "Retrying" if failed else "PodPending"
    message = (
        f"{failed} attempt(s) failed; waiting for the next pod" if failed else "waiting for the training pod to start"
    )
    if unschedulable := _unschedulable(pods):
        reason, message = "Unschedulable", unschedulable
    return "Pending", _conds("Pending", reason, message), message


def pending(reason: str, message: str) -> list[Cond]:
    return _conds("Pending", reason, message)


def _conds(phase: Phase, reason: str, message: str) -> list[Cond]:
    """Ready follows success; each phase-named condition is True only in its own phase."""
    out = [Cond("Ready", phase == "Succeeded", reason, message)]
    for t in TYPES[1:]:
        out.append(Cond(t, True, reason, message) if t == phase else Cond(t, False, phase))
    return out


def attempts(job: dict[str, Any] | None, nodes: int = 1) -> int:
    """Pods started so far; finished pods the Job has not counted yet are still attempts.
    Several pods: the attempt the Job is (each restarts every pod)."""
    if nodes > 1:
        return gang.attempt(job)
    st = (job or {}).get("status") or {}
    uncounted = st.get("uncountedTerminatedPods") or {}
    counted = sum(int(st.get(k) or 0) for k in ("active", "succeeded", "failed"))
    return counted + len(uncounted.get("succeeded") or []) + len(uncounted.get("failed") or [])


def adapter(spec: FineTuneJobSpec, name: str) -> AdapterLocation:
    """Where a succeeded FineTuneJob's adapter is (what a ModelRoute serves)."""
    path = build.output_path(spec, name)
    pvc = spec.output.pvc
    return AdapterLocation(
        name=name, pvc=pvc, path=path, uri=f"pvc://{pvc}/{path}", merged_path=build.merged_path(spec, name)
    )


# The parity gate --------------------------------------------------------------------------------

SERVING = "ServingVerified"


def _verdict(pods: list[dict[str, Any]]) -> ServingVerification | None:
    """The gate's JSON from the most recently finished verify pod's termination message."""
    latest: tuple[str, str] | None = None
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if term and (term.get("message") or "").strip():
                key = (term.get("finishedAt") or "", term["message"].strip())
                if latest is None or key[0] >= latest[0]:
                    latest = key
    if latest is None:
        return None
    text = latest[1]
    try:
        data = json.loads(text[text.index("{") :])
        known = {f.alias or n for n, f in ServingVerification.model_fields.items()}
        return ServingVerification.model_validate({k: v for k, v in data.items() if k in known})
    except (ValueError, ValidationError):  # not the gate's JSON: e.g. the log tail of a crash
        return ServingVerification(verified=False, reason="GateError", message=text[-1000:])


def _num(x: float | None) -> str:
    return "?" if x is None else f"{x:.2g}"


def _figures(v: ServingVerification) -> str:
    parts = [f"vLLM {v.vllm_version or '?'}"]
    w = v.weights
    if w and w.modules is not None:
        parts.append(f"weights: {w.modules} modules, max |ΔW diff| {_num(w.max_abs_diff)}")
    o = v.outputs
    if o and o.ran and o.adapter and o.base:
        agreement = "?" if o.adapter.token_agreement is None else f"{o.adapter.token_agreement:.0%}"
        parts.append(
            f"outputs: {o.prompts} prompts, tokens {agreement}, max logprob diff "
            f"{_num(o.adapter.max_logprob_diff)} (base {_num(o.base.max_logprob_diff)})"
        )
    elif o and o.skipped:
        parts.append(f"outputs skipped: {o.skipped}")
    return "; ".join(parts)


def serving(
    enabled: bool, phase: Phase, verify_job: dict[str, Any] | None, pods: list[dict[str, Any]]
) -> tuple[Cond, ServingVerification | None]:
    """The ServingVerified condition and the gate's figures."""
    if not enabled:
        return Cond(SERVING, None, "VerificationDisabled", "spec.verify.enabled is false"), None
    if phase != "Succeeded":
        return Cond(SERVING, None, "AwaitingAdapter", "the gate runs once training has succeeded"), None
    if verify_job is None:
        return Cond(SERVING, None, "VerifyPending", "creating the verify Job"), None
    verdict = _verdict(pods)
    done = _job_condition(verify_job, "Complete") or _job_condition(verify_job, "Failed")
    if verdict is None or not done:
        if c := _job_condition(verify_job, "Failed"):
            msg = f"the verify Job failed: {c.get('message') or c.get('reason')}"
            return Cond(SERVING, False, "VerifyFailed", msg), ServingVerification(verified=False, message=msg)
        return Cond(SERVING, None, "Verifying", f"the parity gate runs in Job {verify_job['metadata']['name']}"), None
    verdict.job_name = verify_job["metadata"]["name"]
    if verdict.verified and _job_condition(verify_job, "Complete"):
        return Cond(SERVING, True, "Verified", f"vLLM serves the adapter as trained ({_figures(verdict)})"), verdict
    verdict.verified = False
    reason = verdict.reason if verdict.reason and verdict.reason != "Verified" else "NotVerified"
    return Cond(SERVING, False, reason, f"{verdict.message} ({_figures(verdict)})"), verdict
