"""GRPO figures for status.progress (config.Progress fields), from a trl log line (sync and async name them alike)."""

from __future__ import annotations

import math


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def grpo_progress(logs: dict, rewards) -> dict:
    """Pure: reward, per-function rewards, KL, completion length, rollout tokens/s and reward errors."""
    out: dict = {}
    if (reward := _num(logs.get("reward"))) is not None:
        out["reward"] = round(reward, 4)
    per = {r.name: _num(logs.get(f"rewards/{r.name}/mean")) for r in rewards}
    if any(v is not None for v in per.values()):
        out["rewards"] = {k: round(v, 4) for k, v in per.items() if v is not None}
    if (kl := _num(logs.get("kl"))) is not None:
        out["kl"] = round(kl, 6)
    if (length := _num(logs.get("completions/mean_length"))) is not None:
        out["completion_length"] = round(length, 1)
    if (tps := _num(logs.get("rollout/tokens_per_second"))) is not None:
        out["rollout_tokens_per_second"] = round(tps, 1)
    errors = {r.name: r.errors for r in rewards if r.errors}
    if errors:
        out["reward_errors"] = errors
    return out
