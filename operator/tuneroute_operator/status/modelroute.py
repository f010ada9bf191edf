"""A ModelRoute's status from its resolved pool and its router Deployment."""

from __future__ import annotations

from typing import Any

from ..builders.modelroute import Resolved
from .conditions import Cond


def backend_status(resolved: list[Resolved]) -> list[dict[str, Any]]:
    return [
        {
            "name": r.entry.name,
            "ready": r.model is not None,
            "reason": r.reason,
            **({"url": r.model.url} if r.model else {}),
        }
        for r in resolved
    ]


def conditions(resolved: list[Resolved], deployment: dict[str, Any] | None, replicas: int) -> list[Cond]:
    ready_n = sum(r.model is not None for r in resolved)
    pending = [r for r in resolved if r.model is None]
    available = int(((deployment or {}).get("status") or {}).get("availableReplicas") or 0)
    if ready_n == 0:
        ready = Cond(
            "Ready", False, "NoReadyBackends", "no pool entry is ready: " + "; ".join(r.message for r in pending)
        )
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
    if pending:
        degraded = Cond("Degraded", True, "BackendsPending", "; ".join(f"{r.entry.name}: {r.message}" for r in pending))
    else:
        degraded = Cond("Degraded", False, "AllBackendsReady")
    return [ready, degraded]
