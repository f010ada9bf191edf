"""Train the complexity head (tuneroute_router/head.json) and print held-out metrics.

    python -m tuneroute_router_training.train_head [--out router-image/tuneroute_router/head.json]

Logistic regression (numpy, L2, class-balanced) over [WordLlama embedding, request
features], then Platt scaling on a separate calibration split, then metrics on the
untouched test split. Deterministic: same data and seed give the same head.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tuneroute_router.classifier import Embedder, vectorize
from tuneroute_router.config import default_thresholds
from tuneroute_router.features import FEATURE_NAMES, view_chat

from . import dataset

HEAD = Path(__file__).resolve().parents[1] / "tuneroute_router" / "head.json"

L2 = 100.0  # picked by calibration-split Brier score among 1, 10, 30, 100
EPOCHS = 3000
LR = 0.1


def as_request(text: str) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def matrix(emb: Embedder, exs) -> np.ndarray:
    return np.stack([vectorize(emb.embed(e.text), view_chat(as_request(e.text))) for e in exs])


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def fit_logreg(X, y, l2=L2, epochs=EPOCHS, lr=LR):
    n, d = X.shape
    w, b = np.zeros(d), 0.0
    pos = y.mean()
    sw = np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos))  # balanced classes
    for _ in range(epochs):
        g = sw * (_sigmoid(X @ w + b) - y)
        w -= lr * (X.T @ g / n + l2 * w / n)
        b -= lr * g.mean()
    return w, b


def fit_platt(z, y, epochs=5000, lr=0.05):
    a, c = 1.0, 0.0
    for _ in range(epochs):
        g = _sigmoid(a * z + c) - y
        a -= lr * float(np.mean(g * z))
        c -= lr * float(np.mean(g))
    return a, c


def metrics(p: np.ndarray, y: np.ndarray, cut: float, margin: float) -> dict:
    """Accuracy at 0.5, and the two-tier balanced policy's hard recall / easy kept cheap."""
    strong = p >= cut - margin  # policy.tier_for with one cut: escalate within the margin
    return {
        "n": len(y),
        "hard": int(y.sum()),
        "accuracy@0.5": round(float(((p >= 0.5) == (y == 1)).mean()), 3),
        "policy_accuracy": round(float((strong == (y == 1)).mean()), 3),
        "hard_recall": round(float(strong[y == 1].mean()), 3),
        "easy_kept_cheap": round(float((~strong)[y == 0].mean()), 3),
        "brier": round(float(((p - y) ** 2).mean()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(HEAD))
    args = ap.parse_args()

    train, cal, test = dataset.split(dataset.load_all())
    emb = Embedder()
    Xtr, Xca, Xte = matrix(emb, train), matrix(emb, cal), matrix(emb, test)
    ytr, yca, yte = (np.array([e.label for e in s], float) for s in (train, cal, test))

    mu, sigma = Xtr.mean(0), Xtr.std(0) + 1e-6
    norm = lambda X: (X - mu) / sigma
    w, b = fit_logreg(norm(Xtr), ytr)
    a, c = fit_platt(norm(Xca) @ w + b, yca)
    prob = lambda X: _sigmoid(a * (norm(X) @ w + b) + c)

    cut = default_thresholds("balanced", 2)[0]
    margin = 0.1
    report = {
        "train": metrics(prob(Xtr), ytr, cut, margin),
        "calibration": metrics(prob(Xca), yca, cut, margin),
        "test": metrics(prob(Xte), yte, cut, margin),
        "policy": {"mode": "balanced", "cut": cut, "uncertaintyMargin": margin},
        "sizes": {"train": len(train), "calibration": len(cal), "test": len(test)},
    }
    head = {
        "feature_names": list(FEATURE_NAMES),
        "embedding": "wordllama l2_supercat 256",
        "w": [round(float(x), 6) for x in w],
        "b": round(float(b), 6),
        "mu": [round(float(x), 6) for x in mu],
        "sigma": [round(float(x), 6) for x in sigma],
        "platt_a": round(a, 6),
        "platt_b": round(c, 6),
        "meta": report,
    }
    Path(args.out).write_text(json.dumps(head, separators=(",", ":")) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
