"""Policy: score -> tier, hard constraints first, escalation when unsure, fallback order."""

import pytest

from tuneroute_router import policy
from tuneroute_router.config import parse_config
from tuneroute_router.features import view_chat


def entry(name: str, tier: int, window: int, **extra) -> dict:
    return {"name": name, "url": f"http://{name}/v1", "tier": tier, "contextWindow": window, **extra}


def cfg(**policy_kw):
    pool = [
        entry("s", 1, 2000),
        entry("m", 2, 8000, capabilities={"tools": True}, pricing={"inputPerMillion": 1}),
        entry("m-cheap", 2, 8000, pricing={"inputPerMillion": 0.01}),
        entry("l", 3, 100000, capabilities={"tools": True, "vision": True}, pricing={"inputPerMillion": 5}),
    ]
    return parse_config({"pool": pool, "policy": {"thresholds": [0.4, 0.7], **policy_kw}})


def chat(text, **extra):
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


def decide(c, body, score, nearest=None):
    return policy.decide(c, view_chat(body), body, score, nearest)


@pytest.mark.parametrize("score, tier", [(0.1, 1), (0.35, 2), (0.5, 2), (0.65, 3), (0.9, 3)])
def test_score_maps_to_cheapest_covering_tier_with_escalation(score, tier):
    d = decide(cfg(uncertaintyMargin=0.1), chat("hello"), score)
    assert d.candidates[0].tier == tier
    assert ("uncertain-escalated" in d.reason) == (score in (0.35, 0.65))


def test_cheapest_model_within_a_tier_is_first_then_everything_else_as_fallback():
    d = decide(cfg(uncertaintyMargin=0), chat("hi"), 0.5)
    assert [m.name for m in d.candidates][:2] == ["m-cheap", "m"]
    assert {m.name for m in d.candidates} == {"s", "m", "m-cheap", "l"}
    assert d.candidates[2].name == "l"  # upward before downward


def test_fallback_order_is_honoured_after_the_choice():
    d = decide(cfg(uncertaintyMargin=0, fallbackOrder=["s", "l"]), chat("hi"), 0.5)
    assert [m.name for m in d.candidates] == ["m-cheap", "s", "l", "m"]


def test_tools_need_a_tool_capable_model():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    d = decide(cfg(), chat("hi", tools=tools), 0.0)
    assert d.candidates[0].name == "m" and all(m.capabilities.tools for m in d.candidates)
    assert "constraint-tools" in d.reason


def test_images_need_vision_and_context_must_fit():
    img = {
        "model": "auto",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:,"}},
                ],
            }
        ],
    }
    assert [m.name for m in decide(cfg(), img, 0.0).candidates] == ["l"]
    long = chat("word " * 4000)  # ~5000 tokens: too big for s (2000)
    assert "s" not in [m.name for m in decide(cfg(), long, 0.0).candidates]
    big_out = chat("hi", max_tokens=9000)
    assert [m.name for m in decide(cfg(), big_out, 0.0).candidates] == ["l"]


def test_no_capable_model_is_an_error():
    c = parse_config({"pool": [entry("s", 1, 100)]})
    with pytest.raises(policy.NoCapableModel, match="tools"):
        decide(c, chat("x", tools=[{"type": "function", "function": {"name": "f"}}]), 0.1)


def test_example_match_pulls_toward_its_tier():
    c = cfg(uncertaintyMargin=0)
    assert decide(c, chat("x"), 0.1, nearest=(3, 0.95)).candidates[0].tier == 3
    assert decide(c, chat("x"), 0.9, nearest=(1, 0.95)).candidates[0].tier == 1
    weak = decide(c, chat("x"), 0.1, nearest=(3, 0.5))  # not similar enough: ignored
    assert weak.candidates[0].tier == 1 and weak.reason == "classifier"


def test_default_model_when_nothing_to_classify():
    d = decide(cfg(defaultModel="m"), chat(""), None)
    assert d.candidates[0].name == "m" and d.reason == "default"
    assert decide(cfg(), chat("hi"), None).candidates[0].name == "l"  # no default: safest


def test_an_example_blends_in_from_0_7_similarity_and_decides_from_0_9():
    """docs/router.md: cosine >= 0.7 blends the score toward the example's tier band, fully at 0.9."""
    tiers, cuts = [1, 2, 3], [0.4, 0.7]
    band3 = (0.7 + 1.0) / 2
    assert policy.shift_by_example(0.1, (3, 0.69), tiers, cuts) == (0.1, None)
    assert policy.shift_by_example(0.1, (3, 0.70), tiers, cuts) == (pytest.approx(0.1), 3)
    assert policy.shift_by_example(0.1, (3, 0.80), tiers, cuts) == (pytest.approx((0.1 + band3) / 2), 3)
    assert policy.shift_by_example(0.1, (3, 0.90), tiers, cuts) == (pytest.approx(band3), 3)
    assert policy.shift_by_example(0.1, (3, 0.99), tiers, cuts) == (pytest.approx(band3), 3)


