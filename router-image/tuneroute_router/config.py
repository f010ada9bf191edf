"""The router's configuration: the contract with the operator.

The operator imports these models to render a ModelRoute into the ConfigMap
(`/etc/tuneroute/router.yaml`) and builds the ModelRoute CRD from some of them: a pool entry
is a `PoolMember` plus its backend, the policy is `Policy` itself. The routing rules between
the pool and the policy are here once, CEL (run by the API server on the ModelRoute spec) and
Python (run by the router on its config, and by the operator on the spec) side by side; see
tuneroute_trainer.contract.Rule. Keep this module light: no heavy imports.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from tuneroute_trainer.config import RoutingProfile
from tuneroute_trainer.contract import ApiModel, FieldError, Matches, Pattern, Rule, check, describe, rules

__all__ = [
    "ROUTE_RULES",
    "AdapterRef",
    "Auth",
    "Capabilities",
    "ConfigError",
    "Dispatch",
    "HttpUrl",
    "Policy",
    "PoolMember",
    "PoolModel",
    "Pricing",
    "RouterConfig",
    "Server",
    "TierExamples",
    "check_route",
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

THRESHOLDS_IN_RANGE = Rule(
    "!has(self.thresholds) || self.thresholds.all(x, x > 0.0 && x < 1.0)",
    "thresholds must lie strictly between 0 and 1",
    "thresholds",
)
THRESHOLDS_ASCENDING = Rule(
    "!has(self.thresholds) || (self.thresholds.isSorted() && self.thresholds.all(x, self.thresholds.exists_one(y, y == x)))",
    "thresholds must be strictly ascending",
    "thresholds",
)
# The rules between a route's pool and its policy. The CEL runs on a ModelRoute spec (`model` is
# the routed name there, `virtualModel` in the router config); the Python is check_route.
DEFAULT_MODEL_IN_POOL = Rule(
    "!has(self.policy) || !has(self.policy.defaultModel) || self.pool.exists(p, p.name == self.policy.defaultModel)",
    "must name a pool entry",
    "policy.defaultModel",
)
FALLBACK_IN_POOL = Rule(
    "!has(self.policy) || !has(self.policy.fallbackOrder) || self.policy.fallbackOrder.all(n, self.pool.exists(p, p.name == n))",
    "must name pool entries only",
    "policy.fallbackOrder",
)
EXAMPLE_TIERS_IN_POOL = Rule(
    "!has(self.policy) || !has(self.policy.examples) || self.policy.examples.all(e, self.pool.exists(p, p.tier == e.tier))",
    "each example's tier must be the tier of some pool entry",
    "policy.examples",
)
THRESHOLDS_PER_TIER = Rule(
    "!has(self.policy) || !has(self.policy.thresholds) || self.policy.thresholds.size() + 1 == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].filter(t, self.pool.exists(p, p.tier == t)).size()",
    "needs one cut point fewer than the pool has distinct tiers",
    "policy.thresholds",
)
ROUTED_NAME_NOT_IN_POOL = Rule(
    "!self.pool.exists(p, p.name == self.model)",
    "the routed model name must differ from every pool entry's name",
    "model",
)
ROUTE_RULES = (
    DEFAULT_MODEL_IN_POOL,
    FALLBACK_IN_POOL,
    EXAMPLE_TIERS_IN_POOL,
    THRESHOLDS_PER_TIER,
    ROUTED_NAME_NOT_IN_POOL,
)


# A backend's base URL. Credentials in it would be copied in clear into the router's ConfigMap
# and the route's status; a URL with no host or an impossible port can never be reached.
HttpUrl = Annotated[
    str,
    Field(min_length=1, max_length=2048, pattern=r"^https?://\S+$"),
    Matches(
        Pattern(
            r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@",
            "must not contain credentials (user:password@): they would be copied in clear into the router's "
            "ConfigMap and the route's status; give the backend's API key through a Secret",
            must_match=False,
        ),
        Pattern(
            r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?)(:[0-9]*)?([/?#]|$)",
            "must name a host: http(s)://host[:port]/path, e.g. http://vllm.ml.svc:8000/v1",
        ),
        Pattern(
            r"^https?://[^/?#@]*:(0*|0[0-9]*|[0-9]{6,}|6553[6-9]|655[4-9][0-9]|65[6-9][0-9]{2}|6[6-9][0-9]{3}|[7-9][0-9]{4})([/?#]|$)",
            "port must be 1 to 65535",
            must_match=False,
        ),
    ),
]


class Pricing(ApiModel):
    input_per_million: float = Field(0.0, ge=0, description="USD per 1M prompt tokens.")
    output_per_million: float = Field(0.0, ge=0, description="USD per 1M completion tokens.")


class Capabilities(ApiModel):
    tools: bool = Field(False, description="The model handles tool/function calls.")
    vision: bool = Field(False, description="The model accepts image inputs.")


class AdapterRef(ApiModel):
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


class PoolMember(ApiModel):
    """What a ModelRoute's pool entry and the router's pool model share (the CRD's PoolEntry adds
    where the backend is; PoolModel adds its resolved URL and adapter)."""

    name: str = Field(
        ...,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:/-]+$",
        description="Model name clients see in /v1/models; sending it bypasses routing.",
    )
    model: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Model name sent to the backend; defaults to name (for a LoRA adapter: the adapter name).",
    )
    tier: int = Field(
        ...,
        ge=1,
        le=10,
        description="Capability tier, 1 = cheapest/weakest. The router picks the lowest tier that covers a prompt's complexity.",
    )
    pricing: Pricing = Field(default_factory=Pricing, description="USD per 1M input/output tokens (for cost metrics).")
    context_window: int = Field(..., ge=1, description="Maximum prompt plus completion tokens the model accepts.")
    capabilities: Capabilities = Field(default_factory=Capabilities, description="Hard capabilities: tools, vision.")
    max_concurrency: int = Field(
        64,
        ge=1,
        le=4096,
        description="Requests in flight to this model at once, per router replica. As many more wait up "
        "to dispatch.connectTimeoutSeconds for a slot (or go to another capable model); beyond that, or "
        "after the wait, a 503 backend_busy with Retry-After.",
    )
    timeout_seconds: float = Field(
        300.0, gt=0, le=3600, description="Longest a non-streamed request, or a pause in a stream, may take."
    )


class PoolModel(PoolMember):
    url: HttpUrl = Field(..., description="Backend base URL including /v1, e.g. http://vllm-small.ns.svc:8000/v1.")
    adapter: AdapterRef | None = Field(
        None, description="LoRA adapter to load on the vLLM backend before sending it traffic."
    )
    profile: RoutingProfile | None = Field(
        None,
        description=(
            "Routing profile of a fine-tuned adapter: requests for the virtual model that fall inside it go to "
            "this model, if it beat its base on held-out data."
        ),
    )
    api_key_path: str | None = Field(
        None,
        max_length=1024,
        description="File holding the API key sent to this backend as Authorization: Bearer (a mounted Secret "
        "key; re-read when it changes). The key itself never goes into the config.",
    )

    @property
    def backend_model(self) -> str:
        return self.model or self.name


class TierExamples(ApiModel):
    tier: int = Field(..., ge=1, le=10, description="Tier these prompts belong to.")
    prompts: list[str] = Field(
        ...,
        min_length=1,
        max_length=50,
        description="Example prompts that should be routed to this tier.",
    )


class Policy(ApiModel):
    model_config = rules(THRESHOLDS_IN_RANGE, THRESHOLDS_ASCENDING)

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
    def _rules(self) -> Policy:
        t = self.thresholds or []
        check(all(0 < x < 1 for x in t), THRESHOLDS_IN_RANGE)
        check(all(a < b for a, b in itertools.pairwise(t)), THRESHOLDS_ASCENDING)
        return self


def check_route(pool: Sequence[PoolMember], policy: Policy, routed: str, routed_field: str = "model") -> None:
    """The Python side of ROUTE_RULES (plus unique names, which the CRD enforces as list-map keys).
    `routed` is the routed model name, held in `routed_field` (ModelRoute: model; router: virtualModel)."""
    names = [m.name for m in pool]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FieldError("pool", f"duplicate model names {dupes}")
    tiers = {m.tier for m in pool}
    check(policy.default_model is None or policy.default_model in names, DEFAULT_MODEL_IN_POOL)
    check(all(n in names for n in policy.fallback_order), FALLBACK_IN_POOL)
    check(all(e.tier in tiers for e in policy.examples), EXAMPLE_TIERS_IN_POOL)
    check(policy.thresholds is None or len(policy.thresholds) == len(tiers) - 1, THRESHOLDS_PER_TIER)
    check(routed not in names, dataclasses.replace(ROUTED_NAME_NOT_IN_POOL, field=routed_field))


class Auth(ApiModel):
    """Client authentication as the router applies it. A ModelRoute says it explicitly (its
    spec.auth: an API key Secret, or mode none); the operator renders it into this."""

    api_keys_path: str | None = Field(
        None,
        description=(
            "Mounted Secret: a directory whose files each hold one key, or a file with one "
            "key per line. Unset: no authentication."
        ),
    )
    allowed_models: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per API key, by its name (its file in apiKeysPath, i.e. its key in the Secret): the only "
        "models it may ask for (the virtual model, pool names); others get a 403 model_not_allowed. "
        "A key not listed may ask for every model.",
    )

    @model_validator(mode="after")
    def _keys_for_lists(self) -> Auth:
        if self.allowed_models and self.api_keys_path is None:
            raise FieldError("allowedModels", "needs apiKeysPath: without keys there is no caller to restrict")
        return self


class Dispatch(ApiModel):
    retries: int = Field(2, ge=0, le=5, description="Extra attempts on other models after a failure.")
    connect_timeout_seconds: float = Field(5.0, gt=0, description="TCP connect timeout.")
    total_timeout_seconds: float = Field(
        600.0,
        gt=0,
        le=3600,
        description="Longest a request may wait for an answer over all its attempts (retries and "
        "fallbacks included; for a stream, until its first bytes); then a 504 deadline_exceeded.",
    )
    failure_threshold: int = Field(3, ge=1, description="Consecutive failures that open a backend's circuit.")
    cooldown_seconds: float = Field(
        30.0, gt=0, description="How long an open circuit stays open before a trial request."
    )


class Server(ApiModel):
    """What one client may cost a router replica. Every limit applies on reload, to the next
    connection or request; beyond a limit the client gets an OpenAI-style error (or, for a
    connection that never finishes its headers, a 408 and a closed connection)."""

    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest request body accepted (413 beyond)."
    )
    max_json_elements: int = Field(
        200_000,
        ge=1000,
        le=10_000_000,
        description="Most '[', '{' and ',' characters a body may hold, counted before it is parsed (413 "
        "beyond): an upper bound on the JSON values it would become, so a small body cannot cost "
        "hundreds of MiB as Python objects. Text and base64 images hold few: 200,000 is far above "
        "any model's context window.",
    )
    max_in_flight: int = Field(
        1024,
        ge=1,
        le=100_000,
        description="Requests to the OpenAI endpoints in progress at once in a router replica, streams "
        "included; beyond, a 503 router_busy with Retry-After. Probes and metrics are not counted.",
    )
    max_header_bytes: int = Field(
        32 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request line plus headers (a 431 and the connection closed beyond).",
    )
    header_timeout_seconds: float = Field(
        15.0,
        gt=0,
        le=600,
        description="Longest a connection may take to send a request's headers (a 408 and the "
        "connection closed after): a half-sent request cannot hold a connection.",
    )
    body_timeout_seconds: float = Field(
        60.0, gt=0, le=3600, description="Longest a client may take to send a request's body (408 after)."
    )
    log_prompts: bool = Field(False, description="Include prompt text in decision logs.")


class RouterConfig(ApiModel):
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
    def _rules(self) -> RouterConfig:
        check_route(self.pool, self.policy, self.virtual_model, "virtualModel")
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


def parse_config(data: object, source: str = "<config>") -> RouterConfig:
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: invalid router config: {describe(e)}") from None


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
