"""The demo's serving part (scripts/demo.py calls it): the parity gate on the example FineTuneJob's
adapter, then the whole loop served for real on this CPU.

Pods stand in as processes here, as in the rest of the demo (kwok nodes run no containers): the
verify pod's gate and the vLLM Deployment run with the command lines the operator rendered, in
vLLM's CPU build (scripts/vllm-venv.sh), and the router with the ConfigMap the operator rendered
(the vLLM Service's URL replaced by the process's). vLLM's CPU build cannot run LoRA on MoE experts,
so the served adapter puts LoRA on attention only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import openai
import yaml

from tuneroute_testing.control_plane import ControlPlane, wait_until
from tuneroute_testing.router_harness import Router, write_config
from tuneroute_testing.serving import ATTENTION, run_training_pod, run_verify_pod, vllm_from_deployment
from tuneroute_testing.trainer_fixtures import DATA, save_tiny_model

CLAIM = "tuneroute-adapters"


def _step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def _status(cp: ControlPlane, ns: str, kind: str, name: str) -> dict:
    return cp.get(kind, name, "-n", ns).get("status") or {}


def _condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def verify_example(cp: ControlPlane, ns: str, root: Path, model: Path, log_dir: Path) -> None:
    """The example FineTuneJob's verify pod: its gate, run here against the tiny model trained in
    place of Qwen3-30B-A3B; then the adapter joins the example route."""
    _step("The parity gate: the verify Job's gate (vLLM's own LoRA loading), run here with vLLM's CPU build")
    rc, result = run_verify_pod(cp, ns, "qwen3-support", {CLAIM: root}, log_dir / "verify.log", model=str(model))
    print(json.dumps(result, indent=1))
    wait_until(
        lambda: (
            _condition(_status(cp, ns, "ftj", "qwen3-support"), "ServingVerified").get("status") in ("True", "False")
        ),
        60,
        "ServingVerified",
    )
    print("ServingVerified:", json.dumps(_condition(_status(cp, ns, "ftj", "qwen3-support"), "ServingVerified")))
    if rc == 0:
        wait_until(
            lambda: _status(cp, ns, "mroute", "assistant").get("backends") == "4/4", 60, "the adapter to join the route"
        )


def _local_objects() -> list[dict]:
    ftj = {
        "apiVersion": "tuneroute.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "arith"},
        "spec": {
            "baseModel": {"pvc": CLAIM, "path": "models/tiny"},
            "dataset": {"pvc": CLAIM, "path": "data/chat.jsonl", "format": "chat"},
            "lora": {"rank": 8, "alpha": 16, "targetModules": ATTENTION, "experts": False},
            "training": {
                "maxSteps": 40,
                "learningRate": 0.003,
                "batchSize": 4,
                "sequenceLength": 128,
                "precision": "fp32",
            },
            "evaluation": {"heldOut": 8, "referencePrompts": 2, "maxNewTokens": 4},
            "verify": {"gpus": 0, "loraTargetModules": ATTENTION, "dtype": "float32"},
            "resources": {"gpus": 0},
            "output": {"pvc": CLAIM},
        },
    }
    vllm = {
        "model": {"pvc": CLAIM, "path": "models/tiny"},
        "gpus": 0,
        "dtype": "float32",
        "maxModelLen": 256,
        "loraTargetModules": ATTENTION,
        "extraArgs": ["--enforce-eager", "--max-num-seqs", "4"],
    }
    route = {
        "apiVersion": "tuneroute.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "local"},
        "spec": {
            "pool": [
                {"name": "tiny", "backend": {"vllm": vllm}, "tier": 1, "contextWindow": 256},
                {
                    "name": "arith",
                    "backend": {"fineTuneJob": {"name": "arith", "base": "tiny"}},
                    "tier": 1,
                    "contextWindow": 256,
                },
            ],
            "dispatch": {"cooldownSeconds": 1},
            "router": {"replicas": 1},
            "auth": {"mode": "none"},  # a local demo: no API keys
        },
    }
    return [ftj, route]


def serve_locally(cp: ControlPlane, ns: str, root: Path, log_dir: Path) -> None:
    _step("Serving for real on this CPU: a FineTuneJob and a ModelRoute with a `vllm:` backend")
    # a finished FineTuneJob cannot be re-run (its spec is immutable): a second demo starts afresh
    cp.kubectl("-n", ns, "delete", "ftj/arith", "mroute/local", "--ignore-not-found", "--wait=true", timeout=180)
    save_tiny_model("qwen3_moe", root / "models" / "tiny", servable=True)
    (root / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "chat.jsonl", root / "data" / "chat.jsonl")
    objects = _local_objects()
    print(yaml.safe_dump_all(objects, sort_keys=False))
    cp.kubectl("-n", ns, "apply", "-f", "-", input=yaml.safe_dump_all(objects))

    _step("Train (attention LoRA: vLLM's CPU build has no MoE-LoRA kernel) and verify with vLLM")
    rc, _ = run_training_pod(cp, ns, "arith", {CLAIM: root}, log_dir / "arith-trainer.log")
    wait_until(lambda: _status(cp, ns, "ftj", "arith").get("phase") in ("Succeeded", "Failed"), 120, "training")
    status = _status(cp, ns, "ftj", "arith")
    profile = status.get("routingProfile") or {}
    print(f"trainer exit {rc}; held-out loss {profile.get('evalLoss')} (base {profile.get('baseEvalLoss')})")
    rc, result = run_verify_pod(cp, ns, "arith", {CLAIM: root}, log_dir / "arith-verify.log")
    print(json.dumps({k: result.get(k) for k in ("verified", "reason", "vllmVersion", "weights", "outputs")}, indent=1))
    wait_until(
        lambda: _condition(_status(cp, ns, "ftj", "arith"), "ServingVerified").get("status") == "True",
        60,
        "ServingVerified=True",
    )
    print(cp.kubectl("get", "ftj", "arith", "-n", ns, "-o", "wide").stdout)
    name = _status(cp, ns, "ftj", "arith")["adapterName"]

    _step("The operator's vLLM Deployment now serves the verified adapter (--lora-modules); run it here")

    def rendered():
        d = cp.get("deployment", "local-tiny", "-n", ns)
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        return d if any(name in a for a in args) else None

    deployment = wait_until(rendered, 60, "the vLLM Deployment to serve the adapter")
    print("args:", " ".join(deployment["spec"]["template"]["spec"]["containers"][0]["args"]))
    vllm = vllm_from_deployment(deployment, {CLAIM: root}, log_dir / "vllm.log").start()
    print(
        f"vLLM up in {vllm.startup_seconds:.0f} s, {vllm.rss_bytes() / 2**30:.1f} GiB resident ({log_dir / 'vllm.log'})"
    )
    router = None
    try:
        config = yaml.safe_load(cp.get("configmap", "local-router", "-n", ns)["data"]["router.yaml"])
        for m in config["pool"]:
            m["url"] = vllm.url  # the Service, standing in
        router = Router(write_config(log_dir / "router.yaml", config), log_dir)
        router.proc.start()
        _step("Ask through the route: the openai client, model auto")
        client = openai.OpenAI(base_url=f"{router.base}/v1", api_key="unused")
        for prompt in ("add 3 4", "Write a short poem about the sea."):
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": prompt}], max_tokens=6, temperature=0
            )
            reply = raw.parse()
            why = {k: v for k, v in raw.headers.items() if k.startswith("x-tuneroute-")}
            print(f"{prompt!r} -> served by {reply.model!r}: {reply.choices[0].message.content!r}\n   {why}")
        print(cp.kubectl("get", "mroute", "local", "-n", ns, "-o", "jsonpath={.status.backendStatus}").stdout)
    finally:
        if router:
            router.proc.stop()
        vllm.stop()
        print("(vLLM and the router stopped; the cluster and its objects stay up)")
