"""A trl trainer over a model we sharded with FSDP2 ourselves, and its checkpoints.

Why not the Trainer's own `fsdp=` arguments: accelerate enables FSDP only on GPU backends and silently
runs DDP on the CPU, so the path could never be tested here, and its save path needs a fully
accelerate-built FSDP state. Instead the model arrives sharded (`distributed.shard`) and this subclass
changes only what sharding changes:

- the Trainer's path for models sharded at load time (no DDP wrap; gradient sync deferred during
  accumulation) is switched on after `__init__`;
- the adapter in a checkpoint is gathered from every rank and written by rank 0 as a stock PEFT
  adapter (the same files as one process writes), and read back by rank 0 and scattered;
- the optimizer state stays sharded: every rank writes and reads its own part with
  torch.distributed.checkpoint (`optimizer/`);
- rank 0 writes `tuneroute-checkpoint.json` with the number of ranks last, after every rank is done:
  a checkpoint without it is incomplete (a rank died mid-save) and is never resumed.

Everything else (data sharding by rank, token-count normalisation across ranks, per-rank RNG state,
trainer_state.json, scheduler) is the Trainer's own.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch

from . import distributed
from .distributed import World

CHECKPOINT_MARKER = "tuneroute-checkpoint.json"
OPTIMIZER_DIR = "optimizer"
SCHEDULER_FILE = "scheduler.pt"
ADAPTER_FILE = "adapter_model.safetensors"


def checkpoint_ranks(ckpt: Path) -> int | None:
    """How many ranks wrote checkpoint `ckpt`: its marker, else 1 for a one-process checkpoint, None if incomplete."""
    try:
        return int(json.loads((ckpt / CHECKPOINT_MARKER).read_text())["worldSize"])
    except FileNotFoundError:
        return 1 if (ckpt / "optimizer.pt").is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint-<step> directory (an incomplete newer one is skipped)."""
    steps = []
    for p in ckpt_dir.glob("checkpoint-*") if ckpt_dir.is_dir() else ():
        suffix = p.name.removeprefix("checkpoint-")
        if p.is_dir() and suffix.isdigit():
            steps.append((int(suffix), p))
    for _, p in sorted(steps, reverse=True):
        if checkpoint_ranks(p) is not None:
            return p
    return None


def _adapter_keys(model) -> dict[str, str]:
    """Model state-dict key -> key in the saved PEFT adapter, for every trainable tensor."""
    from peft.utils import get_peft_model_state_dict

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    saved = get_peft_model_state_dict(model, state_dict={n: torch.empty(0) for n in names})
    # PEFT drops the adapter name (".default") from each key; map every saved key back to its parameter
    back = {}
    for n in names:
        k = n.replace(f".{model.active_adapter}.", ".")
        if k in saved:
            back[n] = k
    return back


def add_reference_adapter(model) -> None:
    """DPO's frozen reference adapter, a copy of the fresh one, added before sharding so FSDP2 shards it too.

    trl's DPOTrainer adds it in its __init__, when the model is already sharded; `Sharded` skips that."""
    model.add_adapter("ref", model.peft_config["default"])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".default." in name and not param.is_meta:  # meta: rank 0's values arrive when sharded
                model.get_parameter(name.replace(".default.", ".ref.")).copy_(param)
    model.set_adapter("default")


def sharded(trainer_cls: type, w: World) -> type:
    """`trainer_cls` (SFTTrainer, DPOTrainer, ...) for a model already sharded by `distributed.shard`."""

    class Sharded(trainer_cls):
        def __init__(self, *args, model, **kwargs):
            has_ref = "ref" in getattr(model, "peft_config", {})
            if has_ref:  # added before sharding (add_reference_adapter): trl must not add it again
                add_adapter = model.add_adapter
                model.add_adapter = lambda name, *a, **k: None if name == "ref" else add_adapter(name, *a, **k)
            try:
                super().__init__(*args, model=model, **kwargs)
            finally:
                if has_ref:
                    del model.add_adapter
            # The Trainer's own switch for a model that owns its sharding and gradient reduction.
            self.is_distributed_loading_by_transformers = True

        @contextlib.contextmanager
        def _defer_fsdp_gradient_reduction(self):
            self.model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.model.set_requires_gradient_sync(True)

        # ---- saving -------------------------------------------------------------------------
        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            out = Path(output_dir or self.args.output_dir)
            state = distributed.full_trainable_state(self.model)  # collective: every rank
            if w.main:
                out.mkdir(parents=True, exist_ok=True)
                self.model.save_pretrained(out, state_dict=state)
                if self.processing_class is not None:
                    self.processing_class.save_pretrained(out)
                torch.save(self.args, out / "training_args.bin")
            distributed.barrier()

        def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

            state = get_optimizer_state_dict(self.model, self.optimizer)
            dcp.save({"optimizer": state}, checkpoint_id=os.path.join(output_dir, OPTIMIZER_DIR))
            if w.main:
                torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_FILE))

        def _save_checkpoint(self, model, trial) -> None:
            super()._save_checkpoint(model, trial)
            distributed.barrier()  # every rank's optimizer part and RNG state are on disk
            if w.main:
                step_dir = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
                (step_dir / CHECKPOINT_MARKER).write_text(json.dumps({"worldSize": w.size}))
            distributed.barrier()

        # ---- resuming -----------------------------------------------------------------------
        def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
            model = model or self.model
            state = {}
            if w.main:
                from safetensors.torch import load_file

                saved = load_file(os.path.join(resume_from_checkpoint, ADAPTER_FILE))
                state = {n: saved[k] for n, k in _adapter_keys(model).items()}
            distributed.load_trainable_state(model, state, w)

        def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
            if checkpoint is None:
                return
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

            state = {"optimizer": get_optimizer_state_dict(self.model, self.optimizer)}
            dcp.load(state, checkpoint_id=os.path.join(checkpoint, OPTIMIZER_DIR))
            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"])
            self.lr_scheduler.load_state_dict(torch.load(os.path.join(checkpoint, SCHEDULER_FILE), weights_only=True))

    Sharded.__name__ = Sharded.__qualname__ = f"Sharded{trainer_cls.__name__}"
    return Sharded
