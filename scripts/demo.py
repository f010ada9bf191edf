"""The demo behind scripts/demo.sh: every step a user would take, on a local cluster.

The cluster has two kwok GPU nodes (scheduling only: nothing runs on them) and one real node
where CPU-only pods run in containers: the operator (the chart's Deployment, from the image
built from operator/Dockerfile), the routers, and a FineTuneJob with gpus: 0 that trains a tiny
random Qwen3-MoE in the trainer image. The models behind the demo route are small fake
OpenAI servers on this machine (vLLM needs a GPU).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import openai
import yaml

from tuneroute_testing import REPO
from tuneroute_testing.control_plane import ControlPlane, wait_until
from tuneroute_testing.k8s import chart_image_values, hostpath_volume
from tuneroute_testing.router_harness import Backend
from tuneroute_testing.trainer_fixtures import DATA, save_tiny_model

DIR = Path(os.environ.get("TUNEROUTE_DEMO_DIR", "/tmp/tuneroute-demo"))
NS = "default"
TRAINER_UID = 10001  # the trainer image's user: hostPath volumes ignore fsGroup


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def show(cp: ControlPlane, *args: str) -> str:
    print(f"$ kubectl {' '.join(args)}")
    out = cp.kubectl(*args).stdout
    print(out, flush=True)
    return out


def apply(cp: ControlPlane, *objs: dict) -> None:
    print(cp.kubectl("-n", NS, "apply", "-f", "-", input=yaml.safe_dump_all(objs)).stdout, end="")


def start_backends(host: str) -> list[Backend]:
    """Two fake OpenAI servers on the address pods reach this machine by; they outlive the demo
    (scripts/demo.sh --down stops them)."""
    pids = DIR / "backends.pids"
    if pids.exists():
        for pid in pids.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
    backends = [Backend(name, DIR, host).start() for name in ("small", "large")]
    pids.write_text(" ".join(str(b.proc.popen.pid) for b in backends))
    return backends


def main() -> None:
    step("Start the local cluster: control plane, two kwok GPU nodes, one real node (containerd, kubelet)")
    cp = ControlPlane.up(DIR)
    node = cp.node
    if node is None:
        raise SystemExit("the demo needs the real node: unset TUNEROUTE_REAL_NODE=0")
    show(cp, "get", "nodes", "-o", "wide", "-L", "nvidia.com/gpu.present")

    step("Build the images from their Dockerfiles (buildah, cached) and load them into the real node")
    images = node.import_images("operator", "router", "trainer")
    print("\n".join(f"{name}: {ref}" for name, ref in images.items()))

    step("helm install the chart, with its image values pointing at those images")
    cp.kubectl("create", "namespace", "tuneroute-system", check=False)
    cp.wait_for_default_service_account("tuneroute-system")
    chart = str(REPO / "charts/tuneroute")
    install = ["upgrade", "--install", "tuneroute", chart, "-n", "tuneroute-system", *chart_image_values(images)]
    print("$ helm " + " ".join(install))
    print(cp.helm(*install, "--wait", "--timeout", "180s").stdout)
    show(cp, "get", "pods", "-n", "tuneroute-system", "-o", "wide")

    step("Apply examples/ (a hostPath PersistentVolume stands in for the adapters claim's provisioner)")
    # A second run starts from scratch: a finished FineTuneJob cannot be re-run (its spec is immutable).
    cp.kubectl("-n", NS, "delete", "ftj,mroute", "--all", "--wait=true", timeout=180)
    cp.kubectl("-n", NS, "delete", "-f", str(REPO / "examples"), "--ignore-not-found", "--wait=true", timeout=180)
    cp.kubectl("-n", NS, "delete", "pvc", "local-data", "--ignore-not-found", "--wait=true")
    cp.kubectl("delete", "pv", "demo-adapters", "demo-local", "--ignore-not-found", "--wait=true")
    shutil.rmtree(DIR / "pv", ignore_errors=True)
    adapters_pv = hostpath_volume("demo-adapters", str(DIR / "pv"), NS, "tuneroute-adapters")
    cp.kubectl("apply", "-f", "-", input=json.dumps(adapters_pv))
    print(cp.kubectl("-n", NS, "apply", "-f", str(REPO / "examples")).stdout)
    print("The 30B FineTuneJob and the vLLM Deployments ask for nvidia.com/gpu: the scheduler puts them on the")
    print("kwok GPU nodes, which run nothing. The route's router pods run for real on the CPU node:")
    wait_until(lambda: cp.get("pods", "-n", NS, "-l", "job-name=qwen3-support")["items"], 60, "the trainer pod")
    wait_until(
        lambda: (cp.get("deployment", "assistant-router", "-n", NS).get("status") or {}).get("readyReplicas") == 2,
        180,
        "the router pods",
    )
    show(cp, "get", "pods", "-n", NS, "-o", "wide")

    step("Train for real: a FineTuneJob with gpus: 0 on a tiny random Qwen3-MoE, in the trainer image")
    local = DIR / "pv" / "local"
    save_tiny_model("qwen3_moe", local / "models" / "tiny-qwen3-moe")
    (local / "data").mkdir(parents=True)
    shutil.copy(DATA / "chat.jsonl", local / "data" / "chat.jsonl")
    for p in [local, *local.rglob("*")]:
        shutil.chown(p, TRAINER_UID, TRAINER_UID)
    cp.kubectl("apply", "-f", "-", input=json.dumps(hostpath_volume("demo-local", str(local), NS, "local-data")))
    ftj = {
        "apiVersion": "tuneroute.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "tiny-support"},
        "spec": {
            "baseModel": {"pvc": "local-data", "path": "models/tiny-qwen3-moe"},
            "dataset": {"pvc": "local-data", "path": "data/chat.jsonl", "format": "chat"},
            "lora": {"rank": 8, "alpha": 16},
            "training": {"maxSteps": 60, "learningRate": 0.003, "batchSize": 4, "sequenceLength": 128},
            "checkpoint": {"everySteps": 20},
            # 700m: the real node has the machine's 2 CPUs, and examples/' two routers request 500m each.
            "resources": {"gpus": 0, "cpu": "700m", "memory": "3Gi", "sharedMemory": "64Mi"},
            "output": {"pvc": "local-data"},
            # The parity gate runs vLLM's image, which this local node does not have (and the demo's
            # models are fake servers): the route below serves the adapter unverified, and says so.
            "verify": {"enabled": False},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "local-data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    print(yaml.safe_dump(ftj, sort_keys=False))
    apply(cp, claim)
    # Bound first: a pod scheduled against an unbound claim can wait minutes for its next try.
    wait_until(lambda: cp.get("pvc", "local-data", "-n", NS)["status"].get("phase") == "Bound", 60, "the claim")
    apply(cp, ftj)
    t0, last = time.monotonic(), None
    while (phase := (cp.get("ftj", "tiny-support", "-n", NS).get("status") or {}).get("phase")) not in (
        "Succeeded",
        "Failed",
    ):
        row = cp.kubectl("-n", NS, "get", "ftj", "tiny-support", "-o", "wide", "--no-headers").stdout.strip()
        if row != last:
            print(f"[{time.monotonic() - t0:5.0f}s] {row}", flush=True)
            last = row
        if time.monotonic() - t0 > 600:
            raise TimeoutError("the tiny FineTuneJob did not finish in 10 minutes")
        time.sleep(2)
    show(cp, "get", "ftj", "tiny-support", "-n", NS, "-o", "wide")
    show(cp, "get", "pods", "-n", NS, "-l", "job-name=tiny-support", "-o", "wide")
    if phase != "Succeeded":
        raise SystemExit("the tiny FineTuneJob failed: kubectl describe ftj tiny-support")

    step("A route over two models and the new adapter; the models are fake OpenAI servers on this machine")
    small, large = start_backends(node.host_ip)
    route = {
        "apiVersion": "tuneroute.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "local"},
        "spec": {
            "pool": [
                {"name": "small", "backend": {"url": small.url}, "tier": 1, "contextWindow": 8192,
                 "pricing": {"inputPerMillion": 0.1, "outputPerMillion": 0.4}},
                {"name": "large", "backend": {"url": large.url}, "tier": 2, "contextWindow": 32768,
                 "pricing": {"inputPerMillion": 2, "outputPerMillion": 8}},
                {"name": "tiny-support", "backend": {"fineTuneJob": {"name": "tiny-support", "base": "small", "allowUnverified": True}},
                 "tier": 1, "contextWindow": 8192, "pricing": {"inputPerMillion": 0.1, "outputPerMillion": 0.4}},
            ],
            "router": {"replicas": 1, "resources": {"cpu": "100m", "memory": "512Mi"}},
            "auth": {"mode": "none"},  # a local demo: no API keys
        },
    }  # fmt: skip
    apply(cp, route)
    wait_until(
        lambda: (cp.get("deployment", "local-router", "-n", NS).get("status") or {}).get("readyReplicas") == 1,
        180,
        "the router pod",
    )
    wait_until(lambda: (cp.get("mroute", "local", "-n", NS).get("status") or {}).get("backends") == "3/3", 60, "3/3")
    show(cp, "get", "tuneroute", "-n", NS)

    step("A request through the route's Service, with the real openai client")
    ip = cp.get("service", "local-router", "-n", NS)["spec"]["clusterIP"]
    client = openai.OpenAI(base_url=f"http://{ip}/v1", api_key="unused", timeout=30)
    for model, prompt in [
        ("auto", "What are your opening hours?"),
        ("auto", "Prove that there are infinitely many primes, then write a Rust function that tests primality."),
        ("tiny-support", "Where is my order?"),
    ]:
        print(f"\n$ POST http://{ip}/v1/chat/completions  model={model!r}  {prompt!r}")
        reply = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": prompt}]
        )
        for name, value in sorted(reply.headers.items()):
            if name.startswith("x-tuneroute-"):
                print(f"  {name}: {value}")
        print(f"  -> {reply.parse().choices[0].message.content!r}")

    step("What ran where")
    show(cp, "get", "pods", "-A", "-o", "wide", "--field-selector", f"spec.nodeName={node.name}")

    step("Done")
    print(f"The cluster is still up:   source {DIR}/env && kubectl get tuneroute")
    print(f"The route, from here:      curl http://{ip}/v1/models")
    print(f"The adapter:               {local / cp.get('ftj', 'tiny-support', '-n', NS)['status']['adapter']['path']}")
    print("Stop everything:           scripts/demo.sh --down")


if __name__ == "__main__":
    main()
