"""The real trainer, method grpo, reports into a real FineTuneJob with the narrow RBAC the
operator gives it: the reward fields survive the status schema and show in `kubectl get -o wide`.

The trainer runs as a process on this machine (not in its image on the real node, as
test_trainer_pod.py does for SFT): authenticated as the per-job ServiceAccount the operator
created, with the very config the operator rendered into the ConfigMap, paths moved to a temp dir.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tuneroute_testing.k8s import apply, get, small_finetunejob, wait_phase, watch_one
from tuneroute_testing.operator_process import service_account_kubeconfig

pytestmark = pytest.mark.cluster


def _train_as_the_job(cp, namespace: str, name: str, config: dict, model: Path, dataset: dict, tmp_path: Path) -> str:
    """Run the trainer here with the config the operator rendered for FineTuneJob `name` (model,
    data and output moved under tmp_path, reports every 0.5 s), authenticated as the job's
    ServiceAccount; return its stderr."""
    config["model"] = {"path": str(model)}
    config["dataset"] = dataset
    config["output"]["dir"] = str(tmp_path / "out")
    config["lora"]["targetModules"] = ["q_proj", "v_proj"]
    config["report"]["intervalSeconds"] = 0.5
    (tmp_path / "trainer.yaml").write_text(yaml.safe_dump(config))
    kubeconfig = service_account_kubeconfig(cp, namespace, f"{name}-trainer", tmp_path / "kubeconfig")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "TUNEROUTE_TERMINATION_LOG": str(tmp_path / "termination-log")}
    run = subprocess.run(
        [sys.executable, "-m", "tuneroute_trainer", "--config", str(tmp_path / "trainer.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stderr


def test_grpo_progress_lands_in_status_and_the_wide_columns(control_plane, operator, namespace, storage, tmp_path):
    """method grpo: the reward (total and per function), KL, completion length and rollout speed reach status and
    `kubectl get ftj -o wide` (the schema keeps them: an unknown status field would be pruned)."""
    import json

    from tuneroute_testing.trainer_fixtures import save_tiny_model

    cp = control_plane
    storage()
    rewards = [{"name": "format", "regex": {"pattern": "%"}}, {"name": "short", "lengthPenalty": {"targetTokens": 4}}]
    grpo = {"generations": 4, "maxCompletionLength": 6, "rewards": rewards}
    apply(
        cp,
        namespace,
        small_finetunejob(
            "tiny-grpo",
            method="grpo",
            dataset={"id": "org/prompts", "format": "completion"},
            grpo=grpo,
            training={"maxSteps": 3, "learningRate": 0.005, "batchSize": 2, "precision": "fp32"},
        ),
    )
    wait_phase(cp, namespace, "tiny-grpo", "Running")
    config = yaml.safe_load(get(cp, namespace, "configmap", "tiny-grpo-trainer")["data"]["trainer.yaml"])
    assert config["grpo"]["rewards"] == [
        {"name": "format", "weight": 1.0, "regex": {"pattern": "%", "fullMatch": False}},
        {"name": "short", "weight": 1.0, "lengthPenalty": {"targetTokens": 4}},
    ]
    model = save_tiny_model("qwen3_moe", tmp_path / "model")
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"say {i}:"}) + "\n" for i in range(8)))
    dataset = {"path": str(tmp_path / "prompts.jsonl"), "format": "completion"}
    _train_as_the_job(cp, namespace, "tiny-grpo", config, model, dataset, tmp_path)

    ftj = watch_one(
        cp,
        "finetunejobs.tuneroute.io",
        namespace,
        "tiny-grpo",
        lambda f: (f.get("status") or {}).get("progress", {}).get("step") == 3,
        30,
        "the final progress report",
    )
    progress = ftj["status"]["progress"]
    assert set(progress["rewards"]) == {"format", "short"}
    assert -1 <= progress["rewards"]["short"] <= 0 and 0 <= progress["rewards"]["format"] <= 1
    assert progress["reward"] == pytest.approx(sum(progress["rewards"].values()), abs=1e-3)
    assert progress["kl"] >= 0 and 1 <= progress["completionLength"] <= 6 and progress["rolloutTokensPerSecond"] > 0
    header, row = cp.kubectl("-n", namespace, "get", "ftj", "tiny-grpo", "-o", "wide").stdout.splitlines()[:2]
    cells = dict(zip(header.split(), row.split()))
    assert cells["METHOD"] == "grpo" and cells["STEP"] == "3"
    assert float(cells["REWARD"]) == pytest.approx(progress["reward"])
    assert float(cells["COMPLEN"]) == pytest.approx(progress["completionLength"])
    assert float(cells["ROLLOUTTOK/S"]) > 0 and "format" in cells["REWARDS"]
