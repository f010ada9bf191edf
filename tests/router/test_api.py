"""The official openai client against a running router, with real HTTP backends."""

import json

import httpx
import openai
import pytest

from tuneroute_testing.router_harness import base_config, start_router, write_config

KEY = "sk-test-router-key"
EASY = "What is the capital of France?"
HARD = (
    "Prove that the sum of the reciprocals of the primes diverges, then derive an asymptotic "
    "bound for the partial sums, explaining each step."
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@pytest.fixture(scope="module")
def router(tmp_mod, backends):
    keys = tmp_mod / "keys"
    keys.mkdir()
    (keys / "team-a").write_text(KEY + "\n")
    (keys / "team-b").write_text("sk-other\n")
    (keys / "..data").mkdir()  # Secret volume internals are not keys
    auth = {"apiKeysPath": str(keys), "allowedModels": {"team-b": ["auto", "small"]}}
    r = start_router(tmp_mod, base_config(*backends, auth=auth, server={"maxBodyBytes": 64 * 1024}))
    yield r
    r.proc.stop()


@pytest.fixture
def client(router):
    return openai.OpenAI(base_url=router.base + "/v1", api_key=KEY, max_retries=0, timeout=30)


def ask(client, text, **kw):
    raw = client.chat.completions.with_raw_response.create(
        model=kw.pop("model", "auto"), messages=[{"role": "user", "content": text}], **kw
    )
    return raw.parse(), raw.headers


def test_easy_goes_to_the_cheap_model_and_hard_to_the_strong_one(client):
    easy, h = ask(client, EASY)
    assert easy.model == "small" and easy.choices[0].message.content == "I am small"
    assert h["x-tuneroute-model"] == "small" and h["x-tuneroute-tier"] == "1"
    assert float(h["x-tuneroute-score"]) < 0.5 and h["x-tuneroute-reason"].startswith("classifier")
    assert h["x-tuneroute-attempts"] == "1" and float(h["x-tuneroute-overhead-ms"]) >= 0

    hard, h = ask(client, HARD)
    assert hard.model == "large" and h["x-tuneroute-model"] == "large" and h["x-tuneroute-tier"] == "2"
    assert float(h["x-tuneroute-score"]) > 0.5


def test_streaming_passes_chunks_through(client):
    with client.chat.completions.with_streaming_response.create(
        model="auto",
        messages=[{"role": "user", "content": EASY}],
        stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        assert resp.headers["x-tuneroute-model"] == "small"
        assert resp.headers["content-type"].startswith("text/event-stream")
        chunks = list(resp.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "I am small"
    assert chunks[-1].usage.completion_tokens == 3


def test_tool_calls_go_to_a_tool_capable_model_and_pass_through(client, backends):
    resp, h = ask(client, EASY, tools=TOOLS, tool_choice="auto", temperature=0.3)
    assert h["x-tuneroute-model"] == "large" and "constraint-tools" in h["x-tuneroute-reason"]
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    sent = backends[1].stats()["last_body"]
    assert sent["tools"] == TOOLS and sent["tool_choice"] == "auto" and sent["temperature"] == 0.3


def test_a_pool_model_name_bypasses_routing(client, backends):
    resp, h = ask(client, HARD, model="small")
    assert resp.model == "small" and h["x-tuneroute-reason"] == "direct" and h["x-tuneroute-score"] == "none"


def test_completions_endpoint(client):
    raw = client.completions.with_raw_response.create(model="auto", prompt="Say hi")
    assert raw.parse().choices[0].text == "I am small" and raw.headers["x-tuneroute-model"] == "small"


def test_models_lists_virtual_model_and_pool(client):
    assert [m.id for m in client.models.list()] == ["auto", "small", "large"]


def test_missing_or_wrong_key_is_401_and_never_logged(router):
    for key in (None, "sk-wrong"):
        headers = {"authorization": f"Bearer {key}"} if key else {}
        r = httpx.post(
            router.base + "/v1/chat/completions",
            headers=headers,
            json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    bad = openai.OpenAI(base_url=router.base + "/v1", api_key="sk-wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    ok = httpx.get(router.base + "/v1/models", headers={"x-api-key": "sk-other"})
    assert ok.status_code == 200
    log = router.log_path.read_text()
    assert KEY not in log and "sk-other" not in log and "sk-wrong" not in log


def test_a_key_with_an_allow_list_gets_a_403_naming_the_model_it_may_not_use(router):
    """team-b's key may use auto and small only: asking for large is a 403 the openai client
    raises as PermissionDeniedError, and /v1/models lists what the key may use."""
    limited = openai.OpenAI(base_url=router.base + "/v1", api_key="sk-other", max_retries=0, timeout=30)
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask(limited, EASY, model="large")
    err = e.value.body
    assert err["code"] == "model_not_allowed" and err["param"] == "model"
    assert err["message"] == "API key 'team-b' may not use model 'large'; it may use: auto, small"
    assert ask(limited, EASY)[0].model == "small"
    assert [m.id for m in limited.models.list()] == ["auto", "small"]
    unlimited = openai.OpenAI(base_url=router.base + "/v1", api_key=KEY, max_retries=0, timeout=30)
    assert ask(unlimited, EASY, model="large")[0].model == "large"


@pytest.mark.parametrize(
    "body, status, code",
    [
        (b"{not json", 400, "invalid_json"),
        (b'["a list"]', 400, "invalid_json"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "missing_model"),
        (b'{"model": "auto"}', 400, "invalid_messages"),
        (b'{"model": "auto", "messages": []}', 400, "invalid_messages"),
        (b'{"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}', 404, "model_not_found"),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "' + b"x" * 70000 + b'"}]}',
            413,
            "body_too_large",
        ),
    ],
)
def test_bad_requests_get_openai_style_errors(router, body, status, code):
    r = httpx.post(
        router.base + "/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
    )
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and err["type"] == "invalid_request_error"


def test_openai_client_raises_the_matching_errors(client):
    with pytest.raises(openai.NotFoundError):
        ask(client, "hi", model="no-such-model")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="auto", messages=[])


