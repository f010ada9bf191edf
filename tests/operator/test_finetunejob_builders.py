"""FineTuneJob -> children, as pure functions (no cluster)."""

from __future__ import annotations

import yaml

from tuneroute_operator.api.finetunejob import FineTuneJobSpec
from tuneroute_operator.builders import finetunejob as build
from tuneroute_operator.builders.common import Owner
from tuneroute_operator.settings import Settings
from tuneroute_trainer.config import TrainerConfig


def _children(body, **settings):
    return build.children(Owner.of(body), FineTuneJobSpec.model_validate(body["spec"]), Settings(**settings))


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
