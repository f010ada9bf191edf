"""Types shared by both custom resources.

Every model here is also an OpenAPI schema (see crd.py): field names are the camelCase
aliases users write, and each field's description is what `kubectl explain` prints.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from tuneroute_trainer.contract import ApiModel, Rule, RuleViolation, cel

__all__ = [
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "ApiModel",
    "Condition",
    "ConditionStatus",
    "Quantity",
    "SecretKeyRef",
    "SecretRef",
    "Toleration",
]

# Kubernetes names (RFC 1123 labels / subdomains) and resource quantities.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Kubernetes' quantity syntax: a decimal number, then a binary or decimal suffix or an exponent.
_QUANTITY = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
NON_NEGATIVE_QUANTITY = Rule(
    "isQuantity(self) && !quantity(self).isLessThan(quantity('0'))",
    "must be a non-negative quantity, e.g. 64Gi or 500m",
)


def _non_negative(value: str) -> str:
    """The Python side of NON_NEGATIVE_QUANTITY (the pattern has checked the syntax)."""
    number = re.match(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)", value)
    if number is None or float(number.group()) < 0:
        raise RuleViolation(NON_NEGATIVE_QUANTITY)
    return value


# A resource quantity (e.g. 64Gi, 500m): the pattern for both checkers, then the rule.
Quantity = Annotated[
    str,
    Field(
        max_length=32,
        pattern=_QUANTITY,
        json_schema_extra=cel(NON_NEGATIVE_QUANTITY),
    ),
    AfterValidator(_non_negative),
]


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


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """metav1.Condition: one observed state of the resource."""

    type: str = Field(max_length=316, description="Condition type, e.g. Ready, Running, Succeeded, Failed.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="One CamelCase word that says why.")
    message: str = Field("", max_length=32768, description="Human-readable details.")
    last_transition_time: str = Field(
        description="When status last changed (RFC 3339).", json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = Field(None, description="metadata.generation this condition was computed from.")
