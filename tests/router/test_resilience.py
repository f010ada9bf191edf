"""Failures a user would notice: dead or failing backends, overload, and bad config reloads."""

import asyncio
import time

import httpx
import openai
import pytest
import yaml

from tuneroute_testing.process import wait_until
from tuneroute_testing.router_harness import EASY, ask, base_config, start_router, write_config


def _timed(router):
    resp, headers = ask(router)
    return time.monotonic(), resp, headers


def test_killed_backend_falls_back_opens_circuit_and_recovers(tmp_path, pair):
    small, large = pair
    router = start_router(tmp_path, base_config(small, large))
    try:
        assert ask(router)[1]["x-tuneroute-model"] == "small"
        small.proc.kill()

        # (start, end, answer) of each request: the circuit opens during the second one and stays
        # open for cooldownSeconds, so a request that ended before start2 + cooldown must skip small
        # (a slow machine may let the cooldown pass later on: those requests may try small again)
        timed = []
        for _ in range(6):
            start = time.monotonic()
            timed.append((start, *_timed(router)))
        results = [(r, h) for _, _, r, h in timed]
        assert all(r.model == "large" for r, _ in results)  # every request still succeeds
        attempts = [h["x-tuneroute-attempts"] for _, h in results]
        assert attempts[:2] == ["2", "2"]  # tried small, fell back
        cooldown = base_config(small, large)["dispatch"]["cooldownSeconds"]
        while_open = [h["x-tuneroute-attempts"] for _, end, _, h in timed[2:] if end < timed[1][0] + cooldown]
        assert while_open and set(while_open) == {"1"}  # circuit open: small not even tried
        assert all("fallback" in h["x-tuneroute-reason"] for _, h in results)
        assert router.metric("tuneroute_circuit_open", model="small") == 1

        small.proc.start()  # same port: the pod came back
        wait_until(
            lambda: ask(router)[0].model == "small", timeout=20, interval=0.2, what="circuit to close after cooldown"
        )
        assert router.metric("tuneroute_circuit_open", model="small") == 0
    finally:
        router.proc.stop()


@pytest.mark.parametrize("status", [500, 503, 429])
def test_5xx_and_429_fall_back_to_the_next_model(tmp_path, pair, status):
    small, large = pair
    small.control(fail_status=status)
    router = start_router(tmp_path, base_config(small, large))
    try:
        resp, h = ask(router)
        assert resp.model == "large" and h["x-tuneroute-attempts"] == "2"
        assert small.stats()["requests"] == 1
        # asked for by name there is no fallback: the backend's status reaches the client
        with pytest.raises(openai.APIStatusError) as e:
            ask(router, model="small")
        assert e.value.status_code == status
        if status >= 500:  # its body (a stack trace, paths, hosts) stays in the router's log
            assert "small failing" not in e.value.message and f"small failed with HTTP {status}" in e.value.message
            assert "small failing" in router.log_path.read_text()
        else:  # a 429 is the backend's word to the client about its rate
            assert "small failing" in e.value.message
    finally:
        router.proc.stop()


def test_unreachable_backends_are_a_502_then_open_circuits_a_503(tmp_path, pair):
    """Both backends dead: each request tries both (a 502 naming the last one) until their
    circuits open (failureThreshold 2); then nothing is tried: a 503, no_backend_available."""
    small, large = pair
    router = start_router(tmp_path, base_config(small, large))
    try:
        small.proc.kill()
        large.proc.kill()

        def post():
            body = {"model": "auto", "messages": [{"role": "user", "content": EASY}]}
            return httpx.post(router.base + "/v1/chat/completions", json=body, timeout=30)

        for _ in range(2):
            r = post()
            assert r.status_code == 502 and r.json()["error"]["code"] == "backend_unreachable"
            assert r.headers["x-tuneroute-attempts"] == "2" and r.headers["x-tuneroute-model"] == "large"
        r = post()
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_backend_available"
        assert r.headers["x-tuneroute-attempts"] == "0" and r.headers["x-tuneroute-model"] == "none"
    finally:
        router.proc.stop()


def test_the_overhead_header_leaves_out_the_time_spent_waiting_on_the_backend(tmp_path, pair):
    small, large = pair
    small.control(delay_s=1.0)
    router = start_router(tmp_path, base_config(small, large))
    try:
        resp, h = ask(router)
        assert resp.model == "small"
        assert float(h["x-tuneroute-overhead-ms"]) < 500  # the backend alone took 1000 ms
        backend = router.metric("tuneroute_backend_seconds_sum", model="small")
        assert 1.0 <= backend < 2.0
    finally:
        router.proc.stop()


