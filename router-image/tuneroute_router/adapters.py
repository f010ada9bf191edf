"""Routing to fine-tuned adapters: does a request fall inside an adapter's domain?

The trainer publishes with each adapter a routing profile (`build_profile`, called from the trainer
through this module): embeddings, made with this router's embedder, of a sample of the adapter's
training prompts, plus its held-out eval loss and its base model's. When a route's config loads, the
router fits per adapter a small logistic model that tells that sample apart from a background of
general prompts shipped with the router (adapter_background.txt). A request for the virtual model
goes to an adapter when the model puts it on the adapter's side (p >= 0.5), the adapter beat its
base on the held-out data, and no other adapter of the route scores higher. The request's embedding
is the one the complexity classifier already computed, so the match costs a dot product per adapter.

Why a discriminative model and not a similarity threshold: mean-pooled static embeddings share a
large common component ("How do I ..."), so raw cosine similarity to the sample also admits many
general prompts; measured in bench/router_adapter_routing.py.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EMBEDDER = "wordllama-l2_supercat-256"
BACKGROUND_PATH = Path(__file__).with_name("adapter_background.txt")
PROFILE_SAMPLES = 64
_L2 = 10.0  # ridge strength of the per-adapter logistic model (see bench/router_adapter_routing.py)


def encode(matrix: np.ndarray) -> str:
    """Unit-norm rows as int8 (x127), base64: about 1.4 characters per number."""
    q = np.clip(np.round(np.asarray(matrix, dtype=np.float32) * 127.0), -127, 127).astype(np.int8)
    return base64.b64encode(q.tobytes()).decode("ascii")


def decode(text: str, dim: int) -> np.ndarray:
    q = np.frombuffer(base64.b64decode(text), dtype=np.int8)
    if q.size % dim:
        raise ValueError(f"embeddings: {q.size} numbers is not a whole number of {dim}-d rows")
    m = q.reshape(-1, dim).astype(np.float32) / 127.0
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(n > 0, n, 1.0)


def embed_all(embedder, texts: list[str]) -> np.ndarray:
    """Rows of the embedder's unit vectors (its public `embed`, one text at a time)."""
    if not texts:
        return np.zeros((0, embedder.dim), np.float32)
    return np.stack([embedder.embed(t) for t in texts])


def build_profile(prompts: list[str], embedder=None, limit: int = PROFILE_SAMPLES, seed: int = 0) -> dict:
    """The embeddings part of an adapter's routing profile (the trainer adds the eval losses).

    `prompts` are the adapter's training prompts as the router will see them (the newest user turn);
    a seeded sample of at most `limit` of them is embedded."""
    from .classifier import Embedder

    texts = [p for p in prompts if p and p.strip()]
    if len(texts) > limit:
        texts = random.Random(seed).sample(texts, limit)
    emb = embed_all(embedder or Embedder(), texts)
    return {"embedder": EMBEDDER, "samples": len(texts), "embeddings": encode(emb)}


def background_prompts() -> list[str]:
    lines = BACKGROUND_PATH.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def fit(positives: np.ndarray, background: np.ndarray, l2: float = _L2) -> tuple[np.ndarray, float]:
    """Class-balanced, ridge-regularised logistic regression (Newton's method): positives vs background."""
    x = np.concatenate([positives, background]).astype(np.float64)
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(background))])
    weight = np.where(y == 1, len(y) / (2 * len(positives)), len(y) / (2 * len(background)))
    xa = np.hstack([x, np.ones((len(x), 1))])
    reg = np.full(xa.shape[1], l2)
    reg[-1] = 1e-6  # the bias is not shrunk
    theta = np.zeros(xa.shape[1])
    for _ in range(25):
        p = 1.0 / (1.0 + np.exp(-np.clip(xa @ theta, -40, 40)))
        grad = xa.T @ (weight * (p - y)) + reg * theta
        hess = (xa.T * (weight * p * (1 - p))) @ xa + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:-1].astype(np.float32), float(theta[-1])


@dataclass(frozen=True)
class Match:
    name: str  # pool model
    p: float  # P(request is in the adapter's domain)


class AdapterMatcher:
    """Per-adapter logistic models over the route's profiles, fitted once per config load."""

    def __init__(self, models: dict[str, tuple[np.ndarray, float]]):
        self.names = list(models)
        self.w = np.stack([models[n][0] for n in self.names]) if models else np.zeros((0, 0), np.float32)
        self.b = np.array([models[n][1] for n in self.names], dtype=np.float32)

    @classmethod
    def build(cls, profiles: dict[str, np.ndarray], embedder) -> AdapterMatcher:
        """`profiles`: pool model name -> its profile's embeddings."""
        if not profiles:
            return cls({})
        bg = embed_all(embedder, background_prompts())
        return cls({name: fit(emb, bg) for name, emb in profiles.items()})

    def best(self, emb: np.ndarray, allowed: set[str] | None = None) -> Match | None:
        """The adapter whose domain `emb` most likely belongs to (p >= 0.5), among `allowed`."""
        if not self.names or not emb.any():
            return None
        z = self.w @ emb + self.b
        best: Match | None = None
        for i in np.argsort(-z):
            name = self.names[int(i)]
            if z[i] < 0:
                break
            if allowed is None or name in allowed:
                best = Match(name, float(1.0 / (1.0 + np.exp(-z[i]))))
                break
        return best
