"""Policy: score -> tier, hard constraints first, escalation when unsure, fallback order."""

import pytest

from tuneroute_router import policy
from tuneroute_router.config import parse_config
from tuneroute_router.features import view_chat


def cfg(**policy_kw):
    return parse_config(
        {
            "pool": [
                {"name": "s", "url": "http://s/v1", "tier": 1, "contextWindow": 2000},
                {
                    "name": "m",
                    "url": "http://m/v1",
                    "tier": 2,
                    "contextWindow": 8000,
                    "capabilities": {"tools": True},
                    "pricing": {"inputPerMillion": 1},
                },
                {
                    "name": "m-cheap",
                    "url": "http://mc/v1",
                    "tier": 2,
                    "contextWindow": 8000,
                    "pricing": {"inputPerMillion": 0.01},
                },
                {
                    "name": "l",
                    "url": "http://l/v1",
                    "tier": 3,
                    "contextWindow": 100000,
                    "capabilities": {"tools": True, "vision": True},
                    "pricing": {"inputPerMillion": 5},
                },
            ],
            "policy": {"thresholds": [0.4, 0.7], **policy_kw},
        }
    )


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
    c = parse_config({"pool": [{"name": "s", "url": "http://s/v1", "tier": 1, "contextWindow": 100}]})
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
