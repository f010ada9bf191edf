"""GRPO rewards from the config's `grpo.rewards`: built-in checks, a Python file, or an HTTP endpoint.

Each `Reward` is a trl reward function: `reward(prompts, completions, completion_ids, **columns)` returns one
float (or None: "not applicable", left out of the sum by trl) per completion. Problems a user can fix before
training (a file that does not import, an endpoint that does not answer) are InputErrors naming the field.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from ..config import NEEDS_REFERENCE, GrpoSpec, RewardSpec
from ..errors import InputError
from . import builtin
from .external import HttpScorer, RewardFailed, check_scores, load_function
from .text import completion_text

__all__ = ["Reward", "RewardFailed", "build_rewards", "preflight"]


class Reward:
    """One configured reward, callable the way trl calls reward functions."""

    def __init__(self, spec: RewardSpec, index: int, grpo: GrpoSpec):
        self.spec, self.name, self.weight, self.kind = spec, spec.name, spec.weight, spec.kind
        self.__name__ = spec.name  # trl names metrics after the function: rewards/<name>/mean
        self.field = f"grpo.rewards[{index}]"
        self.reference_column = grpo.reference_column
        self.max_tokens = grpo.max_completion_length
        self.needs_reference = self.kind in NEEDS_REFERENCE
        self.calls = 0
        self.seconds = 0.0
        p: Any = spec.params
        self._fn: Callable[..., Any] | None = None
        self._http: HttpScorer | None = None
        if self.kind == "regex":
            self._pattern = re.compile(p.pattern)
        elif self.kind == "jsonSchema":
            import jsonschema

            try:
                jsonschema.Draft202012Validator.check_schema(p.schema_)
            except jsonschema.SchemaError as e:
                raise InputError(f"{self.field}.jsonSchema.schema", f"not a JSON Schema: {e.message}") from e
            self._validator = jsonschema.Draft202012Validator(p.schema_)
        elif self.kind == "python":
            self._fn = load_function(p.path, p.function, f"{self.field}.python")
        elif self.kind == "http":
            self._http = HttpScorer(p.url, p.timeout_seconds, p.max_consecutive_failures, f"{self.field}.http")

    @property
    def errors(self) -> int:
        return self._http.errors if self._http is not None else 0

    def __call__(self, prompts: list, completions: list, completion_ids: list | None = None, **columns) -> list:
        t0 = time.monotonic()
        try:
            return self._score(prompts, [completion_text(c) for c in completions], completion_ids, columns)
        finally:
            self.calls += 1
            self.seconds += time.monotonic() - t0

    def _score(self, prompts: list, texts: list[str], ids: list | None, columns: dict[str, Any]) -> list:
        refs = columns.get(self.reference_column) or [None] * len(texts)
        p: Any = self.spec.params
        if self.kind == "exactMatch":
            return [builtin.exact_match(t, r, p.case_sensitive) for t, r in zip(texts, refs)]
        if self.kind == "numericMatch":
            return [builtin.numeric_match(t, r, p.tolerance) for t, r in zip(texts, refs)]
        if self.kind == "regex":
            return [builtin.regex_match(t, self._pattern, p.full_match) for t in texts]
        if self.kind == "jsonSchema":
            return [builtin.json_schema_match(t, self._validator) for t in texts]
        if self.kind == "lengthPenalty":
            lengths = [len(i) for i in ids] if ids is not None else [len(t) for t in texts]
            return [builtin.length_penalty(n, p.target_tokens, self.max_tokens) for n in lengths]
        if self.kind == "python":
            where = f"{self.field}.python ({p.path}:{p.function})"
            assert self._fn is not None
            try:
                return check_scores(
                    self._fn(prompts=prompts, completions=texts, completion_ids=ids, **columns), len(texts)
                )
            except RewardFailed as e:
                raise RewardFailed(f"{where}: {e}") from e
            except Exception as e:
                raise RewardFailed(f"{where}: {type(e).__name__}: {e}") from e
        assert self._http is not None
        return self._http(prompts, texts, refs)


def build_rewards(grpo: GrpoSpec) -> list[Reward]:
    """One Reward per `grpo.rewards` entry; raises InputError for anything wrong in a spec."""
    return [Reward(spec, i, grpo) for i, spec in enumerate(grpo.rewards)]


def preflight(rewards: list[Reward], columns: list[str], sample_prompt: Any) -> None:
    """Before training: references are there for rewards that need them, and each endpoint answers a probe."""
    for r in rewards:
        if r.needs_reference and r.reference_column not in columns:
            raise InputError(
                "grpo.referenceColumn",
                f"reward {r.name!r} ({r.kind}) compares with a reference answer, but the dataset has no column "
                f"{r.reference_column!r}; found {', '.join(sorted(columns))}",
            )
        if r._http is not None:
            try:
                r._http.request([sample_prompt], [""], [None])
            except RewardFailed as e:
                raise InputError(f"{r.field}.http.url", f"the endpoint did not score a probe batch: {e}") from e