def test_a_busy_backend_spills_over_instead_of_queueing(tmp_path, pair):
    small, large = pair
    small.control(delay_s=1.0)
    cfg = base_config(small, large)
    cfg["pool"][0]["maxConcurrency"] = 1
    router = start_router(tmp_path, cfg)

    async def burst():
        c = openai.AsyncOpenAI(base_url=router.base + "/v1", api_key="unused", max_retries=0, timeout=30)
        return await asyncio.gather(
            *[c.chat.completions.create(model="auto", messages=[{"role": "user", "content": EASY}]) for _ in range(3)]
        )

    try:
        served = sorted(r.model for r in asyncio.run(burst()))
        assert served == ["large", "large", "small"]
    finally:
        router.proc.stop()


def test_a_flood_on_a_busy_model_is_told_when_to_retry(tmp_path, pair):
    """Asked for by name, a model at its limit queues as many requests as it runs; the rest get
    a 503 backend_busy with Retry-After at once, which the openai client honours."""
    small, large = pair
    small.control(delay_s=1.0)
    cfg = base_config(small, large)
    cfg["pool"][0]["maxConcurrency"] = 1
    cfg["dispatch"]["connectTimeoutSeconds"] = 5.0  # the one waiting outlasts the one running
    router = start_router(tmp_path, cfg)
    body = {"model": "small", "messages": [{"role": "user", "content": EASY}]}

    async def flood():
        async with httpx.AsyncClient(base_url=router.base, timeout=30) as c:
            return await asyncio.gather(*[c.post("/v1/chat/completions", json=body) for _ in range(5)])

    try:
        answers = asyncio.run(flood())
        assert sorted(r.status_code for r in answers) == [200, 200, 503, 503, 503]
        for r in answers:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "backend_busy"
    finally:
        router.proc.stop()


def test_a_client_that_leaves_takes_its_backend_request_with_it(tmp_path, pair):
    """A client that gave up left its backend request running (a GPU busy for nothing, a slot
    held) until the backend answered. Now the backend request is cancelled with the client's."""
    small, large = pair
    small.control(delay_s=5.0)
    router = start_router(tmp_path, base_config(small, large))
    body = {"model": "small", "messages": [{"role": "user", "content": EASY}]}
    try:
        before = small.stats()["requests"]
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(router.base + "/v1/chat/completions", json=body, timeout=0.5)
        assert small.stats()["requests"] == before + 1  # it reached the backend
        wait_until(
            lambda: router.metric("tuneroute_in_flight", model="small") == 0,
            3,
            "the backend request to end with the client's (the backend answers after 5 s)",
        )
        small.control(delay_s=0.0)
        assert ask(router, model="small")[0].model == "small"  # its slot was given back
    finally:
        router.proc.stop()


def test_bad_reload_keeps_the_old_config_and_a_good_one_applies(tmp_path, pair):
    small, large = pair
    cfg = base_config(small, large)
    router = start_router(tmp_path, cfg)
    try:
        path = router.config_path
        path.write_text("pool: [this is: not valid")
        wait_until(
            lambda: router.metric("tuneroute_config_reloads_total", result="refused") == 1, what="refused reload"
        )
        write_config(path, {**cfg, "pool": [{**cfg["pool"][0], "tier": 99}]})
        wait_until(
            lambda: router.metric("tuneroute_config_reloads_total", result="refused") == 2, what="second refused reload"
        )
        assert "pool[0].tier" in router.log_path.read_text()
        assert ask(router)[0].model == "small"  # still serving with the old config
        assert httpx.get(router.base + "/readyz").status_code == 200

        write_config(path, {**cfg, "virtualModel": "router"})
        wait_until(
            lambda: next(m["id"] for m in httpx.get(router.base + "/v1/models").json()["data"]) == "router",
            what="new config",
        )
        assert ask(router, model="router")[0].model == "small"
        with pytest.raises(openai.NotFoundError):
            ask(router, model="auto")
    finally:
        router.proc.stop()


def test_lora_adapter_is_loaded_once_before_traffic(tmp_path, pair):
    small, large = pair
    cfg = base_config(small, large)
    cfg["pool"][0].update(model="support-bot", adapter={"name": "support-bot", "path": "/adapters/support-bot"})
    router = start_router(tmp_path, cfg)
    try:
        for _ in range(2):
            resp, h = ask(router)
            assert h["x-tuneroute-model"] == "small" and resp.model == "support-bot"
        st = small.stats()
        assert st["adapters"] == [{"lora_name": "support-bot", "lora_path": "/adapters/support-bot"}]
        assert st["models"] == ["support-bot", "support-bot"]
    finally:
        router.proc.stop()


