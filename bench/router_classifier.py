"""Classifier: latency on one core, and held-out quality next to LiteLLM's complexity router.

    python bench/router_classifier.py [--repeat 20]

Both classifiers see the same held-out test split (router-image/tuneroute_router_training/dataset.py). A
prompt is "hard" when it needs the stronger tier. Ours: the shipped head with the default
balanced policy on a two-tier pool (cut and uncertainty margin from the config defaults).
LiteLLM: ComplexityRouter's default rule-based scorer (offline, no LLM call); SIMPLE and
MEDIUM count as the cheap tier, COMPLEX and REASONING as the strong one (its documented
tier meaning); a second row counts MEDIUM as strong too, the mapping most favourable to recall.
Caveat, in LiteLLM's favour: part of the split comes from LiteLLM's own eval cases.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network for the cost map


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def quality(pred_hard: list[bool], labels: list[int]) -> dict:
    n = len(labels)
    hard = [p for p, y in zip(pred_hard, labels) if y == 1]
    easy = [p for p, y in zip(pred_hard, labels) if y == 0]
    return {
        "accuracy": sum(p == bool(y) for p, y in zip(pred_hard, labels)) / n,
        "hard_recall": sum(hard) / len(hard),
        "easy_kept_cheap": sum(not p for p in easy) / len(easy),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20, help="timing passes over the split")
    a = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})  # one core

    from tuneroute_router import policy
    from tuneroute_router.classifier import Classifier
    from tuneroute_router.config import parse_config
    from tuneroute_router.features import view_chat
    from tuneroute_router_training import dataset

    _, _, test = dataset.split(dataset.load_all())
    labels = [e.label for e in test]
    bodies = [{"model": "auto", "messages": [{"role": "user", "content": e.text}]} for e in test]

    cfg = parse_config(
        {
            "pool": [
                {"name": "cheap", "url": "http://cheap/v1", "tier": 1, "contextWindow": 32768},
                {"name": "strong", "url": "http://strong/v1", "tier": 2, "contextWindow": 32768},
            ]
        }
    )
    t = time.perf_counter()
    clf = Classifier()
    load_s = time.perf_counter() - t

    def ours(body):
        v = view_chat(body)
        return policy.decide(cfg, v, body, clf.score(v).p_hard).candidates[0].tier == 2

    from unittest.mock import MagicMock

    from litellm.router_strategy.complexity_router.complexity_router import ComplexityRouter
    from litellm.router_strategy.complexity_router.config import ComplexityTier

    lite = ComplexityRouter(model_name="bench", ctx=MagicMock())
    strong_tiers = {ComplexityTier.COMPLEX, ComplexityTier.REASONING}

    medium_up = strong_tiers | {ComplexityTier.MEDIUM}

    def litellm(body):
        tier, _score, _signals = lite.classify(body["messages"][-1]["content"], None)
        return tier in strong_tiers

    def litellm_medium_up(body):
        tier, _score, _signals = lite.classify(body["messages"][-1]["content"], None)
        return tier in medium_up

    rows = {}
    for name, fn in (
        ("tuneroute", ours),
        ("litellm complexity_router (COMPLEX+ = strong)", litellm),
        ("litellm complexity_router (MEDIUM+ = strong)", litellm_medium_up),
    ):
        preds = [fn(b) for b in bodies]
        lat = []
        for _ in range(a.repeat):
            for b in bodies:
                t = time.perf_counter()
                fn(b)
                lat.append(time.perf_counter() - t)
        by_source = {}
        for src in sorted({e.source.split(":")[0] for e in test}):
            idx = [i for i, e in enumerate(test) if e.source.split(":")[0] == src]
            by_source[src] = sum(preds[i] == bool(labels[i]) for i in idx) / len(idx)
        rows[name] = {
            **quality(preds, labels),
            "p50_ms": pct(lat, 0.5) * 1e3,
            "p99_ms": pct(lat, 0.99) * 1e3,
            "by_source": by_source,
        }

    n_hard = sum(labels)
    print(
        f"# classifier on the held-out split: {len(test)} prompts ({n_hard} hard, {len(test) - n_hard} easy); "
        f"one core; latency over {a.repeat} passes (includes the policy decision for tuneroute)\n"
    )
    print("| classifier | accuracy | hard-prompt recall | easy kept on cheap tier | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['accuracy']:.3f} | {r['hard_recall']:.3f} | {r['easy_kept_cheap']:.3f} | "
            f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} |"
        )
    print("\naccuracy by source:")
    for name, r in rows.items():
        print(f"- {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["by_source"].items()))
    print(f"\ntuneroute classifier load time: {load_s:.2f}s (embedding table + tokenizer from the wordllama wheel)")


if __name__ == "__main__":
    main()
