"""Built-in rewards: pure functions of one completion (and its reference answer), each in [0, 1] or [-1, 0].

A reference that cannot be read (missing, or not a number for numericMatch) gives None: trl leaves such a
sample out of that reward instead of scoring it 0.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from .text import answer_number, answer_text, parse_json


def exact_match(text: str, reference: Any, case_sensitive: bool = False) -> float | None:
    r"""1.0 when the answer (last \boxed{} content, else the whole completion, trimmed) equals the reference."""
    if reference is None:
        return None
    answer, ref = answer_text(text), str(reference).strip()
    if not case_sensitive:
        answer, ref = answer.casefold(), ref.casefold()
    return 1.0 if answer == ref else 0.0


def numeric_match(text: str, reference: Any, tolerance: float = 1e-6) -> float | None:
    r"""1.0 when the answer's number (last \boxed{} content, else the last number) equals the reference's."""
    if isinstance(reference, bool) or reference is None:
        return None
    # a bare number, else the reference's own final answer (\boxed{} or last number: GSM8K's "... #### 72")
    ref = Fraction(reference) if isinstance(reference, int | float) else answer_number(str(reference))
    if ref is None:
        return None
    got = answer_number(text)
    if got is None:
        return 0.0
    return 1.0 if abs(float(got - ref)) <= tolerance else 0.0


def regex_match(text: str, pattern: re.Pattern, full_match: bool = False) -> float:
    found = pattern.fullmatch(text.strip()) if full_match else pattern.search(text)
    return 1.0 if found else 0.0


def json_schema_match(text: str, validator) -> float:
    """1.0 when the completion is one JSON value that `validator` (a jsonschema validator) accepts."""
    ok, value = parse_json(text)
    if not ok:
        return 0.0
    return 1.0 if validator.is_valid(value) else 0.0


def length_penalty(n_tokens: int, target_tokens: int, max_tokens: int) -> float:
    """0 up to target_tokens, then linear down to -1 at max_tokens (DAPO's soft overlong punishment)."""
    if n_tokens <= target_tokens:
        return 0.0
    return -min(1.0, (n_tokens - target_tokens) / max(max_tokens - target_tokens, 1))
