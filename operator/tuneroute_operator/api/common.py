"""Types shared by both custom resources.

Every model here is also an OpenAPI schema (see crd.py): field names are the camelCase
aliases users write, and each field's description is what `kubectl explain` prints.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from tuneroute_trainer.contract import ApiModel, Matches, Pattern, Rule, RuleViolation, cel, check, rules

__all__ = [
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "LABEL_KEY",
    "LABEL_VALUE",
    "ApiModel",
    "ClaimPath",
    "Condition",
    "ConditionStatus",
    "ExtendedResourceName",
    "Image",
    "LabelName",
    "MountPath",
    "NodeSelector",
    "ObjectName",
    "Quantity",
    "SecretKeyRef",
    "SecretRef",
    "Toleration",
]

# Kubernetes names (RFC 1123 labels / subdomains) and resource quantities.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Label keys ([DNS subdomain prefix/]name) and values: what nodeSelector and tolerations hold.
_NAME63 = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_KEY_RULES = "[prefix/]name, the name at most 63 letters, digits, '-', '_' or '.' (e.g. nvidia.com/gpu.present)"
LABEL_KEY = Pattern(rf"^({_SUBDOMAIN}/)?{_NAME63}$", f"must be a label key: {_KEY_RULES}")
LABEL_VALUE = Pattern(
    rf"^({_NAME63})?$", "must be a label value: at most 63 letters, digits, '-', '_' or '.', alphanumeric at both ends"
)
LABEL_KEY_OR_EMPTY = Pattern(rf"^(({_SUBDOMAIN}/)?{_NAME63})?$", f"must be a label key: {_KEY_RULES}")
NODE_SELECTOR_KEYS = Rule(
    f"self.all(k, {LABEL_KEY.cel('k')})",
    f"keys must be label keys: {_KEY_RULES}",
    message_expression=f"'key ' + self.filter(k, {LABEL_KEY.negated.cel('k')})[0] + ' is not a label key: ' + {json.dumps(_KEY_RULES)}",
)
NODE_SELECTOR_VALUES = Rule(
    f"self.all(k, {LABEL_VALUE.cel('self[k]')})",
    "values must be label values: at most 63 letters, digits, '-', '_' or '.', alphanumeric at both ends",
)


def _node_selector(value: dict[str, str]) -> dict[str, str]:
    """The Python side of NODE_SELECTOR_KEYS and NODE_SELECTOR_VALUES."""
    check(all(LABEL_KEY.ok(k) for k in value), NODE_SELECTOR_KEYS)
    check(all(LABEL_VALUE.ok(v) for v in value.values()), NODE_SELECTOR_VALUES)
    return value


NodeSelector = Annotated[
    dict[str, Annotated[str, Field(max_length=63)]],
    Field(max_length=32, json_schema_extra=cel(NODE_SELECTOR_KEYS, NODE_SELECTOR_VALUES)),
    AfterValidator(_node_selector),
]

# An extended resource (a device plugin's, e.g. nvidia.com/gpu): a qualified name with a domain
# that is not Kubernetes' own; the API server refuses a pod requesting anything else.
ExtendedResourceName = Annotated[
    str,
    Field(max_length=253),
    Matches(
        Pattern(
            rf"^{_SUBDOMAIN}/{_NAME63}$",
            "must be an extended resource name: domain/name, e.g. nvidia.com/gpu or amd.com/gpu",
        ),
        Pattern(r"(^|\.)kubernetes\.io/", "must not be in the kubernetes.io domain (e.g. nvidia.com/gpu)", False),
    ),
]

# An image reference: what a container's image may hold (no whitespace: a trailing newline from a
# YAML block scalar makes a Job whose pods the API server refuses, and that never starts).
Image = Annotated[
    str,
    Field(max_length=512),
    Matches(
        Pattern(
            r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$",
            "must be an image reference: registry/repository[:tag][@digest], no whitespace "
            "(e.g. registry.example.com/ml/trainer:1.0)",
        )
    ),
]

# Paths inside a claim stay inside it: relative, and no '..' segment.
_NO_DOTDOT = Pattern(r"(^|/)\.\.(/|$)", "must not contain a '..' segment (it would leave the volume)", False)
ClaimPath = Annotated[
    str,
    Field(max_length=1024),
    Matches(Pattern(r"^[^/]", "must be a relative path inside the claim (no leading '/')"), _NO_DOTDOT),
]
MountPath = Annotated[
    str,
    Field(max_length=1024),
    Matches(Pattern(r"^/", "must be an absolute path (e.g. /adapters)"), _NO_DOTDOT),
]

# The name of an object in the resource's namespace (a Secret, a claim, a ConfigMap): a DNS
# subdomain; of a Service or a FineTuneJob, and an adapter's name: a DNS label.
ObjectName = Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN)]
LabelName = Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]

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


SECRET_KEY = Pattern(r"^[-._a-zA-Z0-9]+$", "must be a Secret key: letters, digits, '-', '_' or '.'")


class SecretKeyRef(ApiModel):
    name: ObjectName = Field(description="Name of a Secret in the resource's namespace.")
    key: Annotated[str, Field(max_length=253), Matches(SECRET_KEY)] = Field(description="Key within the Secret.")


class SecretRef(ApiModel):
    name: ObjectName = Field(description="Name of a Secret in the resource's namespace.")


# The toleration combinations the API server refuses in a pod, refused here at admission instead.
TOLERATION_KEY_OR_EXISTS = Rule(
    "(has(self.key) && self.key != '') || self.operator == 'Exists'",
    "must be Exists when key is empty (a toleration that matches every taint)",
    "operator",
)
TOLERATION_EXISTS_NO_VALUE = Rule(
    "self.operator != 'Exists' || !has(self.value) || self.value == ''",
    "must be empty when operator is Exists",
    "value",
)
TOLERATION_SECONDS_NO_EXECUTE = Rule(
    "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
    "applies to effect NoExecute only: set effect: NoExecute or leave tolerationSeconds out",
    "tolerationSeconds",
)


class Toleration(ApiModel):
    model_config = rules(TOLERATION_KEY_OR_EXISTS, TOLERATION_EXISTS_NO_VALUE, TOLERATION_SECONDS_NO_EXECUTE)

    key: Annotated[str, Field(max_length=316), Matches(LABEL_KEY_OR_EMPTY)] | None = Field(
        None, description="Taint key the toleration applies to; empty matches all keys (operator Exists)."
    )
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists or Equal.")
    value: Annotated[str, Field(max_length=63), Matches(LABEL_VALUE)] | None = Field(
        None, description="Taint value to match when operator is Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        None, description="How long a NoExecute taint is tolerated, in seconds (effect NoExecute only)."
    )

    @model_validator(mode="after")
    def _rules(self) -> Toleration:
        check(bool(self.key) or self.operator == "Exists", TOLERATION_KEY_OR_EXISTS)
        check(self.operator != "Exists" or not self.value, TOLERATION_EXISTS_NO_VALUE)
        check(self.toleration_seconds is None or self.effect == "NoExecute", TOLERATION_SECONDS_NO_EXECUTE)
        return self


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
