"""Reconcilers: read the world, call the pure builders, write children and status.

kopf handlers (handlers.py) call these; they take a Kube, so tests can run them directly.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tuneroute_trainer.contract import API_VERSION, describe, now

from .api.common import Condition
from .api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from .api.modelroute import ModelRouteSpec, ModelRouteStatus
from .builders import finetunejob as ftj_build
from .builders import modelroute as route_build
from .builders.common import CONFIG_HASH, Owner
from .kube import Kube
from .settings import Settings
from .status import conditions as cond
from .status import finetunejob as ftj_status
from .status import modelroute as route_status

log = logging.getLogger(__name__)
# (object body, type "Normal"/"Warning", reason, message): posts a Kubernetes Event.
Emit = Callable[[dict[str, Any], str, str, str], None]


# kopf runs handlers for different watched kinds concurrently (a Job event and a pod event
# of the same FineTuneJob, say). One lock per object makes each status computation start from
# the status the previous one wrote, so a transition is written, and announced, once.
_locks: defaultdict[tuple[str, str, str], threading.Lock] = defaultdict(threading.Lock)


def _lock(kind: str, namespace: str, name: str) -> threading.Lock:
    return _locks[(kind, namespace, name)]


class InvalidSpec(Exception):
    """A spec the API server accepted but the operator cannot act on; retrying will not help."""


def _emit_transitions(emit: Emit, body: dict, before: list[dict] | None, after: list[Condition]) -> None:
    """One Event per new reason among the conditions that turned True (and Ready, either way)."""
    reasons: set[str] = set()
    for c in cond.transitions(before, after):
        if (c.status != "True" and c.type != "Ready") or c.reason in reasons:
            continue
        reasons.add(c.reason)
        warning = c.type in ("Failed", "Degraded") or c.reason in ("InvalidSpec", route_status.CONFIG_REFUSED)
        emit(body, "Warning" if warning else "Normal", c.reason, c.message or f"{c.type}={c.status}")


def _write_status(kube: Kube, emit: Emit, body: dict[str, Any], status: FineTuneJobStatus | ModelRouteStatus) -> None:
    """Merge-patch the fields `status` sets (the trainer's progress, say, is kept), unless
    they hold those values already: no write, so no event storm from our own patches."""
    meta, old = body["metadata"], body.get("status") or {}
    patch = status.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)
    if all(old.get(k) == v for k, v in patch.items()):
        return
    kube.patch_status(API_VERSION, body["kind"], meta["namespace"], meta["name"], patch)
    _emit_transitions(emit, body, old.get("conditions"), status.conditions)


def _fail_invalid(kube: Kube, emit: Emit, body: dict, message: str, types: tuple[str, ...]) -> None:
    meta = body["metadata"]
    before = (body.get("status") or {}).get("conditions")
    wanted = [cond.Cond(t, t in ("Failed", "Degraded"), "InvalidSpec", message) for t in types]
    conditions = cond.merge(before, wanted, now(), meta.get("generation", 1))
    status: FineTuneJobStatus | ModelRouteStatus
    if body["kind"] == "FineTuneJob":
        status = FineTuneJobStatus(
            phase="Failed", message=message, conditions=conditions, observed_generation=meta.get("generation")
        )
    else:
        status = ModelRouteStatus(conditions=conditions, observed_generation=meta.get("generation"))
    _write_status(kube, emit, body, status)


# FineTuneJob ------------------------------------------------------------------------------


def finetunejob(kube: Kube, settings: Settings, body: dict[str, Any], emit: Emit) -> None:
    """Create or update the FineTuneJob's children, then refresh its status."""
    owner = Owner.of(body)
    try:
        spec = FineTuneJobSpec.model_validate(body["spec"])
        children = ftj_build.children(owner, spec, settings)
    except ValidationError as e:
        _fail_invalid(kube, emit, body, f"invalid spec: {describe(e)}", ftj_status.TYPES)
        raise InvalidSpec(describe(e)) from None
    for child in children:
        kube.apply(child)
    finetunejob_status(kube, owner.namespace, owner.name, emit)


def finetunejob_status(kube: Kube, namespace: str, name: str, emit: Emit) -> None:
    """Recompute a FineTuneJob's status from its Job (and, when it is not running, the Job's pods)."""
    with _lock("FineTuneJob", namespace, name):
        body = kube.get(API_VERSION, "FineTuneJob", namespace, name)
        if body is not None and body["metadata"].get("deletionTimestamp") is None:
            _finetunejob_status(kube, body, emit)
    if body is None:
        _locks.pop(("FineTuneJob", namespace, name), None)  # gone: forget its lock


def _finetunejob_status(kube: Kube, body: dict[str, Any], emit: Emit) -> None:
    meta, old = body["metadata"], body.get("status") or {}
    ns, name = meta["namespace"], meta["name"]
    job = kube.get("batch/v1", "Job", ns, name)
    jst = (job or {}).get("status") or {}
    # Pods explain a failure (termination message) or a wait (the scheduler's message).
    pods = kube.list("v1", "Pod", ns, f"job-name={name}") if job and not jst.get("ready") else []
    suspend = bool((body.get("spec") or {}).get("suspend"))
    phase, wanted, message = ftj_status.phase_and_conditions(job, pods, suspend)
    adapter = None
    if phase == "Succeeded":
        adapter = ftj_status.adapter(Owner.of(body), FineTuneJobSpec.model_validate(body["spec"]))
    status = FineTuneJobStatus(
        phase=phase,
        conditions=cond.merge(old.get("conditions"), wanted, now(), meta.get("generation", 1)),
        observed_generation=meta.get("generation"),
        job_name=name if job else None,
        attempts=ftj_status.attempts(job),
        start_time=jst.get("startTime"),
        completion_time=jst.get("completionTime"),
        message=message,
        adapter=adapter,
    )
    _write_status(kube, emit, body, status)


# ModelRoute -------------------------------------------------------------------------------


def _referenced_finetunejobs(kube: Kube, namespace: str, spec: ModelRouteSpec) -> dict[str, dict | None]:
    names = {e.backend.fine_tune_job.name for e in spec.pool if e.backend.fine_tune_job}
    return {n: kube.get(API_VERSION, "FineTuneJob", namespace, n) for n in names}


def modelroute(kube: Kube, settings: Settings, namespace: str, name: str, emit: Emit) -> None:
    """Render the router config over the ready pool entries; apply ConfigMap, Deployment, Service; refresh status."""
    with _lock("ModelRoute", namespace, name):
        body = kube.get(API_VERSION, "ModelRoute", namespace, name)
        if body is not None and body["metadata"].get("deletionTimestamp") is None:
            _modelroute(kube, settings, body, emit)
    if body is None:
        _locks.pop(("ModelRoute", namespace, name), None)


def _modelroute(kube: Kube, settings: Settings, body: dict[str, Any], emit: Emit) -> None:
    owner = Owner.of(body)
    old = body.get("status") or {}
    try:
        spec = ModelRouteSpec.model_validate(body["spec"])
        resolved = route_build.resolve(owner, spec, _referenced_finetunejobs(kube, owner.namespace, spec))
    except ValidationError as e:
        _fail_invalid(kube, emit, body, f"invalid spec: {describe(e)}", ("Ready", "Degraded"))
        raise InvalidSpec(describe(e)) from None
    config, refused = None, None
    if any(r.model is not None for r in resolved):
        try:
            config = route_build.router_config(spec, resolved, keys=spec.api_key_secret is not None)
        except ValidationError as e:
            refused = describe(e)  # a policy that counts on a pending entry: reported, never rewritten
    config_hash = old.get("configHash")
    if config is not None:
        # With no config to give (no ready backend, or one the router would refuse) the old
        # ConfigMap stays: the router keeps its last good config.
        cm = kube.apply(route_build.configmap(owner, config))
        config_hash = cm["metadata"]["annotations"][CONFIG_HASH]
    deployment = None
    if config_hash:
        deployment = kube.apply(route_build.deployment(owner, spec, settings, config_hash))
        kube.apply(route_build.service(owner))
    _modelroute_status(kube, body, spec.router.replicas, resolved, deployment, config_hash, refused, emit)


def _modelroute_status(
    kube: Kube,
    body: dict,
    replicas: int,
    resolved: list[route_build.Resolved],
    deployment: dict | None,
    config_hash: str | None,
    refused: str | None,
    emit: Emit,
) -> None:
    meta, old = body["metadata"], body.get("status") or {}
    wanted = route_status.conditions(resolved, deployment, replicas, refused)
    ready_n = sum(r.model is not None for r in resolved)
    status = ModelRouteStatus(
        conditions=cond.merge(old.get("conditions"), wanted, now(), meta.get("generation", 1)),
        observed_generation=meta.get("generation"),
        ready_backends=ready_n,
        total_backends=len(resolved),
        backends=f"{ready_n}/{len(resolved)}",
        backend_status=route_status.backend_status(resolved),
        endpoint=route_build.endpoint(Owner.of(body)),
        config_hash=config_hash,
    )
    _write_status(kube, emit, body, status)


# Which routes serve which FineTuneJob's adapter: a kopf index over the ModelRoutes (handlers.py),
# so that a FineTuneJob's event looks up its routes instead of listing every route.


@dataclass(frozen=True)
class AdapterEntry:
    """A route's pool entry that serves a FineTuneJob's adapter, and whether the route's status
    last said it was ready (None: not said yet)."""

    route: str
    entry: str
    ready: bool | None


def adapter_entries(
    namespace: str, name: str, spec: dict[str, Any], status: dict[str, Any]
) -> dict[tuple[str, str], tuple[AdapterEntry, ...]]:
    """One ModelRoute's index entries: (namespace, FineTuneJob name) -> its entries serving that job."""
    seen = {b.get("name"): b.get("ready") for b in (status or {}).get("backendStatus") or []}
    out: dict[tuple[str, str], tuple[AdapterEntry, ...]] = {}
    for entry in (spec or {}).get("pool") or []:
        job = ((entry.get("backend") or {}).get("fineTuneJob") or {}).get("name")
        if job:
            key = (namespace, job)
            out[key] = (*out.get(key, ()), AdapterEntry(name, entry.get("name", ""), seen.get(entry.get("name"))))
    return out


def routes_waiting_on(entries: Iterable[tuple[AdapterEntry, ...]], finetunejob: dict[str, Any]) -> list[str]:
    """Names of the routes whose view of this FineTuneJob's adapter is out of date."""
    adapter_ready = (finetunejob.get("status") or {}).get("phase") == "Succeeded"
    stale = {e.route for group in entries for e in group if e.ready != adapter_ready}
    return sorted(stale)
