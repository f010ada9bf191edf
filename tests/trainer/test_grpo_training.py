"""GRPO end to end through the CLI on a tiny random MoE model (expert LoRA on the fused kernel, rollouts with
transformers): the mean reward rises in both sync and async modes, progress carries the GRPO figures, bad
reward specs stop before training with exit 2 and nothing published."""

import json
import time

import pytest
import torch

from tuneroute_testing.process import QuietHandler, http_server
from tuneroute_testing.tiny_models import tiny_model
from tuneroute_testing.trainer_fixtures import char_tokenizer, write_config
from tuneroute_trainer.cli import main

# The task: answer in a given format, here "the completion contains %". The random model writes "%" in about a
# quarter of its completions; a GRPO run of 20 steps makes it (nearly) always do so.
FORMAT = {"name": "format", "regex": {"pattern": "%"}}


@pytest.fixture(scope="module")
def grpo_model(tmp_path_factory):
    """A tiny Qwen3-MoE whose output layer can put its mass on one token (std 0.5: the default init's 0.02
    leaves every completion near uniform, and no reward moves it in a few steps), and 64 prompts."""
    root = tmp_path_factory.mktemp("grpo")
    model = tiny_model("qwen3_moe", seed=0)
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    model.save_pretrained(root / "model")
    char_tokenizer().save_pretrained(root / "model")
    rows = [{"prompt": f"say {i}:", "answer": str(i)} for i in range(64)]
    (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def grpo_config(root, out, steps=20, **grpo) -> dict:
    return {
        "model": {"path": str(root / "model")},
        "dataset": {"path": str(root / "prompts.jsonl"), "format": "completion"},
        "method": "grpo",
        "lora": {"rank": 8, "alpha": 16, "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "training": {"maxSteps": steps, "learningRate": 5e-3, "batchSize": 2, "precision": "fp32", "seed": 0},
        "checkpoint": {"everySteps": 1000},
        "output": {"dir": str(out), "adapterName": "tiny-grpo"},
        "grpo": {"generations": 8, "maxCompletionLength": 8, "rewards": [FORMAT], **grpo},
    }


def run_cli(tmp_path, capsys, cfg) -> tuple[int, list[dict]]:
    rc = main(["--config", str(write_config(tmp_path / "config.json", cfg))])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith('{"event": "progress"')]
    return rc, [x for x in lines if "reward" in x]  # per-step lines (the run's summary line has no reward)


def mean(xs):
    return sum(xs) / len(xs)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_grpo_learns_a_format_reward(mode, grpo_model, tmp_path, capsys, termination_log):
    torch.set_num_threads(1)
    out = tmp_path / "out"
    cfg = grpo_config(grpo_model, out, **{"async": mode == "async"})
    rc, steps = run_cli(tmp_path, capsys, cfg)
    assert rc == 0, termination_log.read_text() if termination_log.exists() else ""
    rewards = [s["reward"] for s in steps]
    assert len(rewards) == 20 and steps[-1]["step"] == 20
    assert mean(rewards[-5:]) > 0.7 and mean(rewards[-5:]) > mean(rewards[:5]) + 0.3, rewards
    # what status.progress shows: reward per function, completion length, rollout speed (and KL when known)
    last = steps[-1]
    assert last["rewards"] == {"format": last["reward"]}
    assert 1 <= last["completionLength"] <= 8 and last["rolloutTokensPerSecond"] > 0 and last["tokensPerSecond"] > 0
    if mode == "async":
        # the first step is on-policy: the rollouts' log-probabilities equal the trainer's (importance ratio 1)
        assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-4)
    manifest = json.loads((out / "tuneroute-manifest.json").read_text())
    assert manifest["method"] == "grpo" and manifest["grpo"]["async"] is (mode == "async")
    assert manifest["lora"]["expertsImplementation"] == (
        "tuneroute_triton" if torch.cuda.is_available() else "tuneroute_grouped"
    )
    assert manifest["metrics"]["finalReward"] > manifest["metrics"]["firstReward"]
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert set(adapter_cfg["target_parameters"]) == {"experts.gate_up_proj", "experts.down_proj"}


def test_sync_grpo_with_a_kl_penalty_against_the_base_model(grpo_model, tmp_path, capsys):
    torch.set_num_threads(1)
    cfg = grpo_config(grpo_model, tmp_path / "out", steps=4, beta=0.04, **{"async": False})
    rc, steps = run_cli(tmp_path, capsys, cfg)
    assert rc == 0 and len(steps) == 4
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the untrained adapter is the base model
    assert steps[-1]["kl"] > 0  # training moved the policy away from it, and the KL term sees it


class _SlowJudge(QuietHandler):
    def do_POST(self):
        time.sleep(1.0)


@pytest.fixture
def slow_endpoint():
    with http_server(_SlowJudge, "/score") as url:
        yield url


def _bad_module(tmp_path, url):
    (tmp_path / "judge.py").write_text("import not_installed_anywhere\n")
    return [{"name": "mine", "python": {"path": str(tmp_path / "judge.py")}}]


BAD = {
    "unknown reward function": (
        lambda t, url: [{"name": "bleu", "bleuScore": {}}],
        "grpo.rewards[0].bleuScore: Extra inputs are not permitted",
    ),
    "schema that is not JSON Schema": (
        lambda t, url: [{"name": "json", "jsonSchema": {"schema": {"type": "objekt"}}}],
        "grpo.rewards[0].jsonSchema.schema: not a JSON Schema",
    ),
    "module that does not import": (
        _bad_module,
        "grpo.rewards[0].python.path: {tmp}/judge.py does not import: ModuleNotFoundError",
    ),
    "endpoint that times out": (
        lambda t, url: [{"name": "judge", "http": {"url": url, "timeoutSeconds": 0.2}}],
        "grpo.rewards[0].http.url: the endpoint did not score a probe batch: no answer from {url} within 0.2 s",
    ),
    "reference column missing": (
        lambda t, url: [{"name": "right", "numericMatch": {}}],
        "grpo.referenceColumn: reward 'right' (numericMatch) compares with a reference answer, but the dataset has "
        "no column 'solution'; found answer, prompt",
    ),
    "vLLM server not there": (
        lambda t, url: [FORMAT],
        "grpo.rollouts.vllm.url: the vLLM server does not answer",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_grpo_specs_stop_before_training(case, grpo_model, slow_endpoint, tmp_path, capsys, termination_log):
    make, expected = BAD[case]
    out = tmp_path / "out"
    cfg = grpo_config(grpo_model, out, steps=1, rewards=make(tmp_path, slow_endpoint))
    if case == "reference column missing":
        cfg["grpo"]["referenceColumn"] = "solution"
    if case == "vLLM server not there":
        vllm = {"url": "http://127.0.0.1:9", "adapterDir": str(tmp_path / "adapters")}
        cfg["grpo"]["rollouts"] = {"engine": "vllm", "vllm": vllm}
    rc = main(["--config", str(write_config(tmp_path / "c.json", cfg))])
    message = termination_log.read_text().strip()
    assert rc == 2, message
    assert message.startswith(expected.format(tmp=tmp_path, url=slow_endpoint)), message
    assert not (out / "tuneroute-manifest.json").exists() and not (out / "adapter_model.safetensors").exists()
