"""The real trainer reports into a real FineTuneJob, with the narrow RBAC the operator gives it.

The trainer runs on this machine (kwok nodes run no containers; a GPU is not needed for a
tiny random Qwen3-MoE), authenticated as the per-job ServiceAccount the operator created, with
the very config the operator rendered into the ConfigMap, paths moved to a temp dir.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tuneroute_testing.control_plane import wait_until
from tuneroute_testing.k8s import apply, get, small_finetunejob, wait_phase
from tuneroute_testing.operator_process import service_account_kubeconfig

pytestmark = pytest.mark.cluster


def test_trainer_progress_lands_in_status_and_kubectl_get_columns(
    control_plane, operator, namespace, storage, tmp_path
):
    from tuneroute_testing.trainer_fixtures import DATA, save_tiny_model

    cp = control_plane
    storage()
    apply(
        cp,
        namespace,
        small_finetunejob(
            "tiny",
            training={
                "maxSteps": 12,
                "learningRate": 0.003,
                "batchSize": 4,
                "sequenceLength": 128,
                "precision": "fp32",
            },
        ),
    )
    wait_phase(cp, namespace, "tiny", "Running")
    cm = get(cp, namespace, "configmap", "tiny-trainer")
    config = yaml.safe_load(cm["data"]["trainer.yaml"])
    assert config["report"] == {"namespace": namespace, "name": "tiny", "intervalSeconds": 10.0}
    config["model"] = {"path": str(save_tiny_model("qwen3_moe", tmp_path / "model"))}
    config["dataset"] = {"path": str(DATA / "chat.jsonl"), "format": "chat"}
    config["output"]["dir"] = str(tmp_path / "out")
    config["lora"]["targetModules"] = ["q_proj", "v_proj"]
    config["report"]["intervalSeconds"] = 0.5
    (tmp_path / "trainer.yaml").write_text(yaml.safe_dump(config))

    kubeconfig = service_account_kubeconfig(cp, namespace, "tiny-trainer", tmp_path / "kubeconfig")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "TUNEROUTE_TERMINATION_LOG": str(tmp_path / "termination-log")}
    run = subprocess.run(
        [sys.executable, "-m", "tuneroute_trainer", "--config", str(tmp_path / "trainer.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "forbidden" not in run.stderr.lower()

    ftj = wait_until(
        lambda: (f := get(cp, namespace, "finetunejob", "tiny"))["status"].get("progress", {}).get("step") == 12 and f,
        30,
        "the final progress report",
    )
    progress = ftj["status"]["progress"]
    assert progress["totalSteps"] == 12 and progress["percent"] == 100
    assert progress["loss"] > 0 and progress["tokensPerSecond"] > 0
    header, row = cp.kubectl("-n", namespace, "get", "ftj", "tiny", "-o", "wide").stdout.splitlines()[:2]
    cells = dict(zip(header.split(), row.split()))
    assert cells["STEP"] == "12" and cells["PROGRESS"] == "100"
    assert (tmp_path / "out" / "adapter_config.json").exists()
