"""Routing to fine-tuned adapters, measured: share of in-domain prompts that reach their adapter, share
of out-of-domain prompts wrongly sent to it, and the decision time the match adds.

Data (all offline): three fine-tuning domains written for tuneroute (bench/data/adapter_domains.tsv:
Kubernetes operations, insurance claims, SQL help; 60 prompts each). Each adapter's routing profile
is built from the even rows (30 prompts, with the router's embedder, as the trainer builds it); the
odd rows are held out. Out-of-domain prompts: the other domains' held-out rows plus the router
classifier's general prompts (tuneroute_router_training: BIG-bench, HumanEval, MT-Bench, LiteLLM's
eval cases, written prompts; a seeded sample of 1,200), none of which are in the router's shipped
background (adapter_background.txt).

Two set-ups: each adapter alone in its route ("alone"), and all three in one route ("together":
the best-scoring adapter wins, as in the router).

    python bench/router_adapter_routing.py [--write docs/router-adapter-routing.md]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from tuneroute_router.adapters import AdapterMatcher, build_profile, decode, embed_all
from tuneroute_router.classifier import Embedder
from tuneroute_router_training import dataset as D

HERE = Path(__file__).parent


def domains() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (HERE / "data" / "adapter_domains.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, prompt = line.partition("\t")
            out.setdefault(name, []).append(prompt)
    return out


def general(limit: int = 1200) -> tuple[list[str], str]:
    """The classifier's prompts (packaged: BIG-bench, HumanEval, MT-Bench, LiteLLM; and the written
    ones), deduplicated, a seeded sample of at most `limit`."""
    train, test = D.packaged()
    examples = train + test + D.written()
    texts = sorted({e.text for e in examples if e.text.strip()})
    sources = ", ".join(sorted({e.source.split(":")[0] for e in examples}))
    if len(texts) > limit:
        texts = random.Random(0).sample(texts, limit)
    return texts, sources


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", type=Path, help="write the table as markdown to this file")
    args = ap.parse_args()
    emb = Embedder()
    doms = domains()
    gen, sources = general()
    profiles = {d: decode(build_profile(ps[0::2], emb)["embeddings"], emb.dim) for d, ps in doms.items()}
    t = time.perf_counter()
    together = AdapterMatcher.build(profiles, emb)
    fit_ms = (time.perf_counter() - t) * 1e3
    alone = {d: AdapterMatcher.build({d: p}, emb) for d, p in profiles.items()}
    tests = [(p, d) for d, ps in doms.items() for p in ps[1::2]] + [(p, None) for p in gen]
    x = embed_all(emb, [p for p, _ in tests])
    rows = []
    for d in doms:
        inside = np.array([t == d for _, t in tests])
        for setup, matcher in (("alone", alone[d]), ("together", together)):
            sent = np.array([(m := matcher.best(v)) is not None and m.name == d for v in x])
            rows.append((d, setup, sent[inside].mean(), sent[~inside].mean(), int(inside.sum()), int((~inside).sum())))
    # added decision time: the match on an embedding the classifier already computed
    n = 2000
    t = time.perf_counter()
    for i in range(n):
        together.best(x[i % len(x)])
    match_us = (time.perf_counter() - t) / n * 1e6
    lines = [
        "| adapter | route | in-domain reaching it | out-of-domain sent to it | in / out prompts |",
        "|---|---|---|---|---|",
    ]
    for d, setup, hit, fp, n_in, n_out in rows:
        lines.append(f"| {d} | {setup} | {hit:.3f} | {fp:.3f} | {n_in} / {n_out} |")
    lines.append("")
    lines.append(f"Out-of-domain: the other domains' held-out rows and {len(gen)} general prompts ({sources}).")
    lines.append(
        f"Added decision time: {match_us:.1f} us per request for 3 adapters (the embedding is the classifier's); "
        f"fitting the 3 profiles at config load: {fit_ms:.0f} ms."
    )
    text = "\n".join(lines)
    print(text)
    if args.write:
        args.write.write_text(
            "# Routing to adapters (bench/router_adapter_routing.py)\n\n"
            "Targets (issue 8): in-domain >= 0.9, out-of-domain <= 0.05.\n\n" + text + "\n"
        )


if __name__ == "__main__":
    main()
