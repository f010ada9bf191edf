"""metav1.Condition lists, rebuilt whole each time (status patches are merge patches)."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..api.common import Condition, ConditionStatus


class Cond(NamedTuple):
    type: str
    status: bool | None  # None -> "Unknown"
    reason: str
    message: str = ""

    @classmethod
    def of(cls, c: dict[str, Any]) -> Cond:
        """A condition as stored in status (to keep it while another one changes)."""
        status = {"True": True, "False": False}.get(c.get("status", ""))
        return cls(c.get("type", ""), status, c.get("reason") or "Unknown", c.get("message") or "")


def _status(value: bool | None) -> ConditionStatus:
    return "Unknown" if value is None else ("True" if value else "False")


def merge(previous: list[dict[str, Any]] | None, wanted: list[Cond], now: str, generation: int) -> list[Condition]:
    """The full condition list; lastTransitionTime moves only when a condition's status changes.
    `previous` is the list as read from the API server."""
    before = {c.get("type"): c for c in previous or []}
    out = []
    for c in wanted:
        status = _status(c.status)
        old = before.get(c.type)
        since = (
            old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") else now
        )
        out.append(
            Condition(
                type=c.type,
                status=status,
                reason=c.reason,
                message=c.message,
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return out


def transitions(previous: list[dict[str, Any]] | None, current: list[Condition]) -> list[Condition]:
    """Conditions whose status or reason changed: each deserves an Event."""
    before = {c.get("type"): (c.get("status"), c.get("reason")) for c in previous or []}
    return [c for c in current if before.get(c.type) != (c.status, c.reason)]
