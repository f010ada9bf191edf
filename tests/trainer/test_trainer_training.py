"""End to end through the CLI on tiny random MoE models: SFT, DPO, adapters, resume, preemption."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tuneroute_testing.trainer_fixtures import save_tiny_model, trainer_config, write_config
from tuneroute_trainer.cli import main
from tuneroute_trainer.config import TrainerConfig
from tuneroute_trainer.moe_lora import enable_fused_moe_lora
from tuneroute_trainer.train import checkpoint_dir


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {arch: save_tiny_model(arch, root / arch) for arch in ("qwen3_moe", "mixtral", "olmoe", "gpt_oss")}


def _run(tmp_path, capsys, cfg) -> tuple[int, list[dict]]:
    rc = main(["--config", str(write_config(tmp_path / "config.json", cfg))])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"event"')]
    return rc, [line for line in lines if line["event"] == "progress"]


def _manifest(out: Path) -> dict:
    return json.loads((out / "tuneroute-manifest.json").read_text())


def _checkpoints(cfg: dict) -> Path:
    return checkpoint_dir(TrainerConfig.model_validate(cfg))


@pytest.mark.parametrize("arch", ["qwen3_moe", "mixtral", "olmoe", "gpt_oss"])
def test_sft_lowers_loss_and_saves_a_stock_peft_adapter(arch, models, tmp_path, capsys, termination_log):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    rc, progress = _run(tmp_path, capsys, trainer_config(models[arch], out))
    assert rc == 0
    losses = [p["loss"] for p in progress[:30]]  # per-step losses (the last line is the run's mean)
    assert len(progress) >= 30 and progress[-1]["step"] == 30 and progress[-1]["percent"] == 100
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.05
    manifest = _manifest(out)
    assert manifest["metrics"]["steps"] == 30 and manifest["lora"]["expertsImplementation"] == "tuneroute_grouped"
    assert manifest["baseModel"]["path"] == str(models[arch])
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert set(adapter_cfg["target_parameters"]) == {"experts.gate_up_proj", "experts.down_proj"}
    assert not termination_log.exists()

    ids = torch.randint(3, 120, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stock = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models[arch]), out).eval()
        with stock.disable_adapter():
            base_logits = stock(ids).logits
        stock_logits = stock(ids).logits
        ours = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models[arch]), out).eval()
        enable_fused_moe_lora(ours, "grouped")
        fused_logits = ours(ids).logits
    torch.testing.assert_close(fused_logits, stock_logits, atol=1e-5, rtol=1e-5)
    assert (stock_logits - base_logits).abs().max() > 1e-3  # the trained adapter is not a no-op


@pytest.mark.parametrize("fmt", ["completion", "instruction"])
def test_other_sft_formats_train(fmt, models, tmp_path, capsys):
    out = tmp_path / "out"
    rc, progress = _run(tmp_path, capsys, trainer_config(models["qwen3_moe"], out, fmt=fmt, training={"maxSteps": 2}))
    assert rc == 0 and progress[-1]["step"] == 2
    assert _manifest(out)["dataset"]["format"] == fmt


@pytest.mark.parametrize("kernel, impl", [("loop", "tuneroute_loop"), ("peft", "grouped_mm")])
def test_kernel_choice_reaches_the_model(kernel, impl, models, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = trainer_config(models["qwen3_moe"], out, training={"maxSteps": 2}, lora={"kernel": kernel})
    rc, progress = _run(tmp_path, capsys, cfg)
    assert rc == 0 and progress[-1]["step"] == 2
    assert _manifest(out)["lora"]["expertsImplementation"] == impl


def test_dense_model_gets_attention_lora_only(tmp_path, capsys):
    out = tmp_path / "out"
    model_dir = save_tiny_model("qwen3_dense", tmp_path / "dense")
    rc, progress = _run(tmp_path, capsys, trainer_config(model_dir, out, training={"maxSteps": 2}))
    assert rc == 0 and progress[-1]["step"] == 2
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert not adapter_cfg.get("target_parameters") and set(adapter_cfg["target_modules"]) == {"q_proj", "v_proj"}
    assert _manifest(out)["lora"]["expertsImplementation"] == "none"


def _sequence_logprob(model, tok, prompt, answer):
    ids = tok(prompt + answer, return_tensors="pt").input_ids
    n_prompt = len(tok(prompt).input_ids)
    logp = model(ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
    return logp[n_prompt - 1 :].sum()


def test_dpo_on_preference_data_prefers_chosen_answers(models, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneroute_testing.trainer_fixtures import DATA

    out = tmp_path / "out"
    cfg = trainer_config(models["qwen3_moe"], out, fmt="preference", training={"maxSteps": 16, "learningRate": 1e-2})
    rc, progress = _run(tmp_path, capsys, cfg)
    assert rc == 0
    manifest = _manifest(out)
    assert manifest["method"] == "dpo" and manifest["metrics"]["steps"] == 16
    # policy == reference at the start: loss ~ log 2 (plus the router's small aux loss)
    assert progress[0]["loss"] == pytest.approx(0.6931, abs=0.05)

    rows = [json.loads(line) for line in (DATA / "preference.jsonl").read_text().splitlines()][:16]
    tok = AutoTokenizer.from_pretrained(out)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models["qwen3_moe"]), out).eval()
    enable_fused_moe_lora(model, "grouped")
    margins = []
    with torch.no_grad():
        for r in rows:
            pol = [_sequence_logprob(model, tok, r["prompt"], r[k]) for k in ("chosen", "rejected")]
            with model.disable_adapter():
                ref = [_sequence_logprob(model, tok, r["prompt"], r[k]) for k in ("chosen", "rejected")]
            margins.append((pol[0] - ref[0]) - (pol[1] - ref[1]))
    # the DPO implicit reward: chosen answers gained likelihood relative to rejected ones
    assert torch.stack(margins).mean() > 0


def test_resume_continues_from_the_latest_checkpoint(models, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = trainer_config(models["qwen3_moe"], out, training={"maxSteps": 4}, checkpoint={"everySteps": 2})
    rc, _ = _run(tmp_path, capsys, cfg)
    assert rc == 0 and (_checkpoints(cfg) / "checkpoint-4").is_dir()
    # the pod restarts with a longer schedule: training resumes at step 5, not 1
    rc, progress = _run(tmp_path, capsys, {**cfg, "training": {**cfg["training"], "maxSteps": 6}})
    assert rc == 0
    assert progress[0]["step"] == 5 and progress[-1]["step"] == 6
    assert _manifest(out)["resumedFrom"].endswith("checkpoint-4")


def test_a_finished_run_retried_with_the_same_config_does_not_train_again(models, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = trainer_config(models["qwen3_moe"], out, training={"maxSteps": 3})
    assert _run(tmp_path, capsys, cfg)[0] == 0
    first = _manifest(out)
    rc, progress = _run(tmp_path, capsys, cfg)  # the pod was retried after publishing
    assert rc == 0 and progress == []
    assert _manifest(out) == first and first["metrics"]["steps"] == 3


def test_sigterm_saves_a_checkpoint_and_the_next_run_resumes(models, tmp_path, capsys):
    out = tmp_path / "out"
    term = tmp_path / "term.log"
    cfg = trainer_config(models["qwen3_moe"], out, training={"maxSteps": 500}, checkpoint={"everySteps": 1000})
    config = write_config(tmp_path / "config.json", cfg)
    env = {**os.environ, "TUNEROUTE_TERMINATION_LOG": str(term)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneroute_trainer", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        for line in proc.stdout:
            if line.startswith('{"event": "progress"') and json.loads(line)["step"] >= 3:
                proc.send_signal(signal.SIGTERM)
                break
        proc.stdout.read()
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert rc == 143
    ckpts = sorted(_checkpoints(cfg).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert ckpts, "no checkpoint saved on SIGTERM"
    saved = int(ckpts[-1].name.split("-")[1])
    assert saved >= 3
    assert term.read_text().startswith(f"preempted: checkpoint saved at step {saved}")
    assert not (out / "tuneroute-manifest.json").exists() and not (out / "adapter_model.safetensors").exists()

    rc, progress = _run(tmp_path, capsys, {**cfg, "training": {**cfg["training"], "maxSteps": saved + 2}})
    assert rc == 0 and progress[0]["step"] == saved + 1
    assert _manifest(out)["metrics"]["steps"] == saved + 2


def test_a_recreated_job_neither_resumes_nor_reuses_the_old_runs_work(models, tmp_path, capsys):
    """A FineTuneJob deleted and re-created under the same name writes to the same output
    directory with a new run id (its uid): it must train afresh, not resume the old LoRA and
    optimizer state (the data behind the same path may have changed), nor call the old adapter
    done. The old run's checkpoints are left alone."""
    out = tmp_path / "out"
    old = trainer_config(models["qwen3_moe"], out, training={"maxSteps": 4}, checkpoint={"everySteps": 2})
    old["output"]["runId"] = "uid-old"
    assert _run(tmp_path, capsys, old)[0] == 0
    assert (_checkpoints(old) / "checkpoint-4").is_dir()

    new = {**old, "output": {**old["output"], "runId": "uid-new"}}
    rc, progress = _run(tmp_path, capsys, new)
    assert rc == 0 and progress and progress[0]["step"] == 1 and progress[-1]["step"] == 4
    manifest = _manifest(out)
    assert manifest["runId"] == "uid-new" and manifest["resumedFrom"] is None
    assert (_checkpoints(old) / "checkpoint-4").is_dir() and _checkpoints(new) != _checkpoints(old)


def test_an_epoch_schedule_with_gradient_accumulation_keeps_the_last_two_checkpoints(models, tmp_path, capsys):
    """No maxSteps: 2 epochs of the 48 chat rows, 8 rows a micro-batch and 2 micro-batches an
    optimizer step, so 3 steps an epoch and 6 in all; a checkpoint every step, the last 2 kept."""
    out = tmp_path / "out"
    training = {"maxSteps": None, "epochs": 2, "batchSize": 8, "gradientAccumulation": 2}
    cfg = trainer_config(models["qwen3_moe"], out, training=training, checkpoint={"everySteps": 1})
    rc, progress = _run(tmp_path, capsys, cfg)
    assert rc == 0
    assert [p["step"] for p in progress[:6]] == [1, 2, 3, 4, 5, 6] and progress[-1]["totalSteps"] == 6
    assert progress[2]["epoch"] == pytest.approx(1.0) and progress[-1]["epoch"] == pytest.approx(2.0)
    assert sorted(p.name for p in _checkpoints(cfg).glob("checkpoint-*")) == ["checkpoint-5", "checkpoint-6"]
    assert _manifest(out)["metrics"]["steps"] == 6
