"""Session fixtures shared by the suites: the local cluster and a namespace per test.

The cluster (tests/cluster/up.sh) is real: etcd, kube-apiserver, controller manager,
scheduler built from Go modules, kwok nodes with GPUs, and a real node (containerd, kubelet,
kube-proxy, CoreDNS) where CPU-only pods run. It starts once per session.
"""

from __future__ import annotations

import fcntl
import uuid

import pytest

from tuneroute_testing import REPO, running_operators
from tuneroute_testing.control_plane import ControlPlane
from tuneroute_testing.test_groups import cluster_dir, cluster_group


def pytest_itemcollected(item):
    """The tests of the local cluster form groups (tuneroute_testing.test_groups): on a parallel
    run (.ci/run: pytest-xdist, `--dist loadgroup`) each group runs in one worker, in order,
    against that worker's cluster, while the in-process tests (training, routing) run beside
    them: the cluster tests mostly wait on pods and the API server, the others mostly compute."""
    group = cluster_group(item)
    if group:
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def shown(request):
    """`with shown():` lets a long set-up step's progress (builds, image imports) reach the
    terminal as it happens instead of pytest's capture."""
    return request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled


@pytest.fixture(scope="session")
def control_plane(shown):
    directory = cluster_dir()
    # One process per cluster: a second one (another run on the same directory) would start and
    # stop the same cluster under the first one's tests.
    with open(f"{directory}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pytest.fail(f"another test process uses the cluster in {directory}: set TUNEROUTE_TEST_CLUSTER_DIR")
        with shown():
            cp = ControlPlane.up(directory)
        yield cp
        cp.down()


@pytest.fixture
def namespace(control_plane):
    """A fresh namespace, deleted (without waiting) after the test."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    control_plane.wait_for_default_service_account(name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def crds(control_plane):
    """The generated CRDs, applied as the README tells users to (no chart, no operator)."""
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/finetunejobs.tuneroute.io", "crd/modelroutes.tuneroute.io"
    )


@pytest.fixture(scope="module")
def no_operator(control_plane):
    """Tests that run the reconcilers themselves must be the only ones acting on their objects:
    every running operator (the chart's pod, processes the session started) is paused for the
    module, and runs again afterwards."""
    with running_operators.paused(control_plane):
        yield


@pytest.fixture
def kube(control_plane, crds, no_operator):
    """The operator's own API client (tuneroute_operator.kube.Kube) on the test cluster."""
    from kubernetes import config

    from tuneroute_operator.kube import Kube

    return Kube(config.new_client_from_config(str(control_plane.kubeconfig)))
