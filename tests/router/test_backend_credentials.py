"""Backends that require an API key (vLLM --api-key): the router sends each its own key, read
from a mounted Secret key (pool[i].apiKeyPath), re-read when rotated, never logged."""

from __future__ import annotations

import openai

from tuneroute_testing.process import wait_until
from tuneroute_testing.router_harness import ask, base_config, start_router


def test_each_backend_gets_its_own_key_adapter_loads_included_and_rotation_applies(tmp_path, pair):
    small, large = pair
    small.control(api_key="sk-small-1")
    large.control(api_key="sk-large-1")
    (tmp_path / "small.key").write_text("sk-small-1\n")
    (tmp_path / "large.key").write_text("sk-large-1")
    cfg = base_config(small, large)
    cfg["pool"][0].update(
        model="support-bot",
        adapter={"name": "support-bot", "path": "/adapters/support-bot"},
        apiKeyPath=str(tmp_path / "small.key"),
    )
    cfg["pool"][1]["apiKeyPath"] = str(tmp_path / "large.key")
    router = start_router(tmp_path, cfg)
    try:
        resp, h = ask(router)
        assert (h["x-tuneroute-model"], resp.model) == ("small", "support-bot")  # adapter loaded with the key
        assert ask(router, model="large")[0].model == "large"
        assert small.stats()["unauthorized"] == large.stats()["unauthorized"] == 0

        # the Secret is rotated: the backend takes the new key, the mounted file follows
        small.control(api_key="sk-small-2")
        (tmp_path / "small.key").write_text("sk-small-2\n")
        wait_until(
            lambda: ask(router, model="small")[0].model == "support-bot",
            10,
            "the rotated key",
            ignore=(openai.AuthenticationError,),  # the backend's 401 until the router re-reads the key
        )
        log = router.log_path.read_text() + (tmp_path / "router.yaml").read_text()
        assert not any(k in log for k in ("sk-small-1", "sk-small-2", "sk-large-1"))
    finally:
        router.proc.stop()


def test_an_unreadable_backend_key_is_refused_naming_the_pool_entry(tmp_path, pair):
    import subprocess
    import sys

    from tuneroute_testing.router_harness import write_config

    small, large = pair
    cfg = base_config(small, large)
    cfg["pool"][1]["apiKeyPath"] = str(tmp_path / "missing.key")
    path = write_config(tmp_path / "router.yaml", cfg)
    out = subprocess.run(
        [sys.executable, "-m", "tuneroute_router", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "pool[1].apiKeyPath" in out.stderr and "missing.key" in out.stderr
