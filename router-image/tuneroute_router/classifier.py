"""Complexity classifier: request features + a static word embedding + a logistic head.

The embedding is WordLlama's l2_supercat (256-d token table), whose weights and
tokenizer ship inside the `wordllama` wheel, so it loads offline. We read those two
files directly (tokenizers + safetensors) instead of importing wordllama: its
loader looks for the tokenizer in the wrong folder and tries the network, and its
import reconfigures root logging. The head (head.json, next to this file) is trained
by router-image/train_head.py and calibrated (Platt) to P(request needs a stronger tier).
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .features import FEATURE_NAMES, RequestView, features

HEAD_PATH = Path(__file__).with_name("head.json")
_MAX_TOKENS = 512  # a mean-pooled static embedding saturates long before this


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
        ids = self.tokenizer.encode(text[: _MAX_TOKENS * 8], add_special_tokens=False).ids[:_MAX_TOKENS]
        if not ids:
            return np.zeros(self.dim, dtype=np.float32)
        v = self.table[ids].mean(axis=0)
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else v


@dataclass(frozen=True)
class Head:
    """Logistic regression over [embedding, standardised features], then Platt scaling."""

    w: np.ndarray
    b: float
    mu: np.ndarray
    sigma: np.ndarray
    platt_a: float
    platt_b: float
    meta: dict

    @classmethod
    def load(cls, path: Path = HEAD_PATH) -> Head:
        d = json.loads(Path(path).read_text())
        if tuple(d["feature_names"]) != FEATURE_NAMES:
            raise RuntimeError(f"{path}: trained for other features; retrain the head")
        return cls(
            w=np.asarray(d["w"], dtype=np.float32),
            b=float(d["b"]),
            mu=np.asarray(d["mu"], dtype=np.float32),
            sigma=np.asarray(d["sigma"], dtype=np.float32),
            platt_a=float(d["platt_a"]),
            platt_b=float(d["platt_b"]),
            meta=d.get("meta", {}),
        )

    def logit(self, x: np.ndarray) -> float:
        return float(np.dot(self.w, (x - self.mu) / self.sigma)) + self.b

    def prob(self, x: np.ndarray) -> float:
        z = self.platt_a * self.logit(x) + self.platt_b
        return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))


def vectorize(emb: np.ndarray, v: RequestView) -> np.ndarray:
    return np.concatenate([emb, np.asarray(features(v), dtype=np.float32)])


@dataclass(frozen=True)
class Scored:
    p_hard: float  # calibrated P(needs a stronger tier)
    emb: np.ndarray


class Classifier:
    def __init__(self, embedder: Embedder | None = None, head: Head | None = None):
        self.embedder = embedder or Embedder()
        self.head = head or Head.load()

    def score(self, v: RequestView) -> Scored:
        emb = self.embedder.embed(v.text)
        return Scored(self.head.prob(vectorize(emb, v)), emb)


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
