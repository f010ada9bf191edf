"""Operator settings, read once from the environment (set by the Helm chart)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEROUTE_", extra="ignore")

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Namespaces to watch; empty watches the whole cluster."
    )
    trainer_image: str = Field("ghcr.io/tuneroute/trainer:0.1.0", description="Default trainer image.")
    router_image: str = Field("ghcr.io/tuneroute/router:0.1.0", description="Default router image.")
    vllm_image: str = Field(
        "vllm/vllm-openai:v0.32.0",
        description="Default vLLM image: the parity gate's verify Jobs and vllm pool backends (the chart pins it).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    log_format: Literal["plain", "json"] = "plain"
    health_port: int = Field(8080, description="Liveness endpoint port (/healthz).")
    metrics_port: int = Field(9090, description="Prometheus metrics port (0 disables).")
    peering: str | None = Field(None, description="kopf peering name; unset runs standalone.")
    priority: int | None = Field(
        None,
        description="kopf peering priority of this replica; default: derived from the pod name, so replicas differ.",
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        # A comma-separated env var is friendlier than JSON for a Helm value.
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v
