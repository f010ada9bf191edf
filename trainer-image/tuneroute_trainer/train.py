"""Run one fine-tuning job end to end: data, model, trl trainer, checkpoints, adapter, manifest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import distributed
from .config import RoutingProfile, TrainerConfig, TrainerStatus
from .contract import now
from .distributed import World
from .errors import InputError, Preempted
from .progress import StatusReporter, make_callback
from .trainer_args import shared_trainer_args

MANIFEST = "tuneroute-manifest.json"
CHECKPOINTS = "checkpoints"
STAGING = ".staging"


def prepare_output(out: Path, drop_manifest: bool = True) -> None:
    """Create the output dir, prove it is writable, and drop a stale manifest: the adapter is not done yet."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".probe-{os.uname().nodename}-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError("output.dir", f"{out} is not writable: {e.strerror or e}") from e
    if drop_manifest:
        (out / MANIFEST).unlink(missing_ok=True)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def publish(model, tokenizer, out: Path, manifest: dict, state_dict: dict | None = None, extra=None) -> None:
    """Save adapter + tokenizer (+ whatever `extra(staging)` writes) to a staging dir, move them in,
    then write the manifest last.

    `state_dict`: the adapter's tensors gathered from every rank, when the model is sharded."""
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, **({} if state_dict is None else {"state_dict": state_dict}))
    tokenizer.save_pretrained(staging)
    if extra is not None:
        extra(staging)
    for f in staging.iterdir():
        target = out / f.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(f, target)
    staging.rmdir()
    _write_json_atomic(out / MANIFEST, manifest)


def _sigterm_callback(w: World):
    from transformers import TrainerCallback

    class SigtermCallback(TrainerCallback):
        """On SIGTERM: finish the current step, save a checkpoint, stop (the caller exits 143).

        With several ranks, a signal to any of them (one pod preempted) stops them all at the same
        step: the checkpoint is a collective."""

        def __init__(self):
            self.fired = False
            signal.signal(signal.SIGTERM, self._on_signal)

        def _on_signal(self, signum, frame):
            self.fired = True

        def on_step_end(self, args, state, control, **kw):
            if w.distributed:
                self.fired = distributed.any_rank(self.fired, w)
            if self.fired:
                control.should_save = True
                control.should_training_stop = True

    return SigtermCallback()


def _trainer_args(cfg: TrainerConfig, ckpt_dir: Path):
    t = cfg.training
    common = dict(
        **shared_trainer_args(cfg, ckpt_dir, t.batch_size, t.max_steps or -1),
        num_train_epochs=t.epochs,
        include_num_input_tokens_seen="non_padding",
        max_length=t.sequence_length,
    )
    if cfg.method == "dpo":
        from trl import DPOConfig

        return DPOConfig(**common)
    from trl import SFTConfig

    return SFTConfig(**common, packing=False)


def checkpoint_dir(cfg: TrainerConfig) -> Path:
    """Where this run's checkpoints go: keyed by the run's identity (the FineTuneJob's uid) and by
    what the weights are (model, data, method, LoRA shape). A FineTuneJob deleted and re-created
    under the same name, or one with another model or data in the same output directory, never
    resumes another run's LoRA and optimizer state; it ignores them. A retried pod of the same
    run resumes (a longer schedule, too: the training section is not part of the key)."""
    what = {
        "runId": cfg.output.run_id,
        "model": cfg.model.model_dump(by_alias=True),
        "dataset": cfg.dataset.model_dump(by_alias=True),
        "method": cfg.method,
        "lora": cfg.lora.model_dump(by_alias=True),
    }
    key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cfg.output.dir) / CHECKPOINTS / key


def _trl_trainer(method: str):
    if method == "dpo":
        from trl import DPOTrainer

        return DPOTrainer
    from trl import SFTTrainer

    return SFTTrainer


def _grpo_prompts(cfg: TrainerConfig):
    from .data import load_raw
    from .grpo.data import to_prompts
    from .modeling import hf_token

    return to_prompts(load_raw(cfg.dataset, token=hf_token()), cfg.dataset.format)


def already_done(cfg: TrainerConfig, out: Path) -> dict | None:
    """The manifest of a finished run of this same config and run, if there is one.

    A pod retried after it published (killed before it could exit, say) must not train
    again: resuming from the final checkpoint would run past maxSteps. Another run (a
    re-created FineTuneJob) trains afresh even with the same config: its data may differ.
    """
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    lora = {k: v for k, v in (manifest.get("lora") or {}).items() if k != "expertsImplementation"}
    same = (
        manifest.get("runId") == cfg.output.run_id
        and manifest.get("baseModel") == {"id": cfg.model.id, "path": cfg.model.path, "revision": cfg.model.revision}
        and manifest.get("dataset") == cfg.dataset.model_dump(by_alias=True)
        and manifest.get("method") == cfg.method
        and lora == cfg.lora.model_dump(by_alias=True)
        and manifest.get("training") == cfg.training.model_dump(by_alias=True)
        and manifest.get("grpo") == (cfg.grpo.model_dump(by_alias=True) if cfg.grpo else None)
        and manifest.get("evaluation", {}).get("spec") == cfg.evaluation.model_dump(by_alias=True)
        and bool(manifest.get("merged")) == cfg.output.merge
    )
    return manifest if same else None


