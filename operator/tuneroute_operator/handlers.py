"""kopf handlers: thin adapters from watch events to the reconcilers."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf
from kubernetes.dynamic.exceptions import DynamicApiError

from . import GROUP, VERSION, metrics, reconcile
from .builders.common import MANAGED_BY, content_hash
from .coalesce import Coalescer
from .kube import Kube
from .settings import Settings

CHILD = {"app.kubernetes.io/managed-by": MANAGED_BY}
# A FineTuneJob's status waits this long after an event of its Job or pods, so that the burst of
# events of one change (a pod is created, scheduled, started, ready within a second) is one update.
STATUS_DELAY = 1.0
RETRYABLE = {409, 429, 500, 502, 503, 504}


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled configuration as a digest, not a copy of the spec.

    kopf compares it with the object to tell a spec change (on.update) from its own writes.
    The stock storage copies the whole spec into an annotation, and all annotations of an
    object share 262,144 bytes: a ModelRoute with a few hundred KB of example prompts (within
    the schema's limits) could never be marked handled, and kopf retried it forever. A digest per
    top-level section is enough for our handlers, which read the body, never kopf's old/new/diff.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        return {section: {"sha256": content_hash(value)} for section, value in essence.items()}


def _emit(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    # kopf.event walks plain dicts as well as its Body (any mapping with apiVersion, kind and
    # metadata); its annotation names only kopf.Body.
    kopf.event(body, type=type_, reason=reason, message=message[:1024])  # type: ignore[arg-type]


def _run(kind: str, fn, *args: Any) -> None:
    """Run a reconciler; map its failures to kopf's retry semantics."""
    with metrics.reconciling(kind):
        try:
            fn(*args)
        except reconcile.InvalidSpec as e:
            # Reported once in status and an Event; retrying cannot fix a spec.
            raise kopf.PermanentError(str(e)) from None
        except reconcile.ApplyForbidden as e:
            # Reported in status and an Event; an admin may lift it (RBAC, quota, policy).
            raise kopf.TemporaryError(str(e), delay=60) from None
        except reconcile.Blocked as e:
            # Reported in status and an Event; what blocks it (a claim) may change without the spec.
            raise kopf.TemporaryError(str(e), delay=60) from None
        except DynamicApiError as e:
            if e.status == 404 or (e.status == 403 and "being terminated" in str(e.body)):
                return  # deleted mid-reconcile, or its namespace is going away: nothing left to do
            if e.status in RETRYABLE:
                raise kopf.TemporaryError(f"API error {e.status}: {e.reason}", delay=5) from None
            raise


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    memo.settings = Settings()
    memo.kube = Kube.from_environment()
    # Keep kopf's bookkeeping in annotations: our status schema is strict and would prune it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = DigestDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # our own Events come from _emit; kopf's only on trouble
    # Handlers block on the API server, not on the CPU: enough threads to keep it busy (and one
    # connection each, see Kube.CONNECTIONS).
    settings.execution.max_workers = 16
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    memo.status_pool = ThreadPoolExecutor(16, thread_name_prefix="status")
    # kopf gives each object's handlers a shallow copy of this memo: shared state goes in containers.
    memo.training = {"gone": {}}  # the two indexes below, as kopf hands them to the handlers
    memo.statuses = Coalescer(
        lambda key: _training_status(cast(tuple[str, str], key), memo), delay=STATUS_DELAY, limit=16
    )
    metrics.serve(memo.settings.metrics_port)


# FineTuneJob


@kopf.index(GROUP, VERSION, "finetunejobs")
def output_users(name: str, namespace: str | None, spec: kopf.Spec, meta: kopf.Meta, **_: Any) -> dict:
    """(namespace, claim, path) -> the FineTuneJobs writing there: two must never share one."""
    key = reconcile.output_key(namespace or "", name, dict(spec))
    return {key: reconcile.OutputUser(meta.get("creationTimestamp") or "", name)} if key else {}


