"""A FineTuneJob with gpus: 0 trains for real: the trainer image runs as the operator's Job pod
on the real node, reads a tiny random Qwen3-MoE and a dataset from a PersistentVolume, patches
its progress into the FineTuneJob with the per-job ServiceAccount token mounted in the pod,
writes the adapter to the volume, and the FineTuneJob follows the pod's real exit code. A pod
deleted mid-training (a real SIGTERM) saves a checkpoint; the Job's next pod resumes from it.
With `resources.nodes: 2` two pods of an Indexed Job find each other through the headless Service
(CoreDNS) and train one adapter with torchrun and gloo.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuneroute_testing.control_plane import wait_until
from tuneroute_testing.k8s import apply, condition, get, small_finetunejob, table, wait_phase
from tuneroute_testing.serving import tiny_finetunejob_spec
from tuneroute_testing.trainer_fixtures import DATA, save_tiny_model, trainer_events

pytestmark = pytest.mark.cluster
CLAIM = "training-data"
MODEL = "models/tiny-qwen3-moe"  # where the volume fixture saves it
TRAINER_UID = 10001  # the image's user; hostPath volumes ignore fsGroup
CPU_POD = {"gpus": 0, "cpu": "1", "memory": "3Gi", "sharedMemory": "64Mi"}


@pytest.fixture
def volume(control_plane, namespace):
    """A hostPath PersistentVolume (a directory of this machine, which is the node's) bound to
    the claim CLAIM, holding the model and the dataset, writable by the trainer's user.
    ReadWriteMany, as the operator requires of a claim the pods of a `nodes: 2` job share."""
    root = Path(f"/tmp/tuneroute-pv-{namespace}")
    save_tiny_model("qwen3_moe", root / MODEL)
    (root / "data").mkdir()
    shutil.copy(DATA / "chat.jsonl", root / "data" / "chat.jsonl")
    for p in [root, *root.rglob("*")]:
        shutil.chown(p, TRAINER_UID, TRAINER_UID)
    pv = f"pv-{namespace}"
    apply(
        control_plane,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": CLAIM},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    apply(
        control_plane,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "hostPath": {"path": str(root), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": CLAIM},
            },
        },
    )
    # Bound before any pod uses it: a pod the scheduler finds with an unbound claim may wait up
    # to 5 minutes for its next try when the binding's event races its first attempt.
    wait_until(
        lambda: ((get(control_plane, namespace, "pvc", CLAIM) or {}).get("status") or {}).get("phase") == "Bound",
        60,
        "the claim to bind",
    )
    yield root
    control_plane.kubectl("delete", "pv", pv, "--wait=false", check=False)
    shutil.rmtree(root, ignore_errors=True)


def cpu_finetunejob(name: str, steps: int, **kw) -> dict:
    """The tiny FineTuneJob on the real node's CPU: no GPU asked, so it lands there (the GPU nodes
    are tainted); no parity gate (the node has no vLLM image). `kw`: tiny_finetunejob_spec's."""
    kw = {"resources": CPU_POD, "backoff_limit": 0, **kw}
    return small_finetunejob(name, **tiny_finetunejob_spec(steps, claim=CLAIM, model=MODEL, verify=False, **kw))


def trainer_pods(cp, namespace: str, job: str) -> list[dict]:
    return cp.get("pods", "-n", namespace, "-l", f"job-name={job}")["items"]


def test_cpu_finetunejob_trains_in_the_trainer_image_and_succeeds_from_the_pods_exit_code(
    control_plane, operator, trainer_image, namespace, volume
):
    cp = control_plane
    apply(cp, namespace, cpu_finetunejob("tiny", steps=12))
    ftj = wait_phase(cp, namespace, "tiny", "Succeeded", timeout=300)

    (pod,) = trainer_pods(cp, namespace, "tiny")
    assert pod["spec"]["nodeName"] == cp.node.name
    assert pod["spec"]["containers"][0]["image"] == trainer_image
    assert pod["spec"]["serviceAccountName"] == "tiny-trainer"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0

    # Progress came from inside the pod, with the per-job token (it may patch only this status).
    progress = ftj["status"]["progress"]
    assert progress["step"] == 12 and progress["totalSteps"] == 12 and progress["percent"] == 100
    assert progress["loss"] > 0 and progress["tokensPerSecond"] > 0
    (cells,) = table(cp, "-n", namespace, "ftj", "tiny", "-o", "wide")
    assert (cells["PHASE"], cells["STEP"], cells["PROGRESS"], cells["ATTEMPTS"]) == ("Succeeded", "12", "100", "1")
    logs = cp.kubectl("-n", namespace, "logs", pod["metadata"]["name"]).stdout
    assert "forbidden" not in logs.lower()

    # The adapter is on the volume, where status.adapter says.
    assert condition(ftj, "Succeeded")["reason"] == "TrainingSucceeded"
    path = ftj["status"]["adapter"]["path"]  # adapters/<versioned adapter name>
    assert path == f"adapters/{ftj['status']['adapterName']}" and path.startswith("adapters/tiny-")
    adapter = volume / path
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    assert ftj["status"]["attempts"] == 1


