"""Each cross-field rule exists twice: CEL in the CRDs (admission) and Python in the models
(the operator's and the configs' load). Here both checkers see the same specs and must agree.

The CEL side is the generated CRDs, evaluated in-process with cel-python the way the API server
does it: defaults applied, values typed by the schema, every rule at its place in the tree
(transition rules, which need the old object, are left to tests/e2e). The Python side is what
the operator runs on a spec and what the trainer or router runs on the config rendered from it.
The specs: the examples, valid variants at each rule's edge, and every invalid manifest the
API server is tested with (tuneroute_testing.manifests).
"""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

import celpy
import pytest
from celpy import celtypes
from pydantic import ValidationError

from tuneroute_operator import crd
from tuneroute_operator.api.finetunejob import FineTuneJobSpec
from tuneroute_operator.api.modelroute import ModelRouteSpec
from tuneroute_operator.builders import finetunejob as ftj_build
from tuneroute_operator.builders import modelroute as route_build
from tuneroute_operator.builders.common import Owner
from tuneroute_testing.manifests import CASES, both, delp, grpo, manifest, setp
from tuneroute_trainer.contract import RuleViolation, describe

# --- the API server's side: CEL over the generated CRD ---------------------------------------

_QUANTITY_SUFFIX = {"": 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_QUANTITY_SUFFIX |= {"E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")


def _quantity_value(s: str) -> float | None:
    m = _QUANTITY.match(s)
    if m is None:
        return None
    suffix = m.group(2) or ""
    scale = 10 ** int(suffix[1:]) if suffix[:1] in ("e", "E") else _QUANTITY_SUFFIX[suffix]
    return float(m.group(1)) * scale


# Kubernetes' CEL libraries beyond the standard (lists, quantity): what our rules use.
FUNCTIONS = {
    "isSorted": lambda xs: celtypes.BoolType(all(a <= b for a, b in zip(list(xs), list(xs)[1:]))),
    "isQuantity": lambda s: celtypes.BoolType(_quantity_value(str(s)) is not None),
    "quantity": lambda s: celtypes.DoubleType(_quantity_value(str(s))),
    "isLessThan": lambda a, b: celtypes.BoolType(float(a) < float(b)),
}


@functools.cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=FUNCTIONS)


