"""Cheap, pure features of an OpenAI request that hint at how hard it is.

Everything here is deterministic string work (no model), used both at request
time and by the head's training script, so the two never drift apart.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Keyword sets over one lower-cased word scan: Python's re with IGNORECASE and long
# alternations costs ~50 ns a character per pattern; set look-ups keep a 1.5k-char
# prompt well under 0.1 ms.
_WORD = re.compile(r"[a-z][a-z0-9+#_-]*")
_CODE_WORDS = frozenset(
    [
        "def",
        "class",
        "function",
        "return",
        "import",
        "python",
        "javascript",
        "typescript",
        "rust",
        "golang",
        "java",
        "c++",
        "sql",
        "regex",
        "bash",
        "api",
        "algorithm",
        "compile",
        "compiler",
        "debug",
        "refactor",
        "async",
        "await",
        "struct",
        "lambda",
        "recursion",
        "recursive",
        "dataclass",
        "int",
        "str",
        "bool",
        "null",
        "none",
        "self",
        "const",
        "var",
        "let",
    ]
)
_CODE_MARKS = ("```", "=>", "#include", "();", "{\n", "};", "!=", "==", ">>>", "    ")
_MATH_WORDS = frozenset(
    [
        "prove",
        "proof",
        "integral",
        "derivative",
        "equation",
        "equations",
        "theorem",
        "probability",
        "matrix",
        "solve",
        "lemma",
        "polynomial",
        "prime",
        "primes",
        "modulo",
        "optimize",
        "optimise",
        "expected",
        "variance",
        "eigenvalue",
        "converge",
        "converges",
        "limit",
    ]
)
_MATH_MARKS = ("=", "^", "\\frac", "√", "∑", "∫", "$")
_ARITH = re.compile(r"\d\s*[-+*/×]\s*\d")
_STEP_WORDS = frozenset(["then", "finally", "first", "second", "third", "next", "afterwards"])
_STEP_MARKS = ("step by step", "step-by-step")
_LIST_ITEM = re.compile(r"^[ \t]*(?:\d+[.)]|[-*])[ \t]+", re.MULTILINE)
_CONSTRAINT_WORDS = frozenset(
    [
        "must",
        "without",
        "ensure",
        "exactly",
        "constraint",
        "constraints",
        "efficient",
        "efficiently",
        "complexity",
        "edge",
        "trade-off",
        "trade-offs",
        "tradeoff",
        "tradeoffs",
        "scalable",
        "scalability",
        "robust",
        "guarantee",
    ]
)
_CONSTRAINT_MARKS = ("at least", "at most", "should not", "must not")
_DEEP_WORDS = frozenset(
    [
        "why",
        "design",
        "architect",
        "architecture",
        "compare",
        "analyze",
        "analyse",
        "evaluate",
        "derive",
        "implement",
        "critique",
        "reason",
        "justify",
        "plan",
        "strategy",
        "debug",
        "optimize",
        "optimise",
        "diagnose",
        "tradeoffs",
    ]
)
_DEEP_MARKS = ("how would", "explain why", "walk me through")
_SIMPLE_Q = re.compile(
    r"^\s*(hi|hello|hey|thanks|thank you|what is|what's|who is|who was|when (is|was|did)|where is"
    r"|define|translate|how many|how do you spell|name)\b",
    re.IGNORECASE,
)

FEATURE_NAMES = (
    "log_chars",
    "turns",
    "code",
    "math",
    "steps",
    "constraints",
    "deep_q",
    "simple_q",
    "questions",
    "lines",
    "tools",
    "system",
)


@dataclass(frozen=True)
class RequestView:
    """What routing needs from a request body, extracted once."""

    text: str  # the newest user turn: what the classifier reads
    all_chars: int  # every message's text, for the context-window check
    turns: int
    has_system: bool
    has_tools: bool
    has_images: bool


def _content_text(content: object) -> tuple[str, bool]:
    """Text of a message's content (string or parts list) and whether it holds an image."""
    if isinstance(content, str):
        return content, False
    if isinstance(content, list):
        texts, image = [], False
        for part in content:
            if isinstance(part, dict):
                kind = part.get("type")
                if kind == "text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif kind in ("image_url", "input_image", "image"):
                    image = True
        return "\n".join(texts), image
    return "", False


def view_chat(body: dict) -> RequestView:
    messages = body.get("messages") or []
    last_user, chars, turns, system, images = "", 0, 0, False, False
    for m in messages:
        if not isinstance(m, dict):
            continue
        text, img = _content_text(m.get("content"))
        chars += len(text)
        images |= img
        role = m.get("role")
        if role == "user":
            turns += 1
            last_user = text
        elif role in ("system", "developer"):
            system = True
    has_tools = bool(body.get("tools") or body.get("functions"))
    return RequestView(last_user, chars, turns, system, has_tools, images)


def view_completion(body: dict) -> RequestView:
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = "\n".join(p for p in prompt if isinstance(p, str))
    text = prompt if isinstance(prompt, str) else ""
    return RequestView(text, len(text), 1, False, False, False)


_WINDOW = (2000, 1000)  # regexes read the head and tail only: cost stays flat for huge prompts


def features(v: RequestView) -> list[float]:
    """Feature vector in FEATURE_NAMES order, each roughly in [0, 1]."""
    n = len(v.text)
    head, tail = _WINDOW
    t = v.text if n <= head + tail else v.text[:head] + "\n" + v.text[-tail:]
    low = t.lower()
    words = _WORD.findall(low)

    def hits(vocab: frozenset, marks: tuple) -> int:
        return sum(w in vocab for w in words) + sum(low.count(m) for m in marks)

    return [
        min(math.log1p(n) / 8.0, 1.5),
        min((v.turns - 1) / 4.0, 1.0) if v.turns > 1 else 0.0,
        min(hits(_CODE_WORDS, _CODE_MARKS) / 3.0, 1.0),
        min((hits(_MATH_WORDS, _MATH_MARKS) + len(_ARITH.findall(low))) / 3.0, 1.0),
        min((hits(_STEP_WORDS, _STEP_MARKS) + len(_LIST_ITEM.findall(t))) / 3.0, 1.0),
        min(hits(_CONSTRAINT_WORDS, _CONSTRAINT_MARKS) / 3.0, 1.0),
        min(hits(_DEEP_WORDS, _DEEP_MARKS) / 2.0, 1.0),
        1.0 if n < 120 and _SIMPLE_Q.search(t) else 0.0,
        min(t.count("?") / 3.0, 1.0),
        min(t.count("\n") / 10.0, 1.0),
        1.0 if v.has_tools else 0.0,
        1.0 if v.has_system else 0.0,
    ]


def estimate_tokens(v: RequestView) -> int:
    """Rough prompt token count (about 4 characters a token), for the context-window check."""
    return v.all_chars // 4 + 4 * max(v.turns, 1)
