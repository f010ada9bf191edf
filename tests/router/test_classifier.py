"""The shipped classifier loads offline from the wordllama wheel and separates easy from hard."""

import numpy as np
import pytest

from tuneroute_router.classifier import Classifier, ExampleIndex
from tuneroute_router.features import view_chat


@pytest.fixture(scope="module")
def clf():
    return Classifier()


def score(clf, text, **extra):
    return clf.score(view_chat({"messages": [{"role": "user", "content": text}], **extra})).p_hard


EASY = ["What is the capital of Italy?", "Say hello to my friend Tom.", "Translate 'cat' into French."]
HARD = [
    "Prove that every bounded monotone sequence of real numbers converges, and explain each step.",
    "Design a sharded, replicated key-value store with linearizable reads; compare leader leases and quorum reads.",
    "Write a Python function implementing Dijkstra's algorithm with a binary heap and analyze its complexity.",
]


def test_easy_prompts_score_low_and_hard_prompts_high(clf):
    easy = [score(clf, t) for t in EASY]
    hard = [score(clf, t) for t in HARD]
    assert max(easy) < 0.5 < min(hard), (easy, hard)
    assert all(0.0 <= p <= 1.0 for p in easy + hard)


def test_embedding_is_deterministic_and_normalised(clf):
    a, b = clf.embedder.embed("hello world"), clf.embedder.embed("hello world")
    assert np.array_equal(a, b) and abs(float(np.linalg.norm(a)) - 1) < 1e-5
    assert not clf.embedder.embed("").any()


def test_route_examples_find_the_nearest_tier(clf):
    idx = ExampleIndex(
        clf.embedder, {1: ["Tell me a joke about dogs"], 2: ["Audit this Solidity contract for reentrancy"]}
    )
    tier, sim = idx.nearest(clf.embedder.embed("Tell me a joke about cats"))
    assert tier == 1 and sim > 0.7
    assert idx.nearest(clf.embedder.embed("Audit this Solidity smart contract for reentrancy bugs"))[0] == 2
