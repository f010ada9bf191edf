"""Build trl's GRPO trainers for a tuneroute config: synchronous `GRPOTrainer` (async: false) or trl's
experimental `AsyncGRPOTrainer` fed by tuneroute's rollout worker (async: true). Both train the same PEFT LoRA
with the fused MoE-LoRA kernel, and both count a batch as `training.batchSize` prompts × `grpo.generations`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import GrpoSpec, TrainerConfig
from ..errors import InputError
from ..rewards import Reward, build_rewards, preflight
from ..trainer_args import shared_trainer_args
from .metrics import grpo_progress
from .rollouts import TransformersEngine, VllmEngine, adapter_state, run_name

log = logging.getLogger("tuneroute_trainer")


@dataclass
class GrpoRun:
    trainer: Any  # a trl GRPOTrainer or AsyncGRPOTrainer
    kernel: str
    rewards: list[Reward]
    engine: Any  # TransformersEngine | VllmEngine | None

    def progress(self, logs: dict) -> dict:
        """GRPO figures for status.progress from one log line."""
        return grpo_progress(logs, self.rewards)

    def summary(self, history: list[dict]) -> dict:
        """Manifest metrics: reward curve ends, per-function means, reward errors."""
        steps = [h for h in history if "reward" in h]
        first, last = steps[:5], steps[-5:]
        mean = lambda rows, k: round(sum(r[k] for r in rows) / len(rows), 4) if rows else None
        return {
            "firstReward": mean(first, "reward"),
            "finalReward": mean(last, "reward"),
            "rewardErrors": {r.name: r.errors for r in self.rewards},
        }

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


def _steps(cfg: TrainerConfig, n_prompts: int) -> int:
    t = cfg.training
    if t.max_steps:
        return t.max_steps
    return max(1, math.ceil(t.epochs * n_prompts / (t.batch_size * t.gradient_accumulation)))


def _grpo(cfg: TrainerConfig) -> GrpoSpec:
    if cfg.grpo is None:  # the config's rules make this impossible for method grpo
        raise ValueError("method grpo without a grpo section")
    return cfg.grpo


def _common_args(cfg: TrainerConfig, ckpt_dir: Path, n_prompts: int) -> dict:
    t, g = cfg.training, _grpo(cfg)
    return dict(
        # completions per micro-batch: batchSize prompts x generations
        **shared_trainer_args(cfg, ckpt_dir, t.batch_size * g.generations, _steps(cfg, n_prompts)),
        num_generations=g.generations,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        top_p=1.0,
        top_k=0,
        epsilon=g.epsilon,
        epsilon_high=g.epsilon_high,
    )


def _eos_ids(tokenizer, model_config) -> list[int]:
    ids = getattr(getattr(model_config, "generation_config", None), "eos_token_id", None) or model_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    return [tokenizer.eos_token_id, *[i for i in ids if i != tokenizer.eos_token_id]]


def _meta_model(model_config):
    """The model's module tree without weights: enough to choose LoRA targets before trl loads it."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config)


# ---- synchronous: trl GRPOTrainer ----------------------------------------------------------------------------


def _sync_trainer_class():
    from trl import GRPOTrainer

    class TunerouteGRPOTrainer(GRPOTrainer):
        """trl's GRPOTrainer, timing generation for `rollout/tokens_per_second`."""

        def _generate(self, prompts):
            t0 = time.monotonic()
            out = super()._generate(prompts)
            seconds = time.monotonic() - t0
            tokens = sum(len(ids) for ids in out[1])
            self._metrics["train"]["rollout/tokens_per_second"].append(tokens / seconds if seconds > 0 else 0.0)
            return out

    return TunerouteGRPOTrainer


