"""The operator's rendered router config runs the real router, and route edits hot-reload it.

The config is copied from the ConfigMap into a file, as the kubelet does for the router pod
(kwok runs no containers, so the router runs here). The backends are small OpenAI-compatible
servers (tuneroute_testing.fake_backend) standing in for vLLM, which needs a GPU.
"""

from __future__ import annotations

import openai
import pytest
import yaml

from tuneroute_testing.k8s import apply, watch_one
from tuneroute_testing.process import wait_until

pytestmark = pytest.mark.cluster


def _route(small_url: str, large_url: str, mode: str = "balanced") -> dict:
    pool = [
        {
            "name": "small",
            "backend": {"url": small_url},
            "tier": 1,
            "contextWindow": 8192,
            "pricing": {"inputPerMillion": 0.1, "outputPerMillion": 0.4},
        },
        {
            "name": "large",
            "backend": {"url": large_url},
            "tier": 2,
            "contextWindow": 32768,
            "pricing": {"inputPerMillion": 2, "outputPerMillion": 8},
            "capabilities": {"tools": True},
        },
    ]
    return {
        "apiVersion": "tuneroute.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "local"},
        "spec": {"pool": pool, "policy": {"mode": mode}},
    }


def test_operator_config_drives_the_real_router_and_edits_hot_reload(control_plane, operator, namespace, tmp_path):
    from tuneroute_testing.router_harness import Backend, Router, write_config

    cp = control_plane
    small, large = Backend("small", tmp_path).start(), Backend("large", tmp_path).start()
    router = None
    try:
        apply(cp, namespace, _route(small.url, large.url))

        def rendered(pool_size: int) -> dict:
            def config(cm):
                return yaml.safe_load(cm["data"]["router.yaml"])

            cm = watch_one(cp, "configmaps", namespace, "local-router", lambda cm: len(config(cm)["pool"]) == pool_size)
            return config(cm)

        config = rendered(2)
        router = Router(write_config(tmp_path / "router.yaml", config), tmp_path)
        router.proc.start()
        client = openai.OpenAI(base_url=f"{router.base}/v1", api_key="unused")
        reply = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Hi! What time is it in Paris?"}]
        )
        assert reply.headers["x-tuneroute-model"] in ("small", "large")
        assert reply.parse().model in ("small", "large")
        assert {m.id for m in client.models.list()} >= {"auto", "small", "large"}

        # Edit the route: drop the large model. The operator re-renders, the file changes, the router reloads.
        route = _route(small.url, large.url)
        route["spec"]["pool"] = route["spec"]["pool"][:1]
        apply(cp, namespace, route)
        config = rendered(1)
        write_config(tmp_path / "router.yaml", config)
        # the router polls its file: nothing to watch from here but its API
        wait_until(lambda: {m.id for m in client.models.list()} == {"auto", "small"}, 30, "the router to reload")
        hard = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[
                {
                    "role": "user",
                    "content": "Prove that there are infinitely many primes, step by step, then write a Rust function that tests primality.",
                }
            ],
        )
        assert hard.headers["x-tuneroute-model"] == "small"  # the only model left serves everything
    finally:
        if router:
            router.proc.stop()
        small.proc.stop()
        large.proc.stop()
