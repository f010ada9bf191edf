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
import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import core_schema

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
    # CEL that builds a more precise message at admission (e.g. naming the pool entry at fault);
    # `message` stays the fallback and what the Python checker says.
    message_expression: str | None = None

    def schema(self) -> dict[str, str]:
        """The x-kubernetes-validations entry."""
        out = {"rule": self.cel, "message": self.message}
        if self.message_expression:
            out["messageExpression"] = self.message_expression
        if self.field:
            out["fieldPath"] = "." + self.field
        return out


def cel(*rs: Rule) -> dict[str, Any]:
    """Schema keywords that put `rs` into a field's schema (and so into the CRD) as CEL."""
    return {"x-kubernetes-validations": [r.schema() for r in rs]}


def rules(*rs: Rule) -> ConfigDict:
    """model_config that puts `rs` into the model's schema (and so into the CRD) as CEL."""
    return ConfigDict(json_schema_extra=cel(*rs))


class FieldError(ValueError):
    """An error a model validator raises about one of its fields (`where`, relative to the model),
    which `describe` names."""

    def __init__(self, where: str | None, message: str):
        super().__init__(message)
        self.where = where


class RuleViolation(FieldError):
    """Raised by `check` inside a model validator; `describe` names the rule's field, or `where`
    (the precise field, e.g. pool[2], when the rule is about one item)."""

    def __init__(self, rule: Rule, where: str | None = None):
        super().__init__(where or rule.field, rule.message)
        self.rule = rule


def check(ok: bool, rule: Rule, where: str | None = None) -> None:
    if not ok:
        raise RuleViolation(rule, where)


@dataclass(frozen=True)
class Pattern:
    """A rule on one string: it must (or must not) match `regex`. The same regex runs in CEL
    (RE2, `matches` searches) and in Python (`re.search`), so write it anchored and in the
    syntax both share."""

    regex: str
    message: str
    must_match: bool = True

    @property
    def rule(self) -> Rule:
        return Rule(self.cel("self"), self.message)

    def cel(self, subject: str) -> str:
        """The CEL that checks `subject` (an expression) against the pattern."""
        expr = f"{subject}.matches({json.dumps(self.regex)})"
        return expr if self.must_match else f"!{expr}"

    @property
    def negated(self) -> Pattern:
        return Pattern(self.regex, self.message, not self.must_match)

    def ok(self, value: str) -> bool:
        return (_python_regex(self.regex).search(value) is not None) == self.must_match


@functools.cache
def _python_regex(regex: str) -> re.Pattern[str]:
    """RE2's `$` is the end of the text; Python's also matches before a final newline (which is
    exactly what an image name pasted from a YAML block scalar ends with): use `\\Z` instead."""
    return re.compile(re.sub(r"(?<!\\)\$", r"\\Z", regex))


class Matches:
    """Annotated metadata that checks a string against patterns in both checkers: its rules go
    into the field's schema (and so the CRD) as CEL, and run in Python after the type's own
    checks. Use: `Annotated[str, Field(max_length=...), Matches(p, ...)]`."""

    def __init__(self, *patterns: Pattern):
        self.patterns = patterns

    def _check(self, value: str) -> str:
        for p in self.patterns:
            check(p.ok(value), p.rule)
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> Any:
        out = handler(schema)
        out.setdefault("x-kubernetes-validations", []).extend(p.rule.schema() for p in self.patterns)
        return out


def describe(err: ValidationError, prefix: str = "") -> str:
    """Every error as `field.path: message`, with field names as the user writes them (camelCase,
    list items as `pool[2]`); `prefix` (e.g. "spec") goes before each path, for errors about part
    of a resource."""
    parts = []
    for e in err.errors():
        path = prefix
        for x in e["loc"]:
            path += f"[{x}]" if isinstance(x, int) else f".{x}" if path else str(x)
        cause = (e.get("ctx") or {}).get("error")
        field = isinstance(cause, FieldError) and cause.where
        if field:
            path += f".{field}" if path else field
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{path}: {msg}" if path else msg)
    return "; ".join(parts)


def now() -> str:
    """The current time in RFC 3339, to the second, in UTC (as Kubernetes writes timestamps)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
