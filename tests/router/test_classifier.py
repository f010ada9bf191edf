"""The shipped classifier loads offline from the wordllama wheel, reads the conversation and other languages."""

import json

import numpy as np
import pytest

from tuneroute_router.classifier import HEAD_PATH, Classifier, ExampleIndex, Head
from tuneroute_router.features import FEATURE_NAMES, features, view_chat


@pytest.fixture(scope="module")
def clf():
    return Classifier()


def chat(*turns):
    msgs = []
    for i, t in enumerate(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    return {"model": "auto", "messages": msgs}


def levels(clf, *turns):
    return clf.score(view_chat(chat(*turns))).p_levels


EASY = ["What is the capital of Italy?", "Say hello to my friend Tom.", "Translate 'cat' into French."]
HARD = [
    "Prove that every bounded monotone sequence of real numbers converges, and explain each step.",
    "Design a sharded, replicated key-value store with linearizable reads; compare leader leases and quorum reads.",
    "Write a Python function implementing Dijkstra's algorithm with a binary heap and analyze its complexity.",
]


def test_two_calibrated_boundaries_never_increasing(clf):
    for text in EASY + HARD:
        p2, p3 = levels(clf, text)
        assert 0.0 <= p3 <= p2 <= 1.0, (text, p2, p3)
    s = clf.score(view_chat(chat(HARD[0])))
    assert s.p_hard == s.p_levels[0]


def test_hard_prompts_score_above_easy_ones(clf):
    easy = [levels(clf, t) for t in EASY]
    hard = [levels(clf, t) for t in HARD]
    assert max(p[0] for p in easy) < min(p[0] for p in hard), (easy, hard)
    assert max(p[1] for p in easy) < min(p[1] for p in hard), (easy, hard)


def test_a_follow_up_inherits_the_difficulty_of_the_conversation(clf):
    after_hard = levels(
        clf, "Prove that there are infinitely many primes of the form 4k+3.", "(proof)", "now do the same for 6k+5"
    )
    after_easy = levels(clf, "What is the capital of Spain?", "Madrid.", "now do the same for France")
    alone = levels(clf, "now do the same for 6k+5")
    assert after_hard[0] > after_easy[0] and after_hard[1] > after_easy[1]
    assert after_hard[1] > alone[1]


def test_hard_prompts_in_other_languages_score_above_easy_ones(clf):
    pairs = [
        ("Wie spät ist es?", "Beweise, dass die Wurzel aus 2 irrational ist, und verallgemeinere den Beweis."),
        (
            "¿Cuál es la capital de Perú?",
            "Diseña un algoritmo O(n log n) para contar inversiones y demuestra que es correcto.",
        ),
        ("今天星期几？", "证明：对任意正整数n，n^3 - n 能被6整除，并给出完整推理。"),
    ]
    for easy, hard in pairs:
        assert levels(clf, hard)[0] > levels(clf, easy)[0], (easy, hard)


def test_view_keeps_earlier_user_turns_as_context_and_not_the_answers():
    v = view_chat(chat("first question", "a long answer from the model", "second question"))
    assert v.text == "second question" and v.turns == 2
    assert v.context == "first question"
    assert view_chat(chat("only one")).context == ""


def test_features_match_their_names_and_flag_pasted_blocks():
    paste = "Count the bullet points in this text:\n\n" + "\n".join(f"- item {i} with some words" for i in range(60))
    f = dict(zip(FEATURE_NAMES, features(view_chat(chat(paste)))))
    assert len(f) == len(FEATURE_NAMES)
    assert f["pasted_block"] == 1.0 and f["easy_task"] > 0
    g = dict(zip(FEATURE_NAMES, features(view_chat(chat("What is 48213 times 99127?")))))
    assert g["big_numbers"] > 0 and g["pasted_block"] == 0.0


def test_a_head_for_other_features_is_refused(tmp_path):
    d = json.loads(HEAD_PATH.read_text())
    d["feature_names"] = d["feature_names"][:-1]
    p = tmp_path / "head.json"
    p.write_text(json.dumps(d))
    with pytest.raises(RuntimeError, match="retrain the head"):
        Head.load(p)


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


def test_held_out_split_is_large_and_its_sources_never_train_the_head():
    from tuneroute_router_training import dataset

    train, cal, test = dataset.splits()
    assert len(test) >= 500
    assert not {e.source for e in train + cal} & {e.source for e in test}
    assert {1, 2, 3} == {e.tier for e in test} == {e.tier for e in train}
    assert sum(e.label == "measured" for e in test) >= 100  # the gap curve is on real answers
    assert sum(e.label == "written" for e in train) < len(train) / 4  # hand-written stays a minority
    assert all(
        s in {x for e in test for x in dataset.slices(e)}
        for s in ("short", "long", "multi-turn", "non-English", "code", "math")
    )
