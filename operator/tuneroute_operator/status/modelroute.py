"""A ModelRoute's status from its resolved pool and its router Deployment."""

from __future__ import annotations

from typing import Any

from ..api.modelroute import BackendStatus
from ..builders.modelroute import Resolved
from .conditions import Cond

TYPES = ("Ready", "Degraded")
# The route's policy does not fit the ready entries (see builders.modelroute.router_config).
CONFIG_REFUSED = "RouterConfigRefused"


def backend_status(resolved: list[Resolved]) -> list[BackendStatus]:
    return [
        BackendStatus(name=r.entry.name, ready=r.ready, reason=r.reason, url=r.model.url if r.model else None)
        for r in resolved
    ]


def conditions(
    resolved: list[Resolved], deployment: dict[str, Any] | None, replicas: int, refused: str | None = None
) -> list[Cond]:
    """Ready and Degraded. `refused`: why the router would refuse the config over the ready
    entries (the route then keeps its previous router config, if it has one)."""
    ready_n = sum(r.ready for r in resolved)
    pending = [r for r in resolved if not r.ready]
    available = int(((deployment or {}).get("status") or {}).get("availableReplicas") or 0)
    if ready_n == 0:
        ready = Cond(
            "Ready", False, "NoReadyBackends", "no pool entry is ready: " + "; ".join(r.message for r in pending)
        )
    elif refused and deployment is None:
        ready = Cond("Ready", False, CONFIG_REFUSED, f"the router would refuse this route's config: {refused}")
    elif replicas == 0:
        ready = Cond("Ready", False, "ScaledToZero", "router.replicas is 0")
    elif available == 0:
        ready = Cond("Ready", False, "RouterUnavailable", "waiting for a router pod to become ready")
    else:
        ready = Cond(
            "Ready",
            True,
            "RouterAvailable",
            f"{available}/{replicas} router pods ready, {ready_n}/{len(resolved)} backends",
        )
    waiting = "; ".join(f"{r.entry.name}: {r.message}" for r in pending)
    if refused:
        message = f"the router would refuse the config over the ready entries: {refused}"
        message += f" (waiting for {waiting})" if pending else ""
        message += "; it keeps its previous config" if deployment is not None else ""
        degraded = Cond("Degraded", True, CONFIG_REFUSED, message)
    elif pending:
        degraded = Cond("Degraded", True, "BackendsPending", waiting)
    else:
        degraded = Cond("Degraded", False, "AllBackendsReady")
    return [ready, degraded]
