"""The router's configuration: the contract with the operator.

The operator imports these models to render a ModelRoute into the ConfigMap
(`/etc/tuneroute/router.yaml`) and reuses some sub-models in the CRD's OpenAPI
schema, so constraints live in Field(...) where possible and every field has a
description. Keep this module light: no heavy imports.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "AdapterRef",
    "Auth",
    "Capabilities",
    "ConfigError",
    "Dispatch",
    "Policy",
    "PoolModel",
    "Pricing",
    "RouterConfig",
    "Server",
    "TierExamples",
    "default_thresholds",
    "load_config",
    "parse_config",
]

# Where the cut points sit between successive distinct tiers, per mode, for a
# two-tier pool: the share of "needs a stronger model" probability tolerated
# on the cheaper tier. More tiers spread evenly between these bounds.
_MODE_BOUNDS: dict[str, tuple[float, float]] = {
    "cost": (0.65, 0.85),
    "balanced": (0.45, 0.75),
    "quality": (0.25, 0.55),
}


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )


class Pricing(_Model):
    input_per_million: float = Field(0.0, ge=0, description="USD per 1M prompt tokens.")
    output_per_million: float = Field(0.0, ge=0, description="USD per 1M completion tokens.")


class Capabilities(_Model):
    tools: bool = Field(False, description="The model handles tool/function calls.")
    vision: bool = Field(False, description="The model accepts image inputs.")


class AdapterRef(_Model):
    name: str = Field(
        ...,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._/-]+$",
        description="LoRA adapter name registered on the vLLM backend (lora_name).",
    )
    path: str = Field(
        ...,
        min_length=1,
        max_length=1024,
        description="Adapter path on the backend's filesystem (lora_path).",
    )


class PoolModel(_Model):
    name: str = Field(
        ...,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:/-]+$",
        description="Name listed by /v1/models; a client sending it bypasses routing.",
    )
    url: str = Field(
        ...,
        min_length=1,
        max_length=2048,
        pattern=r"^https?://\S+$",
        description="Backend base URL including /v1, e.g. http://vllm-small.ns.svc:8000/v1.",
    )
    model: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Model name sent to the backend (a LoRA adapter name for vLLM); defaults to name.",
    )
    tier: int = Field(..., ge=1, le=10, description="Capability tier, 1 = cheapest/weakest.")
    pricing: Pricing = Field(default_factory=Pricing, description="Token prices, for cost metrics.")
    context_window: int = Field(..., ge=1, description="Maximum prompt plus completion tokens the model accepts.")
    capabilities: Capabilities = Field(default_factory=Capabilities, description="Hard capabilities (tools, vision).")
    max_concurrency: int = Field(64, ge=1, description="In-flight requests allowed to this backend.")
    timeout_seconds: float = Field(300.0, gt=0, description="Whole-request timeout for this backend.")
    adapter: AdapterRef | None = Field(
        None, description="LoRA adapter to load on the vLLM backend before sending it traffic."
    )

    @property
    def backend_model(self) -> str:
        return self.model or self.name


class TierExamples(_Model):
    tier: int = Field(..., ge=1, le=10, description="Tier these prompts belong to.")
    prompts: list[str] = Field(
        ...,
        min_length=1,
        max_length=50,
        description="Example prompts that should be routed to this tier.",
    )


class Policy(_Model):
    mode: Literal["cost", "balanced", "quality"] = Field("balanced", description="How eagerly to pick cheaper tiers.")
    thresholds: list[float] | None = Field(
        None,
        min_length=1,
        max_length=9,
        description="Ascending cut points in (0,1) between distinct tiers; default from mode.",
    )
    uncertainty_margin: float = Field(
        0.1,
        ge=0,
        le=0.5,
        description="Escalate one tier when the score is within this distance of a cut.",
    )
    default_model: str | None = Field(None, description="Pool model used when nothing else decides.")
    fallback_order: list[str] = Field(
        default_factory=list,
        description="Pool names tried in order after the chosen model fails.",
    )
    examples: list[TierExamples] = Field(
        default_factory=list,
        max_length=10,
        description="Example prompts per tier that shift this route's decisions.",
    )

    @model_validator(mode="after")
    def _ascending(self) -> Policy:
        t = self.thresholds
        if t is not None:
            if any(not 0 < x < 1 for x in t):
                raise ValueError("thresholds must lie strictly between 0 and 1")
            if any(b <= a for a, b in itertools.pairwise(t)):
                raise ValueError("thresholds must be strictly ascending")
        return self


class Auth(_Model):
    api_keys_path: str | None = Field(
        None,
        description=(
            "Mounted Secret: a directory whose files each hold one key, or a file with one "
            "key per line. Unset: no authentication."
        ),
    )


class Dispatch(_Model):
    retries: int = Field(2, ge=0, le=5, description="Extra attempts on other models after a failure.")
    connect_timeout_seconds: float = Field(5.0, gt=0, description="TCP connect timeout.")
    failure_threshold: int = Field(3, ge=1, description="Consecutive failures that open a backend's circuit.")
    cooldown_seconds: float = Field(
        30.0, gt=0, description="How long an open circuit stays open before a trial request."
    )


class Server(_Model):
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body accepted.")
    log_prompts: bool = Field(False, description="Include prompt text in decision logs.")


class RouterConfig(_Model):
    virtual_model: str = Field(
        "auto", min_length=1, max_length=128, description="Model name clients send to be routed."
    )
    pool: list[PoolModel] = Field(
        ..., min_length=1, max_length=32, description="Models the router may send requests to."
    )
    policy: Policy = Field(default_factory=Policy, description="Routing policy.")
    auth: Auth = Field(default_factory=Auth, description="Client authentication.")
    dispatch: Dispatch = Field(default_factory=Dispatch, description="Retries, timeouts, circuits.")
    server: Server = Field(default_factory=Server, description="HTTP server limits and logging.")

    @model_validator(mode="after")
    def _cross_checks(self) -> RouterConfig:
        names = [m.name for m in self.pool]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pool: duplicate model names {dupes}")
        if self.virtual_model in names:
            raise ValueError(f"virtualModel {self.virtual_model!r} collides with a pool model name")
        known = set(names)
        p = self.policy
        if p.default_model is not None and p.default_model not in known:
            raise ValueError(f"policy.defaultModel {p.default_model!r} is not in the pool")
        unknown = [n for n in p.fallback_order if n not in known]
        if unknown:
            raise ValueError(f"policy.fallbackOrder names models not in the pool: {unknown}")
        tiers = {m.tier for m in self.pool}
        bad = sorted({e.tier for e in p.examples} - tiers)
        if bad:
            raise ValueError(f"policy.examples: tiers {bad} have no model in the pool")
        if p.thresholds is not None and len(p.thresholds) != len(tiers) - 1:
            raise ValueError(
                f"policy.thresholds: need {len(tiers) - 1} cut points for {len(tiers)} distinct tiers,"
                f" got {len(p.thresholds)}"
            )
        return self

    def tiers(self) -> list[int]:
        return sorted({m.tier for m in self.pool})

    def cut_points(self) -> list[float]:
        return list(self.policy.thresholds or default_thresholds(self.policy.mode, len(self.tiers())))

    def by_name(self, name: str) -> PoolModel | None:
        return next((m for m in self.pool if m.name == name), None)


def default_thresholds(mode: str, n_tiers: int) -> list[float]:
    """Cut points between n_tiers distinct tiers, evenly spread over the mode's bounds."""
    if n_tiers <= 1:
        return []
    lo, hi = _MODE_BOUNDS[mode]
    if n_tiers == 2:
        return [round((lo + hi) / 2, 4)]
    step = (hi - lo) / (n_tiers - 2)
    return [round(lo + i * step, 4) for i in range(n_tiers - 1)]


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and field."""


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def parse_config(data: object, source: str = "<config>") -> RouterConfig:
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: invalid router config: {_describe(e)}") from None


def load_config(path: str | Path) -> RouterConfig:
    """Read and validate a YAML (or JSON) router config, raising ConfigError naming the field."""
    import yaml  # local: keep config.py import-light for the operator

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read router config: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: router config must be a mapping, got {type(data).__name__}")
    return parse_config(data, str(p))
