"""The shipped classifier loads offline from the wordllama wheel, reads the conversation and other languages."""

import json

import numpy as np
import pytest

from tuneroute_router import policy
from tuneroute_router.classifier import HEAD_PATH, Classifier, ExampleIndex, Head
from tuneroute_router.config import parse_config
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


def routed_tier(clf, body, mode="balanced"):
    """Tier a three-tier pool (small, mid-size, frontier) sends the request to, with the mode's default cuts."""
    pool = [{"name": f"t{t}", "url": f"http://t{t}/v1", "tier": t, "contextWindow": 32768} for t in (1, 2, 3)]
    cfg = parse_config({"pool": pool, "policy": {"mode": mode}})
    v = view_chat(body)
    return policy.decide(cfg, v, body, clf.score(v).p_levels).candidates[0].tier


ARTICLE = "\n".join(
    [
        "The town council met on Tuesday evening to agree next year's budget.",
        "Most of the money will go to schools, the library and the repair of two bridges over the river.",
        "Several residents asked for longer opening hours at the swimming pool during the summer.",
        "The mayor said that the bus timetable would change in March, with more buses at weekends.",
        "A local bakery has won a regional prize for its rye bread, its third prize in five years.",
        "Road works on the high street will start in April and last about six weeks.",
        "Volunteers planted two hundred trees along the river path last weekend.",
        "The museum will show old photographs of the town's market square in the spring.",
        "The school choir is looking for new members and rehearses on Thursday afternoons.",
        "Next month the council will discuss parking charges in the town centre.",
    ]
)


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
    assert f["pasted_block"] == 1.0 and f["easy_task"] > 0 and f["paste_easy"] > 0
    h = dict(zip(FEATURE_NAMES, features(view_chat(chat("Prove that there is no largest prime.")))))
    assert h["short_hard"] > 0 and h["paste_easy"] == 0.0
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


@pytest.mark.parametrize(
    "ask",
    [
        "Summarise this article in two sentences:",
        "Fix the spelling mistakes in this text:",
        "Fasse diesen Artikel in zwei Sätzen zusammen:",
    ],
)
def test_a_long_easy_paste_stays_on_the_cheap_tier(clf, ask):
    """Summarising or proof-reading a pasted article is a small model's job, however long the paste."""
    body = chat(f"{ask}\n\n{ARTICLE}\n\n{ARTICLE.replace('council', 'town board')}")
    assert routed_tier(clf, body) == 1


def test_a_follow_up_after_a_hard_turn_is_not_routed_cheap(clf):
    """A short follow-up inherits the difficulty of the conversation it continues."""
    hard = "Let p be a prime greater than 3. Show that p^2 - 1 is divisible by 24."
    assert routed_tier(clf, chat(hard, "(the answer)", "now prove it")) >= 2
    assert routed_tier(clf, chat(hard, "(the answer)", "do the same for p^4 - 1")) >= 2
