"""Complexity classifier: request features + static word embeddings + one calibrated head per tier boundary.

The embedding is WordLlama's l2_supercat (256-d token table), whose weights and
tokenizer ship inside the `wordllama` wheel, so it loads offline. We read those two
files directly (tokenizers + safetensors) instead of importing wordllama: its
loader looks for the tokenizer in the wrong folder and tries the network, and its
import reconfigures root logging.

The newest user turn and the earlier user turns (the conversation's context) are
embedded separately, so a follow-up such as "now prove it" carries the difficulty
of what came before. The head (head.json, trained by
tuneroute_router_training/train_head.py) has one logistic regression per boundary
between the three difficulty levels (1 = a small model answers well, 2 = needs a
mid-size model, 3 = needs the strongest), each calibrated (Platt) on held-back data:
P(level >= 2) and P(level >= 3).
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .features import FEATURE_NAMES, RequestView, features, pasted_instruction

HEAD_PATH = Path(__file__).with_name("head.json")
_MAX_TOKENS = 160  # a mean-pooled static embedding saturates long before this; p99 < 2 ms
_CHARS_PER_TOKEN = 4  # tokenise only about what the cap keeps: encoding is most of the cost
_CONTEXT_EMBED_CHARS = 1000  # the end of the earlier turns: the topic a follow-up leans on


def _wordllama_dir() -> Path:
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the wordllama package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


class Embedder:
    def __init__(self, dim: int = 256):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        base = _wordllama_dir()
        self.tokenizer = Tokenizer.from_file(str(base / "tokenizers" / "l2_supercat_tokenizer_config.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        table = load_file(str(base / "weights" / f"l2_supercat_{dim}.safetensors"))["embedding.weight"]
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.dim = self.table.shape[1]

    def embed(self, text: str) -> np.ndarray:
        """Unit-norm mean of token vectors (zeros for empty text)."""
        ids = self.tokenizer.encode(text[: _MAX_TOKENS * _CHARS_PER_TOKEN], add_special_tokens=False).ids[:_MAX_TOKENS]
        if not ids:
            return np.zeros(self.dim, dtype=np.float32)
        v = self.table[ids].mean(axis=0)
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else v


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))


@dataclass(frozen=True)
class Head:
    """Logistic regressions over standardised [embedding(s), features], one per boundary, then Platt scaling."""

    w: np.ndarray  # (boundaries, dim)
    b: np.ndarray  # (boundaries,)
    mu: np.ndarray
    sigma: np.ndarray
    platt: np.ndarray  # (boundaries, 2): a, c in sigmoid(a * logit + c)
    meta: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = HEAD_PATH) -> Head:
        d = json.loads(Path(path).read_text())
        if tuple(d["feature_names"]) != FEATURE_NAMES:
            raise RuntimeError(f"{path}: trained for other features; retrain the head")
        return cls(
            w=np.asarray(d["w"], dtype=np.float32),
            b=np.asarray(d["b"], dtype=np.float32),
            mu=np.asarray(d["mu"], dtype=np.float32),
            sigma=np.asarray(d["sigma"], dtype=np.float32),
            platt=np.asarray(d["platt"], dtype=np.float32),
            meta=d.get("meta", {}),
        )

    def probs(self, x: np.ndarray) -> tuple[float, ...]:
        """Calibrated P(level >= 2), P(level >= 3), ...; never increasing."""
        z = self.w @ ((x - self.mu) / self.sigma) + self.b
        out, cap = [], 1.0
        for k in range(len(z)):
            cap = min(cap, _sigmoid(float(self.platt[k, 0] * z[k] + self.platt[k, 1])))
            out.append(cap)
        return tuple(out)


def vectorize(emb: np.ndarray, ctx_emb: np.ndarray, v: RequestView) -> np.ndarray:
    return np.concatenate([emb, ctx_emb, np.asarray(features(v), dtype=np.float32)])


@dataclass(frozen=True)
class Scored:
    p_hard: float  # calibrated P(needs more than the cheapest tier) = P(level >= 2)
    emb: np.ndarray  # embedding of the newest user turn (route examples compare against it)
    p_levels: tuple[float, ...] = ()  # P(level >= 2), P(level >= 3): one per boundary, calibrated apart


class Classifier:
    def __init__(self, embedder: Embedder | None = None, head: Head | None = None):
        self.embedder = embedder or Embedder()
        self.head = head or Head.load()

    @staticmethod
    def context_embedding(embedder: Embedder, v: RequestView) -> np.ndarray:
        if not v.context:
            return np.zeros(embedder.dim, dtype=np.float32)
        return embedder.embed(v.context[-_CONTEXT_EMBED_CHARS:])

    @staticmethod
    def turn_embedding(embedder: Embedder, v: RequestView) -> tuple[np.ndarray, np.ndarray]:
        """What the head reads of the newest turn, and the turn's own embedding. For a short
        instruction around a long paste the head reads the instruction and the paste together
        (unit-norm sum of both embeddings): "summarise this" over an article is as hard as
        summarising, which the paste's topic alone does not say."""
        whole = embedder.embed(v.text)
        instr = pasted_instruction(v.text)
        if instr is None:
            return whole, whole
        both = whole + embedder.embed(instr)
        n = float(np.linalg.norm(both))
        return (both / n if n > 0 else both), whole

    def score(self, v: RequestView) -> Scored:
        turn, whole = self.turn_embedding(self.embedder, v)
        p = self.head.probs(vectorize(turn, self.context_embedding(self.embedder, v), v))
        return Scored(p[0], whole, p)


class ExampleIndex:
    """A route's example prompts per tier, embedded once per config load."""

    def __init__(self, embedder: Embedder, examples: dict[int, list[str]]):
        rows, tiers = [], []
        for tier, prompts in examples.items():
            for p in prompts:
                rows.append(embedder.embed(p))
                tiers.append(tier)
        self.matrix = np.stack(rows) if rows else np.zeros((0, embedder.dim), np.float32)
        self.tiers = tiers

    def nearest(self, emb: np.ndarray) -> tuple[int, float] | None:
        """(tier, cosine similarity) of the closest example, or None without examples."""
        if not self.tiers or not emb.any():
            return None
        sims = self.matrix @ emb
        i = int(np.argmax(sims))
        return self.tiers[i], float(sims[i])
