"""Routing to fine-tuned adapters: a request inside an adapter's routing profile goes to it, and the
headers say so; anything else is routed by complexity as before. Real router process, the official
openai client, OpenAI-compatible fake backends (vLLM itself in tests/e2e/test_serving_real.py)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import openai
import pytest

from tuneroute_router.adapters import AdapterMatcher, build_profile, decode, embed_all, encode
from tuneroute_router.classifier import Embedder
from tuneroute_testing import REPO
from tuneroute_testing.router_harness import Backend, base_config, pool_entry, start_router


def _domain(name: str) -> list[str]:
    rows = (REPO / "bench" / "data" / "adapter_domains.tsv").read_text().splitlines()
    return [p for d, _, p in (r.partition("\t") for r in rows if r and not r.startswith("#")) if d == name]


K8S = _domain("k8s")
OUT_OF_DOMAIN = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "How do I make a sourdough starter?",
    "Explain the difference between a stock and a bond.",
]


def _profile(eval_loss: float, base_eval_loss: float) -> dict:
    return {**build_profile(K8S[0::2]), "evalLoss": eval_loss, "baseEvalLoss": base_eval_loss, "heldOut": 16}


@pytest.fixture(scope="module")
def adapter_backend(tmp_mod):
    b = Backend("k8s-helper", tmp_mod).start()
    yield b
    b.proc.stop()


def _ask(client, text: str):
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": text}])
    return raw.headers


@contextmanager
def _router_with_adapter(tmp_path, backends, adapter_backend, profile: dict):
    """A router over the base pool plus the adapter with this routing profile: (router, an openai client on it)."""
    cfg = base_config(*backends)
    cfg["pool"].append(pool_entry(adapter_backend, 1, profile=profile))
    router = start_router(tmp_path, cfg)
    try:
        yield router, openai.OpenAI(base_url=f"{router.base}/v1", api_key="unused")
    finally:
        router.proc.stop()


def test_in_domain_requests_reach_the_adapter_that_beat_its_base(tmp_path, backends, adapter_backend):
    with _router_with_adapter(tmp_path, backends, adapter_backend, _profile(1.2, 2.5)) as (router, client):
        held_out = K8S[1::2]
        hits = [_ask(client, p) for p in held_out]
        reached = [h for h in hits if h["x-tuneroute-model"] == "k8s-helper"]
        assert len(reached) >= 0.8 * len(held_out)  # the measured share is in docs/router-adapter-routing.md
        assert all(h["x-tuneroute-reason"].startswith("adapter-match") for h in reached)
        assert all(float(h["x-tuneroute-adapter-score"]) >= 0.5 for h in reached)
        for text in OUT_OF_DOMAIN:
            h = _ask(client, text)
            assert h["x-tuneroute-model"] != "k8s-helper" and "adapter" not in h["x-tuneroute-reason"], text
            assert "x-tuneroute-adapter-score" not in h
        assert any(
            line["reason"].startswith("adapter-match") and "adapter_score" in line for line in router.decision_lines()
        )


def test_an_adapter_that_did_not_beat_its_base_gets_nothing_by_profile(tmp_path, backends, adapter_backend):
    with _router_with_adapter(tmp_path, backends, adapter_backend, _profile(2.6, 2.5)) as (_, client):
        for text in K8S[1:9:2]:
            assert _ask(client, text)["x-tuneroute-model"] != "k8s-helper"


def test_profiles_round_trip_and_the_matcher_tells_the_domain_from_background():
    emb = Embedder()
    sample = embed_all(emb, K8S[0::2])
    back = decode(encode(sample), emb.dim)
    assert back.shape == sample.shape and float((back * sample).sum(axis=1).min()) > 0.999
    matcher = AdapterMatcher.build({"k8s": back}, emb)
    inside = [matcher.best(emb.embed(p)) for p in K8S[1::2]]
    assert sum(m is not None for m in inside) >= 0.8 * len(inside)
    assert matcher.best(emb.embed("What is the capital of France?")) is None
    assert matcher.best(emb.embed(K8S[1]), allowed=set()) is None  # a model the request cannot use
    assert matcher.best(np.zeros(emb.dim, np.float32)) is None
