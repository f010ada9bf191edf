"""Request bodies the router refuses before routing, and why (OpenAI-style errors)."""

from __future__ import annotations

import orjson
import pytest

from tuneroute_router.config import Server
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
    assert _error(parse(raw, Server(max_body_bytes=1024), endpoint)) == expected


def test_the_size_limit_is_in_the_message():
    resp = parse(None, Server(max_body_bytes=65536), CHAT)
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
    assert parse(raw, Server(max_body_bytes=1024), endpoint) == orjson.loads(raw)


def test_a_body_of_many_tiny_values_is_refused_before_it_is_parsed():
    """4 MiB of empty arrays parsed into about 125 MiB of Python lists (issue 11): the pre-scan
    refuses it at the size of its bytes. Prose and base64 images stay well under the limit."""
    limits = Server(max_body_bytes=8 * 1024 * 1024)
    hostile = (
        b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "metadata": ['
        + b"[]," * 1_400_000
        + b"[]]}"
    )
    status, code, _ = _error(parse(hostile, limits, CHAT))
    assert (status, code) == (413, "too_many_elements")
    assert "server.maxJsonElements" in orjson.loads(parse(hostile, limits, CHAT).body)["error"]["message"]
    image = "data:image/png;base64," + "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk" * 60_000
    prose = "A sentence, with a comma, and [brackets], in it. " * 20_000
    content = [{"type": "text", "text": prose}, {"type": "image_url", "image_url": {"url": image}}]
    ok = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": content}]})
    assert len(ok) > 4_000_000 and isinstance(parse(ok, limits, CHAT), dict)
