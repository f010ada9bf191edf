"""Child state -> FineTuneJob / ModelRoute status, as pure functions."""

from __future__ import annotations

from tuneroute_operator.status import conditions as cond
from tuneroute_operator.status import gang
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


# Several pods (resources.nodes > 1): all-or-nothing attempts.


def _pod(name, phase="Pending", node=None, unschedulable=None, failed=None):
    """failed: (finishedAt, exit code, message)."""
    status = {"phase": phase, "conditions": []}
    if unschedulable:
        status["conditions"].append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}
        )
    if failed:
        at, code, message = failed
        status["phase"] = "Failed"
        status["containerStatuses"] = [
            {"state": {"terminated": {"exitCode": code, "finishedAt": at, "message": message}}}
        ]
    return {"metadata": {"name": name}, "spec": {"nodeName": node} if node else {}, "status": status}


def test_several_pods_run_only_when_all_of_them_run():
    job = _job(active=2, ready=1)
    one_running = [_pod("a", "Running", "gpu-node-0"), _pod("b", "Pending", "gpu-node-1")]
    phase, conds, message = phase_and_conditions(job, one_running, suspend=False, nodes=2)
    assert phase == "Pending" and _by_type(conds)["Ready"].reason == "PodPending" and "1 of 2" in message
    both = [_pod("a", "Running", "gpu-node-0"), _pod("b", "Running", "gpu-node-1")]
    assert phase_and_conditions(job, both, suspend=False, nodes=2)[0] == "Running"


def test_a_partly_scheduled_job_says_so_with_the_schedulers_reason():
    verdict = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    pods = [
        _pod("a", "Running", "gpu-node-0"),
        _pod("b", "Running", "gpu-node-1"),
        _pod("c", unschedulable=verdict),
    ]
    phase, conds, message = phase_and_conditions(_job(active=3), pods, suspend=False, nodes=3)
    assert phase == "Pending" and _by_type(conds)["Ready"].reason == "PartiallyScheduled"
    assert message.startswith("2 of 3 training pods scheduled") and verdict in message
    none = [_pod("a", unschedulable=verdict), _pod("b", unschedulable=verdict)]
    phase, conds, message = phase_and_conditions(_job(active=2), none, suspend=False, nodes=2)
    assert _by_type(conds)["Ready"].reason == "Unschedulable" and verdict in message


def test_the_failure_reported_is_the_rank_that_failed_first_not_the_ones_that_lost_it():
    pods = [
        _pod("a", failed=("2026-01-01T00:00:05Z", 1, "rank 0 (pod 0): lost contact with the other ranks: gloo")),
        _pod("b", failed=("2026-01-01T00:00:04Z", 1, "rank 9 (pod 1): training failed: RuntimeError: boom")),
        _pod("c", failed=("2026-01-01T00:00:01Z", 143, "stopped by SIGTERM")),
    ]
    assert gang.root_cause(pods) == "rank 9 (pod 1): training failed: RuntimeError: boom"
    assert gang.root_cause(pods[:1]) == "rank 0 (pod 0): lost contact with the other ranks: gloo"
    oom = [_pod("a", failed=("2026-01-01T00:00:05Z", 137, ""))]
    assert gang.root_cause(oom) == "exit (137)"


def test_a_failed_attempt_restarts_while_retries_remain_but_never_after_bad_input():
    job = {"metadata": {"annotations": {"tuneroute.io/attempt": "2"}}}
    assert gang.attempt(job) == 2 and attempts(job, nodes=2) == 2
    assert gang.current([{"metadata": {}}, job]) is job  # the latest attempt's Job
    assert gang.restart_due(job, "BackoffLimitExceeded", backoff_limit=3)
    assert not gang.restart_due(job, "BackoffLimitExceeded", backoff_limit=1)  # 2 attempts = 1 + 1 retry: done
    assert not gang.restart_due(job, "PodFailurePolicy", backoff_limit=3)  # exit code 2: invalid input
    assert not gang.restart_due(job, "DeadlineExceeded", backoff_limit=3)


def test_the_last_failed_attempt_reports_how_many_failed_and_the_root_cause():
    job = _job([("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")], failed=2)
    job["metadata"] = {"annotations": {"tuneroute.io/attempt": "4"}}
    pods = [_pod("b", failed=("2026-01-01T00:00:04Z", 1, "rank 9 (pod 1): training failed: NaN loss"))]
    phase, conds, message = phase_and_conditions(job, pods, suspend=False, nodes=2)
    assert phase == "Failed" and _by_type(conds)["Failed"].reason == "BackoffLimitExceeded"
    assert (
        message == "4 attempt(s) failed, no retry left (backoffLimit); last: rank 9 (pod 1): training failed: NaN loss"
    )


