"""Child state -> FineTuneJob / ModelRoute status, as pure functions."""

from __future__ import annotations

from tuneroute_operator.status import conditions as cond
from tuneroute_operator.status.finetunejob import attempts, phase_and_conditions


def _job(conditions=(), **status):
    return {
        "status": {
            "conditions": [{"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conditions],
            **status,
        }
    }


def _by_type(conds):
    return {c.type: c for c in conds}


def test_no_job_yet_is_pending():
    phase, conds, _ = phase_and_conditions(None, [], suspend=False)
    assert phase == "Pending" and _by_type(conds)["Ready"].status is False


def test_ready_pod_means_running():
    phase, conds, _ = phase_and_conditions(_job(active=1, ready=1), [], suspend=False)
    assert (
        phase == "Running"
        and _by_type(conds)["Running"].status is True
        and _by_type(conds)["Succeeded"].status is False
    )


def test_complete_job_is_succeeded_and_ready():
    phase, conds, _ = phase_and_conditions(
        _job([("Complete", "CompletionsReached", "")], succeeded=1), [], suspend=False
    )
    assert phase == "Succeeded" and _by_type(conds)["Ready"].status is True


def test_failed_job_carries_the_latest_pods_termination_message():
    pods = [
        {
            "metadata": {"name": "a"},
            "status": {
                "containerStatuses": [
                    {"state": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T00:00:01Z", "message": "old"}}}
                ]
            },
        },
        {
            "metadata": {"name": "b"},
            "status": {
                "containerStatuses": [
                    {
                        "state": {
                            "terminated": {
                                "exitCode": 1,
                                "finishedAt": "2026-01-01T00:00:09Z",
                                "message": "lora.rank: must be >= 1",
                            }
                        }
                    }
                ]
            },
        },
    ]
    job = _job([("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")], failed=2)
    phase, conds, message = phase_and_conditions(job, pods, suspend=False)
    assert phase == "Failed"
    failed = _by_type(conds)["Failed"]
    assert failed.reason == "BackoffLimitExceeded" and message.endswith("lora.rank: must be >= 1")
    assert attempts(job) == 2


def test_suspended_job():
    phase, conds, _ = phase_and_conditions(_job([("Suspended", "JobSuspended", "")]), [], suspend=True)
    assert phase == "Suspended" and _by_type(conds)["Suspended"].status is True


def _wire(conds):
    return [c.wire() for c in conds]  # as read back from the API server


def test_transition_time_moves_only_when_status_changes():
    first = cond.merge(None, [cond.Cond("Ready", False, "Pending")], "t1", 1)
    same = cond.merge(_wire(first), [cond.Cond("Ready", False, "StillPending", "x")], "t2", 1)
    flipped = cond.merge(_wire(same), [cond.Cond("Ready", True, "Done")], "t3", 1)
    assert [c[0].last_transition_time for c in (first, same, flipped)] == ["t1", "t1", "t3"]
    assert cond.transitions(_wire(first), same) == same  # reason changed: worth an event
    assert cond.transitions(_wire(same), same) == []
