"""The router config is the operator's contract: aliases, defaults, and errors that name the field."""

import sys

import pytest

from tuneroute_router.config import ConfigError, RouterConfig, default_thresholds, load_config, parse_config

POOL = [
    {"name": "small", "url": "http://small:8000/v1", "tier": 1, "contextWindow": 4096},
    {
        "name": "large",
        "url": "http://large:8000/v1",
        "tier": 3,
        "contextWindow": 32768,
        "capabilities": {"tools": True},
        "pricing": {"inputPerMillion": 3, "outputPerMillion": 15},
    },
]


def test_camel_case_and_defaults():
    cfg = parse_config({"pool": POOL})
    assert cfg.virtual_model == "auto"
    assert cfg.pool[0].backend_model == "small"
    assert cfg.pool[0].max_concurrency == 64 and cfg.pool[0].timeout_seconds == 300
    assert cfg.policy.mode == "balanced" and cfg.policy.uncertainty_margin == 0.1
    assert cfg.dispatch.retries == 2 and cfg.dispatch.failure_threshold == 3
    assert cfg.server.max_body_bytes == 4 * 1024 * 1024 and cfg.server.log_prompts is False
    assert cfg.cut_points() == [0.6]  # docs/router.md: balanced 0.6 for two tiers
    dumped = cfg.model_dump(by_alias=True, exclude_none=True)
    assert dumped["virtualModel"] == "auto" and dumped["pool"][1]["contextWindow"] == 32768
    assert parse_config(dumped) == cfg  # what the operator renders reads back identically


def test_every_field_has_a_description():
    """The operator embeds these models in the CRD schema; undocumented fields show up blank."""

    def walk(schema, defs, path):
        for name, prop in schema.get("properties", {}).items():
            assert prop.get("description"), f"{path}.{name} has no description"
        for name, sub in defs.items():
            if "properties" in sub and name not in seen:
                seen.add(name)
                walk(sub, {}, name)

    seen: set = set()
    s = RouterConfig.model_json_schema(by_alias=True)
    walk(s, s.get("$defs", {}), "RouterConfig")
    assert {"PoolModel", "Policy", "Pricing", "Dispatch"} <= seen


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"pool": POOL + [POOL[0]]}, "duplicate model names"),
        ({"pool": []}, "pool"),
        ({"pool": POOL, "policy": {"thresholds": [0.7, 0.3]}}, "ascending"),
        ({"pool": POOL, "policy": {"thresholds": [0.3, 0.7]}}, "policy.thresholds: needs one cut point fewer"),
        ({"pool": POOL, "policy": {"fallbackOrder": ["nope"]}}, "fallbackOrder"),
        ({"pool": POOL, "policy": {"defaultModel": "nope"}}, "defaultModel"),
        (
            {"pool": POOL, "policy": {"examples": [{"tier": 2, "prompts": ["x"]}]}},
            "policy.examples: each example's tier",
        ),
        ({"pool": POOL, "policy": {"mode": "cheap"}}, "policy.mode"),
        ({"pool": POOL, "virtualModel": "small"}, "virtualModel: the routed model name must differ"),
        ({"pool": [{**POOL[0], "tier": 11}]}, "pool[0].tier"),
        ({"pool": [{**POOL[0], "url": "small:8000"}]}, "pool[0].url"),
        ({"pool": POOL, "unknownKey": 1}, "unknownKey"),
    ],
)
def test_invalid_configs_name_the_field(patch, field):
    with pytest.raises(ConfigError) as e:
        parse_config(patch)
    assert field in str(e.value)


def test_load_config_reports_file_and_field(tmp_path):
    p = tmp_path / "router.yaml"
    p.write_text("pool:\n  - name: a\n    url: http://a/v1\n    tier: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "pool[0].contextWindow" in str(e.value)
    p.write_text("pool: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_default_thresholds_are_the_documented_cut_points():
    """docs/router.md: cost 0.75, balanced 0.6, quality 0.4 for two tiers; more tiers spread
    evenly over the mode's bounds."""
    assert [default_thresholds(m, 2) for m in ("cost", "balanced", "quality")] == [[0.75], [0.6], [0.4]]
    assert default_thresholds("balanced", 3) == [0.45, 0.75]
    assert default_thresholds("balanced", 4) == [0.45, 0.6, 0.75]
    assert default_thresholds("balanced", 1) == []


def test_config_module_stays_light():
    """The operator imports config.py; it must not drag in the classifier or HTTP stack."""
    import subprocess

    code = (
        "import sys, tuneroute_router.config; "
        "bad = [m for m in ('wordllama', 'aiohttp', 'numpy', 'tokenizers', 'starlette') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
