"""A FineTuneJob on several pods, end to end: real API server, Job and EndpointSlice controllers,
scheduler; kwok plays the kubelets of two fake nodes with 8 GPUs each (no container runs: the
tests end pods with the exit code and termination message the trainer's launcher would give)."""

from __future__ import annotations

import pytest

from tuneroute_testing.control_plane import wait_until
from tuneroute_testing.k8s import apply, condition, events, example, get, wait_phase

pytestmark = pytest.mark.cluster


def _example_on(name: str, **resources) -> dict:
    """examples/10-finetunejob with its resources changed (and no hub token Secret to need)."""
    ftj = example("10-finetunejob")
    ftj["metadata"] = {"name": name}
    ftj["spec"].pop("secrets", None)
    ftj["spec"]["resources"].update(resources)
    return ftj


def _pods(cp, namespace: str, job: str, uid: str | None = None) -> list[dict]:
    pods = cp.get("pods", "-n", namespace, "-l", f"job-name={job}")["items"]
    return [p for p in pods if uid is None or p["metadata"]["labels"].get("batch.kubernetes.io/controller-uid") == uid]


def _running(cp, namespace: str, job: dict, n: int) -> list[dict]:
    uid = job["metadata"]["uid"]

    def all_running():
        pods = [p for p in _pods(cp, namespace, job["metadata"]["name"], uid) if p["status"].get("phase") == "Running"]
        return pods if len(pods) == n else None

    return wait_until(all_running, 60, f"{n} running pods of Job {job['metadata']['name']}")


