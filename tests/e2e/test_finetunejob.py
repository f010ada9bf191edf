"""FineTuneJob end to end: real API server, real controllers and scheduler, kwok GPU nodes,
the operator as the chart's pod on the real node. kwok stands in for the GPU nodes' kubelet
(no GPU here): tests end the training pods with an exit code and a termination message."""

from __future__ import annotations

import json

import pytest
import yaml

from tuneroute_testing.k8s import (
    REPO,
    apply,
    condition,
    created,
    events,
    get,
    running_pod,
    small_finetunejob,
    wait_children_gone,
    wait_phase,
    watch,
    watch_one,
)
from tuneroute_testing.process import wait_until
from tuneroute_trainer.config import TrainerConfig

pytestmark = pytest.mark.cluster


def test_examples_create_the_trainer_job_with_gpu_placement_and_a_valid_config(
    control_plane, operator, namespace, storage
):
    cp = control_plane
    storage()
    cp.kubectl("-n", namespace, "apply", "-f", str(REPO / "examples"))
    job = created(cp, "jobs", namespace, "qwen3-support")
    ftj = get(cp, namespace, "finetunejob", "qwen3-support")

    pod = job["spec"]["template"]["spec"]
    trainer = pod["containers"][0]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    hf = next(e for e in trainer["env"] if e["name"] == "HF_TOKEN")
    assert hf["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert job["spec"]["backoffLimit"] == 3 and job["spec"]["activeDeadlineSeconds"] == 86400
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("FineTuneJob", ftj["metadata"]["uid"], True)

    # The ConfigMap is the trainer's own config model: it must validate as the trainer reads it.
    cm = get(cp, namespace, "configmap", "qwen3-support-trainer")
    config = TrainerConfig.model_validate(yaml.safe_load(cm["data"]["trainer.yaml"]))
    assert config.model.id == "Qwen/Qwen3-30B-A3B" and config.lora.rank == 16 and config.lora.experts
    name = config.output.adapter_name  # versioned: <job>-<hash of uid and spec>
    assert name.startswith("qwen3-support-") and config.output.dir == f"/mnt/pvc/tuneroute-adapters/adapters/{name}"
    assert config.report.name == "qwen3-support" and config.report.namespace == namespace

    # The scheduler really places it on a GPU node; the FineTuneJob follows the pod.
    running_pod(cp, namespace, "qwen3-support")
    wait_phase(cp, namespace, "qwen3-support", "Running")
    pod_obj = cp.get("pods", "-n", namespace, "-l", "job-name=qwen3-support")["items"][0]
    assert pod_obj["spec"]["nodeName"].startswith("gpu-node-")


def test_pod_success_turns_the_job_succeeded_and_visible_in_kubectl_get(control_plane, operator, namespace, storage):
    cp = control_plane
    storage()
    apply(cp, namespace, small_finetunejob("ok"))
    pod = running_pod(cp, namespace, "ok")
    wait_phase(cp, namespace, "ok", "Running")
    cp.finish_pod(namespace, pod, exit_code=0)
    ftj = wait_phase(cp, namespace, "ok", "Succeeded")

    assert condition(ftj, "Ready")["status"] == "True"
    assert condition(ftj, "Succeeded")["reason"] == "TrainingSucceeded"
    name = ftj["status"]["adapterName"]
    assert name.startswith("ok-") and ftj["status"]["adapter"] == {
        "name": name,
        "pvc": "tuneroute-adapters",
        "path": f"adapters/{name}",
        "uri": f"pvc://tuneroute-adapters/adapters/{name}",
    }
    assert ftj["status"]["completionTime"] and ftj["status"]["attempts"] == 1
    table = cp.kubectl("-n", namespace, "get", "ftj", "ok").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "PHASE", "MODEL"]
    assert table[1].split()[:3] == ["ok", "Succeeded", "Qwen/Qwen3-30B-A3B"]
    reasons = {e["reason"] for e in events(cp, namespace, "ok") if e["involvedObject"]["kind"] == "FineTuneJob"}
    assert {"TrainerRunning", "TrainingSucceeded"} <= reasons


