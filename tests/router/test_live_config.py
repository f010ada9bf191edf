"""The config in effect: hot reload of the file and the keys, refusal of a bad config, and the
live backend state (circuits) kept across reloads for backends that did not change."""

from __future__ import annotations

import pytest

from tuneroute_router.auth import KeysError
from tuneroute_router.config import ConfigError
from tuneroute_router.live_config import LiveConfig
from tuneroute_router.metrics import Metrics
from tuneroute_testing.router_harness import write_config

POOL = [
    {"name": "small", "url": "http://127.0.0.1:9/v1", "tier": 1, "contextWindow": 4096},
    {"name": "large", "url": "http://127.0.0.1:9/v2", "tier": 2, "contextWindow": 4096},
]


def _live(tmp_path, **top) -> LiveConfig:
    return LiveConfig(write_config(tmp_path / "router.yaml", {"pool": POOL, **top}), Metrics())


def _reloads(live: LiveConfig, result: str) -> float:
    return live.metrics.registry.get_sample_value("tuneroute_config_reloads_total", {"result": result}) or 0.0


def test_an_unusable_config_or_keys_refuse_to_start(tmp_path):
    with pytest.raises(ConfigError, match=r"pool\[0\]\.tier"):
        LiveConfig(write_config(tmp_path / "bad.yaml", {"pool": [{**POOL[0], "tier": 0}]}), Metrics())
    with pytest.raises(KeysError, match="cannot read keys"):
        _live(tmp_path, auth={"apiKeysPath": str(tmp_path / "no-such-keys")})


def test_a_changed_file_is_swapped_in_and_an_unchanged_one_is_not(tmp_path):
    live = _live(tmp_path)
    first = live.state
    assert live.reload() is None and live.state is first
    write_config(live.path, {"pool": POOL, "virtualModel": "router"})
    assert live.reload() is True and live.state.cfg.virtual_model == "router"
    assert _reloads(live, "ok") == 1


def test_a_bad_config_is_refused_once_and_the_last_good_one_serves_on(tmp_path):
    live = _live(tmp_path)
    good = live.state
    live.path.write_text("pool: [this is: not valid")
    assert live.reload() is False and live.state is good
    assert live.reload() is None  # the same bad file is not tried (nor logged) again
    assert _reloads(live, "refused") == 1
    write_config(live.path, {"pool": POOL[:1]})
    assert live.reload() is True and [m.name for m in live.state.cfg.pool] == ["small"]


def test_an_open_circuit_survives_a_reload_that_leaves_its_backend_unchanged(tmp_path):
    live = _live(tmp_path, dispatch={"failureThreshold": 1, "cooldownSeconds": 60})
    small = live.state.backends["small"]
    small.circuit.failure()
    assert small.circuit.state == "open"
    write_config(live.path, {"pool": [{**POOL[0], "pricing": {"inputPerMillion": 2}}, POOL[1]]})
    assert live.reload() is True
    assert live.state.backends["small"] is small and small.circuit.state == "open"
    assert live.state.backends["small"].model.pricing.input_per_million == 2  # the new prices apply
    write_config(live.path, {"pool": [{**POOL[0], "url": "http://127.0.0.1:10/v1"}, POOL[1]]})
    assert live.reload() is True
    assert live.state.backends["small"].circuit.state == "closed"  # another backend: a fresh circuit


def test_rotated_keys_apply_and_unreadable_ones_keep_the_old(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("sk-old\n")
    live = _live(tmp_path, auth={"apiKeysPath": str(keys)})
    assert set(live.state.keys or ()) == {b"sk-old"}
    keys.write_text("sk-new\nsk-newer\n")
    assert live.reload() is True and set(live.state.keys or ()) == {b"sk-new", b"sk-newer"}
    keys.write_text("# only a comment\n")
    assert live.reload() is False and set(live.state.keys or ()) == {b"sk-new", b"sk-newer"}
