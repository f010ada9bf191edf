"""The PyTorch tree attention that replaces trl's hub-downloaded FA3 kernel: a packed prefix tree (a prompt
shared by its completions) gives the same next-token log-probabilities as each sample run on its own."""

import numpy as np
import pytest
import torch

from tuneroute_testing.tiny_models import tiny_config, tiny_model


def _model(arch: str):
    if arch != "mixtral_window":
        return tiny_model(arch)
    from transformers import AutoModelForCausalLM

    config = tiny_config("mixtral")
    config.sliding_window = 8
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("arch", ["qwen3_moe", "mixtral_window"])  # a sliding attention window shorter than the prompt
def test_packed_tree_matches_separate_forwards(arch):
    from trl.experimental.async_grpo.packing import TreeRow

    from tuneroute_trainer.grpo import tree_attention

    torch.set_num_threads(1)
    name = tree_attention.register()
    model = _model(arch)
    prompt = [5, 9, 17, 23, 4, 41, 8, 12, 30, 7, 11, 19, 3, 27, 16, 22, 35]
    completions = [[50, 51, 52], [50, 51, 60, 61], [70], [50, 80, 81, 82, 83]]
    row = TreeRow()
    for group, ids in enumerate([prompt + c for c in completions]):
        n_c = len(ids) - len(prompt)
        row.add(
            {
                "input_ids": torch.tensor(ids),
                "completion_mask": torch.tensor([0] * len(prompt) + [1] * n_c),
                "old_log_probs": torch.zeros(len(ids)),
                "advantage": 0.0,
                "group_id": group,
            }
        )
    packed = row.pack()
    assert len(packed["input_ids"]) < len(prompt) * len(completions)  # the prompt is forwarded once

    with torch.no_grad():
        model.set_attn_implementation(name)
        tree = (
            model(
                input_ids=packed["input_ids"][None],
                position_ids=packed["position_ids"][None],
                tree_kv_index=packed["tree_kv_index"],
                tree_cu_seqlens_q=packed["tree_cu_seqlens_q"],
                tree_cu_seqlens_k=packed["tree_cu_seqlens_k"],
                tree_max_seqlen_q=int(packed["tree_max_seqlens"][0]),
                tree_max_seqlen_k=int(packed["tree_max_seqlens"][1]),
            )
            .logits[0]
            .log_softmax(-1)
        )
        tree_logps = tree[packed["token_index"], packed["shift_labels"][packed["token_index"]]]

        model.set_attn_implementation("sdpa")
        expected = []
        for c in completions:
            ids = torch.tensor([prompt + c])
            logps = model(ids).logits[0].log_softmax(-1)
            expected += [logps[len(prompt) + k - 1, t].item() for k, t in enumerate(c)]
    np.testing.assert_allclose(tree_logps.numpy(), np.array(expected), atol=2e-5)
