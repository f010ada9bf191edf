"""The loop for real: FineTuneJob -> verified, versioned adapter -> vLLM the operator deploys -> a
routed answer from the adapter, surviving a vLLM crash.

Real: the API server and the operator, the trainer (tiny random Qwen3-MoE, LoRA on attention: the
CPU build of vLLM has no MoE-LoRA kernel, see docs/serving.md), the parity gate with vLLM's own code
(weight and output level), vLLM 0.32's CPU build serving the base model and the adapter, the router
process, the openai client.

Standing in for pods: the real node (tests/cluster/node.sh: containerd and a kubelet) has no
vLLM image, and vLLM's CPU build lives in a virtual environment on this machine
(scripts/vllm-venv.sh). So the FineTuneJob's pods are placed on the kwok GPU nodes, which run no
containers (serving.on_kwok_nodes: the verify pod would otherwise land on the real node), and
the training and verify pods run here as processes (tuneroute_testing.serving), with the config
and command line the operator rendered; so does vLLM, with the command line of the Deployment
the operator rendered (paths on claims mapped to their hostPath directories, the port to a free
one on 127.0.0.1). The router, which must reach that process, runs here too, with the ConfigMap
the operator rendered, the vLLM Service's URL replaced by that process's.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
import yaml

from tuneroute_testing.control_plane import wait_until
from tuneroute_testing.k8s import apply, condition, get, small_finetunejob, wait_phase
from tuneroute_testing.router_harness import Router, write_config
from tuneroute_testing.serving import (
    on_kwok_nodes,
    run_training_pod,
    run_verify_pod,
    tiny_finetunejob_spec,
    tiny_vllm_route,
    vllm_from_deployment,
)

# on a parallel run, beside the other cluster tests on a cluster of their own (the longest ones: vLLM start-ups)
pytestmark = pytest.mark.cluster(group="serving")

PROMPT = "add 3 4"  # the adapter's domain: the arithmetic chat data it was trained on


def _route() -> dict:
    # a restarting vLLM opens the circuits; a short cooldown lets the first request after it through
    dispatch = {"retries": 1, "failureThreshold": 2, "cooldownSeconds": 1, "connectTimeoutSeconds": 2}
    return tiny_vllm_route("arith", dispatch=dispatch)


def _ask(client: openai.OpenAI, text: str):
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}], max_tokens=6, temperature=0
    )
    return raw.parse(), raw.headers


def test_a_trained_adapter_is_verified_served_by_vllm_and_routed_to_through_a_restart(
    control_plane, operator, namespace, served_claim, tmp_path
):
    cp = control_plane
    claims = served_claim
    ftj = small_finetunejob("arith", **tiny_finetunejob_spec(steps=40))
    apply(cp, namespace, on_kwok_nodes(ftj))
    apply(cp, namespace, _route())

    # train (the trainer reports its routing profile into status), then the gate verifies
    rc, _ = run_training_pod(cp, namespace, "arith", claims, tmp_path / "trainer.log")
    assert rc == 0, (tmp_path / "trainer.log").read_text()[-3000:]
    done = wait_phase(cp, namespace, "arith", "Succeeded")
    name = done["status"]["adapterName"]
    profile = done["status"]["routingProfile"]
    assert profile["evalLoss"] < profile["baseEvalLoss"]  # it beat its base on the held-out rows
    rc, verdict = run_verify_pod(cp, namespace, "arith", claims, tmp_path / "verify.log")
    assert rc == 0, (tmp_path / "verify.log").read_text()[-3000:]
    assert verdict["outputs"]["ran"] and verdict["outputs"]["adapter"]["tokenAgreement"] == 1.0
    print("\nparity gate:", json.dumps({k: verdict[k] for k in ("weights", "outputs", "vllmVersion")}))
    wait_until(
        lambda: (
            (condition(get(cp, namespace, "finetunejob", "arith"), "ServingVerified") or {}).get("status") == "True"
        ),
        60,
        "ServingVerified=True",
    )

    # the verified adapter joins the route: the operator's vLLM Deployment now serves it
    def deployment_serving_it():
        d = get(cp, namespace, "deployment", "served-tiny")
        args = d["spec"]["template"]["spec"]["containers"][0]["args"] if d else []
        return d if any(name in a for a in args) else None

    deployment = wait_until(deployment_serving_it, 60, "the vLLM Deployment to serve the adapter")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    vllm = vllm_from_deployment(deployment, claims, tmp_path / "vllm.log").start()
    print(f"vLLM start-up: {vllm.startup_seconds:.1f} s, RSS {vllm.rss_bytes() / 2**30:.2f} GiB")
    router = None
    try:
        # the router with the operator's config; the vLLM Service stands in as the process's URL
        cm = get(cp, namespace, "configmap", "served-router")
        config = yaml.safe_load(cm["data"]["router.yaml"])
        assert {m["name"] for m in config["pool"]} == {"tiny", "arith"}
        for m in config["pool"]:
            m["url"] = vllm.url
        adapter_entry = next(m for m in config["pool"] if m["name"] == "arith")
        assert adapter_entry["model"] == name and "adapter" not in adapter_entry  # served by --lora-modules
        router = Router(write_config(tmp_path / "router.yaml", config), tmp_path)
        router.proc.start()
        client = openai.OpenAI(base_url=f"{router.base}/v1", api_key="unused")

        reply, headers = _ask(client, PROMPT)
        assert headers["x-tuneroute-model"] == "arith" and headers["x-tuneroute-reason"].startswith("adapter-match")
        assert float(headers["x-tuneroute-adapter-score"]) >= 0.5
        assert reply.model == name  # vLLM answered as the adapter
        direct = openai.OpenAI(base_url=vllm.url, api_key="unused").chat.completions.create(
            model=name, messages=[{"role": "user", "content": PROMPT}], max_tokens=6, temperature=0
        )
        assert reply.choices[0].message.content == direct.choices[0].message.content
        other, headers = _ask(client, "Write a short poem about the sea.")
        assert headers["x-tuneroute-model"] == "tiny" and "adapter" not in headers["x-tuneroute-reason"]
        assert other.model == "tiny"

        # vLLM crashes (SIGKILL, as an OOM kill would) and comes back; the router is not restarted
        vllm.kill()
        down_at = time.monotonic()
        with pytest.raises(openai.APIStatusError):  # while it is down: no backend can answer
            _ask(client, PROMPT)
        vllm.start()
        back_at = time.monotonic()
        reply, headers = _ask(client, PROMPT)  # the first request after the restart
        recovered = time.monotonic()
        assert headers["x-tuneroute-model"] == "arith" and reply.model == name
        print(
            f"restart window {back_at - down_at:.1f} s (vLLM start-up {vllm.startup_seconds:.1f} s); "
            f"first routed answer {recovered - back_at:.2f} s after /health"
        )
        assert recovered - back_at < 5  # nothing lost beyond the restart window
        assert httpx.get(f"{router.base}/readyz").status_code == 200
    finally:
        if router:
            router.proc.stop()
        vllm.stop()
