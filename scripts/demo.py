"""The demo behind scripts/demo.sh: every step a user would take, on a local cluster.

The cluster has two kwok GPU nodes (scheduling only: nothing runs on them) and one real node
where CPU-only pods run in containers: the operator (the chart's Deployment, from the image
built from operator/Dockerfile), the routers, and a FineTuneJob with gpus: 0 that trains a tiny
random Qwen3-MoE in the trainer image (LoRA on attention: vLLM's CPU build has no MoE-LoRA kernel).

Then the serving loop: the parity gate verifies the adapter with vLLM's own code, and a ModelRoute
with a `vllm:` backend gets the operator's vLLM Deployment serving the versioned adapter, and routes
`model: auto` requests of the adapter's domain to it. Standing in for pods (the real node has no
vLLM image: the chart pins the upstream GPU build, and no registry is reachable): the gate's pod and
the vLLM pod ask for a GPU, so they are scheduled onto kwok GPU nodes, and vLLM's CPU build runs
their command lines on this machine (tuneroute_testing.serving). vLLM listens on its pod's IP, which
this machine takes (tuneroute_testing.pod_ip), so the in-cluster router reaches it through the vLLM
Service as it would reach the pod. The first route's two models are small fake OpenAI servers on
this machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import yaml

from tuneroute_testing import REPO
from tuneroute_testing.control_plane import ControlPlane, wait_until
from tuneroute_testing.k8s import chart_image_values, condition, get, hostpath_volume
from tuneroute_testing.pod_ip import endpoint_ip, release_recorded, take_pod_ip
from tuneroute_testing.router_harness import Backend
from tuneroute_testing.serving import (
    run_verify_pod,
    stage_tiny_model,
    tiny_finetunejob_spec,
    tiny_vllm_route,
    vllm_from_deployment,
)

DIR = Path(os.environ.get("TUNEROUTE_DEMO_DIR", "/tmp/tuneroute-demo"))
NS = "default"
TRAINER_UID = 10001  # the trainer image's user: hostPath volumes ignore fsGroup
IN_DOMAIN = "add 3 4"  # the adapter's domain: the arithmetic chat data it was trained on
OUT_OF_DOMAIN = "Write a short poem about the sea."


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def show(cp: ControlPlane, *args: str) -> str:
    print(f"$ kubectl {' '.join(args)}")
    out = cp.kubectl(*args).stdout
    print(out, flush=True)
    return out


def apply(cp: ControlPlane, *objs: dict) -> None:
    print(cp.kubectl("-n", NS, "apply", "-f", "-", input=yaml.safe_dump_all(objs)).stdout, end="")


@contextlib.contextmanager
def ticking(what: str, every: float = 30) -> Iterator[None]:
    """Say every `every` seconds that `what` is still running (a long step is never silent)."""
    done = threading.Event()
    t0 = time.monotonic()

    def tick() -> None:
        while not done.wait(every):
            print(f"  [{time.monotonic() - t0:4.0f}s] {what}: running", flush=True)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        print(f"  [{time.monotonic() - t0:4.0f}s] {what}: done", flush=True)


def ask(client: openai.OpenAI, ip: str, model: str, prompt: str, **kwargs):
    """One chat request through a route, printed with the x-tuneroute-* headers; (reply, headers)."""
    print(f"\n$ POST http://{ip}/v1/chat/completions  model={model!r}  {prompt!r}")
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], **kwargs
    )
    for name, value in sorted(raw.headers.items()):
        if name.startswith("x-tuneroute-"):
            print(f"  {name}: {value}")
    reply = raw.parse()
    print(f"  -> {reply.choices[0].message.content!r}   (answered as model {reply.model!r})", flush=True)
    return reply, raw.headers


def served_route(local_claim: str) -> dict:
    """A route over the tiny base model, served by a vLLM Deployment the operator renders, and the
    demo's adapter on it. The vLLM entry asks for a GPU (tensor parallel 1), as on a GPU cluster."""
    router = {"replicas": 1, "resources": {"cpu": "100m", "memory": "512Mi"}}
    return tiny_vllm_route("tiny-support", claim=local_claim, gpus=1, router=router)


def serving(cp: ControlPlane, adapter: str) -> dict | None:
    """The served route's vLLM Deployment once its command line serves `adapter`."""
    deployment = get(cp, NS, "deployment", "served-tiny")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"] if deployment else []
    return deployment if any(adapter in a for a in args) else None


def stop_host_vllm() -> None:
    """The vLLM process and pod IP a previous run left (scripts/demo.sh --down does the same)."""
    pid = DIR / "vllm.pid"
    if pid.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pid.read_text()), signal.SIGKILL)
        pid.unlink()
    release_recorded(DIR / "pod-ips")


