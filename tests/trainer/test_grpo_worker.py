"""The asynchronous rollout worker on a real tiny model (transformers generation, built-in reward): it runs ahead
of the trainer by at most maxStaleness policy versions, tags every sample with the version that produced it,
and its log-probabilities are those of the temperature-scaled distribution the trainer scores."""

import contextlib
import queue
import time

import pytest
import torch
from datasets import Dataset

from tuneroute_testing.tiny_models import tiny_model
from tuneroute_testing.trainer_fixtures import char_tokenizer
from tuneroute_trainer.config import GrpoSpec
from tuneroute_trainer.grpo.rollouts import TransformersEngine, adapter_state
from tuneroute_trainer.grpo.worker import RolloutWorker, group_advantages, weighted_rewards
from tuneroute_trainer.rewards import build_rewards


@pytest.fixture(scope="module")
def engine():
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(1)
    model = get_peft_model(tiny_model("qwen3_moe"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    tok = char_tokenizer()
    tok.padding_side = "left"
    return TransformersEngine(model, tok, max_new_tokens=6, temperature=0.7, eos_token_ids=[tok.eos_token_id])


def _worker(engine, staleness, accumulation=1):
    grpo = GrpoSpec.model_validate({"rewards": [{"name": "fmt", "regex": {"pattern": "a"}}], "async": True})
    data = Dataset.from_dict({"prompt": [f"q{i}:" for i in range(8)], "answer": [str(i) for i in range(8)]})
    return RolloutWorker(
        engine,
        data,
        engine.tokenizer,
        build_rewards(grpo),
        generations=4,
        prompts_per_batch=2,
        accumulation=accumulation,
        max_staleness=staleness,
    )


def _publish(engine, worker, version):
    """What the trainer does after each optimizer step: the engine gets the new adapter, then the worker hears."""
    engine.publish(adapter_state(engine.model), version)
    worker.update_model_version(version)


def _drain(worker, expected: int, timeout: float = 60.0) -> list:
    samples, deadline = [], time.monotonic() + timeout
    while len(samples) < expected and time.monotonic() < deadline:
        worker.check_health(60)
        with contextlib.suppress(queue.Empty):
            samples.append(worker.rollout_buffer.get(timeout=0.2))
    time.sleep(0.5)  # give it time to (wrongly) produce more
    assert worker.rollout_buffer.qsize() == 0, "the worker ran further ahead than allowed"
    return samples


@pytest.mark.parametrize("staleness, accumulation", [(1, 1), (2, 1), (1, 2)])
def test_worker_runs_ahead_by_at_most_max_staleness(engine, staleness, accumulation):
    worker = _worker(engine, staleness, accumulation)
    per_batch = 2 * 4
    _publish(engine, worker, 1)  # the trainer publishes version 1 before its first step
    worker.start()
    try:
        # optimizer step s (1-based) trains with version s; its micro-batches may be generated from version
        # s - maxStaleness on, so with version 1 live, steps 1 .. 1 + maxStaleness can be generated
        first = _drain(worker, per_batch * accumulation * (1 + staleness))
        assert {s.model_version for s in first} == {1}
        _publish(engine, worker, 2)  # one step later: exactly one more step's worth
        more = _drain(worker, per_batch * accumulation)
        assert {s.model_version for s in more} == {2}
    finally:
        worker.stop()
    sample = first[0]
    assert sample.completion_mask.sum() == len(sample.input_ids) - len(engine.tokenizer("q0:")["input_ids"])
    assert set(sample.metrics) == {"reward", "rewards/fmt/mean"}


def test_rollout_logprobs_are_the_temperature_scaled_ones_of_the_published_policy(engine):
    with torch.no_grad():  # a new policy version with a non-zero adapter
        state = {n: torch.randn_like(p) * 0.1 for n, p in adapter_state(engine.model).items()}
    engine.publish(state, version=7)
    tok = engine.tokenizer
    prompt = tok("q3:")["input_ids"]
    (group,), version = engine.generate([prompt], n=3)
    assert version == 7
    with torch.no_grad():
        for c in group:
            ids = torch.tensor([prompt + c.token_ids])
            logits = engine.model(ids).logits[0, len(prompt) - 1 : -1] / 0.7
            expected = logits.log_softmax(-1).gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
            torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=1e-4)


def test_group_advantages_leave_unscorable_completions_out():
    import numpy as np

    per_func = np.array([[1.0, 0.0, np.nan, 1.0], [0.5, np.nan, np.nan, 0.5]])
    rewards = weighted_rewards(per_func, np.array([1.0, 2.0]))
    assert rewards.tolist()[:2] == [2.0, 0.0] and np.isnan(rewards[2]) and rewards[3] == 2.0
    adv = group_advantages(rewards)
    assert adv[2] == 0.0  # no reward function could score it: no push either way
    assert adv[0] > 0 > adv[1] and adv[0] == pytest.approx(adv[3])
