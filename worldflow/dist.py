"""Process groups for `torchrun` (DESIGN.md §5): DDP on PyTorch's own engine, gloo on CPU, NCCL on CUDA.

A single process (no torchrun) is world size 1 and nothing here does anything. Multi-node runs use
torchrun's rendezvous flags (see README): every rank runs the same command.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init(device_type: str) -> tuple[int, int]:
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return rank, size


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean(values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks (identity in one process)."""
    if not dist.is_initialized() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def all_reduce_grads(params) -> None:
    """Average gradients of parameters DDP does not own (the objective's head or projector)."""
    if not dist.is_initialized():
        return
    size = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= size


class ModelProxy:
    """Calls go to the wrapped module (DDP or torch.compile); attributes (cfg, patchify, groups, ...) to the
    plain model, so objectives see one interface whatever wraps the model."""

    def __init__(self, model: torch.nn.Module, forward):
        self._model, self._forward = model, forward

    def __call__(self, *args, **kwargs):
        return self._forward(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)
