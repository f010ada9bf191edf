"""Classifier on the held-out split: three-tier routing quality, cost, LiteLLM's complexity router, latency.

    python bench/router_classifier.py [--repeat 5] [--mode balanced] [--markdown out.md]

The test split (router-image/tuneroute_router_training/dataset.py) holds only sources never
used in training: BIG-Bench-Hard and other BIG-bench tasks graded per subtask, HumanEval with
measured pass rates of three real models, MT-Bench first and second turns. Every prompt has a
level: 1 = a small model answers well, 2 = needs a mid-size model, 3 = needs the strongest.

Routers, each sending a request to one of three pool tiers:
- tuneroute: the shipped head with the route's policy (default cuts for the mode).
- litellm: ComplexityRouter's default rule-based scorer (offline, no LLM call) on the newest
  user turn; SIMPLE -> tier 1, MEDIUM -> tier 2, COMPLEX and REASONING -> tier 3.
- always-strong, and the perfect router (each prompt to its own level's tier).

Reported: per-tier confusion, hard prompts kept off the cheap tier, hard prompts sent to the
strong tier, easy prompts kept cheap, cost against always-strong and the perfect router, the
same by slice, and on HumanEval (measured answers) the share of the cheap-to-strong accuracy
gap recovered as a function of the share of requests sent to the strong model. Latency is the
whole decision (request parsing, features, embeddings, head, policy) on one core.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network for the cost map

# Per-million-token prices of the three tiers (input, output): a small, a mid-size and a frontier model.
PRICES = {1: (0.1, 0.4), 2: (0.6, 2.4), 3: (3.0, 15.0)}
OUT_TOKENS = 256
BUDGETS = [i / 10 for i in range(11)]


def pool_config(mode: str):
    from tuneroute_router.config import parse_config

    pool = [
        {
            "name": f"tier{t}",
            "url": f"http://tier{t}/v1",
            "tier": t,
            "contextWindow": 131072,
            "pricing": {"inputPerMillion": PRICES[t][0], "outputPerMillion": PRICES[t][1]},
        }
        for t in (1, 2, 3)
    ]
    return parse_config({"pool": pool, "policy": {"mode": mode}})


def cost(tier: int, text_chars: int) -> float:
    pin, pout = PRICES[tier]
    return (text_chars / 4 * pin + OUT_TOKENS * pout) / 1e6


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def quality(routed: list[int], exs) -> dict:
    tiers = [e.tier for e in exs]
    chars = [sum(len(c) for _, c in e.messages) for e in exs]
    hard = [r for r, t in zip(routed, tiers) if t == 3]
    easy = [r for r, t in zip(routed, tiers) if t == 1]
    strong = sum(cost(3, c) for c in chars)
    perfect = sum(cost(t, c) for t, c in zip(tiers, chars))
    spent = sum(cost(r, c) for r, c in zip(routed, chars))
    conf = [[sum(1 for r, t in zip(routed, tiers) if t == i and r == j) for j in (1, 2, 3)] for i in (1, 2, 3)]
    nan = float("nan")
    return {
        "n": len(exs),
        "hard_off_cheap": sum(r >= 2 for r in hard) / len(hard) if hard else nan,
        "hard_to_strong": sum(r == 3 for r in hard) / len(hard) if hard else nan,
        "easy_kept_cheap": sum(r == 1 for r in easy) / len(easy) if easy else nan,
        "exact": sum(r == t for r, t in zip(routed, tiers)) / len(exs),
        "cost_vs_strong": spent / strong,
        "cost_vs_perfect": spent / perfect,
        "perfect_vs_strong": perfect / strong,
        "confusion": conf,
    }


def gap_curve(scores: list[float], exs, cheap: str, strong: str) -> tuple[list[float], float]:
    """Share of the cheap-to-strong accuracy gap recovered when the top-scored share goes to the strong model."""
    a_cheap = sum(e.measured[cheap] for e in exs) / len(exs)
    a_strong = sum(e.measured[strong] for e in exs) / len(exs)
    order = sorted(range(len(exs)), key=lambda i: -scores[i])
    curve = []
    for b in BUDGETS:
        k = round(b * len(exs))
        sent = set(order[:k])
        acc = sum(exs[i].measured[strong if i in sent else cheap] for i in range(len(exs))) / len(exs)
        curve.append((acc - a_cheap) / (a_strong - a_cheap))
    return curve, sum(curve) / len(curve)


def auc(scores: list[float], positive: list[bool]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    if not pos or not neg:
        return float("nan")
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        rank_sum += (i + j + 1) / 2 * sum(1 for k in range(i, j) if ranked[k][1])  # average rank of the tie
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def litellm_router():
    from unittest.mock import MagicMock

    from litellm.router_strategy.complexity_router.complexity_router import ComplexityRouter
    from litellm.router_strategy.complexity_router.config import ComplexityTier

    lite = ComplexityRouter(model_name="bench", ctx=MagicMock())
    tier_of = {
        ComplexityTier.SIMPLE: 1,
        ComplexityTier.MEDIUM: 2,
        ComplexityTier.COMPLEX: 3,
        ComplexityTier.REASONING: 3,
    }

    def route(body):
        tier, score, _signals = lite.classify(body["messages"][-1]["content"], None)
        return tier_of[tier], float(score), float(score)

    return route


def tuneroute_router(mode: str):
    from tuneroute_router import policy
    from tuneroute_router.classifier import Classifier
    from tuneroute_router.features import view_chat

    cfg = pool_config(mode)
    clf = Classifier()

    def route(body):
        v = view_chat(body)
        s = clf.score(v)
        levels = getattr(s, "p_levels", None) or s.p_hard  # the pre-issue-13 head has one score
        top = s.p_levels[-1] if getattr(s, "p_levels", None) else s.p_hard
        return policy.decide(cfg, v, body, levels, None).candidates[0].tier, s.p_hard, top

    return route


def evaluate(name: str, route, exs, repeat: int) -> dict:
    bodies = [e.body() for e in exs]
    out = [route(b) for b in bodies]
    routed, scores, top = [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]
    tiers = [e.tier for e in exs]
    ends = [i for i, t in enumerate(tiers) if t != 2]
    aucs = {  # ranking of prompts from sources never seen in training: 0.5 is chance
        "auc_2": auc(scores, [t >= 2 for t in tiers]),
        "auc_3": auc(top, [t >= 3 for t in tiers]),
        "auc_13": auc([scores[i] for i in ends], [tiers[i] == 3 for i in ends]),
    }
    lat, cpu = [], []  # wall time, and CPU time of this thread (apart from waiting on a busy machine)
    for _ in range(repeat):
        for b in bodies:
            t, c = time.perf_counter(), time.thread_time()
            route(b)
            cpu.append(time.thread_time() - c)
            lat.append(time.perf_counter() - t)
    from tuneroute_router_training.dataset import slices

    nan = float("nan")

    by_slice = {}
    for s in ("short", "long", "multi-turn", "non-English", "code", "math"):
        idx = [i for i, e in enumerate(exs) if s in slices(e)]
        by_slice[s] = quality([routed[i] for i in idx], [exs[i] for i in idx])
    meas = [i for i, e in enumerate(exs) if e.measured]
    curve, avg = gap_curve([scores[i] for i in meas], [exs[i] for i in meas], "codellama-34b-instruct", "gpt-4")
    return {
        "name": name,
        **quality(routed, exs),
        **aucs,
        "slices": by_slice,
        "gap_curve": curve,
        "gap_avg": avg,
        "p50_ms": pct(lat, 0.5) * 1e3 if lat else nan,
        "p99_ms": pct(lat, 0.99) * 1e3 if lat else nan,
        "cpu_p50_ms": pct(cpu, 0.5) * 1e3 if cpu else nan,
        "cpu_p99_ms": pct(cpu, 0.99) * 1e3 if cpu else nan,
    }


def reference_gaps(exs) -> dict:
    meas = [e for e in exs if e.measured]
    rng = random.Random(0)
    rand = [
        statistics.mean(
            gap_curve([rng.random() for _ in meas], meas, "codellama-34b-instruct", "gpt-4")[1] for _ in range(1)
        )
        for _ in range(200)
    ]
    perfect = [e.measured["gpt-4"] - e.measured["codellama-34b-instruct"] for e in meas]
    return {"random": statistics.mean(rand), "perfect": gap_curve(perfect, meas, "codellama-34b-instruct", "gpt-4")[1]}


def f3(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"


def render(rows: list[dict], exs, refs: dict, mode: str, load_s: float) -> str:
    n = len(exs)
    by_tier = [sum(e.tier == t for e in exs) for t in (1, 2, 3)]
    L = []
    L.append(
        f"### Held-out split: {n} prompts (level 1/2/3: {by_tier[0]}/{by_tier[1]}/{by_tier[2]}), "
        f"three-tier pool, `{mode}` mode\n"
    )
    L.append(
        "| router | hard kept off cheap | hard to strong | easy kept cheap | exact tier | cost vs always-strong "
        "| cost vs perfect | AUC L>=2 / L>=3 / L1-vs-L3 | p50 / p99 ms (wall) | CPU p50 / p99 ms |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        L.append(
            f"| {r['name']} | {f3(r['hard_off_cheap'])} | {f3(r['hard_to_strong'])} | {f3(r['easy_kept_cheap'])} | "
            f"{f3(r['exact'])} | {f3(r['cost_vs_strong'])} | {f3(r['cost_vs_perfect'])} | "
            f"{f3(r['auc_2'])} / {f3(r['auc_3'])} / {f3(r['auc_13'])} | {f3(r['p50_ms'])} / {f3(r['p99_ms'])} | "
            f"{f3(r['cpu_p50_ms'])} / {f3(r['cpu_p99_ms'])} |"
        )
    L.append(
        f"| perfect router | 1.000 | 1.000 | 1.000 | 1.000 | {f3(rows[0]['perfect_vs_strong'])} | 1.000 | 1 / 1 / 1 | - | - |"
    )
    L.append(f"\n(load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    L.append("\nPer-tier confusion (rows: the prompt's level 1/2/3; columns: tier routed to 1/2/3):\n")
    for r in rows:
        c = r["confusion"]
        L.append(f"- {r['name']}: " + "; ".join(f"L{i + 1} -> {c[i][0]}/{c[i][1]}/{c[i][2]}" for i in range(3)))
    L.append("\nBy slice (hard kept off cheap / easy kept cheap / cost vs always-strong; perfect router's cost):\n")
    L.append("| slice | n | " + " | ".join(r["name"] for r in rows) + " | perfect cost |")
    L.append("|---|---|" + "---|" * len(rows) + "---|")
    for s in rows[0]["slices"]:
        q0 = rows[0]["slices"][s]
        cells = []
        for r in rows:
            q = r["slices"][s]
            cells.append(f"{f3(q['hard_off_cheap'])} / {f3(q['easy_kept_cheap'])} / {f3(q['cost_vs_strong'])}")
        L.append(f"| {s} | {q0['n']} | " + " | ".join(cells) + f" | {f3(q0['perfect_vs_strong'])} |")
    meas = [e for e in exs if e.measured]
    L.append(
        f"\nMeasured answers (HumanEval, {len(meas)} prompts; cheap = CodeLlama-34B-Instruct, strong = GPT-4): "
        "share of the accuracy gap recovered when the top-scored share of requests goes to the strong model.\n"
    )
    L.append("| router | " + " | ".join(f"{int(b * 100)}%" for b in BUDGETS) + " | average |")
    L.append("|---|" + "---|" * (len(BUDGETS) + 1))
    for r in rows:
        if r["name"].endswith("mode)"):
            continue  # same scores as the first row: the mode moves only the cuts
        L.append(f"| {r['name']} | " + " | ".join(f"{x:.2f}" for x in r["gap_curve"]) + f" | **{r['gap_avg']:.3f}** |")
    L.append(f"\nRandom routing averages {refs['random']:.3f}; the perfect router {refs['perfect']:.3f}.")
    L.append(
        f"\ntuneroute classifier load time: {load_s:.2f}s (embedding table + tokenizer from the wordllama wheel, head.json)"
    )
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5, help="timing passes over the split")
    ap.add_argument("--mode", default="balanced", choices=["cost", "balanced", "quality"])
    ap.add_argument(
        "--other-modes", action="store_true", help="also route with the other two modes (same scores, no timing)"
    )
    ap.add_argument("--markdown", help="also write the tables to this file")
    ap.add_argument("--label", default="tuneroute", help="name of our row (e.g. to tell heads apart)")
    ap.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (e.g. a latency-only rerun)")
    a = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})  # one core

    from tuneroute_router_training import dataset

    t0 = time.monotonic()
    _, _, test = dataset.splits()
    print(f"[{time.monotonic() - t0:5.1f}s] {len(test)} held-out prompts", file=sys.stderr, flush=True)
    t = time.perf_counter()
    ours = tuneroute_router(a.mode)
    load_s = time.perf_counter() - t
    rows = [evaluate(a.label, ours, test, a.repeat)]
    if a.other_modes:
        for mode in ("cost", "balanced", "quality"):
            if mode != a.mode:
                rows.append(evaluate(f"{a.label} ({mode} mode)", tuneroute_router(mode), test, 0))
    print(f"[{time.monotonic() - t0:5.1f}s] tuneroute done", file=sys.stderr, flush=True)
    if not a.no_litellm:
        rows.append(evaluate("litellm complexity_router", litellm_router(), test, a.repeat))
        print(f"[{time.monotonic() - t0:5.1f}s] litellm done", file=sys.stderr, flush=True)
    text = render(rows, test, reference_gaps(test), a.mode, load_s)
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