def test_metrics_and_decision_log(router, client):
    names = [
        ("tuneroute_requests_total", {"model": "small", "outcome": "ok"}),
        ("tuneroute_decisions_total", {"tier": "1", "reason": "classifier"}),
        ("tuneroute_classification_seconds_count", {}),
        ("tuneroute_router_overhead_seconds_count", {}),
        ("tuneroute_backend_seconds_count", {"model": "small"}),
        ("tuneroute_tokens_total", {"model": "small", "kind": "prompt"}),
        ("tuneroute_tokens_total", {"model": "small", "kind": "completion"}),
        ("tuneroute_cost_usd_total", {"model": "small"}),
        ("tuneroute_cost_saved_usd_total", {}),
        ("tuneroute_in_flight", {"model": "small"}),
    ]
    before = [router.metric(n, **labels) for n, labels in names]
    ask(client, EASY)  # the fake backend reports 10 prompt and 3 completion tokens
    delta = [router.metric(n, **labels) - b for (n, labels), b in zip(names, before)]
    small = (10 * 0.1 + 3 * 0.4) / 1e6  # pool_entry's prices: tier 1 input 0.1, output 0.4 per 1M
    large = (10 * 0.4 + 3 * 1.6) / 1e6  # tier 2
    assert delta == pytest.approx([1, 1, 1, 1, 1, 10, 3, small, large - small, 0])
    assert router.metric("tuneroute_in_flight", model="small") == 0  # the slot was given back
    lines = router.decision_lines()
    assert lines and {"model", "tier", "score", "reason", "attempts", "overhead_ms"} <= lines[-1].keys()
    assert all("prompt" not in d for d in lines)  # logPrompts is off
    assert EASY not in router.log_path.read_text()


def test_a_client_request_id_is_logged_only_when_short_and_plain(router, client):
    """Every decision log line carries the client's x-request-id: an 8 KB one (or one with a
    newline-like payload) must not reach the log; a fresh id stands in for it."""
    for given, logged in (("req-42.a:b", True), ("x" * 8192, False), ("a b\tc", False)):
        client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": EASY}], extra_headers={"x-request-id": given}
        )
        rid = router.decision_lines()[-1]["request_id"]
        assert (rid == given) is logged and len(rid) <= 128
    assert "x" * 200 not in router.log_path.read_text()


def test_probes(router):
    assert httpx.get(router.base + "/healthz").status_code == 200
    assert httpx.get(router.base + "/readyz").json() == {"status": "ready"}


def test_route_examples_shift_decisions(tmp_path, backends):
    """A route that says 'jokes need the big model' gets jokes routed there; others unchanged."""
    examples = [{"tier": 2, "prompts": ["Tell me a joke about cats", "Write a funny limerick about dogs"]}]
    r = start_router(tmp_path, base_config(*backends, policy={"examples": examples}))
    try:
        c = openai.OpenAI(base_url=r.base + "/v1", api_key="unused", max_retries=0, timeout=30)
        joke, h = ask(c, "Tell me a joke about cats please")
        assert joke.model == "large" and h["x-tuneroute-reason"].startswith("example-tier2")
        assert ask(c, EASY)[0].model == "small"
    finally:
        r.proc.stop()


def test_until_the_classifier_loads_routing_is_a_503_and_pool_models_still_serve(tmp_path, backends):
    """In process, with a classifier that never loads: /readyz says so, the virtual model is
    refused with not_ready, a pool model named directly is served."""
    from starlette.testclient import TestClient

    from tuneroute_router.server import Router

    def broken_classifier():
        raise RuntimeError("no embedding table")

    router = Router(
        write_config(tmp_path / "router.yaml", base_config(*backends)), classifier_factory=broken_classifier
    )
    with TestClient(router.app) as http:
        assert http.get("/readyz").status_code == 503
        chat = {"messages": [{"role": "user", "content": EASY}]}
        r = http.post("/v1/chat/completions", json={"model": "auto", **chat})
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        r = http.post("/v1/chat/completions", json={"model": "small", **chat})
        assert r.status_code == 200 and r.headers["x-tuneroute-model"] == "small"
