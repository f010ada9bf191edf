"""The asynchronous rollout worker: a thread that generates, scores and queues the next batches while the
trainer optimises on the current one (trl's `RolloutWorkerProtocol`).

Staleness is bounded exactly: micro-batch k belongs to optimiser step s = k // accumulation, which trains with
policy version s + 1 (version 1 is published before step 1). The worker starts it only once version
s + 1 - maxStaleness is live, so every sample it queues is at most maxStaleness versions old when trained, and
trl never has to drop one. maxStaleness 0 degenerates to generate-then-train.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..rewards import Reward
from .rollouts import Completion

log = logging.getLogger("tuneroute_trainer")


def group_advantages(rewards: np.ndarray) -> np.ndarray:
    """(r - mean) / std within a group; NaN rewards (unscorable) get advantage 0 and are left out of mean/std."""
    adv = np.zeros_like(rewards)
    ok = ~np.isnan(rewards)
    if ok.any():
        adv[ok] = (rewards[ok] - rewards[ok].mean()) / (rewards[ok].std() + 1e-4)
    return adv


def weighted_rewards(per_func: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sum over functions ([F, N] -> [N]); a completion no function could score stays NaN."""
    total = np.nansum(per_func * weights[:, None], axis=0)
    total[np.all(np.isnan(per_func), axis=0)] = np.nan
    return total


class RolloutWorker:
    def __init__(
        self,
        engine,
        dataset,
        tokenizer,
        rewards: list[Reward],
        generations: int,
        prompts_per_batch: int,
        accumulation: int,
        max_staleness: int,
        seed: int = 0,
    ):
        self.engine, self.tokenizer, self.rewards = engine, tokenizer, rewards
        self.dataset = dataset.shuffle(seed=seed)
        self.generations, self.prompts_per_batch = generations, prompts_per_batch
        self.accumulation, self.max_staleness = accumulation, max_staleness
        self.rollout_buffer: queue.Queue = queue.Queue()
        self.metrics_queue: queue.Queue = queue.Queue(maxsize=4096)
        self._version = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._heartbeat = time.time()
        self._cursor = 0
        self._group = 0
        self.generated_tokens = 0
        self.generation_seconds = 0.0

    # ---- RolloutWorkerProtocol -------------------------------------------------------------------------
    def start(self) -> None:
        self._heartbeat = time.time()
        self._thread = threading.Thread(target=self._run, name="tuneroute-rollouts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def update_model_version(self, model_version: int) -> None:
        with self._cond:
            self._version = model_version
            self._cond.notify_all()

    def check_health(self, stale_after_s: float) -> None:
        if self._error is not None:
            raise RuntimeError(f"rollout worker failed: {type(self._error).__name__}: {self._error}") from self._error
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            raise RuntimeError("rollout worker stopped")
        if time.time() - self._heartbeat > stale_after_s:
            raise RuntimeError(f"rollout worker made no progress for {stale_after_s:.0f} s")

    # ---- the loop ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            batch = 0
            while not self._stop.is_set():
                step = batch // self.accumulation
                with self._cond:  # wait until the policy is fresh enough for this batch
                    while self._version < step + 1 - self.max_staleness and not self._stop.is_set():
                        self._heartbeat = time.time()
                        self._cond.wait(timeout=1.0)
                if self._stop.is_set():
                    return
                self._produce()
                batch += 1
        except BaseException as e:  # surfaced to the trainer by check_health
            self._error = e
            log.exception("rollout worker failed")

    def _next_rows(self) -> list[dict[str, Any]]:
        rows = []
        for _ in range(self.prompts_per_batch):
            rows.append(self.dataset[self._cursor % len(self.dataset)])
            self._cursor += 1
        return rows

    def _prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, list):  # chat messages
            return self.tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def _produce(self) -> None:
        from trl.experimental.async_grpo.async_rollout_worker import RolloutSample

        rows = self._next_rows()
        prompt_ids = [self._prompt_ids(r["prompt"]) for r in rows]
        t0 = time.monotonic()
        groups, version = self.engine.generate(prompt_ids, self.generations)
        seconds = time.monotonic() - t0
        n_tokens = sum(len(c.token_ids) for g in groups for c in g)
        self.generated_tokens += n_tokens
        self.generation_seconds += seconds
        self._heartbeat = time.time()

        metrics: dict[str, Any] = {"rollout/tokens_per_second": (float(n_tokens), seconds)}
        lengths = []
        for row, ids, group in zip(rows, prompt_ids, groups):
            per_func, rewards = self._score(row, group)
            advantages = group_advantages(rewards)
            for j, c in enumerate(group):
                lengths.append(len(c.token_ids))
                sample_metrics = {"reward": float(rewards[j])}
                for r, values in zip(self.rewards, per_func):
                    sample_metrics[f"rewards/{r.name}/mean"] = float(values[j])
                self.rollout_buffer.put(
                    self._sample(RolloutSample, row, ids, c, advantages[j], version, sample_metrics)
                )
            self._group += 1
        metrics["completions/mean_length"] = (float(sum(lengths)), float(len(lengths)))
        with contextlib.suppress(queue.Full):  # metrics are never worth blocking generation for
            self.metrics_queue.put_nowait(metrics)

    def _score(self, row: dict[str, Any], group: list[Completion]) -> tuple[np.ndarray, np.ndarray]:
        n = len(group)
        texts = [self.tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in group]
        if isinstance(row["prompt"], list):
            completions: list = [[{"role": "assistant", "content": t}] for t in texts]
        else:
            completions = texts
        columns = {k: [v] * n for k, v in row.items() if k != "prompt"}
        per_func = np.array(
            [
                [
                    np.nan if s is None else s
                    for s in r([row["prompt"]] * n, completions, [c.token_ids for c in group], **columns)
                ]
                for r in self.rewards
            ],
            dtype=float,
        )
        weights = np.array([r.weight for r in self.rewards], dtype=float)
        return per_func, weighted_rewards(per_func, weights)

    def _sample(
        self, cls: Callable, row, prompt_ids: list[int], c: Completion, advantage: float, version: int, metrics
    ):
        ids = prompt_ids + c.token_ids
        return cls(
            prompt=row["prompt"],
            completion=c.token_ids,
            input_ids=np.asarray(ids, dtype=np.int64),
            completion_mask=np.asarray([0] * len(prompt_ids) + [1] * len(c.token_ids), dtype=np.int64),
            old_log_probs=np.asarray([0.0] * len(prompt_ids) + list(c.logprobs), dtype=np.float32),
            advantage=float(advantage),
            model_version=version,
            group_id=self._group,
            metrics=metrics,
            enqueued_at=time.time(),
        )
