"""Pull the answer out of a completion: the text, a \\boxed{...} answer, the last number, a JSON value."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from typing import Any

# integers, decimals, thousands separators, scientific notation and simple fractions: -1,234.5e-3  3/4
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?")
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


def completion_text(completion: Any) -> str:
    """A completion as text: plain strings as they are, chat completions as their last message's content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content", "") if isinstance(completion[-1], dict) else ""
        if isinstance(content, list):  # content parts: keep the text ones
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else ""
    return ""


def last_boxed(text: str) -> str | None:
    r"""Content of the last \boxed{...} (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None  # unbalanced: no answer


def parse_number(text: str) -> Fraction | None:
    """A number written as 42, -3.5, 1,234, 1e-3 or 3/4 (surrounding $ and spaces ignored), or None."""
    s = text.strip().strip("$").strip()
    if not s:
        return None
    m = _NUMBER.fullmatch(s)
    if m is None or not any(c.isdigit() for c in s):
        return None
    s = s.replace(",", "").replace(" ", "")
    try:
        if "/" in s:
            num, den = s.split("/")
            return Fraction(Fraction(num), Fraction(den))
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def last_number(text: str) -> Fraction | None:
    """The last number written anywhere in the text, or None."""
    found = None
    for m in _NUMBER.finditer(text):
        if any(c.isdigit() for c in m.group()):
            found = m.group()
    return parse_number(found) if found is not None else None


def answer_number(text: str) -> Fraction | None:
    r"""The answer as a number: the content of the last \boxed{} if there is one, else the last number."""
    boxed = last_boxed(text)
    return parse_number(boxed) if boxed is not None else last_number(text)


def answer_text(text: str) -> str:
    r"""The answer as text: the content of the last \boxed{} if there is one, else the whole completion."""
    boxed = last_boxed(text)
    return (boxed if boxed is not None else text).strip()


def parse_json(text: str) -> tuple[bool, Any]:
    """(True, value) when the completion is one JSON value (optionally in a ```json fence), else (False, None)."""
    s = text.strip()
    fenced = _FENCE.match(s)
    if fenced:
        s = fenced.group(1).strip()
    try:
        return True, json.loads(s)
    except ValueError:
        return False, None
