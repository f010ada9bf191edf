"""ModelRoute: one OpenAI-compatible endpoint in front of a pool of models.

A pool entry is the router's PoolMember plus where its backend is; the policy and dispatch
settings are the router's own config models, and so are the routing rules between pool and
policy (tuneroute_router.config): the CRD and the router read the same contract. The rules only
a ModelRoute has (backends) are here, CEL and Python side by side.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from tuneroute_router.config import ROUTE_RULES, Dispatch, HttpUrl, Policy, PoolMember, Server, check_route
from tuneroute_trainer.contract import Matches, Rule, check, rules

from .common import (
    DNS_SUBDOMAIN,
    SECRET_KEY,
    ApiModel,
    Condition,
    Image,
    LabelName,
    MountPath,
    Quantity,
    SecretKeyRef,
    SecretRef,
    Toleration,
)
from .finetunejob import BaseModelSpec

ONE_BACKEND = Rule(
    "[has(self.url), has(self.service), has(self.fineTuneJob), has(self.vllm)].filter(x, x).size() == 1",
    "set exactly one of url, service, fineTuneJob or vllm",
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
    "backend.fineTuneJob.base must name another pool entry with a url, service or vllm backend",
    "pool",
    message_expression=(
        f"'spec.pool[' + [{_INDICES}].filter(i, i < self.pool.size() && {_BASE_MISSING.format(p='self.pool[i]')})"
        f".map(i, [{_NUMERALS}][i])[0] + ']: backend.fineTuneJob.base must name another pool entry with a url, "
        "service or vllm backend'"
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
    allow_unverified: bool = Field(
        False,
        description=(
            "Serve the adapter even if the parity gate has not verified it (condition ServingVerified of the "
            "FineTuneJob); by default only verified adapters join the route."
        ),
    )


class VllmResources(ApiModel):
    cpu: Quantity | None = Field(None, description="CPU request and limit per replica.")
    memory: Quantity | None = Field(None, description="Memory request and limit per replica.")
    gpu_resource: str = Field("nvidia.com/gpu", max_length=253, description="Extended resource name of the GPU.")
    shared_memory: Quantity = Field("16Gi", description="Size of /dev/shm (tensor-parallel workers talk through it).")


class VllmBackend(ApiModel):
    """vLLM deployed by the operator: a Deployment and a Service, ready when /health answers. The
    adapters of this route's fineTuneJob entries that name this entry as their base are served by
    every replica (--lora-modules; a new adapter rolls the Deployment)."""

    model: BaseModelSpec = Field(
        description="The base model: a Hugging Face id (and revision) or a directory on a PVC."
    )
    image: Image | None = Field(None, description="vLLM image; defaults to the chart's pinned one.")
    gpus: int = Field(1, ge=0, le=16, description="GPUs per replica; tensor parallel size (0: a CPU build of vLLM).")
    max_model_len: int | None = Field(None, ge=16, description="--max-model-len (default: the model's).")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("auto", description="--dtype.")
    replicas: int = Field(1, ge=0, le=64, description="vLLM replicas behind the Service.")
    resources: VllmResources = Field(default_factory=VllmResources, description="Per replica.")
    lora_target_modules: list[str] | None = Field(
        None,
        max_length=32,
        description=(
            "--lora-target-modules (unset: all modules vLLM supports). The parity gate of each adapter must have "
            "verified it against the same setting (FineTuneJob spec.verify.loraTargetModules)."
        ),
    )
    extra_args: list[str] = Field(default_factory=list, max_length=64, description="More vLLM arguments, as is.")
    hf_token: SecretKeyRef | None = Field(None, description="Secret key with a Hugging Face token, passed as HF_TOKEN.")
    model_cache: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="PersistentVolumeClaim for the Hugging Face cache (HF_HOME): replicas and restarts skip the download.",
    )
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32, description="Node labels to match.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description="Taints tolerated.")


ADAPTER_USES_BASE_KEY = Rule(
    "!has(self.fineTuneJob) || !has(self.apiKey)",
    "must be unset for a fineTuneJob backend: its base entry's backend serves the adapter, with the base's apiKey",
    "apiKey",
)


class BackendRef(ApiModel):
    """Exactly one of url, service, fineTuneJob or vllm."""

    model_config = rules(ONE_BACKEND, ADAPTER_USES_BASE_KEY)

    url: HttpUrl | None = Field(None, description="Base URL of an OpenAI-compatible API, including /v1.")
    service: ServiceRef | None = Field(None, description="A Service in this namespace.")
    fine_tune_job: FineTuneJobRef | None = Field(
        None, description="A FineTuneJob's adapter, served by another pool entry's backend once the job succeeds."
    )
    vllm: VllmBackend | None = Field(None, description="vLLM deployed and managed by the operator.")
    api_key: SecretKeyRef | None = Field(
        None,
        description=(
            "Secret key holding the API key this backend requires: the router sends it as Authorization: Bearer "
            "(mounted into the router pods, never copied into the ConfigMap or status). With vllm, the operator "
            "also starts vLLM with it (VLLM_API_KEY, as --api-key), so only holders of the key reach the model."
        ),
    )

    @model_validator(mode="after")
    def _rules(self) -> BackendRef:
        check([self.url, self.service, self.fine_tune_job, self.vllm].count(None) == 3, ONE_BACKEND)
        check(self.fine_tune_job is None or self.api_key is None, ADAPTER_USES_BASE_KEY)
        return self


class PoolEntry(PoolMember):
    backend: BackendRef = Field(description="Where requests for this model go.")


# Authentication is a choice the route states: an API key Secret, or `mode: none` written out.
API_KEYS_UNLESS_OPEN = Rule(
    "self.mode == 'none' || has(self.apiKeySecret)",
    "required unless mode is none: name the Secret holding the API keys clients must send, or write "
    "auth: {mode: none} to serve this route to anyone who can reach it",
    "apiKeySecret",
)
AUTH_STATED = Rule(
    "has(self.auth)",
    "required: set auth.apiKeySecret (the Secret holding the API keys clients must send), or write "
    "auth: {mode: none} to serve this route to anyone who can reach it",
    "auth",
)
OPEN_HAS_NO_KEYS = Rule(
    "self.mode != 'none' || (!has(self.apiKeySecret) && (!has(self.allowedModels) || size(self.allowedModels) == 0))",
    "none serves without authentication: apiKeySecret and allowedModels must be unset",
    "mode",
)


class KeyModels(ApiModel):
    key: Annotated[str, Field(max_length=253), Matches(SECRET_KEY)] = Field(
        description="A key of apiKeySecret (its name in the Secret, not the API key itself)."
    )
    models: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1,
        max_length=33,
        description="The only models this key may ask for: the route's model (auto) and pool entry names.",
    )


class RouteAuth(ApiModel):
    """How clients authenticate. There is no silent open default: without apiKeySecret the route
    is refused unless `mode: none` says it is meant to be open."""

    model_config = rules(API_KEYS_UNLESS_OPEN, OPEN_HAS_NO_KEYS)

    mode: Literal["apiKey", "none"] = Field(
        "apiKey",
        description="apiKey: clients must send one of apiKeySecret's keys (Authorization: Bearer, x-api-key). "
        "none: no authentication; anyone who can reach the route's Service may use every model.",
    )
    api_key_secret: SecretRef | None = Field(
        None, description="Secret whose values are the API keys clients may send (one client per Secret key)."
    )
    allowed_models: list[KeyModels] = Field(
        default_factory=list,
        max_length=64,
        description="Per key of apiKeySecret, the only models it may ask for (403 model_not_allowed for "
        "others). Keys not listed may ask for every model.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["key"]},
    )

    @model_validator(mode="after")
    def _rules(self) -> RouteAuth:
        check(self.mode == "none" or self.api_key_secret is not None, API_KEYS_UNLESS_OPEN)
        check(self.mode != "none" or (self.api_key_secret is None and not self.allowed_models), OPEN_HAS_NO_KEYS)
        return self


class RouterResources(ApiModel):
    cpu: Quantity = Field("500m", description="CPU request per router replica.")
    memory: Quantity = Field("512Mi", description="Memory request and limit per router replica.")


class RouterSpec(ApiModel):
    replicas: int = Field(2, ge=0, le=50, description="Router pods.")
    image: Image | None = Field(None, description="Router image; defaults to the operator's configured image.")
    resources: RouterResources = Field(default_factory=RouterResources, description="Requests per replica.")


class ModelRouteSpec(ApiModel):
    model_config = rules(ADAPTER_BASE_IN_POOL, AUTH_STATED, *ROUTE_RULES)

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
    server: Server = Field(
        default_factory=Server,
        description="What one client may cost a router replica: body, header and in-flight limits, read "
        "timeouts; and prompt logging. Changes apply without a restart.",
    )
    # No default: an omitted auth is refused (AUTH_STATED), never an open router.
    auth: RouteAuth | None = Field(
        None, description="Client authentication: apiKeySecret, or mode none written out (required)."
    )
    router: RouterSpec = Field(default_factory=RouterSpec, description="The router Deployment.")

    @model_validator(mode="after")
    def _rules(self) -> ModelRouteSpec:
        bases = {e.name for e in self.pool if e.backend.fine_tune_job is None}
        for i, e in enumerate(self.pool):
            ref = e.backend.fine_tune_job
            check(ref is None or ref.base in bases, ADAPTER_BASE_IN_POOL, f"pool[{i}]")
        check(self.auth is not None, AUTH_STATED)
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
