"""A ModelRoute answers through its Service: the router pod (the router image, on the real node,
with the config the operator rendered into its ConfigMap) routes a real openai client's
request, and an edit of the route reaches the running pod (the kubelet updates the mounted
file, the router hot-reloads it).

The backends are fake OpenAI servers (tuneroute_testing.fake_backend) on this machine, at the
address pods reach it by, standing in for vLLM (a GPU is not available here).
"""

from __future__ import annotations

import openai
import pytest

from tuneroute_testing.k8s import apply, get, wait_deployment_ready
from tuneroute_testing.process import wait_until
from tuneroute_testing.router_harness import Backend

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
        # One replica: every request below meets the same pod, reloaded or not.
        "spec": {
            "pool": pool,
            "policy": {"mode": mode},
            "router": {"replicas": 1, "resources": {"cpu": "50m", "memory": "512Mi"}},
            "auth": {"mode": "none"},
        },
    }


def test_route_service_answers_through_the_router_pod_and_edits_hot_reload(
    control_plane, release, operator, namespace, tmp_path
):
    cp = control_plane
    host = cp.node.host_ip
    small, large = Backend("small", tmp_path, host).start(), Backend("large", tmp_path, host).start()
    try:
        apply(cp, namespace, _route(small.url, large.url))
        wait_deployment_ready(cp, namespace, "local-router")
        pod = cp.get("pods", "-n", namespace, "-l", "app.kubernetes.io/instance=local")["items"][0]
        assert pod["spec"]["nodeName"] == cp.node.name
        assert pod["spec"]["containers"][0]["image"] == release.images["router"]

        # The Service's ClusterIP, as a client in the cluster would use it (kube-proxy's rules
        # on the node send it to the pod); this machine routes to the node's Service network.
        service = get(cp, namespace, "service", "local-router")
        client = openai.OpenAI(base_url=f"http://{service['spec']['clusterIP']}/v1", api_key="unused", timeout=30)
        reply = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Hi! What time is it in Paris?"}]
        )
        chosen = reply.headers["x-tuneroute-model"]
        assert chosen in ("small", "large")
        assert reply.parse().choices[0].message.content == f"I am {chosen}"
        assert reply.headers["x-tuneroute-reason"]
        served = {"small": small.stats()["requests"], "large": large.stats()["requests"]}
        assert served[chosen] == 1 and sum(served.values()) == 1
        assert {m.id for m in client.models.list()} >= {"auto", "small", "large"}

        # Edit the route: drop the large model. The operator re-renders the ConfigMap, the
        # kubelet updates the file in the pod, the router reloads it; no new pod.
        route = _route(small.url, large.url)
        route["spec"]["pool"] = route["spec"]["pool"][:1]
        apply(cp, namespace, route)
        # the kubelet updates the mounted file within its sync period, the router polls it:
        # nothing to watch from here but its API
        wait_until(lambda: {m.id for m in client.models.list()} == {"auto", "small"}, 120, "the router to reload")
        hard = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[
                {
                    "role": "user",
                    "content": "Prove that there are infinitely many primes, step by step, then write a Rust "
                    "function that tests primality.",
                }
            ],
        )
        assert hard.headers["x-tuneroute-model"] == "small"  # the only model left serves everything
        pods = cp.get("pods", "-n", namespace, "-l", "app.kubernetes.io/instance=local")["items"]
        assert [p["metadata"]["uid"] for p in pods] == [pod["metadata"]["uid"]]
    finally:
        small.proc.stop()
        large.proc.stop()
