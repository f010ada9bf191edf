"""The chart installed with the real helm, and the operator running with its ServiceAccount."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tuneroute_testing import REPO
from tuneroute_testing.control_plane import ControlPlane
from tuneroute_testing.k8s import apply, hostpath_volume, watch_one
from tuneroute_testing.operator_process import OperatorProcess, service_account_kubeconfig

pytestmark = pytest.mark.cluster


@dataclass
class Release:
    name: str
    namespace: str
    service_account: str


@pytest.fixture(scope="session")
def release(control_plane: ControlPlane) -> Release:
    """`helm install` of charts/tuneroute (CRDs, RBAC, ServiceAccount); replicas=0 because
    kwok nodes run no containers: the operator runs as a host process instead."""
    ns = "tuneroute-system"
    control_plane.kubectl("create", "namespace", ns, check=False)
    control_plane.wait_for_default_service_account(ns)
    control_plane.helm(
        "upgrade",
        "--install",
        "tuneroute",
        str(REPO / "charts" / "tuneroute"),
        "-n",
        ns,
        "--set",
        "replicas=0",
        "--wait",
    )
    # helm never upgrades CRDs: apply them as the README tells users to (a reused cluster may hold older ones).
    control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "charts" / "tuneroute" / "crds")
    )
    control_plane.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/finetunejobs.tuneroute.io",
        "crd/modelroutes.tuneroute.io",
        "--timeout=60s",
    )
    return Release("tuneroute", ns, "tuneroute")


@pytest.fixture(scope="session")
def operator(control_plane: ControlPlane, release: Release, tmp_path_factory) -> OperatorProcess:
    tmp = tmp_path_factory.mktemp("operator")
    kubeconfig = service_account_kubeconfig(
        control_plane, release.namespace, release.service_account, tmp / "kubeconfig"
    )
    op = OperatorProcess(kubeconfig, tmp / "operator.log").start()
    yield op
    op.stop()


@pytest.fixture
def scoped(operator, namespace, tmp_path):
    """An operator that watches this test's namespace alone (the session's one is stopped
    meanwhile), so that what it does and counts is about this test's objects and nothing else."""
    operator.stop()
    scoped = OperatorProcess(operator.kubeconfig, tmp_path / "scoped.log", {"TUNEROUTE_NAMESPACES": namespace})
    try:
        yield scoped.start()
    finally:
        scoped.stop()
        operator.start()


@pytest.fixture
def storage(control_plane: ControlPlane, namespace: str):
    """A PVC in the test's namespace, bound to a hostPath PV made for it (no provisioner here)."""
    made = []

    def bind(claim: str = "tuneroute-adapters") -> str:
        pv = f"pv-{namespace}-{claim}"[:63]
        request = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "100Gi"}}}
        apply(
            control_plane,
            namespace,
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim}, "spec": request},
        )
        apply(control_plane, None, hostpath_volume(pv, f"/tmp/{pv}", namespace, claim))
        made.append(pv)
        # Bound before a pod needs it: a loaded controller manager can take tens of seconds.
        watch_one(
            control_plane,
            "persistentvolumeclaims",
            namespace,
            claim,
            lambda c: (c.get("status") or {}).get("phase") == "Bound",
            timeout=120,
            what=f"claim {claim} to be bound to {pv}",
        )
        return pv

    yield bind
    for pv in made:
        control_plane.kubectl("delete", "pv", pv, "--wait=false", check=False)