def test_a_trainer_pod_deleted_mid_training_resumes_from_its_checkpoint_in_the_next_pod(
    control_plane, operator, trainer_image, namespace, volume
):
    cp = control_plane
    steps = 40  # about 1 step/s here (1 CPU): the first checkpoint at 5 leaves time to delete the pod
    apply(cp, namespace, cpu_finetunejob("resumable", steps=steps, backoff_limit=2, checkpoint_every=5))
    name = wait_until(
        lambda: ((get(cp, namespace, "finetunejob", "resumable") or {}).get("status") or {}).get("adapterName"),
        60,
        "the versioned adapter name",
    )
    adapter = volume / "adapters" / name
    checkpoints = adapter / "checkpoints"  # checkpoints/<run key>/checkpoint-N

    # Once the first checkpoint is on the volume, delete the pod: the kubelet sends SIGTERM, the
    # trainer finishes its step, saves a checkpoint and exits 143; the Job starts a new pod.
    wait_until(lambda: any(checkpoints.glob("*/checkpoint-*")), 240, "the first checkpoint on the volume")
    (first,) = [p for p in trainer_pods(cp, namespace, "resumable") if p["status"].get("phase") == "Running"]
    cp.kubectl("-n", namespace, "delete", "pod", first["metadata"]["name"], "--wait=false")
    interrupted = wait_until(
        lambda: (
            (s := (get(cp, namespace, "finetunejob", "resumable") or {}).get("status") or {}).get("attempts") == 2 and s
        ),
        120,
        "the second trainer pod",
    )
    saved = max(int(p.name.split("-")[1]) for p in checkpoints.glob("*/checkpoint-*"))
    assert saved < steps, "the first pod finished before its deletion: nothing to resume"

    ftj = wait_phase(cp, namespace, "resumable", "Succeeded", timeout=300)
    manifest = json.loads((adapter / "tuneroute-manifest.json").read_text())
    assert manifest["resumedFrom"], manifest
    resumed_at = int(Path(manifest["resumedFrom"]).name.split("-")[1])
    assert 0 < resumed_at < steps
    assert ftj["status"]["progress"]["step"] == steps
    assert interrupted["phase"] in ("Pending", "Running")  # a retry, not a failure
    second = [p for p in trainer_pods(cp, namespace, "resumable") if p["metadata"]["uid"] != first["metadata"]["uid"]]
    assert second and second[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_two_pods_find_each_other_and_train_one_adapter_with_gloo(
    control_plane, operator, trainer_image, namespace, volume
):
    cp = control_plane
    # Two pods of 800m: both fit on the real node's 2 CPUs beside the operator and CoreDNS.
    apply(cp, namespace, cpu_finetunejob("pair", steps=6, resources={**CPU_POD, "nodes": 2, "cpu": "800m"}))
    ftj = wait_phase(cp, namespace, "pair", "Succeeded", timeout=600)

    pods = trainer_pods(cp, namespace, "pair")
    index = "batch.kubernetes.io/job-completion-index"
    assert sorted(p["metadata"]["annotations"][index] for p in pods) == ["0", "1"]
    for pod in pods:
        assert pod["spec"]["nodeName"] == cp.node.name and pod["spec"]["subdomain"] == "pair-ranks"
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
        # Each pod ran one rank of two, holding half the model (FSDP2 shards over gloo).
        logs = cp.kubectl("-n", namespace, "logs", pod["metadata"]["name"]).stdout
        (report,) = [e for e in trainer_events(logs) if e["event"] == "sharded"]
        assert report["worldSize"] == 2 and report["rank"] == int(pod["metadata"]["annotations"][index])
        assert report["frozen"]["local"] * 2 == pytest.approx(report["frozen"]["total"], rel=0.02)

    progress = ftj["status"]["progress"]
    assert progress["step"] == 6 and progress["loss"] > 0
    adapter = volume / ftj["status"]["adapter"]["path"]
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
