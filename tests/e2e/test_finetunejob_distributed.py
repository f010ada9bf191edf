"""A FineTuneJob on several pods, end to end: real API server, Job and EndpointSlice controllers,
scheduler; kwok plays the kubelets of two fake nodes with 8 GPUs each (no container runs: the
tests end pods with the exit code and termination message the trainer's launcher would give)."""

from __future__ import annotations

import pytest

from tuneroute_testing.k8s import apply, condition, created, example, get, wait_events, wait_phase, watch, watch_one

pytestmark = pytest.mark.cluster


def _example_on(name: str, **resources) -> dict:
    """examples/10-finetunejob with its resources changed (and no hub token Secret to need)."""
    ftj = example("10-finetunejob")
    ftj["metadata"] = {"name": name}
    ftj["spec"].pop("secrets", None)
    ftj["spec"]["resources"].update(resources)
    return ftj


def _running(cp, namespace: str, job: dict, n: int) -> list[dict]:
    """Watch until `n` pods of this very Job (its uid: not an earlier Job of the same name) run."""
    name, uid = job["metadata"]["name"], job["metadata"]["uid"]

    def all_running(pods):
        ours = [p for p in pods.values() if p["metadata"]["labels"].get("batch.kubernetes.io/controller-uid") == uid]
        running = [p for p in ours if (p.get("status") or {}).get("phase") == "Running"]
        return running if len(running) == n else None

    return watch(
        cp, "pods", namespace, all_running, selector=f"job-name={name}", what=f"{n} running pods of Job {name}"
    )


def _ready_reason(cp, namespace: str, name: str, reason: str) -> dict:
    """Watch FineTuneJob `name` until its Ready condition gives `reason`; return it."""
    return watch_one(
        cp,
        "finetunejobs.tuneroute.io",
        namespace,
        name,
        lambda ftj: (condition(ftj, "Ready") or {}).get("reason") == reason,
        what=f"FineTuneJob {name}'s Ready reason {reason}",
    )


def _events(cp, namespace: str, name: str, reason: str) -> list[dict]:
    """Watch until an Event `reason` about `name` exists (kopf posts Events from a queue, after
    the status they go with); return those Events."""
    evs = wait_events(cp, namespace, name, lambda evs: any(e["reason"] == reason for e in evs))
    return [e for e in evs if e["reason"] == reason]


def test_two_nodes_of_eight_gpus_run_as_an_indexed_job_restarted_whole_when_a_rank_fails(
    control_plane, operator, namespace, storage
):
    cp = control_plane
    storage()
    apply(cp, namespace, _example_on("dist", gpus=8, nodes=2))
    job = created(cp, "jobs.batch", namespace, "dist")
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

    def endpoints(slices):
        names = sorted(e.get("hostname") for s in slices.values() for e in s.get("endpoints") or [])
        return names if names == ["dist-0", "dist-1"] else None

    selector = "kubernetes.io/service-name=dist-ranks"
    watch(cp, "endpointslices", namespace, endpoints, selector=selector, what="both pods behind the headless Service")
    ftj = wait_phase(cp, namespace, "dist", "Running")
    assert ftj["status"]["attempts"] == 1

    # Rank 9 dies: the whole attempt ends (the Job controller stops the other pod) and the next
    # attempt is a new Job, dist-a2 (new pod names, new rendezvous id), every rank resuming from
    # the last checkpoint. The failed attempt's Job and pods stay, to read.
    crash = "rank 9 (pod 1): training failed: RuntimeError: CUDA error: an illegal memory access"
    pod1 = next(p for p in pods if p["spec"]["hostname"] == "dist-1")
    cp.finish_pod(namespace, pod1["metadata"]["name"], exit_code=1, message=crash)
    second = created(cp, "jobs.batch", namespace, "dist-a2")
    assert second["metadata"]["annotations"]["tuneroute.io/attempt"] == "2"
    args = second["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--rdzv-endpoint=dist-a2-0.dist-ranks:29400" in args
    # (the operator acts on the Job's FailureTarget; Failed follows once its pods are gone)
    watch_one(
        cp, "jobs.batch", namespace, "dist", lambda j: condition(j, "Failed"), what="attempt 1's Job to be Failed"
    )
    pods = _running(cp, namespace, second, 2)
    assert sorted(p["spec"]["hostname"] for p in pods) == ["dist-a2-0", "dist-a2-1"]
    ftj = wait_phase(cp, namespace, "dist", "Running")
    assert ftj["status"]["attempts"] == 2 and ftj["status"]["jobName"] == "dist-a2"
    header, row = cp.kubectl("-n", namespace, "get", "ftj", "dist", "-o", "wide").stdout.splitlines()[:2]
    at = header.index("ATTEMPTS")
    assert row[at:].split()[0] == "2"  # what `kubectl get` shows (empty columns shift split() positions)
    # kopf posts Events from a queue: the Restarting one may land after the status says Running.
    restarting = _events(cp, namespace, "dist", "Restarting")
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

    # The scheduler binds the pods one by one and marks the third unschedulable after: the
    # status says "1 of 3" first, then the final verdict.
    ftj = watch_one(
        cp,
        "finetunejobs.tuneroute.io",
        namespace,
        "three",
        lambda f: (
            (c := condition(f, "Ready") or {}).get("reason") == "PartiallyScheduled"
            and "Insufficient" in c.get("message", "")
        ),
        what="FineTuneJob three's verdict: 2 of 3 scheduled, and why",
    )
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

    ftj = _ready_reason(cp, namespace, "rwo", "SharedStorageRequired")
    assert ftj["status"]["phase"] == "Pending"
    assert ftj["status"]["message"].startswith("spec.output.pvc: claim single-node is ReadWriteOnce;")
    assert get(cp, namespace, "job", "rwo") is None  # nothing runs that could not finish
    assert {e["type"] for e in _events(cp, namespace, "rwo", "SharedStorageRequired")} == {"Warning"}
