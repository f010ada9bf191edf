"""kopf handlers: thin adapters from watch events to the reconcilers."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes.dynamic.exceptions import DynamicApiError

from . import GROUP, VERSION, metrics, reconcile
from .builders.common import MANAGED_BY, content_hash
from .kube import Kube
from .settings import Settings

CHILD = {"app.kubernetes.io/managed-by": MANAGED_BY}
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
    kopf.event(body, type=type_, reason=reason, message=message[:1024])


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
    settings.execution.max_workers = 8
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    metrics.serve(memo.settings.metrics_port)


# FineTuneJob


@kopf.index(GROUP, VERSION, "finetunejobs")
def output_users(name: str, namespace: str, spec: kopf.Spec, meta: kopf.Meta, **_: Any) -> dict:
    """(namespace, claim, path) -> the FineTuneJobs writing there: two must never share one."""
    key = reconcile.output_key(namespace, name, dict(spec))
    return {key: reconcile.OutputUser(meta.get("creationTimestamp") or "", name)} if key else {}


@kopf.on.resume(GROUP, VERSION, "finetunejobs")
@kopf.on.create(GROUP, VERSION, "finetunejobs")
@kopf.on.update(GROUP, VERSION, "finetunejobs", field="spec")
def finetunejob(body: kopf.Body, memo: kopf.Memo, output_users: kopf.Index, **_: Any) -> None:
    key = reconcile.output_key(body.metadata.namespace, body.metadata.name, dict(body.spec))
    users = list(output_users.get(key, [])) if key else []
    _run("FineTuneJob", reconcile.finetunejob, memo.kube, memo.settings, dict(body), _emit, users)


@kopf.on.event("batch", "v1", "jobs", labels={**CHILD, f"{GROUP}/finetunejob": kopf.PRESENT})
def training_job_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(
        "FineTuneJob",
        reconcile.finetunejob_status,
        memo.kube,
        body.metadata.namespace,
        body.metadata.labels[f"{GROUP}/finetunejob"],
        _emit,
        memo.settings,  # a several-pod job's next attempt is created here when its latest Job fails
    )


@kopf.on.event("", "v1", "pods", labels={**CHILD, f"{GROUP}/finetunejob": kopf.PRESENT})
def training_pod_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # Scheduling failures change no Job field: only the pod tells why training has not started.
    training_job_changed(body=body, memo=memo)


@kopf.on.event(GROUP, VERSION, "finetunejobs")
def finetunejob_changed(
    body: kopf.Body, memo: kopf.Memo, type: str | None, adapter_entries: kopf.Index, **_: Any
) -> None:
    # A route serving this job's adapter picks it up (or drops it) when the job's phase moves.
    if type == "DELETED":
        return
    entries = adapter_entries.get((body.metadata.namespace, body.metadata.name), [])
    for route in reconcile.routes_waiting_on(entries, dict(body)):
        _run("ModelRoute", reconcile.modelroute, memo.kube, memo.settings, body.metadata.namespace, route, _emit)


# ModelRoute


@kopf.index(GROUP, VERSION, "modelroutes")
def adapter_entries(name: str, namespace: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict:
    """(namespace, FineTuneJob) -> the route's pool entries serving that job's adapter."""
    return reconcile.adapter_entries(namespace, name, dict(spec), dict(status))


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