def test_output_tokens_count_towards_the_context_window():
    """docs/router.md: the prompt plus max_tokens (256 if unset) must fit; max_completion_tokens,
    the newer name, wins over max_tokens."""
    assert policy.requested_output_tokens({}) == 256
    assert policy.requested_output_tokens({"max_tokens": 40}) == 40
    assert policy.requested_output_tokens({"max_completion_tokens": 30, "max_tokens": 4000}) == 30
    c = parse_config({"pool": [entry("tiny", 1, 384), entry("big", 2, 100000)]})
    prompt = "word " * 100  # 500 characters: 125 tokens, plus 4 for the turn
    first = lambda **kw: decide(c, chat(prompt, **kw), 0.0).candidates[0].name
    assert first() == "big"  # 129 + 256 = 385 > 384
    assert first(max_tokens=255) == "tiny"  # 129 + 255 = 384
    assert first(max_completion_tokens=255, max_tokens=4000) == "tiny"


def three_tiers(**policy_kw):
    pool = [{"name": f"t{t}", "url": f"http://t{t}/v1", "tier": t, "contextWindow": 8000} for t in (1, 2, 3)]
    return parse_config({"pool": pool, "policy": {"thresholds": [0.5, 0.7], "uncertaintyMargin": 0, **policy_kw}})


@pytest.mark.parametrize(
    "levels, tier",
    [((0.2, 0.1), 1), ((0.6, 0.1), 2), ((0.6, 0.69), 2), ((0.9, 0.8), 3), ((0.4, 0.4), 1)],
)
def test_each_boundary_has_its_own_calibrated_probability(levels, tier):
    """P(level >= 2) decides cheap vs the rest, P(level >= 3) mid vs strong; a mid-level answer means mid."""
    assert decide(three_tiers(), chat("x"), levels).candidates[0].tier == tier


def test_uncertainty_on_a_boundary_escalates_one_tier():
    d = decide(three_tiers(uncertaintyMargin=0.1), chat("x"), (0.45, 0.1))
    assert d.candidates[0].tier == 2 and "uncertain-escalated" in d.reason
    d = decide(three_tiers(uncertaintyMargin=0.1), chat("x"), (0.9, 0.65))
    assert d.candidates[0].tier == 3 and "uncertain-escalated" in d.reason
    assert d.score == 0.9  # the header's score: P(needs more than the cheapest tier)


def test_pool_boundaries_map_onto_the_classifier_levels():
    assert policy.boundary_probs((0.8, 0.3), 2) == [0.8]  # anything above "small model" goes up
    assert policy.boundary_probs((0.8, 0.3), 3) == [0.8, 0.3]
    four = policy.boundary_probs((0.8, 0.3), 4)  # interpolated, never increasing, ends at P(level >= 3)
    assert len(four) == 3 and four[0] > four[1] > four[2] and four[2] == pytest.approx(0.3)
    assert policy.boundary_probs((0.8, 0.3), 1) == []


def test_two_tier_pool_routes_on_the_first_boundary():
    c = cfg(uncertaintyMargin=0)
    two = parse_config(
        {
            "pool": [m for m in c.model_dump(by_alias=True)["pool"] if m["tier"] in (1, 3)],
            "policy": {"thresholds": [0.5]},
        }
    )
    assert decide(two, chat("x"), (0.7, 0.1)).candidates[0].tier == 3
    assert decide(two, chat("x"), (0.3, 0.1)).candidates[0].tier == 1


def test_example_match_pulls_boundary_probabilities_toward_its_tier():
    c = three_tiers()
    assert decide(c, chat("x"), (0.1, 0.0), nearest=(3, 0.95)).candidates[0].tier == 3
    assert decide(c, chat("x"), (0.95, 0.9), nearest=(1, 0.95)).candidates[0].tier == 1
    d = decide(c, chat("x"), (0.95, 0.9), nearest=(2, 0.95))
    assert d.candidates[0].tier == 2 and d.reason == "example-tier2"
    weak = decide(c, chat("x"), (0.1, 0.0), nearest=(3, 0.5))
    assert weak.candidates[0].tier == 1 and weak.reason == "classifier"