def test_a_job_that_is_about_to_fail_is_failed_already():
    """FailureTarget: the Job controller has decided (backoff limit, podFailurePolicy) and is
    terminating pods; Failed comes only once they are gone. The FineTuneJob says so at once."""
    job = _job([("FailureTarget", "PodFailurePolicy", "Container trainer exited with 2")], failed=1)
    phase, conds, message = phase_and_conditions(job, [], suspend=False)
    assert phase == "Failed" and _by_type(conds)["Failed"].reason == "PodFailurePolicy"
    assert message == "Container trainer exited with 2"


def test_finished_pods_the_job_has_not_counted_yet_are_attempts():
    job = _job(failed=1, active=0, uncountedTerminatedPods={"failed": ["uid-2"], "succeeded": ["uid-3"]})
    assert attempts(job) == 3
    assert attempts(None) == 0


def test_a_restarted_containers_last_termination_message_explains_the_failure():
    """The message of a container that ran again lives in lastState, not state."""
    pod = {
        "status": {
            "containerStatuses": [
                {
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                    "lastState": {
                        "terminated": {"exitCode": 2, "finishedAt": "t", "message": "dataset.path: not found"}
                    },
                }
            ]
        }
    }
    job = _job([("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")], failed=1)
    assert phase_and_conditions(job, [pod], suspend=False)[2].endswith(": dataset.path: not found")


def test_a_pod_that_finished_before_the_job_counted_it_keeps_the_job_running():
    """Between the trainer's exit and the Job's Complete condition the Job is neither ready nor
    done: the phase must not step back to Pending meanwhile."""
    job = _job(active=1, ready=0)
    for pod_phase in ("Running", "Succeeded"):
        phase, _, _ = phase_and_conditions(job, [{"status": {"phase": pod_phase}}], suspend=False)
        assert phase == "Running", pod_phase
    assert phase_and_conditions(job, [{"status": {"phase": "Pending"}}], suspend=False)[0] == "Pending"


def _verify_pod(exit_code: int, message: str) -> dict:
    term = {"exitCode": exit_code, "message": message, "finishedAt": "2026-11-28T10:00:00Z"}
    return {"status": {"containerStatuses": [{"state": {"terminated": term}}]}}


def _verify_job(condition: str) -> dict:
    return {"metadata": {"name": "qs-verify"}, "status": {"conditions": [{"type": condition, "status": "True"}]}}


def test_serving_verified_comes_from_the_gates_termination_message():
    import json

    from tuneroute_operator.status.finetunejob import serving

    ok = {
        "verified": True,
        "reason": "Verified",
        "vllmVersion": "0.32.0",
        "adapter": "qs-1234abcd",
        "seconds": 40.1,
        "weights": {"modules": 8, "tensors": 16, "maxAbsDiff": 1.3e-8, "maxRelDiff": 5e-7, "dtype": "float32"},
        "outputs": {
            "ran": True,
            "prompts": 4,
            "tokens": 8,
            "adapter": {"tokenAgreement": 1.0, "maxLogprobDiff": 1e-6},
            "base": {"tokenAgreement": 1.0, "maxLogprobDiff": 9e-7},
        },
    }
    cond, figures = serving(True, "Succeeded", _verify_job("Complete"), [_verify_pod(0, json.dumps(ok))])
    assert (cond.status, cond.reason) == (True, "Verified")
    assert "vLLM 0.32.0" in cond.message and "8 modules" in cond.message and "tokens 100%" in cond.message
    assert figures.weights.max_abs_diff == 1.3e-8 and figures.job_name == "qs-verify"

    tensor = "base_model.model.model.layers.0.mlp.experts.lora_A.weight"
    bad = {
        "verified": False,
        "reason": "TensorSkipped",
        "tensor": tensor,
        "vllmVersion": "0.32.0",
        "message": f"vLLM would skip tensor {tensor}: module ... is not a LoRA target of this engine",
    }
    cond, figures = serving(True, "Succeeded", _verify_job("Failed"), [_verify_pod(1, json.dumps(bad))])
    assert (cond.status, cond.reason) == (False, "TensorSkipped") and tensor in cond.message
    assert figures.tensor == tensor

    crash = serving(True, "Succeeded", _verify_job("Failed"), [_verify_pod(3, "Traceback ... CUDA error")])[0]
    assert (crash.status, crash.reason) == (False, "GateError") and "CUDA error" in crash.message
    running = serving(True, "Succeeded", {"metadata": {"name": "qs-verify"}, "status": {"active": 1}}, [])[0]
    assert (running.status, running.reason) == (None, "Verifying")
    assert serving(True, "Running", None, [])[0].reason == "AwaitingAdapter"
    assert serving(False, "Succeeded", None, [])[0].reason == "VerificationDisabled"


def test_a_verdict_with_few_figures_still_reads():
    import json

    from tuneroute_operator.status.finetunejob import serving

    terse = {"verified": True, "reason": "Verified", "vllmVersion": "0.32.0", "weights": {"modules": 96}}
    cond, _ = serving(True, "Succeeded", _verify_job("Complete"), [_verify_pod(0, json.dumps(terse))])
    assert (cond.status, cond.reason) == (True, "Verified") and "96 modules, max |ΔW diff| ?" in cond.message
