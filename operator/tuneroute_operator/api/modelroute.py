"""ModelRoute: one OpenAI-compatible endpoint in front of a pool of models.

A pool entry is the router's PoolMember plus where its backend is; the policy and dispatch
settings are the router's own config models, and so are the routing rules between pool and
policy (tuneroute_router.config): the CRD and the router read the same contract. The rules only
a ModelRoute has (backends) are here, CEL and Python side by side.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from tuneroute_router.config import ROUTE_RULES, Dispatch, HttpUrl, Policy, PoolMember, check_route
from tuneroute_trainer.contract import Rule, check, rules

from .common import ApiModel, Condition, Image, LabelName, MountPath, Quantity, SecretRef

ONE_BACKEND = Rule(
    "[has(self.url), has(self.service), has(self.fineTuneJob)].filter(x, x).size() == 1",
    "set exactly one of url, service or fineTuneJob",
)
_BASE_MISSING = (
    "has({p}.backend.fineTuneJob) && "
    "!self.pool.exists(q, q.name == {p}.backend.fineTuneJob.base && !has(q.backend.fineTuneJob))"
)
# CEL has no index of a list item: the message counts through the 32 entries a pool may hold, and
# spells the numbers out (the cost estimator takes string(int) in a message for unbounded).
_INDICES = ", ".join(str(i) for i in range(32))
_NUMERALS = ", ".join(f"'{i}'" for i in range(32))
ADAPTER_BASE_IN_POOL = Rule(
    f"!self.pool.exists(p, {_BASE_MISSING.format(p='p')})",
    "backend.fineTuneJob.base must name another pool entry with a url or service backend",
    "pool",
    message_expression=(
        f"'spec.pool[' + [{_INDICES}].filter(i, i < self.pool.size() && {_BASE_MISSING.format(p='self.pool[i]')})"
        f".map(i, [{_NUMERALS}][i])[0] + ']: backend.fineTuneJob.base must name another pool entry with a url or "
        "service backend'"
    ),
)


class ServiceRef(ApiModel):
    name: LabelName = Field(
        description="Service in the ModelRoute's namespace serving an OpenAI-compatible API (e.g. vLLM)."
    )
    port: int = Field(8000, ge=1, le=65535, description="Service port.")
    path: str = Field("/v1", max_length=256, pattern=r"^/.*$", description="API base path on that port.")


class FineTuneJobRef(ApiModel):
    name: LabelName = Field(description="FineTuneJob in the same namespace whose adapter this entry serves.")
    base: str = Field(
        max_length=128, description="Name of the pool entry whose backend serves the base model and loads the adapter."
    )
    mount_path: MountPath = Field(
        "/adapters",
        description="Where the base backend mounts the FineTuneJob's output PVC; the adapter path is resolved under it.",
    )


class BackendRef(ApiModel):
    """Exactly one of url, service or fineTuneJob."""

    model_config = rules(ONE_BACKEND)

    url: HttpUrl | None = Field(None, description="Base URL of an OpenAI-compatible API, including /v1.")
    service: ServiceRef | None = Field(None, description="A Service in this namespace.")
    fine_tune_job: FineTuneJobRef | None = Field(
        None, description="A FineTuneJob's adapter, served by another pool entry's backend once the job succeeds."
    )

    @model_validator(mode="after")
    def _rules(self) -> BackendRef:
        check([self.url, self.service, self.fine_tune_job].count(None) == 2, ONE_BACKEND)
        return self


class PoolEntry(PoolMember):
    backend: BackendRef = Field(description="Where requests for this model go.")


class RouterResources(ApiModel):
    cpu: Quantity = Field("500m", description="CPU request per router replica.")
    memory: Quantity = Field("512Mi", description="Memory request and limit per router replica.")


class RouterSpec(ApiModel):
    replicas: int = Field(2, ge=0, le=50, description="Router pods.")
    image: Image | None = Field(None, description="Router image; defaults to the operator's configured image.")
    resources: RouterResources = Field(default_factory=RouterResources, description="Requests per replica.")


class ModelRouteSpec(ApiModel):
    model_config = rules(ADAPTER_BASE_IN_POOL, *ROUTE_RULES)

    model: str = Field(
        "auto",
        min_length=1,
        max_length=128,
        description="The model name clients send to be routed (the virtual model).",
    )
    pool: list[PoolEntry] = Field(
        min_length=1,
        max_length=32,
        description="Models the router may send requests to.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    policy: Policy = Field(default_factory=Policy, description="How prompts map to tiers.")
    dispatch: Dispatch = Field(
        default_factory=Dispatch, description="Retries, timeouts and circuit breaking per backend."
    )
    api_key_secret: SecretRef | None = Field(
        None,
        description="Secret whose keys are the API keys clients must send (Authorization: Bearer). Unset: no authentication.",
    )
    router: RouterSpec = Field(default_factory=RouterSpec, description="The router Deployment.")

    @model_validator(mode="after")
    def _rules(self) -> ModelRouteSpec:
        bases = {e.name for e in self.pool if e.backend.fine_tune_job is None}
        for i, e in enumerate(self.pool):
            ref = e.backend.fine_tune_job
            check(ref is None or ref.base in bases, ADAPTER_BASE_IN_POOL, f"pool[{i}]")
        check_route(self.pool, self.policy, self.model)
        return self


class BackendStatus(ApiModel):
    name: str = Field(description="Pool entry.")
    ready: bool = Field(description="Whether the entry is resolved and in the router's config.")
    reason: str = Field(description="Why (CamelCase).")
    url: str | None = Field(None, description="Resolved backend URL.")


class ModelRouteStatus(ApiModel):
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, description="Observed states: Ready, Degraded."
    )
    observed_generation: int | None = Field(None, description="metadata.generation the operator last acted on.")
    ready_backends: int | None = Field(None, description="Pool entries in the router's config.")
    total_backends: int | None = Field(None, description="Pool entries in the spec.")
    backends: str | None = Field(None, description="ready/total, for kubectl get.")
    backend_status: list[BackendStatus] = Field(
        default_factory=list, max_length=32, description="Per pool entry: ready and why."
    )
    endpoint: str | None = Field(None, description="Base URL for OpenAI clients inside the cluster.")
    config_hash: str | None = Field(None, description="Hash of the router config in effect.")