def test_pod_failures_past_the_backoff_limit_fail_the_job_with_the_trainers_message(
    control_plane, operator, namespace, storage
):
    cp = control_plane
    storage()
    apply(cp, namespace, small_finetunejob("flaky", backoffLimit=1))
    first = running_pod(cp, namespace, "flaky")
    cp.finish_pod(namespace, first, exit_code=1, message="CUDA out of memory at step 12")
    second = running_pod(cp, namespace, "flaky", exclude=(first,))
    ftj = get(cp, namespace, "finetunejob", "flaky")
    assert ftj["status"]["phase"] in ("Pending", "Running")  # one retry left: not failed yet
    cp.finish_pod(namespace, second, exit_code=1, message="CUDA out of memory at step 3")
    ftj = wait_phase(cp, namespace, "flaky", "Failed")

    failed = condition(ftj, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "BackoffLimitExceeded"
    assert "CUDA out of memory" in failed["message"] and "CUDA out of memory" in ftj["status"]["message"]
    assert ftj["status"]["attempts"] == 2
    assert condition(ftj, "Ready")["status"] == "False"
    line = cp.kubectl("-n", namespace, "get", "ftj", "flaky", "--no-headers").stdout.split()
    assert line[1] == "Failed"
    warnings = [
        e for e in events(cp, namespace, "flaky") if e["type"] == "Warning" and e["reason"] == "BackoffLimitExceeded"
    ]
    assert warnings, "a failed FineTuneJob gets a Warning event"


def test_invalid_input_exit_code_fails_at_once_without_retries(control_plane, operator, namespace, storage):
    """Exit code 2 is the trainer's 'bad input' (missing dataset file, wrong columns...):
    retrying cannot help, so the Job's podFailurePolicy fails it on the first attempt."""
    cp = control_plane
    storage()
    apply(cp, namespace, small_finetunejob("bad-data", backoffLimit=5))
    pod = running_pod(cp, namespace, "bad-data")
    cp.finish_pod(namespace, pod, exit_code=2, message="dataset.path: file /mnt/pvc/data/train.jsonl not found")
    ftj = wait_phase(cp, namespace, "bad-data", "Failed")
    assert condition(ftj, "Failed")["reason"] == "PodFailurePolicy"
    assert "dataset.path" in ftj["status"]["message"]
    assert ftj["status"]["attempts"] == 1


def test_suspend_and_resume(control_plane, operator, namespace, storage):
    cp = control_plane
    storage()
    apply(cp, namespace, small_finetunejob("pausable"))
    running_pod(cp, namespace, "pausable")
    cp.kubectl("-n", namespace, "patch", "ftj", "pausable", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    ftj = wait_phase(cp, namespace, "pausable", "Suspended")
    assert condition(ftj, "Suspended")["status"] == "True"
    assert get(cp, namespace, "job", "pausable")["spec"]["suspend"] is True
    watch(cp, "pods", namespace, lambda pods: not pods, selector="job-name=pausable", what="the suspended pod to go")
    cp.kubectl("-n", namespace, "patch", "ftj", "pausable", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    running_pod(cp, namespace, "pausable")
    wait_phase(cp, namespace, "pausable", "Running")


def test_deleting_the_finetunejob_deletes_its_children(control_plane, operator, namespace):
    cp = control_plane
    apply(cp, namespace, small_finetunejob("doomed"))
    created(cp, "jobs", namespace, "doomed")
    cp.kubectl("-n", namespace, "delete", "ftj", "doomed")
    wait_children_gone(
        cp, namespace, "jobs,configmaps,serviceaccounts,roles,rolebindings", "tuneroute.io/finetunejob=doomed"
    )


def test_trainer_service_account_may_patch_only_its_own_status(control_plane, operator, namespace):
    cp = control_plane
    apply(cp, namespace, small_finetunejob("scoped"))
    created(cp, "rolebindings", namespace, "scoped-trainer")
    sa = f"system:serviceaccount:{namespace}:scoped-trainer"

    def can(*args):
        return cp.kubectl("auth", "can-i", *args, "-n", namespace, "--as", sa, check=False).stdout.strip() == "yes"

    assert can("patch", "finetunejobs.tuneroute.io/scoped", "--subresource=status")
    assert not can("patch", "finetunejobs.tuneroute.io/other", "--subresource=status")
    assert not can("patch", "finetunejobs.tuneroute.io/scoped")
    assert not can("get", "secrets")


def test_progress_reported_by_the_trainer_shows_in_kubectl_get_and_survives_operator_updates(
    control_plane, operator, namespace, storage
):
    """The trainer patches status.progress (merge patch); the operator's own status writes keep it."""
    cp = control_plane
    storage()
    apply(cp, namespace, small_finetunejob("progress"))
    running_pod(cp, namespace, "progress")
    wait_phase(cp, namespace, "progress", "Running")
    progress = {
        "step": 120,
        "totalSteps": 400,
        "percent": 30.0,
        "loss": 1.234,
        "tokensPerSecond": 5120.5,
        "etaSeconds": 640,
        "epoch": 0.3,
    }
    cp.kubectl(
        "-n",
        namespace,
        "patch",
        "ftj",
        "progress",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"progress": progress}}),
    )
    wide = cp.kubectl("-n", namespace, "get", "ftj", "progress", "-o", "wide").stdout
    header, row = wide.splitlines()[:2]
    cells = dict(zip(header.split(), row.split()))
    assert (
        cells["STEP"] == "120" and cells["PROGRESS"] == "30" and cells["LOSS"] == "1.234" and cells["ETA(S)"] == "640"
    )
    pod = running_pod(cp, namespace, "progress")
    cp.finish_pod(namespace, pod, exit_code=0)
    ftj = wait_phase(cp, namespace, "progress", "Succeeded")
    assert ftj["status"]["progress"]["step"] == 120


