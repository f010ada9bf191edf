"""FineTuneJob -> children, as pure functions (no cluster)."""

from __future__ import annotations

import yaml

from tuneroute_operator.api.finetunejob import FineTuneJobSpec
from tuneroute_operator.builders import distributed
from tuneroute_operator.builders import finetunejob as build
from tuneroute_operator.builders.common import Owner
from tuneroute_operator.settings import Settings
from tuneroute_trainer.config import TrainerConfig


def _children(body, **settings):
    owner, spec = Owner.of(body), FineTuneJobSpec.model_validate(body["spec"])
    return build.children(owner, spec, Settings(**settings), build.adapter_name(owner, spec))


def test_children_are_configmap_rbac_then_job_all_owned_by_the_finetunejob(ftj_body):
    kinds = [c["kind"] for c in _children(ftj_body)]
    assert kinds == ["ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Job"]
    for child in _children(ftj_body):
        ref = child["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("FineTuneJob", "uid-ftj", True)


def test_building_twice_gives_identical_manifests(ftj_body):
    assert _children(ftj_body) == _children(ftj_body)


def test_config_map_holds_a_valid_trainer_config_and_its_hash_rolls_the_job(ftj_body):
    cm, *_, job = _children(ftj_body)
    config = TrainerConfig.model_validate(yaml.safe_load(cm["data"]["trainer.yaml"]))
    assert config.model.id == "Qwen/Qwen3-30B-A3B" and config.training.max_steps == 2000
    h = cm["metadata"]["annotations"]["tuneroute.io/config-hash"]
    assert job["spec"]["template"]["metadata"]["annotations"]["tuneroute.io/config-hash"] == h
    ftj_body["spec"]["lora"]["rank"] = 32
    assert _children(ftj_body)[0]["metadata"]["annotations"]["tuneroute.io/config-hash"] != h


def test_pvc_sources_are_mounted_once_read_only_unless_written(ftj_body):
    ftj_body["spec"]["baseModel"] = {"pvc": "models", "path": "qwen3-30b"}
    ftj_body["spec"]["dataset"] = {"pvc": "tuneroute-adapters", "path": "data/train.jsonl", "format": "chat"}
    cm, *_, job = _children(ftj_body)
    pod = job["spec"]["template"]["spec"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]["readOnly"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"tuneroute-adapters": False, "models": True}
    config = TrainerConfig.model_validate(yaml.safe_load(cm["data"]["trainer.yaml"]))
    assert config.model.path == "/mnt/pvc/models/qwen3-30b"
    assert config.dataset.path == "/mnt/pvc/tuneroute-adapters/data/train.jsonl"


def test_cpu_only_job_asks_for_no_gpu_and_settings_pick_the_image(ftj_body):
    ftj_body["spec"]["resources"] = {"gpus": 0}
    job = _children(ftj_body, trainer_image="registry.local/trainer:dev")[-1]
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"] == {} and c["image"] == "registry.local/trainer:dev"
    assert set(c["resources"]["requests"]) == {"ephemeral-storage"}


def test_bad_input_exit_code_fails_the_job_without_retry_and_preemption_is_free(ftj_body):
    rules = _children(ftj_body)[-1]["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2]},
    }
    assert rules[1]["action"] == "Ignore" and rules[1]["onPodConditions"][0]["type"] == "DisruptionTarget"


def test_trainer_role_is_scoped_to_this_finetunejobs_status(ftj_body):
    role = _children(ftj_body)[2]
    assert role["rules"] == [
        {
            "apiGroups": ["tuneroute.io"],
            "resources": ["finetunejobs/status"],
            "resourceNames": ["qwen3-support"],
            "verbs": ["get", "patch"],
        }
    ]


def test_the_model_download_has_a_bounded_cache_the_scheduler_knows_about(ftj_body):
    """A hub model lands in its own emptyDir with a size limit, and the pod requests that much
    ephemeral storage (a 60 GB model must not fill a node's disk, nor land on a node without
    room). Claims are re-owned only when their root is not ours (fsGroupChangePolicy)."""
    ftj_body["spec"]["resources"]["modelCache"] = "300Gi"
    pod = _children(ftj_body)[-1]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-cache"]["emptyDir"] == {"sizeLimit": "300Gi"}
    assert volumes["tmp"]["emptyDir"]["sizeLimit"]
    assert {"name": "model-cache", "mountPath": "/tmp/hf"} in c["volumeMounts"]
    assert {"name": "HF_HOME", "value": "/tmp/hf"} in c["env"]
    assert c["resources"]["requests"]["ephemeral-storage"] == "300Gi"
    assert "ephemeral-storage" not in c["resources"]["limits"]  # the sizeLimits bound each volume
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"

    ftj_body["spec"]["baseModel"] = {"pvc": "models", "path": "qwen3"}  # nothing to download
    pod = _children(ftj_body)[-1]["spec"]["template"]["spec"]
    assert "model-cache" not in {v["name"] for v in pod["volumes"]}
    assert pod["containers"][0]["resources"]["requests"]["ephemeral-storage"] == "8Gi"


def test_the_trainer_config_carries_the_jobs_identity(ftj_body):
    """The trainer keys checkpoints by it: a re-created FineTuneJob (new uid) never resumes
    the old one's state."""
    cm = _children(ftj_body)[0]
    assert TrainerConfig.model_validate(yaml.safe_load(cm["data"]["trainer.yaml"])).output.run_id == "uid-ftj"


# Several ranks: torchrun in one pod, an Indexed Job and its headless Service across pods.


def _with(body, **resources):
    body["spec"]["resources"].update(resources)
    return body


def _trainer(job):
    return job["spec"]["template"]["spec"]["containers"][0]


def test_one_gpu_keeps_the_plain_single_process_trainer(ftj_body):
    *_, job = _children(ftj_body)
    assert "command" not in _trainer(job) and _trainer(job)["args"] == ["--config", "/etc/tuneroute/trainer.yaml"]
    assert "completionMode" not in job["spec"] and "subdomain" not in job["spec"]["template"]["spec"]


def test_several_gpus_in_one_pod_run_torchrun_standalone(ftj_body):
    kinds = [c["kind"] for c in _children(_with(ftj_body, gpus=4))]
    assert kinds == ["ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Job"]  # no Service: one pod
    job = _children(ftj_body)[-1]
    trainer = _trainer(job)
    assert trainer["command"] == ["python", "-m", "tuneroute_trainer.torchrun"]
    assert trainer["args"][:2] == ["--standalone", "--nproc-per-node=4"]
    assert trainer["args"][-4:] == ["-m", "tuneroute_trainer", "--config", "/etc/tuneroute/trainer.yaml"]
    assert job["spec"]["backoffLimit"] == 3  # one pod: the Job's own retries, as for one GPU


def test_two_nodes_of_eight_gpus_render_an_indexed_job_a_headless_service_and_torchrun(ftj_body):
    """The example FineTuneJob with `gpus: 1` changed to `gpus: 8, nodes: 2`."""
    children = _children(_with(ftj_body, gpus=8, nodes=2))
    assert [c["kind"] for c in children] == ["ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Service", "Job"]
    service, job = children[-2:]
    name = ftj_body["metadata"]["name"]

    assert service["metadata"]["name"] == f"{name}-ranks"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    pod = job["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()

    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["backoffLimit"] == 0  # a failed pod fails the attempt; the operator starts the next
    assert pod["spec"]["subdomain"] == f"{name}-ranks"
    assert job["metadata"]["annotations"]["tuneroute.io/attempt"] == "1"
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2]},
    }

    trainer = _trainer(job)
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "8"  # per pod
    assert trainer["command"] == ["python", "-m", "tuneroute_trainer.torchrun"]
    assert trainer["args"] == [
        "--nnodes=2",
        "--nproc-per-node=8",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={name}-0.{name}-ranks:29400",
        "--rdzv-id=$(TUNEROUTE_RDZV_ID)",
        "--rdzv-conf=join_timeout=1800",
        "--max-restarts=0",
        "--shutdown-timeout=100",
        "-m",
        "tuneroute_trainer",
        "--config",
        "/etc/tuneroute/trainer.yaml",
    ]
    rdzv = next(e for e in trainer["env"] if e["name"] == "TUNEROUTE_RDZV_ID")
    assert rdzv["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/controller-uid']"
    # the shutdown timeout leaves each rank time to save its shard inside the pod's grace period
    assert pod["spec"]["terminationGracePeriodSeconds"] > 100


def test_a_retry_of_a_set_of_pods_is_a_new_job_with_new_pod_names(ftj_body):
    owner = Owner.of(ftj_body)
    spec = FineTuneJobSpec.model_validate(_with(ftj_body, gpus=8, nodes=2)["spec"])
    name = owner.name
    job = build.job(owner, spec, Settings(), "hash", attempt=3)
    assert job["metadata"]["name"] == f"{name}-a3" and job["metadata"]["annotations"]["tuneroute.io/attempt"] == "3"
    assert f"--rdzv-endpoint={name}-a3-0.{name}-ranks:29400" in _trainer(job)["args"]
    assert job["spec"]["template"]["spec"]["subdomain"] == f"{name}-ranks"  # one Service for every attempt


def test_cpu_pods_are_one_rank_each(ftj_body):
    job = _children(_with(ftj_body, gpus=0, nodes=3))[-1]
    assert "nvidia.com/gpu" not in _trainer(job)["resources"].get("limits", {})
    assert "--nnodes=3" in _trainer(job)["args"] and "--nproc-per-node=1" in _trainer(job)["args"]


def test_kueue_labels_reach_the_job_which_kueue_then_unsuspends(ftj_body):
    owner = Owner.of(ftj_body)
    spec = FineTuneJobSpec.model_validate(_with(ftj_body, gpus=8, nodes=2)["spec"])
    labels = {"kueue.x-k8s.io/queue-name": "gpu-team", "team": "a"}
    job = build.job(owner, spec, Settings(), "hash", scheduling=distributed.scheduling_labels(labels))
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-team"
    assert "team" not in job["metadata"]["labels"]
    assert "suspend" not in job["spec"]  # Kueue owns it: it creates the Job suspended and admits it whole
    spec.suspend = True
    assert build.job(owner, spec, Settings(), "hash", scheduling={"kueue.x-k8s.io/queue-name": "q"})["spec"]["suspend"]


def _pvc(*modes):
    return {"spec": {"accessModes": list(modes)}}


def test_several_nodes_need_claims_every_node_can_mount(ftj_body):
    spec = FineTuneJobSpec.model_validate(_with(ftj_body, gpus=8, nodes=2)["spec"])
    claim = spec.output.pvc
    assert distributed.shared_storage_problem(spec, {claim: _pvc("ReadWriteMany")}) is None
    assert distributed.shared_storage_problem(spec, {claim: None}) is None  # not there yet: the pods will say
    problem = distributed.shared_storage_problem(spec, {claim: _pvc("ReadWriteOnce")})
    assert problem.startswith(f"spec.output.pvc: claim {claim} is ReadWriteOnce;") and "ReadWriteMany" in problem

    ftj_body["spec"]["dataset"] = {"pvc": "data", "path": "train.jsonl", "format": "chat"}
    spec = FineTuneJobSpec.model_validate(ftj_body["spec"])
    claims = {claim: _pvc("ReadWriteMany"), "data": _pvc("ReadWriteOnce")}
    assert distributed.shared_storage_problem(spec, claims).startswith("spec.dataset.pvc: claim data")
    claims["data"] = _pvc("ReadOnlyMany")
    assert distributed.shared_storage_problem(spec, claims) is None
    one_node = FineTuneJobSpec.model_validate(_with(ftj_body, nodes=1)["spec"])
    assert distributed.shared_storage_problem(one_node, {claim: _pvc("ReadWriteOnce")}) is None


def _owner_spec(body):
    return Owner.of(body), FineTuneJobSpec.model_validate(body["spec"])


def test_adapter_names_are_versioned_by_uid_and_spec_and_the_default_path_follows():
    """A retrained job (new uid, or another spec) serves under a new name: vLLM keys its prefix cache
    by adapter name, so a reused name would serve the old adapter's cached prefixes."""
    import copy

    import yaml as _yaml

    from tuneroute_testing import REPO

    body = _yaml.safe_load((REPO / "examples" / "10-finetunejob-qwen3-moe.yaml").read_text())
    body["metadata"].update(namespace="ml", uid="uid-1")
    owner, spec = _owner_spec(body)
    name = build.adapter_name(owner, spec)
    assert name.startswith("qwen3-support-") and len(name) == len("qwen3-support-") + 8
    assert build.adapter_name(owner, spec) == name  # stable
    retrained = copy.deepcopy(body)
    retrained["metadata"]["uid"] = "uid-2"
    assert build.adapter_name(*_owner_spec(retrained)) != name
    suspended = copy.deepcopy(body)
    suspended["spec"]["suspend"] = True
    assert build.adapter_name(*_owner_spec(suspended)) == name  # suspending is not retraining
    cm = build.children(owner, spec, Settings(), name)[0]
    config = TrainerConfig.model_validate(yaml.safe_load(cm["data"]["trainer.yaml"]))
    assert config.output.adapter_name == name
    assert config.output.dir == f"/mnt/pvc/tuneroute-adapters/adapters/{name}"


def test_the_verify_job_runs_the_gate_script_from_a_configmap_in_the_pinned_vllm_image(ftj_body):
    ftj_body["spec"]["verify"] = {"loraTargetModules": ["q_proj", "v_proj"], "maxLoraRank": 16}
    owner, spec = _owner_spec(ftj_body)
    cm, job = build.verify_children(owner, spec, Settings(vllm_image="vllm/vllm-openai:v0.32.0"), "qs-1234abcd")
    assert cm["data"]["verify_adapter.py"] == build.gate_script() and "def main" in build.gate_script()
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "vllm/vllm-openai:v0.32.0" and c["command"] == ["python3"]
    args = c["args"]
    assert args[0] == "/etc/tuneroute-gate/verify_adapter.py"
    assert args[args.index("--adapter") + 1] == "/mnt/pvc/tuneroute-adapters/adapters/qs-1234abcd"
    assert args[args.index("--model") + 1] == "Qwen/Qwen3-30B-A3B"
    assert args[args.index("--lora-target-modules") + 1 :] == ["q_proj", "v_proj"]
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    mounts = {m["mountPath"]: m.get("readOnly") for m in c["volumeMounts"]}
    assert mounts["/mnt/pvc/tuneroute-adapters"] is True  # the gate only reads the adapter
    assert pod["automountServiceAccountToken"] is False
    # not verified (1) and bad input (2) are final; a crash (3) is retried
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [1, 2]
    assert any(e["name"] == "HF_TOKEN" for e in c["env"])  # the gated base model, as for training
