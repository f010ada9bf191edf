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
    assert c["resources"] == {} and c["image"] == "registry.local/trainer:dev"


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
