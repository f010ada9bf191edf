"""Train the complexity head (tuneroute_router/head.json) and print calibration-split metrics.

    python -m tuneroute_router_training.train_head [--out router-image/tuneroute_router/head.json]

One L2-regularised, class-balanced logistic regression per boundary between the three
difficulty levels (P(level >= 2), P(level >= 3)) over [WordLlama embedding of the newest
user turn, embedding of the earlier user turns, request features], each then Platt-scaled on
the calibration split. L2 is chosen by calibration Brier score. The test split is not read
here: bench/router_classifier.py reports it. Deterministic: same data, same head.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tuneroute_router.classifier import Classifier, Embedder, vectorize
from tuneroute_router.features import FEATURE_NAMES, view_chat

from . import dataset

HEAD = Path(__file__).resolve().parents[1] / "tuneroute_router" / "head.json"
GRID = [(l2, es) for l2 in (10.0, 100.0) for es in (1.0, 10.0, 100.0)]  # (L2, extra factor on embeddings)
BOUNDARIES = (2, 3)  # P(level >= 2), P(level >= 3)
FOLDS = 5  # cross-validation folds, each holding whole sources


def matrix(emb: Embedder, exs: list[dataset.Example]) -> np.ndarray:
    rows = []
    for e in exs:
        v = view_chat(e.body())
        rows.append(vectorize(Classifier.turn_embedding(emb, v)[0], Classifier.context_embedding(emb, v), v))
    return np.stack(rows)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def fit_logreg(X, y, l2, iters=25, emb_scale=1.0):
    """Newton's method (IRLS) on the class-balanced, L2-regularised logistic loss: exact and deterministic."""
    n, d = X.shape
    Xb = np.hstack([X, np.ones((n, 1))])
    pos = y.mean()
    sw = np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos))
    reg = np.full(d + 1, l2)
    reg[: d - len(FEATURE_NAMES)] *= emb_scale  # the embedding block can be held back harder
    reg[-1] = 0.0  # no penalty on the bias
    w = np.zeros(d + 1)
    for _ in range(iters):
        p = _sigmoid(Xb @ w)
        g = Xb.T @ (sw * (p - y)) / n + reg * w / n
        H = (Xb * (sw * p * (1 - p))[:, None]).T @ Xb / n + np.diag(reg / n)
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w[:-1], float(w[-1])


def fit_platt(z, y, epochs=3000, lr=0.05):
    a, c = 1.0, 0.0
    for _ in range(epochs):
        g = _sigmoid(a * z + c) - y
        a -= lr * float(np.mean(g * z))
        c -= lr * float(np.mean(g))
    return a, c


def group_folds(groups: list[str], k: int = FOLDS) -> np.ndarray:
    """Fold index per example; every source is wholly in one fold (seeded)."""
    names = sorted(set(groups))
    np.random.default_rng(dataset.SEED).shuffle(names)
    fold_of = {g: i % k for i, g in enumerate(names)}
    return np.array([fold_of[g] for g in groups])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(HEAD))
    args = ap.parse_args()
    t0 = time.monotonic()

    train, cal, _test = dataset.splits()
    exs = train + cal
    emb = Embedder()
    X = matrix(emb, exs)
    tiers = np.array([e.tier for e in exs])
    folds = group_folds([e.source for e in exs])
    print(
        f"[{time.monotonic() - t0:5.1f}s] embedded {len(exs)} examples from {len(set(e.source for e in exs))} sources",
        flush=True,
    )

    mu, sigma = X.mean(0), X.std(0) + 1e-6
    N = (X - mu) / sigma
    W, B, P, report = [], [], [], {}
    for k in BOUNDARIES:
        y = (tiers >= k).astype(float)
        best = None
        for l2, es in GRID:
            # out-of-fold logits: each source scored by a head that never saw it
            z = np.zeros(len(y))
            for f in range(FOLDS):
                tr = folds != f
                w, b = fit_logreg(N[tr], y[tr], l2, emb_scale=es)
                z[~tr] = N[~tr] @ w + b
            a, c = fit_platt(z, y)
            p = _sigmoid(a * z + c)
            brier = float(((p - y) ** 2).mean())
            print(
                f"[{time.monotonic() - t0:5.1f}s] level>={k}: L2 {l2:g} x{es:g} on embeddings: unseen-source Brier {brier:.4f}",
                flush=True,
            )
            if best is None or brier < best[0]:
                best = (brier, (l2, es), a, c, p)
        assert best is not None
        brier, (l2, es), a, c, p = best
        w, b = fit_logreg(N, y, l2, emb_scale=es)
        W.append(w)
        B.append(b)
        P.append((a, c))
        acc = float(((p >= 0.5) == (y == 1)).mean())
        report[f"level>={k}"] = {
            "l2": l2,
            "l2_embedding_factor": es,
            "unseen_source_brier": round(brier, 4),
            "unseen_source_accuracy": round(acc, 3),
        }

    head = {
        "feature_names": list(FEATURE_NAMES),
        "embedding": "wordllama l2_supercat 256: newest user turn, earlier user turns",
        "levels": "P(level>=2), P(level>=3); 1 = small model, 2 = mid-size, 3 = strongest",
        "w": [[round(float(x), 6) for x in w] for w in W],
        "b": [round(float(b), 6) for b in B],
        "mu": [round(float(x), 6) for x in mu],
        "sigma": [round(float(x), 6) for x in sigma],
        "platt": [[round(a, 6), round(c, 6)] for a, c in P],
        "meta": {"examples": len(exs), "sources": len(set(e.source for e in exs)), **report},
    }
    Path(args.out).write_text(json.dumps(head, separators=(",", ":")) + "\n")
    print(json.dumps(head["meta"], indent=2))
    print(f"[{time.monotonic() - t0:5.1f}s] wrote {args.out}")


if __name__ == "__main__":
    main()
