"""Request bodies the router refuses before routing, and why (OpenAI-style errors)."""

from __future__ import annotations

import orjson
import pytest

from tuneroute_router.openai_request import CHAT, COMPLETIONS, parse


def _error(resp) -> tuple[int, str, str | None]:
    err = orjson.loads(resp.body)["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    return resp.status_code, err["code"], err["param"]


@pytest.mark.parametrize(
    "raw, endpoint, expected",
    [
        (None, CHAT, (413, "body_too_large", None)),
        (b"{not json", CHAT, (400, "invalid_json", None)),
        (b'["a list"]', CHAT, (400, "invalid_json", None)),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', CHAT, (400, "missing_model", "model")),
        (b'{"model": "", "messages": [{"role": "user", "content": "hi"}]}', CHAT, (400, "missing_model", "model")),
        (b'{"model": "auto"}', CHAT, (400, "invalid_messages", "messages")),
        (b'{"model": "auto", "messages": []}', CHAT, (400, "invalid_messages", "messages")),
        (b'{"model": "auto", "messages": "hi"}', CHAT, (400, "invalid_messages", "messages")),
        (b'{"model": "auto"}', COMPLETIONS, (400, "missing_prompt", "prompt")),
        (b'{"model": "auto", "prompt": 3}', COMPLETIONS, (400, "missing_prompt", "prompt")),
    ],
)
def test_bad_bodies_are_refused_naming_what_is_wrong(raw, endpoint, expected):
    assert _error(parse(raw, 1024, endpoint)) == expected


def test_the_size_limit_is_in_the_message():
    resp = parse(None, 65536, CHAT)
    assert orjson.loads(resp.body)["error"]["message"] == "request body exceeds 65536 bytes"


@pytest.mark.parametrize(
    "raw, endpoint",
    [
        (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "tools": []}', CHAT),
        (b'{"model": "small", "prompt": "Say hi"}', COMPLETIONS),
        (b'{"model": "small", "prompt": ["a", "b"]}', COMPLETIONS),
    ],
)
def test_good_bodies_come_back_whole(raw, endpoint):
    assert parse(raw, 1024, endpoint) == orjson.loads(raw)
