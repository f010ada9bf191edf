"""Progress snapshots (pure) and the reporter that patches them into a FineTuneJob's status."""

import pytest

from tuneroute_testing.k8s import apply, get, small_finetunejob
from tuneroute_trainer.config import Progress, ReportSpec
from tuneroute_trainer.progress import StatusReporter, progress_snapshot


def test_snapshot_rates_and_eta_count_only_this_process():
    # resumed at step 100 with 40k tokens seen; 50 more steps and 20k tokens in 10 s
    snap = progress_snapshot(150, 200, 1.23456789, 60_000, 10.0, 0.75, start_step=100, start_tokens=40_000).wire()
    assert snap["step"] == 150 and snap["totalSteps"] == 200 and snap["percent"] == 75.0
    assert snap["tokensPerSecond"] == 2000.0
    assert snap["etaSeconds"] == 10.0  # 50 steps left at 5 steps/s
    assert snap["loss"] == 1.234568 and snap["epoch"] == 0.75
    assert snap["updatedAt"].endswith("Z") and "T" in snap["updatedAt"]


def test_snapshot_omits_unknowns():
    snap = progress_snapshot(0, 10, None, 0, 0.0, None).wire()
    assert "loss" not in snap and "etaSeconds" not in snap and snap["percent"] == 0.0


@pytest.fixture
def finetunejob(control_plane, crds, namespace):
    apply(control_plane, namespace, small_finetunejob("ft-1"))
    return namespace, "ft-1"


def _api(control_plane):
    from kubernetes import client, config

    return client.CustomObjectsApi(config.new_client_from_config(str(control_plane.kubeconfig)))


def _progress(control_plane, namespace: str) -> dict | None:
    return (get(control_plane, namespace, "finetunejob", "ft-1").get("status") or {}).get("progress")


@pytest.mark.cluster
def test_reporter_patches_the_finetunejob_status_and_throttles(control_plane, finetunejob):
    """Against the real API server, which prunes any key its schema does not have: what comes
    back is what the trainer wrote. The clock is the test's, to step through the throttle."""
    namespace, name = finetunejob
    now = [0.0]
    spec = ReportSpec(namespace=namespace, name=name, interval_seconds=10)
    rep = StatusReporter(spec, api=_api(control_plane), clock=lambda: now[0])
    first = progress_snapshot(1, 4, 2.5, 1000, 2.0, 0.25)
    assert rep.report(first) is True
    assert _progress(control_plane, namespace) == first.wire()  # every key kept: none mistyped
    now[0] = 5
    assert rep.report(Progress(step=2)) is False  # within the interval: not sent
    assert _progress(control_plane, namespace)["step"] == 1
    assert rep.report(Progress(step=3), force=True) is True  # the final one always goes out
    assert _progress(control_plane, namespace)["step"] == 3
    now[0] = 16
    assert rep.report(Progress(step=4)) is True
    assert _progress(control_plane, namespace)["step"] == 4


@pytest.mark.cluster
def test_reporter_failures_are_not_fatal(control_plane, finetunejob, caplog):
    namespace, _ = finetunejob
    rep = StatusReporter(ReportSpec(namespace=namespace, name="missing"), api=_api(control_plane))
    assert rep.report(Progress(step=1)) is False
    assert f"status patch of {namespace}/missing failed" in caplog.text and "Not Found" in caplog.text
