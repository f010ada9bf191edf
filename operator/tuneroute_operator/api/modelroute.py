"""ModelRoute: one OpenAI-compatible endpoint in front of a pool of models.

Pricing, capabilities, policy and dispatch settings are the router's own config models
(tuneroute_router.config): the CRD and the router read the same contract.
"""

from __future__ import annotations

from pydantic import Field

from tuneroute_router.config import Capabilities, Dispatch, Policy, PoolModel, Pricing

from .common import DNS_LABEL, QUANTITY, ApiModel, Condition, SecretRef

# The pool entry name pattern is the router's own.
POOL_NAME_PATTERN = next(m.pattern for m in PoolModel.model_fields["name"].metadata if getattr(m, "pattern", None))


class ServiceRef(ApiModel):
    name: str = Field(
        max_length=63,
        pattern=DNS_LABEL,
        description="Service in the ModelRoute's namespace serving an OpenAI-compatible API (e.g. vLLM).",
    )
    port: int = Field(8000, ge=1, le=65535, description="Service port.")
    path: str = Field("/v1", max_length=256, pattern=r"^/.*$", description="API base path on that port.")


class FineTuneJobRef(ApiModel):
    name: str = Field(
        max_length=63,
        pattern=DNS_LABEL,
        description="FineTuneJob in the same namespace whose adapter this entry serves.",
    )
    base: str = Field(
        max_length=128, description="Name of the pool entry whose backend serves the base model and loads the adapter."
    )
    mount_path: str = Field(
        "/adapters",
        max_length=1024,
        pattern=r"^/.*$",
        description="Where the base backend mounts the FineTuneJob's output PVC; the adapter path is resolved under it.",
    )


class BackendRef(ApiModel):
    """Exactly one of url, service or fineTuneJob."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.url), has(self.service), has(self.fineTuneJob)].filter(x, x).size() == 1",
                    "message": "set exactly one of url, service or fineTuneJob",
                }
            ]
        }
    }
    url: str | None = Field(
        None,
        max_length=2048,
        pattern=r"^https?://\S+$",
        description="Base URL of an OpenAI-compatible API, including /v1.",
    )
    service: ServiceRef | None = Field(None, description="A Service in this namespace.")
    fine_tune_job: FineTuneJobRef | None = Field(
        None, description="A FineTuneJob's adapter, served by another pool entry's backend once the job succeeds."
    )


class PoolEntry(ApiModel):
    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=POOL_NAME_PATTERN,
        description="Model name clients see in /v1/models; sending it bypasses routing.",
    )
    backend: BackendRef = Field(description="Where requests for this model go.")
    model: str | None = Field(
        None,
        max_length=256,
        description="Model name sent to the backend; defaults to name (for a fineTuneJob backend: the adapter name).",
    )
    tier: int = Field(
        ge=1,
        le=10,
        description="Capability tier, 1 = cheapest/weakest. The router picks the lowest tier that covers a prompt's complexity.",
    )
    pricing: Pricing = Field(default_factory=Pricing, description="USD per 1M input/output tokens (for cost metrics).")
    context_window: int = Field(ge=1, description="Maximum prompt plus completion tokens.")
    capabilities: Capabilities = Field(default_factory=Capabilities, description="Hard capabilities: tools, vision.")


class RouterResources(ApiModel):
    cpu: str = Field("500m", max_length=32, pattern=QUANTITY, description="CPU request per router replica.")
    memory: str = Field(
        "512Mi", max_length=32, pattern=QUANTITY, description="Memory request and limit per router replica."
    )


class RouterSpec(ApiModel):
    replicas: int = Field(2, ge=0, le=50, description="Router pods.")
    image: str | None = Field(
        None, max_length=512, description="Router image; defaults to the operator's configured image."
    )
    resources: RouterResources = Field(default_factory=RouterResources, description="Requests per replica.")


class ModelRouteSpec(ApiModel):
    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.pool.all(p, !has(p.backend.fineTuneJob) || self.pool.exists(q, q.name == p.backend.fineTuneJob.base && !has(q.backend.fineTuneJob)))",
                    "message": "pool[].backend.fineTuneJob.base must name another pool entry with a url or service backend",
                    "fieldPath": ".pool",
                },
                {
                    "rule": "!has(self.policy) || !has(self.policy.defaultModel) || self.pool.exists(p, p.name == self.policy.defaultModel)",
                    "message": "policy.defaultModel must name a pool entry",
                    "fieldPath": ".policy.defaultModel",
                },
                {
                    "rule": "!has(self.policy) || !has(self.policy.fallbackOrder) || self.policy.fallbackOrder.all(n, self.pool.exists(p, p.name == n))",
                    "message": "policy.fallbackOrder must name pool entries only",
                    "fieldPath": ".policy.fallbackOrder",
                },
                {
                    "rule": "!self.pool.exists(p, p.name == self.model)",
                    "message": "model (the routed name) must differ from every pool entry's name",
                    "fieldPath": ".model",
                },
            ]
        }
    }
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
