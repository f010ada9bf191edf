"""Types shared by both custom resources.

Every model here is also an OpenAPI schema (see crd.py): field names are the camelCase
aliases users write, and each field's description is what `kubectl explain` prints.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Kubernetes names (RFC 1123 labels / subdomains) and resource quantities.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"


class ApiModel(BaseModel):
    """Base of all CRD types: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SecretKeyRef(ApiModel):
    name: str = Field(
        max_length=253, pattern=DNS_SUBDOMAIN, description="Name of a Secret in the resource's namespace."
    )
    key: str = Field(max_length=253, description="Key within the Secret.")


class SecretRef(ApiModel):
    name: str = Field(
        max_length=253, pattern=DNS_SUBDOMAIN, description="Name of a Secret in the resource's namespace."
    )


class Toleration(ApiModel):
    key: str | None = Field(
        None, max_length=316, description="Taint key the toleration applies to; empty matches all keys."
    )
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists or Equal.")
    value: str | None = Field(None, max_length=63, description="Taint value to match when operator is Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(None, description="How long a NoExecute taint is tolerated, in seconds.")


class Condition(ApiModel):
    """metav1.Condition: one observed state of the resource."""

    type: str = Field(max_length=316, description="Condition type, e.g. Ready, Running, Succeeded, Failed.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="One CamelCase word that says why.")
    message: str = Field("", max_length=32768, description="Human-readable details.")
    last_transition_time: str = Field(
        description="When status last changed (RFC 3339).", json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = Field(None, description="metadata.generation this condition was computed from.")
