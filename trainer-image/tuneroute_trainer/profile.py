"""The adapter's routing profile: what a ModelRoute needs to send requests of this domain to it.

Embeddings of a sample of the training prompts, made with the router's own embedder through its
public interface (tuneroute_router.adapters.build_profile), plus the held-out eval loss of the
adapter and of its base model. Published next to the adapter and reported into the FineTuneJob's
status, from where the operator renders it into the route's router config.
"""

from __future__ import annotations

import logging

PROFILE_JSON = "tuneroute-profile.json"
log = logging.getLogger("tuneroute_trainer")


def routing_profile(
    prompts: list[str], limit: int, eval_loss: float | None, base_eval_loss: float | None, held_out: int
) -> dict | None:
    """The profile, or None when there is nothing to build it from or the router's embedder is missing."""
    if limit <= 0 or not prompts:
        return None
    try:
        from tuneroute_router.adapters import build_profile
    except ImportError as e:  # an image without the router package: the route then ignores the profile
        log.warning("no routing profile: the router's embedder is not installed (%s)", e)
        return None
    profile = build_profile(prompts, limit=limit)
    profile.update(
        evalLoss=None if eval_loss is None else round(eval_loss, 6),
        baseEvalLoss=None if base_eval_loss is None else round(base_eval_loss, 6),
        heldOut=held_out,
    )
    return profile