def test_two_nodes_of_eight_gpus_run_as_an_indexed_job_restarted_whole_when_a_rank_fails(
    control_plane, operator, namespace, storage
):
    cp = control_plane
    storage()
    apply(cp, namespace, _example_on("dist", gpus=8, nodes=2))
    job = wait_until(lambda: get(cp, namespace, "job", "dist"), 60, "the trainer Job")
    service = get(cp, namespace, "service", "dist-ranks")
    assert service["spec"]["clusterIP"] == "None"
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == (
        "Indexed",
        2,
        2,
    )
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--nnodes=2" in args and "--nproc-per-node=8" in args
    assert "--rdzv-endpoint=dist-0.dist-ranks:29400" in args

    # The scheduler puts one pod on each 8-GPU node; the Job names them dist-0 and dist-1 under
    # the headless Service, whose endpoints list both (the rendezvous address is pod 0's name).
    pods = _running(cp, namespace, job, 2)
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["gpu-node-0", "gpu-node-1"]
    assert sorted(p["spec"]["hostname"] for p in pods) == ["dist-0", "dist-1"]
    assert {p["spec"]["subdomain"] for p in pods} == {"dist-ranks"}
    for p in pods:
        env = {e["name"]: e for e in p["spec"]["containers"][0]["env"]}
        assert "JOB_COMPLETION_INDEX" in env and "TUNEROUTE_RDZV_ID" in env

    def endpoints():
        slices = cp.get("endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=dist-ranks")["items"]
        names = sorted(e.get("hostname") for s in slices for e in s.get("endpoints") or [])
        return names if names == ["dist-0", "dist-1"] else None

    wait_until(endpoints, 60, "both pods behind the headless Service")
    ftj = wait_phase(cp, namespace, "dist", "Running")
    assert ftj["status"]["attempts"] == 1

    # Rank 9 dies: the whole attempt ends (the Job controller stops the other pod) and the next
    # attempt is a new Job, dist-a2 (new pod names, new rendezvous id), every rank resuming from
    # the last checkpoint. The failed attempt's Job and pods stay, to read.
    crash = "rank 9 (pod 1): training failed: RuntimeError: CUDA error: an illegal memory access"
    pod1 = next(p for p in pods if p["spec"]["hostname"] == "dist-1")
    cp.finish_pod(namespace, pod1["metadata"]["name"], exit_code=1, message=crash)
    second = wait_until(lambda: get(cp, namespace, "job", "dist-a2"), 60, "the next attempt's Job")
    assert second["metadata"]["annotations"]["tuneroute.io/attempt"] == "2"
    args = second["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--rdzv-endpoint=dist-a2-0.dist-ranks:29400" in args
    # (the operator acts on the Job's FailureTarget; Failed follows once its pods are gone)
    wait_until(lambda: condition(get(cp, namespace, "job", "dist"), "Failed"), 60, "attempt 1's Job to be Failed")
    pods = _running(cp, namespace, second, 2)
    assert sorted(p["spec"]["hostname"] for p in pods) == ["dist-a2-0", "dist-a2-1"]
    ftj = wait_phase(cp, namespace, "dist", "Running")
    assert ftj["status"]["attempts"] == 2 and ftj["status"]["jobName"] == "dist-a2"
    header, row = cp.kubectl("-n", namespace, "get", "ftj", "dist", "-o", "wide").stdout.splitlines()[:2]
    at = header.index("ATTEMPTS")
    assert row[at:].split()[0] == "2"  # what `kubectl get` shows (empty columns shift split() positions)
    # kopf posts Events from a queue: the Restarting one may land after the status says Running.
    restarting = wait_until(
        lambda: [e for e in events(cp, namespace, "dist") if e["reason"] == "Restarting"], 30, "the Restarting Event"
    )
    assert restarting[0]["type"] == "Warning"
    assert restarting[0]["message"].startswith(
        f"attempt 1 failed: {crash}; restarting every pod from the last checkpoint (attempt 2 of at most 4)"
    )

    # Invalid input (exit code 2) on any rank fails at once: no third attempt.
    bad = "rank 0 (pod 0): dataset.id: cannot load dataset: DatasetNotFoundError: no such dataset"
    cp.finish_pod(namespace, pods[0]["metadata"]["name"], exit_code=2, message=bad)
    ftj = wait_phase(cp, namespace, "dist", "Failed")
    assert condition(ftj, "Failed")["reason"] == "PodFailurePolicy"
    assert bad in ftj["status"]["message"] and ftj["status"]["attempts"] == 2


def test_three_pods_on_two_gpu_nodes_say_that_only_two_are_scheduled_and_why(
    control_plane, operator, namespace, storage
):
    cp = control_plane
    storage()
    apply(cp, namespace, _example_on("three", gpus=8, nodes=3))

    def partly():
        ftj = get(cp, namespace, "finetunejob", "three")
        ready = condition(ftj, "Ready") if ftj else None
        return ftj if ready and ready["reason"] == "PartiallyScheduled" else None

    ftj = wait_until(partly, 60, "the partial-scheduling verdict")
    assert ftj["status"]["phase"] == "Pending"
    assert ftj["status"]["message"].startswith("2 of 3 training pods scheduled")
    assert "Insufficient nvidia.com/gpu" in ftj["status"]["message"]


def test_several_nodes_refuse_an_output_claim_only_one_node_can_mount(control_plane, operator, namespace):
    cp = control_plane
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "single-node"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    apply(cp, namespace, claim)
    ftj = _example_on("rwo", gpus=8, nodes=2)
    ftj["spec"]["output"] = {"pvc": "single-node"}
    apply(cp, namespace, ftj)

    def refused():
        ftj = get(cp, namespace, "finetunejob", "rwo")
        ready = condition(ftj, "Ready") if ftj else None
        return ftj if ready and ready["reason"] == "SharedStorageRequired" else None

    ftj = wait_until(refused, 60, "the shared-storage verdict")
    assert ftj["status"]["phase"] == "Pending"
    assert ftj["status"]["message"].startswith("spec.output.pvc: claim single-node is ReadWriteOnce;")
    assert get(cp, namespace, "job", "rwo") is None  # nothing runs that could not finish
    wait_until(  # Events are posted from kopf's queue, after the status
        lambda: [
            e for e in events(cp, namespace, "rwo") if (e["type"], e["reason"]) == ("Warning", "SharedStorageRequired")
        ],
        30,
        "the SharedStorageRequired Warning",
    )