def test_invalid_config_at_start_exits_with_the_field_named(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "router.yaml"
    p.write_text(yaml.safe_dump({"pool": [{"name": "a", "url": "http://a/v1", "tier": 0, "contextWindow": 1}]}))
    r = subprocess.run(
        [sys.executable, "-m", "tuneroute_router", "--config", str(p)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "pool[0].tier" in r.stderr


def test_streaming_request_falls_back_before_the_first_byte(tmp_path, pair):
    small, large = pair
    small.control(fail_status=502)
    router = start_router(tmp_path, base_config(small, large))
    try:
        c = openai.OpenAI(base_url=router.base + "/v1", api_key="unused", max_retries=0, timeout=30)
        with c.chat.completions.with_streaming_response.create(
            model="auto", messages=[{"role": "user", "content": EASY}], stream=True
        ) as resp:
            assert resp.headers["x-tuneroute-model"] == "large" and resp.headers["x-tuneroute-attempts"] == "2"
            text = "".join(ch.choices[0].delta.content or "" for ch in resp.parse() if ch.choices)
        assert text == "I am large"
    finally:
        router.proc.stop()


def test_rotated_api_keys_apply_without_restart(tmp_path, pair):
    small, large = pair
    keys = tmp_path / "keys"
    keys.write_text("sk-old\n")
    router = start_router(
        tmp_path, base_config(small, large, auth={"apiKeysPath": str(keys)}, server={"logPrompts": True})
    )
    try:

        def status(key):
            return httpx.get(router.base + "/v1/models", headers={"authorization": f"Bearer {key}"}).status_code

        assert (status("sk-old"), status("sk-new")) == (200, 401)
        keys.write_text("# rotated\nsk-new\n")
        wait_until(lambda: status("sk-new") == 200, what="rotated key to be accepted")
        assert status("sk-old") == 401
        # logPrompts on: the decision line carries the prompt (and still never the key)
        c = openai.OpenAI(base_url=router.base + "/v1", api_key="sk-new", max_retries=0, timeout=30)
        c.chat.completions.create(model="auto", messages=[{"role": "user", "content": EASY}])
        assert router.decision_lines()[-1]["prompt"] == EASY
        assert "sk-new" not in router.log_path.read_text()
    finally:
        router.proc.stop()


def test_a_stream_that_breaks_midway_is_reported_not_papered_over(tmp_path, pair):
    small, large = pair
    small.control(break_stream=True)
    router = start_router(tmp_path, base_config(small, large))
    try:
        c = openai.OpenAI(base_url=router.base + "/v1", api_key="unused", max_retries=0, timeout=30)
        got = []
        with pytest.raises((httpx.HTTPError, openai.APIError)):
            for ch in c.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": EASY}], stream=True
            ):
                got.append(ch.choices[0].delta.content)
        assert got == ["I"]  # the first chunk arrived before the backend died
        wait_until(
            lambda: router.metric("tuneroute_requests_total", model="small", outcome="stream_broken") == 1,
            what="broken stream to be counted",
        )
        assert router.decision_lines()[-1]["stream_broken"] is True
    finally:
        router.proc.stop()


def _configmap_publish(cm, cfg: dict, version: int) -> None:
    """What the kubelet does on a ConfigMap update: new timestamped dir, atomic ..data swap."""
    import os

    ts = cm / f"..2026_11_28_{version}"
    ts.mkdir()
    (ts / "router.yaml").write_text(yaml.safe_dump(cfg))
    os.symlink(ts.name, cm / "..data_tmp")
    os.replace(cm / "..data_tmp", cm / "..data")
    if not (cm / "router.yaml").is_symlink():
        os.symlink("..data/router.yaml", cm / "router.yaml")


def test_configmap_symlink_swap_is_picked_up(tmp_path, pair):
    from tuneroute_testing.router_harness import Router

    small, large = pair
    cm = tmp_path / "tuneroute"
    cm.mkdir()
    cfg = base_config(small, large)
    _configmap_publish(cm, cfg, 1)
    router = Router(cm / "router.yaml", tmp_path)
    router.proc.start()
    try:
        assert ask(router)[0].model == "small"
        # the route now sends everything to the large model: one tier only
        _configmap_publish(cm, {**cfg, "pool": [cfg["pool"][1]]}, 2)
        wait_until(
            lambda: [m["id"] for m in httpx.get(router.base + "/v1/models").json()["data"]] == ["auto", "large"],
            what="swapped ConfigMap to apply",
        )
        assert ask(router)[0].model == "large"
    finally:
        router.proc.stop()


def test_deeply_nested_json_is_a_400_and_never_wedges_a_backend(tmp_path, pair):
    """orjson reads 1,024 levels of nesting but writes only about 254: a 700-byte body between
    the two failed after taking the backend's concurrency slot and was never given it back, so two
    of them at maxConcurrency 2 made the backend refuse everything until a restart."""
    small, large = pair
    cfg = base_config(small, large)
    cfg["pool"][0]["maxConcurrency"] = 2
    router = start_router(tmp_path, cfg)
    nested = b"[" * 300 + b"]" * 300
    hostile = b'{"model": "small", "messages": [{"role": "user", "content": "hi"}], "metadata": ' + nested + b"}"
    try:
        for _ in range(3):
            r = httpx.post(
                router.base + "/v1/chat/completions", content=hostile, headers={"content-type": "application/json"}
            )
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["code"] == "invalid_json" and "nest" in err["message"]
        resp, h = ask(router, model="small")
        assert resp.model == "small" and h["x-tuneroute-attempts"] == "1"
        assert router.metric("tuneroute_in_flight", model="small") == 0
    finally:
        router.proc.stop()
