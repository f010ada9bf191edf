"""Turn a complexity score into an ordered list of models to try. Pure functions only."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .config import PoolModel, RouterConfig
from .features import RequestView, estimate_tokens

# A route example shifts the score only when the request is close to it; at
# EXAMPLE_FULL_SIM or above the example's tier decides outright.
EXAMPLE_MIN_SIM = 0.70
EXAMPLE_FULL_SIM = 0.90
DEFAULT_COMPLETION_TOKENS = 256  # assumed output when the client sets no max_tokens


class NoCapableModel(Exception):
    """No pool model satisfies the request's hard constraints."""


@dataclass(frozen=True)
class Decision:
    candidates: list[PoolModel]  # chosen first, then fallbacks
    tier: int  # tier the score asked for (before constraints)
    score: float | None  # P(needs more than the cheapest tier), after route examples
    reason: str
    adapter_score: float | None = None  # P(in the chosen adapter's domain), when an adapter matched


def requested_output_tokens(body: dict) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return DEFAULT_COMPLETION_TOKENS


def eligible(cfg: RouterConfig, v: RequestView, out_tokens: int) -> tuple[list[PoolModel], list[str]]:
    """Pool models meeting the hard constraints, and the constraints that removed any."""
    need = estimate_tokens(v) + out_tokens
    ok, why = [], set()
    for m in cfg.pool:
        if v.has_tools and not m.capabilities.tools:
            why.add("tools")
        elif v.has_images and not m.capabilities.vision:
            why.add("vision")
        elif need > m.context_window:
            why.add("context")
        else:
            ok.append(m)
    return ok, sorted(why)


def band_midpoint(tiers: list[int], cuts: list[float], tier: int) -> float:
    i = tiers.index(tier)
    lo = cuts[i - 1] if i > 0 else 0.0
    hi = cuts[i] if i < len(cuts) else 1.0
    return (lo + hi) / 2


def _example_weight(nearest: tuple[int, float] | None, tiers: list[int]) -> tuple[float, int | None]:
    if nearest is None or nearest[0] not in tiers or nearest[1] < EXAMPLE_MIN_SIM:
        return 0.0, None
    return min(1.0, (nearest[1] - EXAMPLE_MIN_SIM) / (EXAMPLE_FULL_SIM - EXAMPLE_MIN_SIM)), nearest[0]


def shift_by_example(
    score: float, nearest: tuple[int, float] | None, tiers: list[int], cuts: list[float]
) -> tuple[float, int | None]:
    """Blend the score toward the nearest example's tier band when the request resembles it."""
    w, tier = _example_weight(nearest, tiers)
    if tier is None:
        return score, None
    return (1 - w) * score + w * band_midpoint(tiers, cuts, tier), tier


def boundary_probs(levels: Sequence[float], n_tiers: int) -> list[float]:
    """P(needs a tier above pool tier j) for each of the pool's n_tiers - 1 boundaries.

    levels are the classifier's calibrated P(level >= 2), P(level >= 3), ... over its own
    difficulty levels. Two pool tiers split at level 2 (anything above "a small model does
    it" goes up); three map one to one; more interpolate between the levels.
    """
    cum = [1.0, *levels, 0.0]  # P(level >= x) for x = 1 .. L + 1
    top = len(levels) + 1
    out = []
    for j in range(n_tiers - 1):
        x = 2.0 if n_tiers == 2 else 1 + (j + 1) * (top - 1) / (n_tiers - 1)
        lo = math.floor(x)
        frac = x - lo
        out.append(cum[lo - 1] * (1 - frac) + cum[min(lo, top)] * frac)
    return out


def shift_levels_by_example(
    probs: list[float], nearest: tuple[int, float] | None, tiers: list[int], cuts: list[float]
) -> tuple[list[float], int | None]:
    """Blend each boundary probability toward the nearest example's tier (clearly above or below each cut)."""
    w, tier = _example_weight(nearest, tiers)
    if tier is None:
        return probs, None
    k = tiers.index(tier)
    target = [(c + 1) / 2 if j < k else c / 2 for j, c in enumerate(cuts)]
    return [(1 - w) * p + w * t for p, t in zip(probs, target)], tier


def tier_for_levels(probs: list[float], tiers: list[int], cuts: list[float], margin: float) -> tuple[int, bool]:
    """Climb while the chance of needing the next tier reaches its cut; one more when just below it."""
    i = 0
    while i < len(cuts) and probs[i] >= cuts[i]:
        i += 1
    unsure = i < len(cuts) and probs[i] >= cuts[i] - margin
    if unsure:
        i += 1
    return tiers[min(i, len(tiers) - 1)], unsure


