"""What the trainer publishes for serving, checked against the saved adapter loaded afresh with stock
PEFT: the parity gate's reference, the held-out eval losses, the routing profile, the merged model."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tuneroute_testing.trainer_fixtures import DATA, save_tiny_model, trainer_config, write_config
from tuneroute_trainer import reference
from tuneroute_trainer.cli import main


@pytest.fixture(scope="module", params=["qwen3_moe", "gpt_oss"])
def trained(request, tmp_path_factory):
    """A tiny MoE adapter (attention + experts) trained on the arithmetic chat data, merged too.
    GPT-OSS stores its experts transposed with gate/up interleaved: the other layout."""
    root = tmp_path_factory.mktemp(request.param)
    model = save_tiny_model(request.param, root / "model")
    cfg = trainer_config(model, root / "out", output={"merge": True}, evaluation={"heldOut": 8})
    assert main(["--config", str(write_config(root / "config.json", cfg))]) == 0
    return model, root / "out"


def _fresh(model_dir, out):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out).eval()


def test_the_reference_describes_every_tensor_of_the_saved_adapter(trained):
    model_dir, out = trained
    ref = json.loads((out / reference.REFERENCE_JSON).read_text())
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as f:
        saved = set(f.keys())
    assert {t for m in ref["modules"].values() for t in m["tensors"]} == saved
    kinds = {m["kind"] for m in ref["modules"].values()}
    assert kinds == {"linear", "experts"}
    layouts = {m.get("gateUp") for m in ref["modules"].values() if m.get("gateUp")}
    assert layouts == ({"interleave"} if "gpt_oss" in str(model_dir) else {"concat"})
    # the fingerprints are those of the adapter as saved: a fresh stock-PEFT load gives the same
    modules, tensors = reference.fingerprints(_fresh(model_dir, out))
    stored = load_file(str(out / reference.REFERENCE_TENSORS))
    assert modules == ref["modules"]
    for key in modules:
        torch.testing.assert_close(tensors[f"delta.{key}"], stored[f"delta.{key}"], rtol=1e-5, atol=1e-7)
    assert all(float(stored[f"delta.{k}"].abs().max()) > 0 for k in modules)  # trained: every module moved


def test_reference_outputs_are_the_adapters_greedy_decoding_and_differ_from_the_base(trained):
    model_dir, out = trained
    outputs = json.loads((out / reference.REFERENCE_JSON).read_text())["outputs"]
    assert outputs["dtype"] == "float32" and len(outputs["prompts"]) == 4
    fresh = _fresh(model_dir, out)
    for row in outputs["prompts"][:2]:
        again = reference.greedy(fresh, row["promptTokenIds"], outputs["maxNewTokens"])
        assert again["tokens"] == row["adapter"]["tokens"]
        np.testing.assert_allclose(again["logprobs"], row["adapter"]["logprobs"], atol=1e-4)
    assert any(r["adapter"]["tokens"] != r["base"]["tokens"] for r in outputs["prompts"])


def test_held_out_losses_and_the_routing_profile(trained):
    from tuneroute_router.adapters import EMBEDDER, decode, embed_all
    from tuneroute_router.classifier import Embedder

    _, out = trained
    profile = json.loads((out / "tuneroute-profile.json").read_text())
    manifest = json.loads((out / "tuneroute-manifest.json").read_text())
    ev = manifest["evaluation"]
    assert ev["heldOut"] == 8 and ev["evalLoss"] < ev["baseEvalLoss"]  # 30 steps of arithmetic beat random
    assert profile["evalLoss"] == pytest.approx(ev["evalLoss"], abs=1e-5) and profile["embedder"] == EMBEDDER
    emb = decode(profile["embeddings"], 256)
    assert emb.shape == (profile["samples"], 256) and profile["samples"] == 40  # 48 rows, 8 held out
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # each sample is the router's own embedding of one prompt of the data (int8 keeps cosine > 0.999)
    rows = [json.loads(line) for line in (DATA / "chat.jsonl").read_text().splitlines()]
    prompts = embed_all(Embedder(), [r["messages"][0]["content"] for r in rows])
    assert float((emb @ prompts.T).max(axis=1).min()) > 0.999


def test_the_merged_model_computes_what_the_adapter_does(trained):
    from transformers import AutoModelForCausalLM

    model_dir, out = trained
    assert json.loads((out / "tuneroute-manifest.json").read_text())["merged"] == "merged"
    ids = torch.randint(3, 120, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = _fresh(model_dir, out)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(out / "merged").eval()(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
