"""Process groups for `torchrun` (DESIGN.md §5): DDP on PyTorch's own engine, gloo on CPU, NCCL on CUDA,
and FSDP2 (`torch.distributed.fsdp.fully_shard`, one unit per transformer block) for sizes whose weights and
optimizer state should be sharded. Checkpoints always hold full, unsharded tensors under the plain model's
keys, so any world size and either engine can resume them.

A single process (no torchrun) is world size 1 and nothing here does anything. Multi-node runs use
torchrun's rendezvous flags (see README): every rank runs the same command.
"""

from __future__ import annotations

import contextlib
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


def comm_device() -> torch.device:
    """Where a collective's tensors must live: NCCL reduces CUDA tensors only, gloo CPU tensors."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean(values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks (identity in one process): one all-reduce for the whole dict."""
    if not dist.is_initialized() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=comm_device())
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def grad_sync(module, last: bool):
    """A context for one accumulation micro-step: DDP and FSDP2 reduce gradients on the last one only.
    `module` is what the loop calls: DDP, an FSDP2 module, or either under torch.compile."""
    module = getattr(module, "_orig_mod", module)
    if isinstance(module, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext() if last else module.no_sync()
    if hasattr(module, "set_requires_gradient_sync"):  # an FSDP2 module
        module.set_requires_gradient_sync(last)
    return contextlib.nullcontext()


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


def broadcast_module(module: torch.nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (DDP does this itself; FSDP2 does not)."""
    if dist.is_initialized():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, 0)


def shard(model: torch.nn.Module) -> None:
    """FSDP2: each transformer block is one unit, the rest (embeddings, heads) the root unit."""
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    # the root reshards after forward too: the EMA teacher has no backward that would do it, and the
    # EMA update pairs its parameters with the model's as shards
    fully_shard(model, reshard_after_forward=True)


def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full(value):
    """A DTensor gathered to a full tensor (a collective: every rank must call it, in the same order);
    dicts and lists recursively; anything else unchanged."""
    if isinstance(value, dict):
        return {k: full(v) for k, v in value.items()}
    if isinstance(value, list):
        return [full(v) for v in value]
    return value.full_tensor() if _is_dtensor(value) else value


def shard_optimizer_state(state: dict, params: list[torch.Tensor]) -> dict:
    """A saved (full-tensor) optimizer state dict made to fit sharded parameters: every per-parameter
    tensor of a parameter's shape is distributed like that parameter."""
    from torch.distributed.tensor import distribute_tensor

    out = {**state, "state": {}}
    for idx, per_param in state["state"].items():
        p = params[int(idx)]
        out["state"][idx] = {
            k: distribute_tensor(v.to(p.device), p.device_mesh, p.placements)
            if _is_dtensor(p) and torch.is_tensor(v) and v.shape == p.shape
            else v
            for k, v in per_param.items()
        }
    return out


@torch.no_grad()
def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ that also takes a mix of FSDP2-sharded (DTensor) and plain gradients:
    the squared norms of the shards are summed over ranks, the plain ones counted once."""
    grads = [p.grad for p in params if p.grad is not None]
    if not any(_is_dtensor(g) for g in grads):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    local = torch.zeros((), dtype=torch.float64, device=comm_device())
    plain = torch.zeros((), dtype=torch.float64, device=comm_device())
    for g in grads:  # summed where the collective runs (a CUDA tensor under NCCL, no copy per gradient)
        if _is_dtensor(g):
            local += g.to_local().double().pow(2).sum().to(local.device)
        else:
            plain += g.double().pow(2).sum().to(plain.device)
    dist.all_reduce(local)
    total = (local + plain).sqrt()
    coef = min(1.0, max_norm / (float(total) + 1e-6))
    for g in grads:
        g.mul_(coef)
    return total.float()
