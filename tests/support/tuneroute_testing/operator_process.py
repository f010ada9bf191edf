"""The operator as a process on this machine, with the chart's ServiceAccount.

The e2e suite drives the operator the chart runs as a pod (operator_pod.py); a process is for
what a pod cannot give a test: several replicas with chosen peering priorities side by side, or
one operator watching a single test namespace (the `scoped` fixture). It authenticates with a
token of the ServiceAccount the Helm chart creates, so the chart's least-privilege RBAC is what
it gets.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from . import running_operators
from .control_plane import ControlPlane
from .process import Process, free_port, http_ok, metric

TRAINER_IMAGE = "registry.example/tuneroute/trainer:test"
ROUTER_IMAGE = "registry.example/tuneroute/router:test"


def service_account_kubeconfig(cp: ControlPlane, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig like the admin's, but with a token of namespace/account."""
    token = cp.kubectl("-n", namespace, "create", "token", account, "--duration=4h").stdout.strip()
    config = yaml.safe_load(cp.kubeconfig.read_text())
    config["users"] = [{"name": account, "user": {"token": token}}]
    for ctx in config["contexts"]:
        ctx["context"]["user"] = account
    path.write_text(yaml.safe_dump(config))
    return path


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log_path: Path, extra_env: dict[str, str] | None = None):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.health_port = self.metrics_port = 0
        self._process: Process | None = None

    def start(self) -> OperatorProcess:
        """Start (or restart) the operator; returns once its /healthz answers."""
        self.health_port, self.metrics_port = free_port(), free_port()
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "TUNEROUTE_TRAINER_IMAGE": TRAINER_IMAGE,
            "TUNEROUTE_ROUTER_IMAGE": ROUTER_IMAGE,
            "TUNEROUTE_HEALTH_PORT": str(self.health_port),
            "TUNEROUTE_METRICS_PORT": str(self.metrics_port),
            **self.extra_env,
        }
        health = f"http://127.0.0.1:{self.health_port}/healthz"
        self._process = Process(
            [sys.executable, "-m", "tuneroute_operator"], self.log_path, lambda: http_ok(health), "the operator", env
        )
        self._process.start()
        running_operators.started(self, self.stop, self.start)
        return self

    @property
    def process(self) -> Process:
        if self._process is None:
            raise RuntimeError("the operator was never started")
        return self._process

    @property
    def proc(self) -> subprocess.Popen:
        return self.process.popen

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies under the operator."""
        self.process.kill()

    def stop(self) -> None:
        running_operators.stopped(self)
        if self._process is not None:
            self._process.stop()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def sample(self, name: str, **labels: str) -> float:
        """Current value of one Prometheus sample (0 when absent)."""
        return metric(self.metrics(), name, **labels)

    def log_tail(self, n: int = 60) -> str:
        return self.process.log_tail(n)