def _resume_point(cfg: TrainerConfig, ckpt_dir: Path, w: World) -> str | None:
    """The checkpoint to resume from, chosen by rank 0; it must have been written by as many ranks."""
    from transformers.trainer_utils import get_last_checkpoint

    from .sharded_trainer import checkpoint_ranks, latest_checkpoint

    if not cfg.checkpoint.resume:
        return None
    if not w.distributed:
        resume = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    else:
        resume = distributed.broadcast(str(p) if (p := latest_checkpoint(ckpt_dir)) and w.main else None, w)
    ranks = checkpoint_ranks(Path(resume)) if resume else None
    if resume and ranks is not None and ranks != w.size:
        raise InputError(
            "checkpoint.resume",
            f"{Path(resume).name} was written by {ranks} rank(s) (nodes x GPUs) and this run has {w.size}; "
            "run with the same nodes and GPUs to resume it, or set checkpoint.resume to false to start over",
        )
    return resume


def _load_model(cfg: TrainerConfig, model_config, w: World):
    """(PEFT model, experts kernel). Several ranks: rank 0 reads the weights, the others get their shards."""
    import transformers

    from .modeling import apply_lora, empty_base_model, load_base_model

    if w.distributed and not w.main:
        model = empty_base_model(model_config, cfg.training)
    else:
        model = load_base_model(cfg.model, model_config, cfg.training, on_device=not w.distributed)
    transformers.set_seed(cfg.training.seed)  # the LoRA init is part of the run's seed
    model, kernel = apply_lora(model, cfg.lora)
    if w.distributed:
        if cfg.method == "dpo":
            from .sharded_trainer import add_reference_adapter

            add_reference_adapter(model)
        full_state = model.state_dict() if w.main else None
        distributed.shard(model, w)
        distributed.load_from_rank0(model, full_state, w)
        distributed.emit(distributed.shard_report(model, w))
    return model, kernel


def run(cfg: TrainerConfig) -> dict:
    """Train; returns the manifest. Raises InputError for bad input, Preempted on SIGTERM.

    Under torchrun (WORLD_SIZE > 1) every rank runs this: the model is sharded across ranks (FSDP2),
    rank 0 alone reports progress and writes the adapter and manifest."""
    from .data import load_rows, split_held_out
    from .modeling import hf_token, load_model_config, load_tokenizer

    w = distributed.world()
    out = Path(cfg.output.dir)
    if (done := already_done(cfg, out)) is not None:
        return done
    if w.distributed and cfg.method == "grpo":
        raise InputError(
            "method", "grpo trains in one process: several ranks (nodes x GPUs > 1) are not supported for it yet"
        )
    if w.distributed and cfg.output.merge:
        raise InputError("output.merge", "a merged model is written by single-process runs only (nodes x GPUs = 1)")
    if w.distributed:
        distributed.init(w)
    prepare_output(out, drop_manifest=w.main)
    distributed.barrier()
    ckpt_dir = checkpoint_dir(cfg)
    resume = _resume_point(cfg, ckpt_dir, w)
    model_config = load_model_config(cfg.model)
    if cfg.method == "grpo":  # no held-out loss: a GRPO run has no labels to score it with
        dataset, held_out = _grpo_prompts(cfg), None
    else:
        dataset, held_out = split_held_out(
            load_rows(cfg.dataset, token=hf_token()), cfg.evaluation.held_out, cfg.training.seed
        )
        if w.distributed:  # the same rows train as in one process; not evaluated (see serving_artifacts)
            held_out = None
    tokenizer = load_tokenizer(cfg.model)
    if cfg.dataset.format == "chat" and not tokenizer.chat_template:
        raise InputError("dataset.format", "format 'chat' needs a tokenizer with a chat template")

    sigterm = _sigterm_callback(w)
    callbacks: list[Any] = [sigterm]
    progress = None
    reporter = StatusReporter(cfg.report) if cfg.report and w.main else None
    if w.main:  # progress is rank 0's: its logged loss is already the mean over ranks
        progress = make_callback(reporter)
        callbacks.append(progress)
    grpo = None
    trainer: Any
    if cfg.method == "grpo":
        from .grpo.trainers import build

        grpo = build(cfg, model_config, tokenizer, dataset, ckpt_dir, callbacks)
        trainer, kernel = grpo.trainer, grpo.kernel
        if progress is not None:
            progress.extra = grpo.progress
    else:
        model, kernel = _load_model(cfg, model_config, w)
        trainer_cls = _trl_trainer(cfg.method)
        if w.distributed:
            from .sharded_trainer import sharded

            trainer_cls = sharded(trainer_cls, w)
        trainer = trainer_cls(
            model=model,
            args=_trainer_args(cfg, ckpt_dir),
            train_dataset=dataset,
            eval_dataset=held_out,
            processing_class=tokenizer,
            callbacks=callbacks,
        )

    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our progress line replaces its dict dump
    t0 = time.monotonic()
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    finally:
        if grpo is not None:
            grpo.close()
    state = trainer.state
    if sigterm.fired:
        raise Preempted(f"preempted: checkpoint saved at step {state.global_step}")

    elapsed = time.monotonic() - t0
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    if w.distributed:  # what each rank needed (after rank 0's last progress line: one stream per pod)
        distributed.barrier()
        distributed.emit({"event": "memory", "rank": w.rank, "peakBytes": distributed.peak_memory_bytes(w)})
    manifest = _manifest(cfg, kernel, resume, state, result, losses, elapsed, w)
    if grpo is not None:
        manifest["metrics"].update(grpo.summary(state.log_history))
    serving = serving_artifacts(cfg, trainer, tokenizer, dataset, held_out, w)
    manifest["evaluation"] = {"spec": cfg.evaluation.model_dump(by_alias=True), **serving.evaluation}
    manifest["merged"] = "merged" if cfg.output.merge else None
    adapter = distributed.full_trainable_state(trainer.model) if w.distributed else None
    if w.main:
        publish(trainer.model, tokenizer, out, manifest, state_dict=adapter, extra=serving.write)
        if reporter is not None and serving.profile is not None:
            reporter.patch(TrainerStatus(routing_profile=RoutingProfile.model_validate(serving.profile)))
    distributed.barrier()
    return manifest