def tier_for(score: float, tiers: list[int], cuts: list[float], margin: float) -> tuple[int, bool]:
    """Cheapest tier whose band covers the score; one tier up when within margin below a cut."""
    return tier_for_levels([score] * len(cuts), tiers, cuts, margin)


def _price(m: PoolModel) -> float:
    return m.pricing.input_per_million + m.pricing.output_per_million


def order_candidates(ok: list[PoolModel], want_tier: int, fallback_order: list[str]) -> list[PoolModel]:
    """Cheapest model at or above want_tier first; then fallbackOrder; then nearest tiers, upward first."""
    idx = {m.name: i for i, m in enumerate(ok)}

    def key(m: PoolModel):
        above = m.tier >= want_tier
        return (0 if above else 1, m.tier if above else -m.tier, _price(m), idx[m.name])

    ranked = sorted(ok, key=key)
    first = ranked[:1]
    by_name = {m.name: m for m in ok}
    pinned = [by_name[n] for n in fallback_order if n in by_name and by_name[n] not in first]
    rest = [m for m in ranked[1:] if m not in pinned]
    return first + pinned + rest


def decide(
    cfg: RouterConfig,
    v: RequestView,
    body: dict,
    score: float | Sequence[float] | None,
    nearest: tuple[int, float] | None = None,
) -> Decision:
    """Routing decision for a request addressed to the virtual model."""
    ok, removed = eligible(cfg, v, requested_output_tokens(body))
    if not ok:
        raise NoCapableModel("no model in the pool can serve this request (needs: " + ", ".join(removed) + ")")
    tiers, cuts = cfg.tiers(), cfg.cut_points()
    if score is None or not v.text.strip():
        default = cfg.by_name(cfg.policy.default_model) if cfg.policy.default_model else None
        chosen = default if default in ok else max(ok, key=lambda m: m.tier)
        cands = order_candidates(ok, chosen.tier, cfg.policy.fallback_order)
        cands = [chosen] + [m for m in cands if m is not chosen]
        first = score if score is None or isinstance(score, (int, float)) else (score[0] if score else None)
        return Decision(cands, chosen.tier, first, "default")
    if isinstance(score, (int, float)):
        shifted, ex_tier = shift_by_example(float(score), nearest, tiers, cuts)
        want, unsure = tier_for(shifted, tiers, cuts, cfg.policy.uncertainty_margin)
    else:  # calibrated P(level >= 2), P(level >= 3), ... from the classifier
        probs, ex_tier = shift_levels_by_example(boundary_probs(score, len(tiers)), nearest, tiers, cuts)
        want, unsure = tier_for_levels(probs, tiers, cuts, cfg.policy.uncertainty_margin)
        shifted = probs[0] if probs else float(score[0])
    cands = order_candidates(ok, want, cfg.policy.fallback_order)
    parts = [f"example-tier{ex_tier}" if ex_tier is not None else "classifier"]
    if unsure:
        parts.append("uncertain-escalated")
    if removed and cands[0].tier != want:
        parts.append("constraint-" + "-".join(removed))
    return Decision(cands, want, shifted, "+".join(parts))


def direct(cfg: RouterConfig, m: PoolModel) -> Decision:
    """A request naming a pool model: that model only, no fallback (the client chose it)."""
    return Decision([m], m.tier, None, "direct")


def adapters_last(d: Decision) -> Decision:
    """Fine-tuned adapters (pool models with a routing profile) get the requests of their own domain
    (prefer_adapter); complexity routing tries them only after every other candidate."""
    if not any(m.profile for m in d.candidates[1:]) and not d.candidates[0].profile:
        return d
    cands = [m for m in d.candidates if m.profile is None] + [m for m in d.candidates if m.profile is not None]
    return dataclasses.replace(d, candidates=cands)


def prefer_adapter(d: Decision, adapter: PoolModel, p: float) -> Decision:
    """The request falls inside `adapter`'s routing profile: the adapter first, then what complexity
    routing chose (its base among them, so a failing adapter falls back to a capable model)."""
    rest = [m for m in d.candidates if m is not adapter]
    reason = "adapter-match" + ("+" + d.reason if d.reason not in ("classifier", "default") else "")
    return Decision([adapter, *rest], adapter.tier, d.score, reason, adapter_score=p)
