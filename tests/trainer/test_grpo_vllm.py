"""GRPO with rollouts from a real vLLM server (the CPU build, scripts/vllm-venv.sh): each policy version reaches
the server as adapter files loaded at run time under a new name, and the server samples with the log-probs the
trainer expects. On the CPU, vLLM runs LoRA on attention only (no CPU MoE-LoRA kernel in vLLM 0.32), so these
tests train an attention adapter; the expert path with vLLM needs vLLM's GPU build (see tests/gpu/grpo.sh).
The server is tuneroute_testing.serving.rollout_server, the one bench/grpo_async.py starts."""

import json
from pathlib import Path

import pytest
import requests
import torch

from tuneroute_testing.serving import ATTENTION, rollout_server
from tuneroute_testing.tiny_models import tiny_config
from tuneroute_testing.trainer_fixtures import char_tokenizer, write_config
from tuneroute_trainer.cli import main
from tuneroute_trainer.grpo.rollouts import VllmEngine


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny Qwen3-MoE vLLM can serve (head_dim 32), its prompts, and a vLLM server for it with runtime LoRA."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("vllm")
    config = tiny_config("qwen3_moe")
    config.hidden_size, config.head_dim = 128, 32  # vLLM's CPU attention has no kernel for head_dim 8
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "experts" in name:
                p.normal_(0, 0.2)
        model.lm_head.weight.normal_(0, 0.5)  # a policy that can concentrate its mass (see test_grpo_training)
    model.save_pretrained(root / "model")
    char_tokenizer().save_pretrained(root / "model")
    rows = [{"prompt": f"say {i}:", "answer": str(i)} for i in range(64)]
    (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    server = rollout_server(root / "model", root / "vllm.log", max_model_len=128, max_num_seqs=16).start(timeout=900)
    try:
        yield {"root": root, "url": server.root}
    finally:
        server.stop()


def _loaded_adapters(url: str) -> set[str]:
    return {m["id"] for m in requests.get(f"{url}/v1/models", timeout=10).json()["data"]} - {"base"}


def _requests_served(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:request_success_total{")
    )


def test_each_version_is_served_with_the_trainers_logprobs(served, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    url, model_dir = served["url"], served["root"] / "model"
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(r=8, target_modules=ATTENTION))
    engine = VllmEngine(
        url, str(tmp_path / "adapters"), "parity-x1", max_new_tokens=6, temperature=0.8, keep_versions=1
    )
    tok = char_tokenizer()
    prompt = tok("say 3:")["input_ids"]
    for version in (1, 2):
        with torch.no_grad():  # a different policy each version
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.3)
        engine.publish(policy, version)
        # the previous version left the server and the disk: only the staleness window stays
        assert _loaded_adapters(url) == {f"parity-x1-v{version}"}
        assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == [f"parity-x1-v{version}"]
        (group,), used = engine.generate([prompt], n=4)
        assert used == version and len(group) == 4
        with torch.no_grad():
            for c in group:
                ids = torch.tensor([prompt + c.token_ids])
                logits = policy(ids).logits[0, len(prompt) - 1 : -1] / 0.8
                expected = logits.log_softmax(-1).gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
                torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=1e-4)
    engine.close()
    assert _loaded_adapters(url) == set() and list((tmp_path / "adapters").iterdir()) == []


def _config(served, out: Path, mode: str, steps: int) -> dict:
    root = served["root"]
    return {
        "model": {"path": str(root / "model")},
        "dataset": {"path": str(root / "prompts.jsonl"), "format": "completion"},
        "method": "grpo",
        "lora": {"rank": 8, "alpha": 16, "targetModules": ATTENTION, "experts": False},
        "training": {"maxSteps": steps, "learningRate": 5e-3, "batchSize": 2, "precision": "fp32", "seed": 0},
        "checkpoint": {"everySteps": 1000},
        "output": {"dir": str(out), "adapterName": "tiny-grpo"},
        "grpo": {
            "generations": 8,
            "maxCompletionLength": 8,
            "async": mode == "async",
            "rollouts": {"engine": "vllm", "vllm": {"url": served["url"], "adapterDir": str(out.parent / "adapters")}},
            "rewards": [{"name": "format", "regex": {"pattern": "M"}}],
        },
    }


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_grpo_trains_on_vllm_rollouts(mode, served, tmp_path, capsys, termination_log):
    torch.set_num_threads(1)
    out, steps = tmp_path / "out", 6
    before = _requests_served(served["url"])
    rc = main(["--config", str(write_config(tmp_path / "c.json", _config(served, out, mode, steps)))])
    assert rc == 0, termination_log.read_text() if termination_log.exists() else ""
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith('{"event": "progress"')]
    progress = [x for x in lines if "reward" in x]
    assert [p["step"] for p in progress] == list(range(1, steps + 1))
    assert all(p["rolloutTokensPerSecond"] > 0 for p in progress)
    # every step's prompts went to vLLM (one request per generation batch)
    assert _requests_served(served["url"]) - before >= steps
    if mode == "async":
        assert progress[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # vLLM's log-probs are the trainer's
    # the run's versions were unloaded and their files removed; the final adapter is published as usual
    assert _loaded_adapters(served["url"]) == set()
    assert list((tmp_path / "adapters").iterdir()) == []
    assert (out / "adapter_model.safetensors").exists() and (out / "tuneroute-manifest.json").exists()