def serving_artifacts(cfg: TrainerConfig, trainer, tokenizer, train_rows, held_out, w: World):
    """What serving needs next to the adapter: the held-out eval losses (adapter and base), the parity
    gate's reference, the routing profile and, with output.merge, the merged model.

    A sharded run (several ranks) writes the routing profile only, without held-out losses: the
    reference needs each module's full delta, and evaluating needs every rank; neither is done yet."""
    from . import reference
    from .data import prompt_of
    from .profile import PROFILE_JSON, routing_profile

    model = trainer.model
    ev = cfg.evaluation
    evaluation: dict = {"heldOut": 0 if held_out is None else len(held_out)}
    texts = [prompt_of(row)[1] for row in train_rows]
    if w.distributed:
        profile = routing_profile(texts, ev.profile_prompts, None, None, 0) if w.main else None

        def write_profile(staging: Path) -> None:
            if profile is not None:
                _write_json_atomic(staging / PROFILE_JSON, profile)

        return SimpleNamespace(evaluation=evaluation, profile=profile, write=write_profile)
    prompts: list[list[int]] = []
    if held_out is not None:
        evaluation["evalLoss"] = trainer.evaluate()["eval_loss"]
        with model.disable_adapter():
            evaluation["baseEvalLoss"] = trainer.evaluate()["eval_loss"]
        for row in held_out.select(range(min(ev.reference_prompts, len(held_out)))):
            messages, text = prompt_of(row)
            prompts.append(reference.prompt_token_ids(tokenizer, messages, text))
    modules, tensors = reference.fingerprints(model)
    outputs = reference.outputs(model, prompts, ev.max_new_tokens) if prompts else None
    profile = routing_profile(
        texts, ev.profile_prompts, evaluation.get("evalLoss"), evaluation.get("baseEvalLoss"), evaluation["heldOut"]
    )

    def write(staging: Path) -> None:
        reference.write(staging, modules, tensors, outputs)
        if profile is not None:
            _write_json_atomic(staging / PROFILE_JSON, profile)
        if cfg.output.merge:
            write_merged(model, tokenizer, staging / "merged")

    return SimpleNamespace(evaluation=evaluation, profile=profile, write=write)


def write_merged(model, tokenizer, target: Path) -> None:
    """The adapter merged into the base weights: a plain model any engine can serve. In place (no
    second copy of the weights): it must be the last thing done with the model."""
    merged = model.merge_and_unload()
    merged.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _manifest(cfg, kernel, resume, state, result, losses, elapsed, w: World) -> dict:
    import peft
    import torch
    import transformers
    import trl

    from .modeling import device as _device

    return {
        "adapterName": cfg.output.adapter_name,
        "runId": cfg.output.run_id,
        "baseModel": {"id": cfg.model.id, "path": cfg.model.path, "revision": cfg.model.revision},
        "dataset": cfg.dataset.model_dump(by_alias=True),
        "method": cfg.method,
        "lora": {**cfg.lora.model_dump(by_alias=True), "expertsImplementation": kernel},
        "training": cfg.training.model_dump(by_alias=True),
        "grpo": cfg.grpo.model_dump(by_alias=True) if cfg.grpo else None,
        "resumedFrom": resume,
        "metrics": {
            "steps": state.global_step,
            "epoch": state.epoch,
            "trainLoss": result.training_loss,
            "firstLoss": losses[0] if losses else None,
            "finalLoss": losses[-1] if losses else None,
            "tokens": state.num_input_tokens_seen,
            "runtimeSeconds": round(elapsed, 3),
            "device": str(distributed.device(w)) if w.distributed else str(_device()),
            "ranks": w.size,
            "peakMemoryBytes": distributed.peak_memory_bytes(w),
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "trl": trl.__version__,
        },
        "completedAt": now(),
    }
