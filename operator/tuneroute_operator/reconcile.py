"""Reconcilers: read the world, call the pure builders, write children and status.

kopf handlers (handlers.py) call these; they take a Kube, so tests can run them directly.
"""

from __future__ import annotations

import json
import logging
import posixpath
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.dynamic.exceptions import DynamicApiError
from pydantic import ValidationError

from tuneroute_trainer.contract import API_VERSION, describe, now

from .api.common import Condition
from .api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from .api.modelroute import ModelRouteSpec, ModelRouteStatus
from .builders import distributed as dist_build
from .builders import finetunejob as ftj_build
from .builders import modelroute as route_build
from .builders.common import CONFIG_HASH, MergePatch, Owner
from .kube import Kube
from .settings import Settings
from .status import conditions as cond
from .status import finetunejob as ftj_status
from .status import gang
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
    """A spec the API server accepted but the operator cannot act on (or a child built from it
    that the API server refused); retrying will not help. Reported in status and an Event."""


class ApplyForbidden(Exception):
    """A child the API server would not let us write (403: RBAC, a quota, an admission policy).
    Reported in status and an Event; retried slowly, since an admin can lift it."""


class Blocked(Exception):
    """The spec is fine but something it names is not usable yet (status says what): looked at again later."""


# A finished FineTuneJob stays finished (see _finetunejob_status).
TERMINAL = ("Succeeded", "Failed")
# The API server refused the object itself: the same object is refused again, whatever the delay.
REFUSED = {400, 422}