class VllmSyncRollouts:
    """trl `rollout_func` for GRPOTrainer: publishes the policy to vLLM once per optimiser step, then generates."""

    def __init__(self, engine: VllmEngine, tokenizer, generations: int):
        self.engine, self.tokenizer, self.generations = engine, tokenizer, generations
        self.published_step: int | None = None

    def _ids(self, prompt) -> list[int]:
        if isinstance(prompt, list):
            return self.tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def __call__(self, prompts: list, trainer) -> dict:
        step = trainer.state.global_step
        if self.published_step != step:
            self.engine.publish(trainer.accelerator.unwrap_model(trainer.model), step + 1)
            self.published_step = step
        g = self.generations
        if len(prompts) % g:
            raise RuntimeError(f"expected groups of {g} copies of each prompt, got {len(prompts)} prompts")
        unique = [self._ids(prompts[i]) for i in range(0, len(prompts), g)]
        groups, _ = self.engine.generate(unique, g)
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": []}
        for ids, group in zip(unique, groups):
            for c in group:
                out["prompt_ids"].append(ids)
                out["completion_ids"].append(c.token_ids)
                out["logprobs"].append(c.logprobs)
        return out


def build_sync(cfg, model_config, tokenizer, dataset, rewards, ckpt_dir, callbacks, engine) -> GrpoRun:
    from trl import GRPOConfig

    from ..modeling import fuse_experts, load_base_model, lora_config

    g = _grpo(cfg)
    model = load_base_model(cfg.model, model_config, cfg.training)
    peft_cfg, kernel = lora_config(model, cfg.lora)
    args = GRPOConfig(
        **_common_args(cfg, ckpt_dir, len(dataset)),
        beta=g.beta,
        reward_weights=[r.weight for r in rewards],
        use_vllm=False,  # vLLM rollouts come through rollout_func: trl's own vLLM path syncs merged weights
        remove_unused_columns=False,
    )
    rollout_func = VllmSyncRollouts(engine, tokenizer, g.generations) if engine is not None else None
    cls = _sync_trainer_class()
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in trl; we pin trl
    trainer = cls(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=peft_cfg,
        rollout_func=rollout_func,
    )
    impl = fuse_experts(trainer.model, peft_cfg, kernel)
    return GrpoRun(trainer, impl, rewards, engine)


# ---- asynchronous: trl AsyncGRPOTrainer + tuneroute's rollout worker ------------------------------------------


class _NoWeightTransfer:
    """trl's weight-transfer hook, unused: `_sync_weight` below publishes adapters itself (never merged weights)."""

    def init_weight_transfer(self):
        pass

    def pause(self):
        pass

    def send_weights(self, iterator):
        pass

    def resume(self):
        pass

    def destroy(self):
        pass


def _async_trainer_class():
    from trl.experimental.async_grpo import async_grpo_trainer as atrl

    # trl's MFU probe calls torch.cuda.get_device_name unconditionally, which raises without a GPU
    if atrl.get_peak_flops_per_device.__name__ != "cuda_peak_flops":
        cuda_only = atrl.get_peak_flops_per_device

        def cuda_peak_flops(accelerator, dtype):
            return cuda_only(accelerator, dtype) if accelerator.device.type == "cuda" else None

        atrl.get_peak_flops_per_device = cuda_peak_flops

    class TunerouteAsyncGRPOTrainer(atrl.AsyncGRPOTrainer):
        """trl's AsyncGRPOTrainer whose policy sync publishes the LoRA adapter to our rollout engine."""

        model_version: int

        def __init__(self, *args, engine=None, **kwargs):
            self.engine = engine
            super().__init__(*args, **kwargs)

        def training_step(self, model, inputs, num_items_in_batch=None):
            # trl's async trainer does not count tokens; progress reports tokens/s from this counter
            self.state.num_input_tokens_seen += int(inputs["global_n_forward_tokens"][0])
            return super().training_step(model, inputs, num_items_in_batch)

        def _sync_weight(self):
            t0 = time.time()
            version = self.model_version + 1
            if self.accelerator.is_main_process:
                model = self.accelerator.unwrap_model(self.model)
                if isinstance(self.engine, TransformersEngine):
                    self.engine.publish(adapter_state(model), version)
                else:
                    self.engine.publish(model, version)
                self.model_version = version
                self.rollout_worker.update_model_version(version)
            self._metrics["train"]["perf/weight_sync_s"].append(time.time() - t0)

    return TunerouteAsyncGRPOTrainer


