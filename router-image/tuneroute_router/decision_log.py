"""One JSON line per request: what was asked, what was decided and why, and how it went."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from .accounting import Usage
from .dispatch import Failed, Served
from .policy import Decision

log = logging.getLogger("tuneroute.decision")


def record(
    request_id: str, requested: str, decision: Decision, stream: bool, classify_s: float, prompt: str | None
) -> dict[str, Any]:
    """The decision part of the line, known before the backend answers."""
    out: dict[str, Any] = {
        "event": "decision",
        "request_id": request_id,
        "requested": requested,
        "tier": decision.tier,
        "score": None if decision.score is None else round(decision.score, 4),
        "reason": decision.reason,
        "candidates": [m.name for m in decision.candidates],
        "stream": stream,
        "classify_ms": round(classify_s * 1e3, 3),
    }
    if decision.adapter_score is not None:
        out["adapter_score"] = round(decision.adapter_score, 4)
    if prompt is not None:  # server.logPrompts
        out["prompt"] = prompt
    return out


def write(
    rec: dict[str, Any],
    result: Served | Failed,
    overhead_s: float,
    usage: Usage = Usage(),  # noqa: B008  (frozen: one shared instance is fine)
    streaming_s: float = 0.0,
    broken: bool = False,
) -> None:
    """Complete the line with the outcome and log it (no-op unless tuneroute.decision logs INFO)."""
    if not log.isEnabledFor(logging.INFO):
        return
    rec = {
        **rec,
        "attempts": result.attempts,
        "status": result.status,
        "model": result.model_name,
        "overhead_ms": round(overhead_s * 1e3, 3),
        "backend_ms": round((result.backend_s + streaming_s) * 1e3, 3),
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
    }
    if broken:
        rec["stream_broken"] = True
    log.info(orjson.dumps(rec).decode())