@kopf.on.resume(GROUP, VERSION, "finetunejobs")
@kopf.on.create(GROUP, VERSION, "finetunejobs")
@kopf.on.update(GROUP, VERSION, "finetunejobs", field="spec")
def finetunejob(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    # kopf passes each index as a keyword named after its function (not in its handler protocol).
    output_users: kopf.Index = kwargs["output_users"]
    training_pods: kopf.Index = kwargs["training_pods"]
    key = reconcile.output_key(body.metadata.namespace or "", body.metadata.name, dict(body.spec))
    users = list(output_users.get(key, [])) if key else []
    pods = list(training_pods.get((body.metadata.namespace, body.metadata.name), []))
    _run("FineTuneJob", reconcile.finetunejob, memo.kube, memo.settings, dict(body), _emit, users, pods)


# The training Jobs and their pods as the watches last saw them, by FineTuneJob: a status
# computation reads these instead of asking the API server (only the FineTuneJob is read fresh).
TRAINING: dict[str, Any] = {**CHILD, f"{GROUP}/finetunejob": kopf.PRESENT}


def _training_key(namespace: str | None, labels: kopf.Labels) -> tuple[str | None, str]:
    return (namespace, labels[f"{GROUP}/finetunejob"])


@kopf.index("batch", "v1", "jobs", labels=TRAINING)
def training_jobs(namespace: str | None, name: str, labels: kopf.Labels, status: kopf.Status, **_: Any) -> dict:
    return {_training_key(namespace, labels): {"metadata": {"name": name}, "status": dict(status)}}


@kopf.index("", "v1", "pods", labels=TRAINING)
def training_pods(namespace: str | None, name: str, labels: kopf.Labels, status: kopf.Status, **_: Any) -> dict:
    # Only the pods of the Job named after the FineTuneJob (one pod's training): its verify Job's
    # pods carry the same label, and a Running one must not read as training (several-pod
    # attempts are read from the API server).
    if labels.get("job-name") != labels[f"{GROUP}/finetunejob"]:
        return {}
    # What status/finetunejob.py reads of a pod: its phase, conditions and container states.
    keep = {k: status[k] for k in ("phase", "conditions", "containerStatuses") if k in status}
    return {_training_key(namespace, labels): {"metadata": {"name": name}, "status": keep}}


async def _training_status(key: tuple[str, str], memo: kopf.Memo) -> None:
    """Recompute one FineTuneJob's status from the indexes (snapshot taken in the event loop)."""
    jobs, pods, gone = memo.training["jobs"], memo.training["pods"], memo.training["gone"]
    namespace, name = key
    # (A several-pod job's attempts are Jobs of other names: its status reads them itself.)
    job = next((j for j in jobs.get(key, []) if j["metadata"]["name"] == name), None) or gone.get(key)
    seen = reconcile.Training(job, list(pods.get(key, [])))
    # settings: a several-pod job's next attempt is created here when its latest Job fails
    # PermanentError: reported in status and an Event, running it again cannot help (TemporaryError: it may).
    with contextlib.suppress(kopf.PermanentError):
        await _in_thread(
            memo,
            _run,
            "FineTuneJob",
            reconcile.finetunejob_status,
            memo.kube,
            namespace,
            name,
            _emit,
            memo.settings,
            seen,
        )
    if job is not None and gone.get(key) is job:
        # Consumed. A Job deleted while this ran is left for the run its DELETED event queued.
        gone.pop(key)


async def _in_thread(memo: kopf.Memo, fn: Any, *args: Any) -> None:
    """Run a blocking reconcile on the status threads, in this task's context: kopf.event finds
    its posting queue in a context variable (the task inherited it from the handler)."""
    ctx = contextvars.copy_context()
    await asyncio.get_running_loop().run_in_executor(memo.status_pool, ctx.run, fn, *args)


@kopf.on.event("batch", "v1", "jobs", labels=TRAINING)
async def training_job_changed(body: kopf.Body, type: str, memo: kopf.Memo, **kwargs: Any) -> None:
    memo.training.update(jobs=kwargs["training_jobs"], pods=kwargs["training_pods"])
    key = _training_key(body.metadata.namespace, body.metadata.labels)
    if type == "DELETED" and reconcile.job_finished(dict(body)):
        # ttlSecondsAfterFinished: 0 deletes a Job as it finishes, before the coalesced status
        # runs. Its last words (the Complete or Failed condition) are what that status needs.
        memo.training["gone"][key] = {"metadata": {"name": body.metadata.name}, "status": dict(body.status)}
    memo.statuses.request(key)


@kopf.on.event("", "v1", "pods", labels=TRAINING)
async def training_pod_changed(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    # Scheduling failures change no Job field: only the pod tells why training has not started.
    memo.training.update(jobs=kwargs["training_jobs"], pods=kwargs["training_pods"])
    memo.statuses.request(_training_key(body.metadata.namespace, body.metadata.labels))


@kopf.on.event(GROUP, VERSION, "finetunejobs")
async def finetunejob_changed(body: kopf.Body, memo: kopf.Memo, type: str, **kwargs: Any) -> None:
    # A route serving this job's adapter picks it up (or drops it) when the job's phase moves.
    if type == "DELETED":
        return
    index: kopf.Index = kwargs["adapter_entries"]
    entries: list[tuple[reconcile.AdapterEntry, ...]] = list(
        index.get((body.metadata.namespace, body.metadata.name), [])
    )
    for route in reconcile.routes_waiting_on(entries, dict(body)):
        await _in_thread(
            memo,
            _run,
            "ModelRoute",
            reconcile.modelroute,
            memo.kube,
            memo.settings,
            body.metadata.namespace,
            route,
            _emit,
        )


# ModelRoute


@kopf.index(GROUP, VERSION, "modelroutes")
def adapter_entries(name: str, namespace: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    """(namespace, FineTuneJob) -> the route's pool entries serving that job's adapter."""
    return reconcile.adapter_entries(namespace or "", name, dict(spec), dict(status))


@kopf.on.resume(GROUP, VERSION, "modelroutes")
@kopf.on.create(GROUP, VERSION, "modelroutes")
@kopf.on.update(GROUP, VERSION, "modelroutes", field="spec")
def modelroute(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(
        "ModelRoute", reconcile.modelroute, memo.kube, memo.settings, body.metadata.namespace, body.metadata.name, _emit
    )


@kopf.on.event("apps", "v1", "deployments", labels={**CHILD, f"{GROUP}/modelroute": kopf.PRESENT})
def router_deployment_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(
        "ModelRoute",
        reconcile.modelroute,
        memo.kube,
        memo.settings,
        body.metadata.namespace,
        body.metadata.labels[f"{GROUP}/modelroute"],
        _emit,
    )
