"""method grpo -> the trainer's grpo config and the pod: python rewards mounted from their ConfigMaps, the vLLM
rollout server as a native sidecar sharing an adapters volume with the trainer (pure functions, no cluster)."""

from __future__ import annotations

import pytest
import yaml

from tuneroute_operator.api.finetunejob import FineTuneJobSpec
from tuneroute_operator.builders import finetunejob as build
from tuneroute_operator.builders.common import Owner
from tuneroute_operator.settings import Settings
from tuneroute_testing import REPO
from tuneroute_trainer.config import TrainerConfig


@pytest.fixture
def grpo_body():
    configmap, ftj = yaml.safe_load_all((REPO / "examples" / "12-finetunejob-grpo.yaml").read_text())
    assert configmap["kind"] == "ConfigMap"  # the example ships the ConfigMap its python reward reads
    ftj["metadata"].update(namespace="ml", uid="uid-grpo", generation=1)
    return ftj


def _children(body):
    owner, spec = Owner.of(body), FineTuneJobSpec.model_validate(body["spec"])
    cm, *_, job = build.children(owner, spec, Settings(), build.adapter_name(owner, spec))
    return TrainerConfig.model_validate(yaml.safe_load(cm["data"]["trainer.yaml"])), job["spec"]["template"]["spec"]


def _mount(container, name):
    return next(m for m in container["volumeMounts"] if m["name"] == name)


def test_python_reward_is_its_configmap_key_mounted_where_the_trainer_reads_it(grpo_body):
    config, pod = _children(grpo_body)
    python = config.grpo.rewards[3].python
    assert (python.path, python.function) == ("/etc/tuneroute-rewards/3/steps.py", "shows_work")
    volume = next(v for v in pod["volumes"] if v["name"] == "reward-3")
    assert volume["configMap"] == {"name": "math-rewards", "items": [{"key": "steps.py", "path": "steps.py"}]}
    trainer = pod["containers"][0]
    assert _mount(trainer, "reward-3") == {
        "name": "reward-3",
        "mountPath": "/etc/tuneroute-rewards/3",
        "readOnly": True,
    }
    # the built-in rewards pass through unchanged, weights included
    assert [(r.name, r.kind, r.weight) for r in config.grpo.rewards[:3]] == [
        ("correct", "numericMatch", 1.0),
        ("boxed", "regex", 0.2),
        ("concise", "lengthPenalty", 0.5),
    ]


def test_vllm_engine_runs_a_sidecar_the_trainer_reaches_on_localhost(grpo_body):
    config, pod = _children(grpo_body)
    assert config.grpo.rollouts.vllm.url == "http://127.0.0.1:8000"
    assert config.grpo.rollouts.vllm.adapter_dir == "/adapters"
    (vllm,) = pod["initContainers"]
    trainer = pod["containers"][0]
    assert vllm["restartPolicy"] == "Always"  # a native sidecar: up before the trainer, stopped after it
    assert vllm["startupProbe"]["httpGet"]["path"] == "/health"
    assert vllm["image"] == "vllm/vllm-openai:v0.32.0"
    assert vllm["resources"]["limits"] == {"nvidia.com/gpu": "1"}  # its own GPU...
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "1"  # ...besides the trainer's
    args = vllm["args"]
    flag = lambda name: args[args.index(name) + 1]
    assert flag("--model") == "Qwen/Qwen3-30B-A3B" and flag("--served-model-name") == "base"
    assert flag("--max-loras") == "3"  # maxStaleness 1: two live versions and the next one being loaded
    assert flag("--max-lora-rank") == "16" and flag("--logprobs-mode") == "processed_logprobs"
    assert "--enable-mixed-moe-lora-format" in args  # expert LoRA arrives as PEFT's fused 3D tensors
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in vllm["env"]
    # both see the adapters volume and the hub cache (the server downloads the model first, the trainer finds it
    # there); the server gets neither the config, the rewards nor the writable output claim
    assert _mount(vllm, "adapters")["mountPath"] == _mount(trainer, "adapters")["mountPath"] == "/adapters"
    assert _mount(vllm, "model-cache") == _mount(trainer, "model-cache")
    assert {m["name"] for m in vllm["volumeMounts"]} == {"tmp", "dshm", "model-cache", "adapters"}


def test_lora_rank_is_rounded_up_to_one_vllm_serves_and_attention_only_needs_no_3d_format(grpo_body):
    grpo_body["spec"]["lora"].update(rank=12, experts=False)
    _, pod = _children(grpo_body)
    args = pod["initContainers"][0]["args"]
    assert args[args.index("--max-lora-rank") + 1] == "16"
    assert "--enable-mixed-moe-lora-format" not in args


def test_transformers_engine_has_no_sidecar(grpo_body):
    grpo_body["spec"]["grpo"]["rollouts"] = {"engine": "transformers"}
    config, pod = _children(grpo_body)
    assert config.grpo.rollouts.engine == "transformers" and config.grpo.rollouts.vllm is None
    assert "initContainers" not in pod and all(v["name"] != "adapters" for v in pod["volumes"])


def test_a_model_on_a_pvc_is_served_from_the_same_read_only_mount(grpo_body):
    grpo_body["spec"]["baseModel"] = {"pvc": "models", "path": "qwen3"}
    _, pod = _children(grpo_body)
    vllm = pod["initContainers"][0]
    assert vllm["args"][vllm["args"].index("--model") + 1] == "/mnt/pvc/models/qwen3"
    assert "--revision" not in vllm["args"]
    models = next(m for m in vllm["volumeMounts"] if m["mountPath"] == "/mnt/pvc/models")
    assert models["readOnly"] is True