def check_routing(in_domain, out_domain, adapter: str) -> list[str]:
    """What a user expects of the two routed requests, as a list of what went wrong."""
    (reply, headers), (other, other_headers) = in_domain, out_domain
    problems = []
    if headers.get("x-tuneroute-model") != "tiny-support" or not headers.get("x-tuneroute-reason", "").startswith(
        "adapter-match"
    ):
        problems.append(f"the in-domain prompt was not routed to the adapter ({dict(headers)})")
    if reply.model != adapter:
        problems.append(f"the in-domain answer came from {reply.model!r}, not {adapter!r}")
    if other_headers.get("x-tuneroute-model") != "tiny" or other.model != "tiny":
        problems.append(f"the out-of-domain prompt did not go to the base ({dict(other_headers)})")
    return problems


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
    stop_host_vllm()
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
    stage_tiny_model(local)
    for p in [local, *local.rglob("*")]:
        shutil.chown(p, TRAINER_UID, TRAINER_UID)
    cp.kubectl("apply", "-f", "-", input=json.dumps(hostpath_volume("demo-local", str(local), NS, "local-data")))
    # 700m CPU: the real node has the machine's 2 CPUs, and examples/' two routers request 500m each.
    resources = {"gpus": 0, "cpu": "700m", "memory": "3Gi", "sharedMemory": "64Mi"}
    spec = tiny_finetunejob_spec(steps=40, claim="local-data", checkpoint_every=20, resources=resources)
    # The gate's pod asks for a GPU, as on a GPU cluster: the scheduler puts it on a kwok GPU node
    # (the real node has no vLLM image) and this machine runs its command line (the next step).
    spec["verify"]["gpus"] = 1
    ftj = {
        "apiVersion": "tuneroute.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "tiny-support"},
        "spec": spec,
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
    status = cp.get("ftj", "tiny-support", "-n", NS)["status"]
    adapter = status["adapterName"]
    profile = status.get("routingProfile") or {}
    print(f"versioned adapter name (status.adapterName): {adapter}")
    print(
        f"routing profile (status.routingProfile): {profile.get('samples', '?')} training prompts embedded, "
        f"held-out eval loss {profile.get('evalLoss')} against the base's {profile.get('baseEvalLoss')}"
    )

    step("The parity gate: vLLM's own code reads the adapter and must reproduce what the trainer meant")
    claims = {"local-data": local}
    print("Its pod asks for a GPU and waits on a kwok GPU node; this machine runs its command line in vLLM's")
    print("CPU build (stand-in for the pod) and ends the pod with the gate's exit code and verdict:")
    with ticking("the parity gate (vLLM's CPU build: about a minute)"):
        rc, verdict = run_verify_pod(cp, NS, "tiny-support", claims, DIR / "verify.log")
    show(cp, "get", "pods", "-n", NS, "-l", "job-name=tiny-support-verify", "-o", "wide")
    if rc != 0:
        raise SystemExit(f"the parity gate failed ({rc}): {DIR / 'verify.log'}")
    print(f"vLLM {verdict.get('vllmVersion')}, targets {verdict.get('targets')}")
    print("weight level:", json.dumps(verdict.get("weights")))
    print("output level:", json.dumps(verdict.get("outputs")))
    wait_until(
        lambda: (condition(cp.get("ftj", "tiny-support", "-n", NS), "ServingVerified") or {}).get("status") == "True",
        60,
        "ServingVerified=True",
    )
    show(cp, "get", "ftj", "tiny-support", "-n", NS, "-o", "wide")
    verified = condition(cp.get("ftj", "tiny-support", "-n", NS), "ServingVerified") or {}
    print(f"condition ServingVerified={verified.get('status')} ({verified.get('reason')}): {verified.get('message')}")

    step("A route over two models; the models are fake OpenAI servers on this machine")
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
    wait_until(lambda: (cp.get("mroute", "local", "-n", NS).get("status") or {}).get("backends") == "2/2", 60, "2/2")
    show(cp, "get", "tuneroute", "-n", NS)

    step("Requests through the route's Service, with the real openai client")
    ip = cp.get("service", "local-router", "-n", NS)["spec"]["clusterIP"]
    client = openai.OpenAI(base_url=f"http://{ip}/v1", api_key="unused", timeout=30)
    for prompt in [
        "What are your opening hours?",
        "Prove that there are infinitely many primes, then write a Rust function that tests primality.",
    ]:
        ask(client, ip, "auto", prompt)

    step("Serve the adapter: a ModelRoute with a vllm: backend; the operator renders its vLLM Deployment")
    served = served_route(local_claim="local-data")
    print(yaml.safe_dump(served, sort_keys=False))
    apply(cp, served)
    deployment = wait_until(lambda: serving(cp, adapter), 120, f"the vLLM Deployment to serve {adapter}", 1)
    assert deployment is not None
    cp.kubectl("-n", NS, "rollout", "status", "deployment/served-tiny", "--timeout=120s", timeout=130)
    show(cp, "get", "deployment,service", "-n", NS, "-l", "app.kubernetes.io/name=tuneroute-vllm", "-o", "wide")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    print("The Deployment's container (what the chart's vLLM image would run):")
    print("  " + " ".join(container["command"] + [shlex.quote(a) for a in container["args"]]))
    print(f"  readiness: {container['readinessProbe']['httpGet']}")
    pod_ip = wait_until(lambda: endpoint_ip(cp, NS, "served-tiny"), 60, "the vLLM Service's endpoint", 1)
    assert pod_ip is not None
    show(cp, "get", "pods", "-n", NS, "-l", "app.kubernetes.io/instance=served-tiny", "-o", "wide")

    step(f"vLLM's CPU build on this machine, standing in for that pod, on the pod's IP {pod_ip}")
    port = container["ports"][0]["containerPort"]
    print("The pod asks for a GPU: it sits on a kwok GPU node, and the real node cannot pull the chart's")
    print(f"GPU vLLM image. This machine takes the pod's IP ({pod_ip}/32 on its loopback, routed to it from")
    print(f"the real node), and runs the Deployment's command line in vLLM's CPU build on {pod_ip}:{port}, the")
    print("claims' mount paths mapped to their hostPath directories: the router pod reaches it through the")
    print("vLLM Service, as it would reach the pod.")
    stop_host_vllm()
    take_pod_ip(node, pod_ip)
    (DIR / "pod-ips").write_text(pod_ip)
    vllm = dataclasses.replace(vllm_from_deployment(deployment, claims, DIR / "vllm.log"), port=port, host=pod_ip)
    print(f"$ python {shlex.join(vllm.command()[1:])}   (log: {vllm.log})", flush=True)
    vllm.start(progress=lambda line: print(f"  {line}", flush=True))
    assert vllm.proc is not None
    (DIR / "vllm.pid").write_text(str(vllm.proc.pid))
    print(f"vLLM answers /health: start-up {vllm.startup_seconds:.1f} s, RSS {vllm.rss_bytes() / 2**30:.2f} GiB")
    wait_until(
        lambda: (cp.get("deployment", "served-router", "-n", NS).get("status") or {}).get("readyReplicas") == 1,
        180,
        "the served route's router pod",
    )
    wait_until(lambda: (cp.get("mroute", "served", "-n", NS).get("status") or {}).get("backends") == "2/2", 60, "2/2")
    show(cp, "get", "mroute", "served", "-n", NS, "-o", "wide")

    step("Routed answers from the adapter: model auto, through the route's Service, with the real openai client")
    ip = cp.get("service", "served-router", "-n", NS)["spec"]["clusterIP"]
    client = openai.OpenAI(base_url=f"http://{ip}/v1", api_key="unused", timeout=60)
    print("The tiny random model's words are noise; what matters is who answered, and why.")
    in_domain = ask(client, ip, "auto", IN_DOMAIN, max_tokens=8, temperature=0)
    out_domain = ask(client, ip, "auto", OUT_OF_DOMAIN, max_tokens=8, temperature=0)
    direct = openai.OpenAI(base_url=vllm.url, api_key="unused", timeout=60).chat.completions.create(
        model=adapter, messages=[{"role": "user", "content": IN_DOMAIN}], max_tokens=8, temperature=0
    )
    print(f"\n$ POST {vllm.url}/chat/completions  model={adapter!r}  {IN_DOMAIN!r}   (vLLM directly)")
    print(f"  -> {direct.choices[0].message.content!r}   (the same as through the route)")
    problems = check_routing(in_domain, out_domain, adapter)
    problems += (
        []
        if direct.choices[0].message.content == in_domain[0].choices[0].message.content
        else ["the routed answer differs from the adapter's own"]
    )

    step("What ran where")
    show(cp, "get", "pods", "-A", "-o", "wide", "--field-selector", f"spec.nodeName={node.name}")
    print("On this machine, standing in for pods on the kwok GPU nodes: the parity gate (ended), vLLM for")
    print(f"served-tiny (pid {vllm.proc.pid}, on {pod_ip}:{port}), and the fake models small and large.")

    step("Done")
    print(f"The cluster is still up:   source {DIR}/env && kubectl get tuneroute")
    print(f"The routes, from here:     curl http://{ip}/v1/models")
    print(f"The adapter:               {local / cp.get('ftj', 'tiny-support', '-n', NS)['status']['adapter']['path']}")
    print(f"vLLM for served-tiny:      pid {vllm.proc.pid} on {vllm.root} (log {vllm.log})")
    print("Stop everything:           scripts/demo.sh --down")
    if problems:
        raise SystemExit("the serving loop did not behave: " + "; ".join(problems))


if __name__ == "__main__":
    main()
