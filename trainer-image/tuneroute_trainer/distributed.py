"""Training on several processes (torchrun): who is who, FSDP2 sharding, and what ranks must agree on.

One process per device. torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; without them the trainer is a
single process and nothing here runs. Decisions that touch shared files (which checkpoint to resume,
who writes the adapter) are taken by global rank 0, never by node rank: torchrun's c10d rendezvous
hands out ranks in arrival order and ignores --node-rank.

Sharding: every decoder layer is one FSDP2 unit, the rest (embeddings, final norm, LM head) the root
unit. A unit holds the layer's frozen base weights *and* its LoRA factors, the fused experts' A and B
included: they are sharded like everything else and all-gathered with the layer's base weights in
the same collective, so sharding them costs nothing extra while their AdamW state is split N ways
(replicating them would keep 16 bytes per LoRA parameter on every GPU: 39 GB for a rank-16 adapter on
Qwen3-235B-A22B's experts). Inside forward and backward FSDP2 hands modules ordinary tensors, so the
fused MoE-LoRA kernel runs unchanged.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import nn

# A rank waits this long for the others in a collective before it gives up (a lost peer must fail
# the attempt instead of holding the GPUs forever).
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place, from torchrun's environment (a single process without it)."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def device(w: World) -> torch.device:
    return torch.device("cuda", w.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def init(w: World) -> None:
    """Join the process group: NCCL on GPUs, gloo on the CPU."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(w.local_rank)
        dist.init_process_group("nccl", timeout=COLLECTIVE_TIMEOUT, device_id=device(w))
    else:
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def broadcast(value, w: World):
    """Rank 0's `value` (any picklable object), on every rank."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, device=device(w) if torch.cuda.is_available() else None)
    return box[0]


def any_rank(flag: bool, w: World) -> bool:
    """True on every rank when `flag` is True on at least one (e.g. one pod got SIGTERM)."""
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], device=device(w))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks: transformers names their class in `_no_split_modules`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in base.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"cannot find the decoder layers of {type(base).__name__} to shard")
    return layers


def shard(model: nn.Module, w: World) -> nn.Module:
    """FSDP2: one unit per decoder layer, then the root. Parameters on meta stay meta (see `load_from_rank0`)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device(w).type, (w.size,))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def load_from_rank0(model: nn.Module, full_state: dict[str, torch.Tensor] | None, w: World) -> None:
    """Fill the shards of every rank from rank 0's full state dict (rank 0 alone read the weights).

    Other ranks built the model on the meta device: they get storage here, then their slice of each
    tensor, one tensor at a time, so no rank but 0 ever holds the whole model.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    dev = device(w)
    if not w.main:
        model.to_empty(device=dev)
    set_model_state_dict(
        model,
        full_state if w.main else {},
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
    )
    # Buffers are not sharded and non-persistent ones (rotary inv_freq) are in no state dict.
    for buf in model.buffers():
        if buf.device != dev:
            buf.data = buf.data.to(dev)
        dist.broadcast(buf.data, src=0)


def full_trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) tensors, whole, on rank 0's CPU ({} elsewhere). Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    )


def load_trainable_state(model: nn.Module, full_state: dict[str, torch.Tensor], w: World) -> None:
    """Rank 0's whole trainable tensors, sharded into every rank's parameters."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(
        model,
        full_state if w.main else {},
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False),
    )


def emit(event: dict) -> None:
    """One JSON line on stdout in one write: the ranks of a pod share the stream, lines must not interleave."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def peak_memory_bytes(w: World) -> int:
    """This process's peak: the CUDA allocator's on a GPU, the resident set on the CPU."""
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated(device(w)))
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def shard_report(model: nn.Module, w: World) -> dict:
    """What this rank really holds (its local shards) against the whole model, frozen and trainable apart."""
    from torch.distributed.tensor import DTensor

    counts = {"frozen": [0, 0], "trainable": [0, 0]}
    for p in model.parameters():
        local = p.to_local() if isinstance(p, DTensor) else p
        c = counts["trainable" if p.requires_grad else "frozen"]
        c[0] += local.numel()
        c[1] += p.numel()
    return {
        "event": "sharded",
        "rank": w.rank,
        "worldSize": w.size,
        **{k: {"local": v[0], "total": v[1]} for k, v in counts.items()},
    }
