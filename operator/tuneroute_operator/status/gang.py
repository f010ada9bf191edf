"""Status of a FineTuneJob on several pods (resources.nodes > 1): all-or-nothing attempts.

One attempt is one Indexed Job (annotation tuneroute.io/attempt; the first named like the
FineTuneJob, the next `<name>-a<N>`). It runs only when every pod runs: ranks that started wait
in the rendezvous for the others, so a partly scheduled Job is Pending with the scheduler's
reason. Any pod failure fails the Job (backoffLimit 0); while retries remain (spec.backoffLimit),
the operator creates the next attempt's Job, every rank resuming from the last checkpoint, and
the FineTuneJob says Restarting until all its pods run. The failure reported is the root cause:
ranks that died because another one did ("lost contact with the other ranks") or that the Job
stopped are not it.
"""

from __future__ import annotations

from typing import Any

from tuneroute_trainer.cli import LOST_PEER, STOPPED

from ..builders.distributed import ATTEMPT

JOB_UID = "batch.kubernetes.io/controller-uid"
# Job failure reasons after which another attempt can help: a pod failed (not exit 2, which is
# PodFailurePolicy, and not the wall-clock limit, DeadlineExceeded).
RETRYABLE = {"BackoffLimitExceeded"}


def attempt(job: dict[str, Any] | None) -> int:
    annotations = ((job or {}).get("metadata") or {}).get("annotations") or {}
    try:
        return int(annotations.get(ATTEMPT, 1))
    except ValueError:
        return 1


def current(jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest attempt's Job among a FineTuneJob's Jobs."""
    return max(jobs, key=attempt, default=None)


def restarting_message(attempt_now: int, backoff_limit: int, waiting: str | None, cause: str | None) -> str:
    """What a FineTuneJob says while its next attempt starts."""
    failed = f"attempt {attempt_now - 1} failed" + (f": {cause}" if cause else "")
    start = f"restarting every pod from the last checkpoint (attempt {attempt_now} of at most {backoff_limit + 1})"
    return f"{failed}; {start}" + (f"; {waiting}" if waiting else "")


def _failure(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(finishedAt, message) of a failed trainer container."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term and term.get("exitCode", 0) != 0:
            message = (term.get("message") or "").strip() or f"{term.get('reason') or 'exit'} ({term.get('exitCode')})"
            return term.get("finishedAt") or "", message
    return None


def root_cause(pods: list[dict[str, Any]]) -> str | None:
    """The first failure that is not a consequence of another (its rank and message, as the
    launcher wrote them); the first failure of all when every one is a consequence."""
    failures = sorted(f for p in pods if (f := _failure(p)))
    causes = [f for f in failures if LOST_PEER not in f[1] and not f[1].startswith(STOPPED)]
    chosen = (causes or failures)[:1]
    return chosen[0][1] if chosen else None


def restart_due(job: dict[str, Any], failed_reason: str | None, backoff_limit: int) -> bool:
    """A failed attempt that another may fix, with retries left (attempts = 1 + retries)."""
    return failed_reason in RETRYABLE and attempt(job) <= backoff_limit


def _scheduler_says(pods: list[dict[str, Any]]) -> str | None:
    for pod in pods:
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                return c.get("message") or c.get("reason")
    return None


def waiting(pods: list[dict[str, Any]], nodes: int) -> tuple[str, str] | None:
    """(reason, message) while not every pod runs; None when all do."""
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    running = sum((p.get("status") or {}).get("phase") in ("Running", "Succeeded") for p in live)
    if running >= nodes:
        return None
    scheduled = sum(bool((p.get("spec") or {}).get("nodeName")) for p in live)
    said = _scheduler_says(live)
    if 0 < scheduled < nodes:
        message = f"{scheduled} of {nodes} training pods scheduled; the ranks that started wait for the others" + (
            f". Scheduler: {said}" if said else ""
        )
        return "PartiallyScheduled", message
    if said and scheduled == 0:
        return "Unschedulable", f"0 of {nodes} training pods scheduled: {said}"
    return "PodPending", f"{running} of {nodes} training pods running; waiting for the others to start"
