from tuneroute_trainer.config import ReportSpec
from tuneroute_trainer.progress import StatusReporter, progress_snapshot


def test_snapshot_rates_and_eta_count_only_this_process():
    # resumed at step 100 with 40k tokens seen; 50 more steps and 20k tokens in 10 s
    snap = progress_snapshot(150, 200, 1.23456789, 60_000, 10.0, 0.75, start_step=100, start_tokens=40_000)
    assert snap["step"] == 150 and snap["totalSteps"] == 200 and snap["percent"] == 75.0
    assert snap["tokensPerSecond"] == 2000.0
    assert snap["etaSeconds"] == 10.0  # 50 steps left at 5 steps/s
    assert snap["loss"] == 1.234568 and snap["epoch"] == 0.75
    assert snap["updatedAt"].endswith("Z") and "T" in snap["updatedAt"]


def test_snapshot_omits_unknowns():
    snap = progress_snapshot(0, 10, None, 0, 0.0, None)
    assert "loss" not in snap and "etaSeconds" not in snap and snap["percent"] == 0.0


class FakeApi:
    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def patch_namespaced_custom_object_status(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.fail:
            raise RuntimeError("403 Forbidden")


def test_reporter_patches_the_finetunejob_status_and_throttles():
    now = [0.0]
    api = FakeApi()
    rep = StatusReporter(
        ReportSpec(namespace="team-a", name="ft-1", interval_seconds=10), api=api, clock=lambda: now[0]
    )
    assert rep.report({"step": 1}) is True
    now[0] = 5
    assert rep.report({"step": 2}) is False  # within the interval
    assert rep.report({"step": 3}, force=True) is True  # the final one always goes out
    now[0] = 16
    assert rep.report({"step": 4}) is True
    args, kwargs = api.calls[0]
    assert args == ("tuneroute.io", "v1alpha1", "team-a", "finetunejobs", "ft-1", {"status": {"progress": {"step": 1}}})
    assert kwargs == {"_content_type": "application/merge-patch+json"}
    assert [c[0][5]["status"]["progress"]["step"] for c in api.calls] == [1, 3, 4]


def test_reporter_failures_are_not_fatal(caplog):
    rep = StatusReporter(ReportSpec(namespace="ns", name="job"), api=FakeApi(fail=True))
    assert rep.report({"step": 1}) is False
    assert "status patch of ns/job failed: 403 Forbidden" in caplog.text
