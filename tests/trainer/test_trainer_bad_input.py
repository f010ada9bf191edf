"""Bad input: one line naming the field, on stderr and in the termination log, exit 2, no adapter left."""

import json
from pathlib import Path

import pytest

from tuneroute_testing.trainer_fixtures import DATA, save_tiny_model, trainer_config, write_config
from tuneroute_trainer import train
from tuneroute_trainer.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model("qwen3_moe", tmp_path_factory.mktemp("m") / "qwen3_moe")


def _unknown_model(tmp_path, model_dir):
    bad = tmp_path / "weird-model"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "no-such-moe", "hidden_size": 8}))
    return {"model": {"path": str(bad)}}


def _file_as_parent(tmp_path, model_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return {"output": {"dir": str(blocker / "out"), "adapterName": "x"}}


CASES = {
    "unknown model type": (_unknown_model, "model.path: unsupported model"),
    "rank 0": (lambda t, m: {"lora": {"rank": 0}}, "lora.rank: Input should be greater than or equal to 1"),
    "missing dataset file": (
        lambda t, m: {"dataset": {"path": "/nope/train.jsonl", "format": "chat"}},
        "dataset.path: file /nope/train.jsonl not found",
    ),
    "wrong columns": (
        lambda t, m: {"dataset": {"path": str(DATA / "completion.jsonl"), "format": "chat"}},
        "dataset.format: format 'chat' needs column(s) messages; found completion, prompt",
    ),
    "unwritable output": (_file_as_parent, "output.dir:"),
    "no such target module": (lambda t, m: {"lora": {"targetModules": ["nope_proj"]}}, "lora.targetModules:"),
    "triton without gpu": (lambda t, m: {"lora": {"kernel": "triton"}}, "lora.kernel: triton needs a CUDA device"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_reported_with_the_field(case, model_dir, tmp_path, capsys, termination_log):
    import torch

    if case == "triton without gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so the triton kernel is valid here")
    make, expected = CASES[case]
    out = tmp_path / "out"
    cfg = trainer_config(model_dir, out, training={"maxSteps": 1})
    cfg.update(make(tmp_path, model_dir))
    rc = main(["--config", str(write_config(tmp_path / "c.json", cfg))])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2
    assert err == f"error: {termination_log.read_text().strip()}"
    assert termination_log.read_text().startswith(expected), termination_log.read_text()
    assert "\n" not in termination_log.read_text().strip()
    assert not (out / "tuneroute-manifest.json").exists() and not (out / "adapter_model.safetensors").exists()


def test_missing_config_file(tmp_path, termination_log):
    assert main(["--config", str(tmp_path / "absent.yaml")]) == 2
    assert termination_log.read_text().strip() == f"config: file {tmp_path / 'absent.yaml'} not found"


def test_unexpected_failure_exits_1(model_dir, tmp_path, monkeypatch, termination_log):
    def boom(cfg):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(train, "run", boom)
    rc = main(["--config", str(write_config(tmp_path / "c.json", trainer_config(model_dir, tmp_path / "o")))])
    assert rc == 1
    assert termination_log.read_text().startswith("training failed: RuntimeError: CUDA error")


def test_failed_publish_leaves_no_manifest(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "tuneroute-manifest.json").write_text("{}")  # from an earlier run: must not survive a new one
    train.prepare_output(out)
    assert not (out / "tuneroute-manifest.json").exists()

    class HalfWriter:
        def save_pretrained(self, path):
            Path(path).mkdir(parents=True, exist_ok=True)
            (Path(path) / "adapter_model.safetensors").write_bytes(b"partial")
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        train.publish(HalfWriter(), HalfWriter(), out, {"done": True})
    assert not (out / "tuneroute-manifest.json").exists()
    assert not (out / "adapter_model.safetensors").exists()  # the partial file stayed in staging


def test_a_run_for_a_finetunejob_names_the_field_the_user_wrote(model_dir, tmp_path, capsys, termination_log):
    """The termination message becomes the FineTuneJob's status: it names spec.dataset.path (what
    the user wrote), not the trainer config's dataset.path."""
    cfg = trainer_config(model_dir, tmp_path / "out", training={"maxSteps": 1})
    cfg["dataset"] = {"path": "/mnt/pvc/data/train.jsonl", "format": "chat"}
    cfg["report"] = {"namespace": "ml", "name": "qwen3-support"}
    assert main(["--config", str(write_config(tmp_path / "c.json", cfg))]) == 2
    assert termination_log.read_text().startswith("spec.dataset.path: file /mnt/pvc/data/train.jsonl not found")


def test_every_trainer_config_section_maps_to_a_finetunejob_field():
    from tuneroute_trainer.config import TrainerConfig, spec_field

    for name, field in TrainerConfig.model_fields.items():
        key = field.alias or name
        assert key == "report" or spec_field(key).startswith("spec."), key
    assert spec_field("model.revision") == "spec.baseModel.revision"
    assert spec_field("lora.targetModules") == "spec.lora.targetModules"
