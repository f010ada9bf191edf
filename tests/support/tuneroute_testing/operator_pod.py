"""The operator as users run it: the pod of the Helm chart's Deployment, on the real node.

    op = OperatorPod(cp, "tuneroute-system", "tuneroute").wait_ready()
    op.sample("tuneroute_reconciles_total", kind="FineTuneJob", result="ok")   # its /metrics
    op.restart()      # delete the pod (SIGTERM, grace period): the Deployment makes a new one
    op.kill()         # SIGKILL its process from the node's host: a crash; the kubelet restarts it
    op.log_tail()     # kubectl logs

Metrics are read from the pod's IP (this machine routes to the node's pod network).
"""

from __future__ import annotations

import urllib.request
from typing import Any

from .control_plane import ControlPlane, wait_until
from .process import metric

SELECTOR = "app.kubernetes.io/name=tuneroute-operator"


class OperatorPod:
    def __init__(self, cp: ControlPlane, namespace: str, release: str, metrics_port: int = 9090):
        self.cp, self.namespace, self.release, self.metrics_port = cp, namespace, release, metrics_port
        self.selector = f"{SELECTOR},app.kubernetes.io/instance={release}"

    def pods(self) -> list[dict[str, Any]]:
        return self.cp.get("pods", "-n", self.namespace, "-l", self.selector)["items"]

    def pod(self) -> dict[str, Any]:
        """The one Ready operator pod."""
        ready = [p for p in self.pods() if _ready(p) and not p["metadata"].get("deletionTimestamp")]
        if len(ready) != 1:
            raise LookupError(f"{len(ready)} ready operator pods in {self.namespace}")
        return ready[0]

    def wait_ready(
        self, timeout: float = 120, replacing: str | None = None, restarts: int | None = None
    ) -> OperatorPod:
        """Wait for one Ready pod (another than `replacing`; or restarted more than `restarts` times)."""

        def ready():
            try:
                p = self.pod()
            except LookupError:
                return None
            if replacing and p["metadata"]["uid"] == replacing:
                return None
            if restarts is not None and _restarts(p) <= restarts:
                return None
            return p

        try:
            wait_until(ready, timeout, f"a ready operator pod in {self.namespace}")
        except TimeoutError:
            raise TimeoutError(f"no ready operator pod; pods: {self._describe()}\n{self.log_tail()}") from None
        return self

    def restart(self) -> None:
        """Delete the pod as a rollout or a drain would (SIGTERM, then the grace period)."""
        old = self.pod()["metadata"]
        self.cp.kubectl("-n", self.namespace, "delete", "pod", old["name"], "--wait=false")
        self.wait_ready(replacing=old["uid"])

    def kill(self) -> None:
        """SIGKILL the operator's process: no cleanup, as a crash or the OOM killer does.
        The kubelet restarts the container in the same pod; wait_ready(restarts=...) waits for it."""
        assert self.cp.node, "the operator pod runs on the real node"
        pod = self.pod()
        self.killed_at_restarts = _restarts(pod)
        self.cp.node.kill_container(pod, "operator")

    def wait_restarted(self, timeout: float = 120) -> OperatorPod:
        return self.wait_ready(timeout, restarts=self.killed_at_restarts)

    def metrics(self) -> str:
        ip = self.pod()["status"]["podIP"]
        with urllib.request.urlopen(f"http://{ip}:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def sample(self, name: str, **labels: str) -> float:
        """Current value of one Prometheus sample (0 when absent)."""
        return metric(self.metrics(), name, **labels)

    def log_tail(self, n: int = 60) -> str:
        out = self.cp.kubectl(
            "-n", self.namespace, "logs", "-l", self.selector, f"--tail={n}", "--max-log-requests=5", check=False
        )
        return out.stdout + out.stderr

    def _describe(self) -> str:
        return "; ".join(
            f"{p['metadata']['name']} {p['status'].get('phase')} restarts={_restarts(p)}" for p in self.pods()
        )


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def _restarts(pod: dict[str, Any]) -> int:
    return sum(s.get("restartCount", 0) for s in pod["status"].get("containerStatuses") or [])