def test_a_job_no_node_can_fit_says_why_it_waits(control_plane, operator, namespace, storage):
    cp = control_plane
    storage()
    apply(cp, namespace, small_finetunejob("too-big", resources={"gpus": 9}))  # the kwok nodes have 8 each

    def unschedulable(ftj):
        ready = condition(ftj, "Ready")
        # (the first verdict may be about the volume, bound a moment after the pod is created)
        return ready and ready["reason"] == "Unschedulable" and "nvidia.com/gpu" in ready["message"]

    ftj = watch_one(cp, "finetunejobs.tuneroute.io", namespace, "too-big", unschedulable, what="the GPU verdict")
    assert ftj["status"]["phase"] == "Pending"
    assert "Insufficient nvidia.com/gpu" in ftj["status"]["message"]


def test_a_finished_job_deleted_by_its_ttl_stays_succeeded_even_across_operator_restarts(
    control_plane, operator, namespace, storage
):
    """ttlSecondsAfterFinished: the Job controller's TTL deletes the finished Job. The FineTuneJob
    stays Succeeded with its adapter (a route keeps serving it), and a restarted operator does not
    create a GPU Job for it again."""
    cp = control_plane
    storage()
    apply(cp, namespace, small_finetunejob("short-lived", ttlSecondsAfterFinished=0))
    cp.finish_pod(namespace, running_pod(cp, namespace, "short-lived"), exit_code=0)
    wait_phase(cp, namespace, "short-lived", "Succeeded")
    watch(
        cp,
        "jobs.batch",
        namespace,
        lambda jobs: not jobs,
        name="short-lived",
        what="the TTL controller to delete the Job",
    )

    operator.restart()  # the chart's pod deleted: a new one, its counters from zero
    wait_until(
        lambda: operator.sample("tuneroute_reconciles_total", kind="FineTuneJob", result="ok") >= 1, 60, "a resume"
    )
    ftj = get(cp, namespace, "finetunejob", "short-lived")
    name = ftj["status"]["adapterName"]
    assert ftj["status"]["phase"] == "Succeeded" and ftj["status"]["adapter"]["path"] == f"adapters/{name}"
    assert condition(ftj, "Ready")["status"] == "True"
    assert get(cp, namespace, "job", "short-lived") is None
    assert not cp.get("pods", "-n", namespace, "-l", "job-name=short-lived")["items"]


def test_a_second_finetunejob_writing_to_the_same_output_fails_before_it_starts(control_plane, operator, namespace):
    """Two jobs in one output directory would overwrite each other's adapter and checkpoints:
    the one created later fails at once, naming the other; the first trains on."""
    cp = control_plane
    output = {"pvc": "tuneroute-adapters", "path": "adapters/shared"}
    apply(cp, namespace, small_finetunejob("first", output=output))
    created(cp, "jobs.batch", namespace, "first")
    apply(cp, namespace, small_finetunejob("second", output=output))
    ftj = wait_phase(cp, namespace, "second", "Failed")
    assert condition(ftj, "Failed")["reason"] == "OutputInUse"
    assert "already the output of FineTuneJob first" in ftj["status"]["message"]
    assert get(cp, namespace, "job", "second") is None
    warnings = [e for e in events(cp, namespace, "second") if e["type"] == "Warning" and e["reason"] == "OutputInUse"]
    assert len(warnings) == 1
