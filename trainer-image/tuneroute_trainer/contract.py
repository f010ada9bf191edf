"""What every tuneroute contract shares: the CRDs, the trainer's config and the router's config.

- the API group and version of the custom resources;
- `ApiModel`, the one pydantic base: camelCase names on the wire, unknown fields refused;
- `Rule`, a cross-field rule stated once for both of its checkers: the CEL that the API server
  runs at admission (emitted into the CRD from the model's schema) and the Python check that
  config load runs (`check(...)` in the model's validator), with one message and one field;
- `describe`, the one way a `ValidationError` becomes a message that names the user's field;
- `now`, RFC 3339 time as Kubernetes writes it.

It lives in the trainer's package because the trainer and the operator both speak the
Kubernetes API (the trainer patches its FineTuneJob's status), the trainer must not import the
operator (kopf, and its image has no operator), and the operator and router images install the
trainer's distribution without its dependencies for this module and `config`. Standard library
and pydantic only: nothing here may pull in torch or kopf.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

GROUP = "tuneroute.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FINETUNEJOBS = "finetunejobs"  # the FineTuneJob resource's plural (its URL path segment)


class ApiModel(BaseModel):
    """Base of every CRD type and config model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        """The JSON object the API server or a config file holds: camelCase keys, unset values left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class Rule:
    """One cross-field rule. `cel` runs in the API server on the object whose model lists the rule
    (`self` is that object); the model's validator runs the same rule in Python with `check`.
    `field` is the offending field relative to that object, named in both checkers' errors."""

    cel: str
    message: str
    field: str | None = None

    def schema(self) -> dict[str, str]:
        """The x-kubernetes-validations entry."""
        out = {"rule": self.cel, "message": self.message}
        if self.field:
            out["fieldPath"] = "." + self.field
        return out


def cel(*rs: Rule) -> dict[str, Any]:
    """Schema keywords that put `rs` into a field's schema (and so into the CRD) as CEL."""
    return {"x-kubernetes-validations": [r.schema() for r in rs]}


def rules(*rs: Rule) -> ConfigDict:
    """model_config that puts `rs` into the model's schema (and so into the CRD) as CEL."""
    return ConfigDict(json_schema_extra=cel(*rs))


class RuleViolation(ValueError):
    """Raised by `check` inside a model validator; `describe` names the rule's field."""

    def __init__(self, rule: Rule):
        super().__init__(rule.message)
        self.rule = rule


def check(ok: bool, rule: Rule) -> None:
    if not ok:
        raise RuleViolation(rule)


def describe(err: ValidationError) -> str:
    """Every error as `field.path: message`, with field names as the user writes them (camelCase)."""
    parts = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, RuleViolation) and cause.rule.field:
            loc.append(cause.rule.field)
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "; ".join(parts)


def now() -> str:
    """The current time in RFC 3339, to the second, in UTC (as Kubernetes writes timestamps)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
