"""Every operator that may be acting on a test's objects, and the one way to pause them all.

Tests that call the reconcilers themselves, or run an operator of their own, must be the only
ones acting on their objects, yet an operator serves every namespace and would create the same
children first, with its own settings. Two kinds can be running:
- operator processes (tuneroute_testing.operator_process registers each one it starts: the e2e
  suite's `scoped` operator, a benchmark's): stopped and started again;
- the Helm chart's operator pod: every Deployment labelled as the chart's operator, found on the
  cluster (this session's release, or one a reused cluster kept), scaled to 0 and back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .control_plane import ControlPlane
from .k8s import watch
from .operator_pod import SELECTOR as CHART_OPERATOR

_running: dict[int, tuple[Callable[[], object], Callable[[], object]]] = {}


def started(operator: object, stop: Callable[[], object], start: Callable[[], object]) -> None:
    _running[id(operator)] = (stop, start)


def stopped(operator: object) -> None:
    _running.pop(id(operator), None)


@contextmanager
def paused(cp: ControlPlane) -> Iterator[None]:
    """No operator runs inside the block (no registered process, no chart operator pod); those
    that ran before run again after it."""
    processes = list(_running.values())
    for stop, _ in processes:
        stop()
    deployments = [
        (d["metadata"]["namespace"], d["metadata"]["name"], d["spec"].get("replicas", 1))
        for d in cp.get("deployments", "-A", "-l", CHART_OPERATOR)["items"]
    ]
    for ns, name, _ in deployments:
        cp.kubectl("-n", ns, "scale", "deployment", name, "--replicas=0")
        watch(
            cp, "pods", ns, lambda pods: not pods, selector=CHART_OPERATOR, timeout=120, what="the operator pods to go"
        )
    try:
        yield
    finally:
        for ns, name, replicas in deployments:
            cp.kubectl("-n", ns, "scale", "deployment", name, f"--replicas={replicas}")
            cp.kubectl("-n", ns, "rollout", "status", "deployment", name, "--timeout=180s", timeout=190)
        for _, start in processes:
            start()