def _api_message(e: DynamicApiError, limit: int = 1000) -> str:
    """The API server's own words (cut: an immutable-field error quotes the whole pod template)."""
    try:
        message = str(json.loads(e.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        message = f"{e.status} {e.reason}"
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _apply_children(
    kube: Kube, emit: Emit, body: dict, children: Sequence[dict[str, Any] | MergePatch], types: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Apply children in order. Builders put the child that runs something (the Job, the router
    Deployment) last, so that a refusal leaves only inert objects (ConfigMap, ServiceAccount, Role,
    Service), owned by the resource and collected with it, and nothing running half-configured.
    Returns the applied objects, as the API server stored them."""
    applied = []
    for write in children:
        child = write.obj if isinstance(write, MergePatch) else write
        try:
            applied.append(kube.merge_patch(child) if isinstance(write, MergePatch) else kube.apply(child))
        except DynamicApiError as e:
            what = f"{child['kind']} {child['metadata']['name']}"
            if e.status in REFUSED:
                message = f"the API server refused the {what}: {_api_message(e)}"
                _fail(kube, emit, body, "ApplyFailed", message, types, terminal=True)
                raise InvalidSpec(message) from None
            if e.status == 403 and "being terminated" not in str(e.body):
                message = f"not allowed to write the {what} (retrying every minute): {_api_message(e)}"
                _fail(kube, emit, body, "ApplyForbidden", message, types, terminal=False)
                raise ApplyForbidden(message) from None
            raise
    return applied


WARNING_REASONS = (
    "InvalidSpec",
    "ApplyFailed",
    "ApplyForbidden",
    "OutputInUse",
    "SharedStorageRequired",
    "Restarting",
    route_status.CONFIG_REFUSED,
)


def _emit_transitions(emit: Emit, body: dict, before: list[dict] | None, after: list[Condition]) -> None:
    """One Event per new reason among the conditions that turned True (and Ready, either way)."""
    reasons: set[str] = set()
    for c in cond.transitions(before, after):
        if (c.status != "True" and c.type != "Ready") or c.reason in reasons:
            continue
        reasons.add(c.reason)
        warning = c.type in ("Failed", "Degraded") or c.reason in WARNING_REASONS
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


def _fail(
    kube: Kube, emit: Emit, body: dict, reason: str, message: str, types: tuple[str, ...], terminal: bool = True
) -> None:
    """Say why the resource cannot go on (one Warning Event on the change). A terminal failure of
    a FineTuneJob is its Failed phase; otherwise it waits (Pending). A route is not Ready, Degraded."""
    meta = body["metadata"]
    before = (body.get("status") or {}).get("conditions")
    failed = "Failed" if terminal else "Pending"
    wanted = [
        cond.Cond(t, t in ("Failed", "Degraded") and (terminal or t == "Degraded"), reason, message) for t in types
    ]
    conditions = cond.merge(before, wanted, now(), meta.get("generation", 1))
    status: FineTuneJobStatus | ModelRouteStatus
    if body["kind"] == "FineTuneJob":
        status = FineTuneJobStatus(
            phase=failed, message=message, conditions=conditions, observed_generation=meta.get("generation")
        )
    else:
        status = ModelRouteStatus(conditions=conditions, observed_generation=meta.get("generation"))
    _write_status(kube, emit, body, status)


# FineTuneJob ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Training:
    """A one-pod FineTuneJob's Job (None: none yet) and that Job's pods, as the operator's watches
    last saw them: a status computed from these costs no read of the API server."""

    job: dict[str, Any] | None
    pods: Sequence[dict[str, Any]] = ()


def finetunejob(
    kube: Kube,
    settings: Settings,
    body: dict[str, Any],
    emit: Emit,
    output_users: Iterable[OutputUser] = (),
    pods: Sequence[dict[str, Any]] | None = None,
) -> None:
    """Create or update the FineTuneJob's children, then refresh its status.

    `output_users`: the FineTuneJobs of the namespace writing to the same output directory
    (this one included), from the handlers' index. `pods`: the training pods as the watches
    last saw them (None: read them)."""
    owner = Owner.of(body)
    old = body.get("status") or {}
    if old.get("phase") in TERMINAL:
        # Finished: never a Job again (its Job may be gone: ttlSecondsAfterFinished, or deleted).
        finetunejob_status(kube, owner.namespace, owner.name, emit, settings)
        return
    try:
        spec = FineTuneJobSpec.model_validate(body["spec"])
        name = _adapter_name(body, spec)
        job = _current_job(kube, owner.namespace, owner.name) if dist_build.gang(spec) else None
        scheduling = dist_build.scheduling_labels(body["metadata"].get("labels"))
        children = ftj_build.children(owner, spec, settings, name, gang.attempt(job) if job else 1, scheduling)
    except ValidationError as e:
        _fail(kube, emit, body, "InvalidSpec", f"invalid spec: {describe(e, 'spec')}", ftj_status.TYPES)
        raise InvalidSpec(describe(e, "spec")) from None
    first = output_owner(output_users)
    if not old.get("jobName") and first is not None and first.name != owner.name:
        # Checked before the first Job only: the older job keeps the directory, this one never starts.
        message = (
            f"spec.output: claim {spec.output.pvc}, path {ftj_build.output_path(spec, _adapter_name(body, spec))} is already the output "
            f"of FineTuneJob {first.name}; two jobs there would overwrite each other's adapter and checkpoints: "
            "set spec.output.path"
        )
        _fail(kube, emit, body, "OutputInUse", message, ftj_status.TYPES)
        raise InvalidSpec(message)
    if dist_build.gang(spec):
        claims = {c: kube.get("v1", "PersistentVolumeClaim", owner.namespace, c) for c in dist_build.claim_names(spec)}
        if problem := dist_build.shared_storage_problem(spec, claims):
            _fail(kube, emit, body, "SharedStorageRequired", problem, ftj_status.TYPES, terminal=False)
            raise Blocked(problem)
    writes: list[dict[str, Any] | MergePatch] = list(children)
    if old.get("jobName"):  # the Job exists: only suspend may change
        writes[-1] = ftj_build.job_update(owner, spec, scheduling, job["metadata"]["name"] if job else old["jobName"])
    applied = _apply_children(kube, emit, body, writes, ftj_status.TYPES)
    # One pod: the Job as the API server just returned it, and its pods as the watches saw them
    # (a new Job has none yet). Several: read, the latest attempt may be another Job.
    seen = None if dist_build.gang(spec) or pods is None else Training(applied[-1], pods)
    finetunejob_status(kube, owner.namespace, owner.name, emit, settings, seen)


def job_finished(job: dict[str, Any]) -> bool:
    """Whether a batch/v1 Job has ended (Complete, Failed, or about to fail)."""
    return ftj_status.finished(job)


def _adapter_name(body: dict[str, Any], spec: FineTuneJobSpec) -> str:
    """The versioned adapter name: computed once, then read back from status."""
    return (body.get("status") or {}).get("adapterName") or ftj_build.adapter_name(Owner.of(body), spec)


def _current_job(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """Several pods: the latest attempt's Job (each attempt is a Job of its own)."""
    return gang.current(kube.list("batch/v1", "Job", namespace, f"tuneroute.io/finetunejob={name}"))


def finetunejob_status(
    kube: Kube,
    namespace: str,
    name: str,
    emit: Emit,
    settings: Settings | None = None,
    seen: Training | None = None,
) -> None:
    """Recompute a FineTuneJob's status from its Job (and, when it is not running, the Job's pods).
    With `settings`, a several-pod FineTuneJob whose failed attempt was ended gets its next one.
    `seen`: a one-pod job's Job and pods as the watches saw them, else they are read. The
    FineTuneJob itself is read fresh, so that each status starts from the one written before it."""
    with _lock("FineTuneJob", namespace, name):
        body = kube.get(API_VERSION, "FineTuneJob", namespace, name)
        if body is not None and body["metadata"].get("deletionTimestamp") is None:
            _finetunejob_status(kube, body, emit, settings, seen)
    if body is None:
        _locks.pop(("FineTuneJob", namespace, name), None)  # gone: forget its lock


def _next_attempt(
    kube: Kube, settings: Settings | None, body: dict[str, Any], spec: FineTuneJobSpec, job: dict | None, emit: Emit
) -> dict | None:
    """Several pods: when the latest attempt failed and another may fix it, create the next
    attempt's Job (a new name and rendezvous id; every rank resumes from the last checkpoint).
    Returns the Job to report on."""
    if job is None or settings is None:
        return job
    if not gang.restart_due(job, ftj_status.failed_reason(job), spec.backoff_limit):
        return job
    scheduling = dist_build.scheduling_labels(body["metadata"].get("labels"))
    name = _adapter_name(body, spec)
    children = ftj_build.children(Owner.of(body), spec, settings, name, gang.attempt(job) + 1, scheduling)
    return _apply_children(kube, emit, body, children, ftj_status.TYPES)[-1]


def _finetunejob_status(
    kube: Kube, body: dict[str, Any], emit: Emit, settings: Settings | None = None, seen: Training | None = None
) -> None:
    meta, old = body["metadata"], body.get("status") or {}
    ns, name = meta["namespace"], meta["name"]
    try:
        spec: FineTuneJobSpec | None = FineTuneJobSpec.model_validate(body["spec"])
    except ValidationError:
        spec = None  # reported by the spec's own reconcile; the Job, if any, still has a status
    adapter_name = _adapter_name(body, spec) if spec else None
    if old.get("phase") in TERMINAL:
        # Succeeded or Failed stays so: the Job may be deleted (ttlSecondsAfterFinished), which
        # must not turn a finished job into a Pending one, nor drop its adapter from routes. What
        # still moves after success is the parity gate.
        if old.get("phase") == "Succeeded" and spec and adapter_name:
            _serving_status(kube, body, spec, adapter_name, settings or Settings(), emit)
        else:
            _write_status(kube, emit, body, FineTuneJobStatus(observed_generation=meta.get("generation")))
        return
    nodes = spec.resources.nodes if spec else 1
    if spec and nodes > 1:
        job = _next_attempt(kube, settings, body, spec, _current_job(kube, ns, name), emit)
    elif seen is not None:
        job = seen.job
    else:
        job = kube.get("batch/v1", "Job", ns, name)
    jst = (job or {}).get("status") or {}
    job_name = job["metadata"]["name"] if job else name
    # Pods explain a failure (termination message) or a wait (the scheduler's message); with
    # several pods, also which of them run.
    listed = job and (nodes > 1 or not jst.get("ready"))
    if not listed:
        pods = []
    elif seen is not None and nodes == 1:
        pods = list(seen.pods)
    else:
        pods = kube.list("v1", "Pod", ns, f"job-name={job_name}")
    suspend = bool((body.get("spec") or {}).get("suspend"))
    phase, wanted, message = ftj_status.phase_and_conditions(job, pods, suspend, nodes)
    if spec and job and nodes > 1 and phase == "Pending" and (n := gang.attempt(job)) > 1:
        # A retry on its way: say which attempt failed and why until every pod of this one runs.
        before = kube.list("v1", "Pod", ns, f"job-name={dist_build.job_name(Owner.of(body), n - 1)}")
        message = gang.restarting_message(n, spec.backoff_limit, message, gang.root_cause(before))
        wanted = ftj_status.pending("Restarting", message)
    serving_cond, serving = ftj_status.serving(bool(spec and spec.verify.enabled), phase, None, [])
    if phase == "Succeeded" and spec and adapter_name and spec.verify.enabled:
        serving_cond, serving = _verify(kube, Owner.of(body), spec, adapter_name, settings or Settings())
    status = FineTuneJobStatus(
        phase=phase,
        conditions=cond.merge(old.get("conditions"), [*wanted, serving_cond], now(), meta.get("generation", 1)),
        observed_generation=meta.get("generation"),
        job_name=job_name if job else None,
        attempts=ftj_status.attempts(job, nodes),
        start_time=jst.get("startTime"),
        completion_time=jst.get("completionTime"),
        message=message,
        adapter_name=adapter_name,
        adapter=ftj_status.adapter(spec, adapter_name) if phase == "Succeeded" and spec and adapter_name else None,
        serving=serving,
    )
    _write_status(kube, emit, body, status)


def _verify(kube: Kube, owner: Owner, spec: FineTuneJobSpec, adapter_name: str, settings: Settings):
    """The parity gate of a written adapter: its verify Job (created once) and what it found."""
    verify_job = kube.get("batch/v1", "Job", owner.namespace, ftj_build.verify_name(owner))
    if verify_job is None:
        for child in ftj_build.verify_children(owner, spec, settings, adapter_name):
            verify_job = kube.apply(child)
    pods = kube.list("v1", "Pod", owner.namespace, f"job-name={ftj_build.verify_name(owner)}")
    return ftj_status.serving(True, "Succeeded", verify_job, pods)


def _serving_status(
    kube: Kube, body: dict[str, Any], spec: FineTuneJobSpec, adapter_name: str, settings: Settings, emit: Emit
) -> None:
    """A succeeded FineTuneJob's ServingVerified condition and gate figures; the rest stays as it is."""
    meta, old = body["metadata"], body.get("status") or {}
    if spec.verify.enabled:
        serving_cond, serving = _verify(kube, Owner.of(body), spec, adapter_name, settings)
    else:
        serving_cond, serving = ftj_status.serving(False, "Succeeded", None, [])
    kept = [cond.Cond.of(c) for c in old.get("conditions") or [] if c.get("type") != serving_cond.type]
    status = FineTuneJobStatus(
        conditions=cond.merge(old.get("conditions"), [*kept, serving_cond], now(), meta.get("generation", 1)),
        observed_generation=meta.get("generation"),
        serving=serving,
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
        _fail(kube, emit, body, "InvalidSpec", f"invalid spec: {describe(e, 'spec')}", route_status.TYPES)
        raise InvalidSpec(describe(e, "spec")) from None
    # vLLM the operator deploys: its Deployment (serving the ready adapters) first, then its readiness
    deployments: dict[str, dict | None] = {}
    for entry, children in route_build.vllm_backends(owner, spec, resolved, settings).items():
        deployments[entry] = kube.apply(children[0])
        kube.apply(children[1])
    resolved = route_build.with_availability(resolved, deployments)
    config, refused = None, None
    if any(r.model is not None for r in resolved):
        try:
            config = route_build.router_config(spec, resolved)
        except ValidationError as e:
            refused = describe(e, "spec")  # a policy that counts on a pending entry: reported, never rewritten
    config_hash = old.get("configHash")
    children = []
    if config is not None:
        # With no config to give (no ready backend, or one the router would refuse) the old
        # ConfigMap stays: the router keeps its last good config.
        children.append(route_build.configmap(owner, config))
        config_hash = children[0]["metadata"]["annotations"][CONFIG_HASH]
    deployment = None
    if config_hash:
        children += [
            route_build.service(owner),
            route_build.disruption_budget(owner),
            route_build.deployment(owner, spec, settings, config_hash),
        ]
    applied = _apply_children(kube, emit, body, children, route_status.TYPES)
    if config_hash:
        deployment = applied[-1]
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
    ready_n = sum(r.ready for r in resolved)
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


# Who writes where: a kopf index of the FineTuneJobs by output directory (handlers.py), so that two
# jobs never share one. The oldest keeps it.


@dataclass(frozen=True, order=True)
class OutputUser:
    created: str  # metadata.creationTimestamp (RFC 3339 sorts as time)
    name: str


def output_key(namespace: str, name: str, spec: dict[str, Any]) -> tuple[str, str, str] | None:
    """(namespace, claim, normalised path) of a FineTuneJob's output directory, from its raw spec."""
    out = (spec or {}).get("output") or {}
    if not out.get("pvc"):
        return None
    path = posixpath.normpath(out.get("path") or ftj_build.default_output_path(name))
    return (namespace, out["pvc"], path)


def output_owner(users: Iterable[OutputUser]) -> OutputUser | None:
    """The FineTuneJob that keeps a shared output directory: the oldest (then by name)."""
    return min(users, default=None)


# Which routes serve which FineTuneJob's adapter: a kopf index over the ModelRoutes (handlers.py),
# so that a FineTuneJob's event looks up its routes instead of listing every route.


@dataclass(frozen=True)
class AdapterEntry:
    """A route's pool entry that serves a FineTuneJob's adapter, and what the route's status last
    said of it (None: not said yet)."""

    route: str
    entry: str
    ready: bool | None
    reason: str | None = None
    allow_unverified: bool = False


def adapter_entries(
    namespace: str, name: str, spec: dict[str, Any], status: dict[str, Any]
) -> dict[tuple[str, str], tuple[AdapterEntry, ...]]:
    """One ModelRoute's index entries: (namespace, FineTuneJob name) -> its entries serving that job."""
    seen = {b.get("name"): b for b in (status or {}).get("backendStatus") or []}
    out: dict[tuple[str, str], tuple[AdapterEntry, ...]] = {}
    for entry in (spec or {}).get("pool") or []:
        ref = (entry.get("backend") or {}).get("fineTuneJob") or {}
        if ref.get("name"):
            key = (namespace, ref["name"])
            last = seen.get(entry.get("name")) or {}
            found = AdapterEntry(
                name, entry.get("name", ""), last.get("ready"), last.get("reason"), bool(ref.get("allowUnverified"))
            )
            out[key] = (*out.get(key, ()), found)
    return out


def routes_waiting_on(entries: Iterable[tuple[AdapterEntry, ...]], finetunejob: dict[str, Any]) -> list[str]:
    """Names of the routes whose view of this FineTuneJob's adapter is out of date (ready or why not)."""
    name = finetunejob["metadata"]["name"]
    stale = set()
    for group in entries:
        for e in group:
            ready, reason, _ = route_build.adapter_state(name, finetunejob, e.allow_unverified)
            if (e.ready, e.reason) != (ready, reason):
                stale.add(e.route)
    return sorted(stale)