def _defaulted(schema: dict, value: Any) -> Any:
    """Structural defaulting, as the API server does before validation."""
    if isinstance(value, dict) and "properties" in schema:
        value = dict(value)
        for name, prop in schema["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = _defaulted(prop, value[name])
    elif isinstance(value, list) and "items" in schema:
        value = [_defaulted(schema["items"], v) for v in value]
    return value


def _typed(schema: dict, value: Any) -> Any:
    """The value as CEL sees it: typed by the schema (a number is a double even when written 1)."""
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        props = schema["properties"]  # unknown fields are pruned (or refused) before CEL runs
        return celtypes.MapType({celtypes.StringType(k): _typed(props[k], v) for k, v in value.items() if k in props})
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        item = schema["additionalProperties"]
        return celtypes.MapType({celtypes.StringType(k): _typed(item, v) for k, v in value.items()})
    if kind == "array":
        return celtypes.ListType([_typed(schema["items"], v) for v in value])
    if kind == "number":
        return celtypes.DoubleType(float(value))
    if kind == "integer":
        return celtypes.IntType(value)
    return celpy.json_to_cel(value)


def cel_errors(schema: dict, value: Any, path: str = "") -> set[tuple[str, str]]:
    """(field, message) of every CEL rule the (defaulted) value breaks."""
    out = set()
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            continue
        field = (path + rule.get("fieldPath", "")).lstrip(".")
        try:
            ok = bool(_program(rule["rule"]).evaluate({"self": _typed(schema, value)}))
        except celpy.CELEvalError as e:  # e.g. a required field is missing: the object is refused
            out.add((field, f"CEL error: {e.args[0]}"))
            continue
        if not ok:
            out.add((field, rule["message"]))
    if isinstance(value, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if name in value:
                out |= cel_errors(prop, value[name], f"{path}.{name}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out |= cel_errors(schema["items"], item, f"{path}.{i}")
    return out


def _spec_schema(kind: str) -> dict:
    make = crd.finetunejob_crd if kind == "ftj" else crd.modelroute_crd
    return make()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def admission(kind: str, spec: dict) -> set[tuple[str, str]]:
    schema = _spec_schema(kind)
    return cel_errors(schema, _defaulted(schema, spec))


# --- the Python side: what the operator, the trainer and the router run -----------------------

OWNER = Owner("FineTuneJob", "qwen3-support", "ml", "uid")
VERIFIED = [{"type": "ServingVerified", "status": "True", "reason": "Verified"}]
SUCCEEDED = {"status": {"phase": "Succeeded", "adapter": {"name": "a", "path": "adapters/a"}, "conditions": VERIFIED}}


def config_load(kind: str, spec: dict) -> ValidationError | None:
    """The spec through the operator, then the config rendered from it through the trainer's or
    the router's model (every adapter ready, so the router sees the whole pool)."""
    try:
        if kind == "ftj":
            ftj = FineTuneJobSpec.model_validate(spec)
            ftj_build.trainer_config(OWNER, ftj, ftj_build.adapter_name(OWNER, ftj))
        else:
            route = ModelRouteSpec.model_validate(spec)
            jobs = {e.backend.fine_tune_job.name: SUCCEEDED for e in route.pool if e.backend.fine_tune_job}
            route_build.router_config(route, route_build.resolve(OWNER, route, jobs))
    except ValidationError as e:
        return e
    return None


def rule_errors(err: ValidationError | None) -> set[tuple[str, str]]:
    """(field, message) of the rules (not the schema checks) an error reports."""
    out = set()
    for e in err.errors() if err else []:
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, RuleViolation):
            loc = [str(x) for x in e["loc"]] + ([cause.rule.field] if cause.rule.field else [])
            out.add((".".join(loc), cause.rule.message))
    return out


def _agree(kind: str, spec: dict) -> tuple[set, ValidationError | None]:
    cel, err = admission(kind, spec), config_load(kind, spec)
    assert rule_errors(err) <= cel, f"Python refuses what CEL lets through: {rule_errors(err) - cel}"
    assert err is not None or not cel, f"CEL refuses what Python accepts: {cel}"
    return cel, err


# --- the specs ---------------------------------------------------------------------------------

VALID = {
    "ftj-example": ("ftj", None),
    "ftj-dpo-with-preference-data": (
        "ftj",
        both(setp("spec.method", "dpo"), setp("spec.dataset.format", "preference")),
    ),
    "ftj-dropout-without-expert-lora": ("ftj", both(setp("spec.lora.dropout", 0.1), setp("spec.lora.experts", False))),
    "ftj-model-and-data-on-pvcs": (
        "ftj",
        both(
            delp("spec.baseModel.id"),
            setp("spec.baseModel.pvc", "models"),
            setp("spec.baseModel.path", "qwen3"),
            delp("spec.dataset.id"),
            setp("spec.dataset.pvc", "data"),
            setp("spec.dataset.path", "train.jsonl"),
        ),
    ),
    "ftj-grpo": ("ftj", grpo()),
    "ftj-grpo-sync-with-beta": ("ftj", grpo(beta=0.04, **{"async": False})),
    "ftj-grpo-length-target-just-below": (
        "ftj",
        grpo(maxCompletionLength=64, rewards=[{"name": "short", "lengthPenalty": {"targetTokens": 63}}]),
    ),
    "ftj-grpo-vllm-and-every-reward-kind": (
        "ftj",
        grpo(
            rollouts={"engine": "vllm", "vllm": {"image": "vllm/vllm-openai:v0.32.0"}},
            rewards=[
                {"name": "exact", "exactMatch": {}},
                {"name": "number", "numericMatch": {"tolerance": 0.01}},
                {"name": "format", "weight": 0.2, "regex": {"pattern": r"\\boxed\{.+\}"}},
                {"name": "json", "jsonSchema": {"schema": {"type": "object", "required": ["a"]}}},
                {"name": "short", "weight": -0.5, "lengthPenalty": {"targetTokens": 100}},
                {"name": "mine", "python": {"configMap": "my-rewards", "key": "r.py"}},
                {"name": "judge", "http": {"url": "http://judge.ml.svc:8080/score"}},
            ],
        ),
    ),
    "ftj-zero-quantity": ("ftj", setp("spec.resources.memory", "0")),
    "ftj-negative-zero-quantity": ("ftj", setp("spec.resources.memory", "-0")),
    "ftj-exponent-quantity": ("ftj", setp("spec.resources.cpu", "1e3")),
    "mroute-example": ("mroute", None),
    "mroute-thresholds-one-per-gap": ("mroute", setp("spec.policy.thresholds", [0.3, 0.7])),
    "mroute-default-model-in-pool": ("mroute", setp("spec.policy.defaultModel", "qwen3-support")),
    "mroute-example-for-the-adapters-tier": ("mroute", setp("spec.policy.examples.0.tier", 2)),
    "mroute-model-is-free": ("mroute", setp("spec.model", "router")),
}


SPEC_CASES = [c for c in CASES if not c.field.startswith("metadata")]
# Invalid at a rule's very edge, where a < written as <= would let it through.
EDGES = {
    "mroute-threshold-1": ("mroute", setp("spec.policy.thresholds", [0.5, 1.0])),
    "mroute-threshold-0": ("mroute", setp("spec.policy.thresholds", [0.0, 0.5])),
    "mroute-thresholds-equal": ("mroute", setp("spec.policy.thresholds", [0.5, 0.5])),
    "mroute-url-and-adapter": ("mroute", setp("spec.pool.2.backend.url", "http://vllm:8000/v1")),
    "ftj-tiny-dropout-with-experts": ("ftj", setp("spec.lora.dropout", 0.0001)),
    "ftj-tiny-negative-quantity": ("ftj", setp("spec.resources.cpu", "-1m")),
}


@pytest.mark.parametrize("name, valid", [(n, True) for n in VALID] + [(n, False) for n in EDGES])
def test_valid_specs_pass_both_checkers_and_edge_cases_fail_both(name, valid):
    kind, mutate = (VALID if valid else EDGES)[name]
    cel, err = _agree(kind, manifest(kind, mutate)["spec"])
    if valid:
        assert not cel and err is None, f"refused: CEL {cel}, Python {err and describe(err)}"
    else:
        assert cel and err is not None and rule_errors(err)


@pytest.mark.parametrize("case", SPEC_CASES, ids=lambda c: c.id)
def test_invalid_specs_are_refused_by_python_as_by_the_api_server(case):
    """Every manifest the API server refuses (schema or CEL), the Python models refuse too,
    naming the same field; where CEL refuses, the two agree on the rule."""
    cel, err = _agree(case.kind, manifest(case.kind, case.mutate)["spec"])
    assert err is not None, "accepted by the Python models"
    said = describe(err, "spec")  # as the operator says it in status
    assert re.search(case.field.split("|")[0], said), f"{said!r} does not name {case.field!r}"
    for _, message in cel:
        if re.search(case.allowed, message):  # the rule the case breaks: Python says the same
            assert message in describe(err)


def test_every_rule_in_the_crds_is_exercised_both_ways():
    """Each CEL rule (but the transition rules) is broken by some case above and kept by the examples."""
    broken = set()
    for c in SPEC_CASES:
        broken |= {message for _, message in admission(c.kind, manifest(c.kind, c.mutate)["spec"])}
    rules = set()
    for kind in ("ftj", "mroute"):
        rules |= {m for m in _messages(_spec_schema(kind)) if m}
    assert rules - broken == set(), f"no case breaks: {rules - broken}"


def _messages(node: Any) -> set[str]:
    out = set()
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations", []):
            if "oldSelf" not in rule["rule"]:
                out.add(rule["message"])
        for value in node.values():
            out |= _messages(value)
    elif isinstance(node, list):
        for value in node:
            out |= _messages(value)
    return out
