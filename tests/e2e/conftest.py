"""The chart installed with the real helm: the operator runs as the chart's pod, from the
image built from operator/Dockerfile, on the real node; the router and trainer images it
puts into its children are the ones built from their Dockerfiles."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tuneroute_testing import REPO, running_operators
from tuneroute_testing.control_plane import ControlPlane
from tuneroute_testing.k8s import apply, chart_image_values, hostpath_volume, watch_one
from tuneroute_testing.node import BackgroundImport, image_refs
from tuneroute_testing.operator_pod import OperatorPod
from tuneroute_testing.operator_process import OperatorProcess, service_account_kubeconfig
from tuneroute_testing.serving import ADAPTERS, pv_dir, stage_tiny_model
from tuneroute_testing.test_groups import cluster_group

pytestmark = pytest.mark.cluster
CHART = str(REPO / "charts" / "tuneroute")


@dataclass
class Release:
    name: str
    namespace: str
    service_account: str
    images: dict[str, str]


@pytest.fixture(scope="session")
def images(control_plane: ControlPlane, shown) -> dict[str, str]:
    """The operator and router images in the real node (built from their Dockerfiles when
    missing, minutes the first time), and the trainer's ref: tests that run the trainer
    import it themselves (trainer_image), it is large."""
    assert control_plane.node, "the e2e suite needs the real node (tests/cluster/up.sh without TUNEROUTE_REAL_NODE=0)"
    with shown():
        refs = control_plane.node.import_images("operator", "router")
    return {**refs, **image_refs("trainer")}


@pytest.fixture(scope="session")
def trainer_import(control_plane: ControlPlane, images, shown) -> Iterator[BackgroundImport]:
    """The trainer image (7 GB: minutes to import, more to build) going into the node in the
    background; trainer_image waits for it. Started outside pytest's capture, so its progress
    lines reach the terminal while the other tests run."""
    with shown():
        running = control_plane.node.start_import("trainer")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def _groups_with_trainer_pods(request) -> set[str | None]:
    return {cluster_group(item) for item in request.session.items if "trainer_image" in item.fixturenames}


@pytest.fixture(autouse=True)
def _start_the_trainer_import_early(request, _groups_with_trainer_pods):
    """From the first e2e test of a cluster group with tests that run the trainer image, the
    image is imported beside the tests that do not need it (a group, and so a cluster, without
    such tests never imports it)."""
    if cluster_group(request.node) in _groups_with_trainer_pods:
        request.getfixturevalue("trainer_import")


@pytest.fixture(scope="session")
def trainer_image(control_plane: ControlPlane, trainer_import: BackgroundImport, shown) -> str:
    with shown():
        return trainer_import.wait()["trainer"]


@pytest.fixture(scope="session")
def release(control_plane: ControlPlane, images) -> Release:
    """`helm install` of charts/tuneroute (CRDs, RBAC, ServiceAccount, the operator Deployment)."""
    ns = "tuneroute-system"
    control_plane.kubectl("create", "namespace", ns, check=False)
    control_plane.wait_for_default_service_account(ns)
    control_plane.helm(
        "upgrade", "--install", "tuneroute", CHART, "-n", ns, *chart_image_values(images), "--wait", "--timeout", "180s"
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
    return Release("tuneroute", ns, "tuneroute", images)


@pytest.fixture(scope="session")
def operator(control_plane: ControlPlane, release: Release) -> OperatorPod:
    """The chart's operator pod, Ready."""
    return OperatorPod(control_plane, release.namespace, release.name).wait_ready()


@pytest.fixture
def scoped(control_plane: ControlPlane, release: Release, operator: OperatorPod, namespace: str, tmp_path):
    """An operator that watches this test's namespace alone, so that what it does and counts is
    about this test's objects and nothing else: a process on this machine with the chart's
    ServiceAccount and the release's images (the chart's pod watches every namespace); the
    chart's operator (and any other running) is paused meanwhile."""
    kubeconfig = service_account_kubeconfig(
        control_plane, release.namespace, release.service_account, tmp_path / "kubeconfig"
    )
    env = {
        "TUNEROUTE_NAMESPACES": namespace,
        "TUNEROUTE_TRAINER_IMAGE": release.images["trainer"],
        "TUNEROUTE_ROUTER_IMAGE": release.images["router"],
    }
    scoped = OperatorProcess(kubeconfig, tmp_path / "scoped.log", env)
    with running_operators.paused(control_plane):
        try:
            yield scoped.start()
        finally:
            scoped.stop()


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


@pytest.fixture
def served_claim(storage, namespace: str) -> dict[str, Path]:
    """The adapters claim, bound, with what the serving FineTuneJobs train on staged in it (the
    tiny servable model, the chat data): {claim: its hostPath directory on this machine}."""
    storage(ADAPTERS)
    root = pv_dir(namespace, ADAPTERS)
    stage_tiny_model(root)
    return {ADAPTERS: root}