def build_async(cfg, model_config, tokenizer, dataset, rewards, ckpt_dir, callbacks, engine) -> GrpoRun:
    from peft import get_peft_model
    from trl.experimental.async_grpo import AsyncGRPOConfig

    from ..modeling import compute_dtype, fuse_experts, hf_token, load_base_model, lora_config
    from . import tree_attention
    from .worker import RolloutWorker

    g, t = _grpo(cfg), cfg.training
    peft_cfg, kernel = lora_config(_meta_model(model_config), cfg.lora)
    dtype = str(compute_dtype(t)).removeprefix("torch.")
    init_kwargs = {} if cfg.model.path else {"revision": cfg.model.revision, "token": hf_token()}
    args = AsyncGRPOConfig(
        **_common_args(cfg, ckpt_dir, len(dataset)),
        dtype=dtype,
        model_init_kwargs=init_kwargs,
        max_staleness=g.max_staleness,
        weight_sync_steps=1,
        token_budget=0,  # fixed micro-batches of batchSize x generations completions, as in sync mode
        heartbeat_stale_after_s=600.0,
    )
    if engine is None:
        copy = get_peft_model(load_base_model(cfg.model, model_config, t), peft_cfg)
        fuse_experts(copy, peft_cfg, kernel)
        engine = TransformersEngine(
            copy, tokenizer, g.max_completion_length, g.temperature, _eos_ids(tokenizer, model_config)
        )
    worker = RolloutWorker(
        engine,
        dataset,
        tokenizer,
        rewards,
        generations=g.generations,
        prompts_per_batch=t.batch_size,
        accumulation=t.gradient_accumulation,
        max_staleness=g.max_staleness,
        seed=t.seed,
    )
    cls = _async_trainer_class()
    trainer = cls(
        model=cfg.model.path or cfg.model.id,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=peft_cfg,
        rollout_worker=worker,
        weight_transfer=_NoWeightTransfer(),
        engine=engine,
    )
    tree_attention.register()  # after trl registered its hub-downloaded FA3 kernel under the same name
    impl = fuse_experts(trainer.model, peft_cfg, kernel)
    return GrpoRun(trainer, impl, rewards, engine)


def _vllm_engine(cfg: TrainerConfig) -> VllmEngine:
    g = _grpo(cfg)
    v = g.rollouts.vllm
    assert v is not None  # RolloutSpec's rule: engine vllm has its vllm section
    # sync: the version being trained and the next; async: the staleness window and the next
    keep_versions = g.max_staleness + 1 if g.async_ else 2
    engine = VllmEngine(
        v.url,
        v.adapter_dir,
        run_name(cfg.output.adapter_name),
        g.max_completion_length,
        g.temperature,
        keep_versions=keep_versions,
        timeout=v.timeout_seconds,
    )
    try:
        engine.check()
    except Exception as e:
        raise InputError("grpo.rollouts.vllm.url", f"the vLLM server does not answer: {type(e).__name__}: {e}") from e
    return engine


def build(cfg: TrainerConfig, model_config, tokenizer, dataset, ckpt_dir: Path, callbacks) -> GrpoRun:
    """Rewards checked, then the trainer for `grpo.async`; InputError for anything the user must fix."""
    g = _grpo(cfg)
    rewards = build_rewards(g)
    preflight(rewards, dataset.column_names, dataset[0]["prompt"])
    tokenizer.padding_side = "left"  # trl generates from left-padded prompts
    engine = _vllm_engine(cfg) if g.rollouts.engine == "vllm" else None  # before any model loads
    builder = build_async if g.async_ else build_sync
    return builder(cfg, model_config, tokenizer, dataset, rewards, ckpt_dir, callbacks, engine)
