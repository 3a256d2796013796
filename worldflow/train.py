"""The one training loop, for pretraining and fine-tuning (DESIGN.md §5).

Read top to bottom like SiT's train.py: set up (seed, device, EMA as an exact copy, AdamW with param
groups, warm-up), resume or init, then the loop (micro-batches, clip, step, EMA, log, sample, checkpoint).
One seed drives init, data order and noise; resume restores weights, EMA, optimizer, schedule, RNG states
and the data position, so a resumed run's losses equal the uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from worldflow import ckpt, dist
from worldflow.errors import CheckpointError, ConfigError, TrainingError
from worldflow.logger import MetricLogger


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    grad_accum: int = 1  # micro-batches per step; the global batch is batch_size
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # after warmup: constant | cosine (to 0 at `steps` or the time limit)
    time_limit_min: float = 0.0  # > 0: stop after this many minutes of training (summed over resumes)
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU | fp32 | bf16
    seed: int = 0
    log_every: int = 10
    sample_every: int = 0  # 0: only at the end
    ckpt_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2
    num_workers: int = 0
    compile: bool = False
    activation_checkpointing: bool = False
    parallel: str = "ddp"  # under torchrun: ddp | fsdp (FSDP2, weights and optimizer state sharded)
    device: str = "auto"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def compile_model(module: nn.Module, **kwargs) -> nn.Module:
    """torch.compile with static shapes and integers. With automatic dynamic integers (the default), a DiT
    compiled for one `return_blocks` and called again with another returned the wrong hidden states (an
    empty dict for `return_blocks=(4,), stop_after=4` after a call with `(2,)`; PyTorch 2.11 and 2.13), which
    broke Self-Flow's teacher. Training batches have fixed shapes, so nothing is lost."""
    return torch.compile(module, dynamic=False, **kwargs)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"train.precision={precision!r}; use auto, fp32 or bf16")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


class EpochBatches(Sampler):
    """Batches of indices from a seeded permutation per epoch, starting at a given global position, so the
    data order is a function of (seed, position) alone and survives resume."""

    def __init__(self, n: int, batch: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.start = n, batch, seed, start
        self.rank, self.world = rank, world

    def __iter__(self):
        pos = self.start
        while True:
            epoch, offset = divmod(pos, self.n)
            perm = torch.randperm(
                self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            )
            idx = perm[offset : offset + self.batch].tolist()
            while len(idx) < self.batch:  # wrap into the next epoch
                epoch += 1
                perm = torch.randperm(
                    self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                )
                idx += perm[: self.batch - len(idx)].tolist()
            pos += self.batch
            yield idx[self.rank :: self.world]  # this rank's slice of the global batch

    def __len__(self):
        return sys.maxsize


LR_SCHEDULES = ("constant", "cosine")


def now() -> float:
    """Seconds on the training clock (time limit, throughput). One function so tests can drive the clock."""
    return time.perf_counter()


def lr_factor(step: int, cfg: TrainConfig, time_done: float = 0.0) -> float:
    """The learning rate at optimizer step `step` (0-based) as a fraction of cfg.lr: a linear warmup over
    `warmup_steps`, then constant, or a cosine from 1 to 0 at `steps` (SGDR, Loshchilov & Hutter 2017; the
    schedule Diffusion Policy trains with). `time_done` is the fraction of `time_limit_min` spent: the cosine
    follows whichever of steps and time is further along, so a run with a time budget reaches 0 when the
    budget ends however fast the machine is (the budget-driven schedule of Cramming, Geiping & Goldstein
    2023)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    span = max(1, cfg.steps - cfg.warmup_steps)
    done = min(1.0, max((step - cfg.warmup_steps) / span, time_done))
    return 0.5 * (1.0 + math.cos(math.pi * done))


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms and embeddings (1-D tensors and embedding tables)."""
    decay, no_decay = [], []
    for module in modules:
        for mod in module.modules():
            for name, p in mod.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                if p.ndim < 2 or isinstance(mod, nn.Embedding) or name.endswith("_type"):
                    no_decay.append(p)
                else:
                    decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema = decay·ema + (1 - decay)·model, parameters in fp32; buffers copied."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(np.random.get_state()[1].tobytes(), dtype=np.uint8).copy()),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": torch.tensor(list(random.getstate()[1]), dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys = np.frombuffer(state["numpy"].numpy().tobytes(), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(int(x) for x in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def collate(items: list[dict]) -> dict:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _load_resume(run_dir: Path, model, objective, ema) -> dict | None:
    """Load the newest checkpoint of run_dir's weights into the plain (unwrapped) modules; returns the
    checkpoint (its training state is restored by `_restore_state` once the optimizer exists) or None."""
    latest = ckpt.list_checkpoints(run_dir / "checkpoints")
    if not latest:
        print(f"resume: no checkpoint in {run_dir / 'checkpoints'}; starting from step 0")
        return None
    loaded = ckpt.load_checkpoint(latest[-1])
    src = str(latest[-1])
    own = {k: v for k, v in loaded["model"].items() if not k.startswith("objective.")}
    obj = {k[len("objective.") :]: v for k, v in loaded["model"].items() if k.startswith("objective.")}
    ckpt.load_weights(model, own, [], src)
    ckpt.load_weights(objective, obj, [], src)
    ckpt.load_weights(ema, loaded["ema"], [], src)
    return loaded


def _restore_state(loaded: dict, run_dir: Path, optimizer, schedule, params, logger) -> int:
    """The optimizer, schedule and RNG of a loaded checkpoint; returns its step."""
    state = loaded["state"]
    optimizer.load_state_dict(dist.shard_optimizer_state(state["optimizer"], params))
    schedule.load_state_dict(state["schedule"])
    step = int(state["step"])
    rank, _ = dist.world()
    if rank == 0:
        set_rng_state(state["rng"])  # exact continuation of a single-process run
    else:
        seed_everything(hash((step, rank)) % 2**31)
    if logger is not None:
        logger.truncate_after(step)
    print(f"resumed {run_dir} at step {step}")
    return step


@dataclass
class Clock:
    """Training seconds so far, summed over resumes and agreed by all ranks, against the time budget."""

    spent: float = 0.0
    budget: float = 0.0  # seconds; 0: no limit

    @property
    def out_of_time(self) -> bool:
        return bool(self.budget) and self.spent >= self.budget


@dataclass
class TrainState:
    """Everything a training run holds between steps (torchtitan's TrainState, widened): the modules and
    their wrappers, the optimizer and schedule, the data iterator, the step and the training clock."""

    cfg: TrainConfig
    run_dir: Path
    meta: dict
    device: torch.device
    amp: torch.dtype | None
    rank: int
    world: int
    sharded: bool  # FSDP2: weights gathered for saving and sampling
    model: nn.Module  # the plain module: its weights are saved and the EMA follows it
    objective: nn.Module
    ema: nn.Module
    proxy: nn.Module  # what the objective calls: the model's API, the (DDP / compiled) forward
    forward: nn.Module  # the wrapped forward (DDP, FSDP2, compiled) gradient sync is set on
    teacher: nn.Module | None  # the EMA as the objective's teacher (compiled with the forward), or None
    sample_model: nn.Module | None  # what sample_fn gets (rank 0)
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    params: list[torch.Tensor]
    data: Iterator
    logger: MetricLogger | None
    clock: Clock  # the learning-rate schedule reads it too
    step: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def check_config(cfg: TrainConfig, dataset: Dataset, world: int) -> None:
    if cfg.batch_size % (cfg.grad_accum * world):
        raise ConfigError(
            f"train.batch_size={cfg.batch_size} is not divisible by train.grad_accum={cfg.grad_accum}"
            + (f" x {world} processes" if world > 1 else "")
        )
    if cfg.parallel not in ("ddp", "fsdp"):
        raise ConfigError(f"train.parallel={cfg.parallel!r}; use ddp or fsdp")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"train.lr_schedule={cfg.lr_schedule!r}; use one of {list(LR_SCHEDULES)}")
    if not cfg.time_limit_min >= 0:
        raise ConfigError(f"train.time_limit_min={cfg.time_limit_min}; use minutes >= 0 (0: no limit)")
    if len(dataset) == 0:
        raise ConfigError("the dataset is empty")


def _init_from(model: nn.Module, init_from: str, expected_missing, init_drop) -> None:
    """A new run starting from another checkpoint's EMA weights."""
    loaded = ckpt.load_checkpoint(init_from, with_state=False)
    theirs = loaded["meta"].get("model", {}).get("prediction", "v")
    if theirs != model.cfg.prediction:
        raise ConfigError(
            f"init_from={init_from} was trained with model.prediction={theirs}, this run has "
            f"model.prediction={model.cfg.prediction}: the output layer means a different thing; set "
            f"model.prediction={theirs}"
        )
    allowed = ckpt.load_weights(
        model, loaded["ema"], expected_missing or [], f"init_from={init_from}", init_drop or []
    )
    print(f"init_from {loaded['dir']}: loaded EMA weights; newly initialised: {allowed or 'none'}")


def setup(
    model: nn.Module,
    objective: nn.Module,
    dataset: Dataset,
    cfg: TrainConfig,
    run_dir: str | Path,
    meta: dict,
    *,
    resume: bool = False,
    init_from: str | None = None,
    expected_missing: list[str] | None = None,
    init_drop: list[str] | None = None,
    logger: MetricLogger | None = None,
) -> TrainState:
    """Devices and process group, initial or resumed weights, the EMA, the parallel wrappers, the optimizer
    and schedule, the data order from the resumed position: the state `train_step` advances."""
    run_dir = Path(run_dir)
    device = pick_device(cfg.device)
    rank, world = dist.init(device.type)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    check_config(cfg, dataset, world)
    if not resume and ckpt.list_checkpoints(run_dir / "checkpoints"):
        raise CheckpointError(
            f"run folder {run_dir} already has checkpoints; pass resume=true or choose another run_dir"
        )
    seed_everything(cfg.seed + rank)  # per-rank noise; the model itself comes in already built
    model.to(device)
    objective.to(device)
    model.grad_checkpointing = cfg.activation_checkpointing
    if init_from:
        _init_from(model, init_from, expected_missing, init_drop)
    ema = copy.deepcopy(model).requires_grad_(False).eval()  # exact copy at step 0
    resumed = _load_resume(run_dir, model, objective, ema) if resume else None
    sharded = world > 1 and cfg.parallel == "fsdp"
    forward, sample_model = model, ema
    if world > 1:
        for p in objective.parameters():
            torch.distributed.broadcast(p.data, 0)
        if sharded:
            dist.broadcast_module(model)
            dist.broadcast_module(ema)
            # rank 0 samples alone, so it keeps a plain copy the gathered EMA weights are loaded into
            sample_model = copy.deepcopy(ema) if rank == 0 else None
            dist.shard(model)
            dist.shard(ema)
        else:
            forward = torch.nn.parallel.DistributedDataParallel(model)  # broadcasts rank 0's weights
    if cfg.compile:
        forward = compile_model(forward)
    teacher = ema if getattr(objective, "needs_teacher", False) else None
    if teacher is not None and cfg.compile:
        teacher = compile_model(teacher)  # Self-Flow's teacher pass; ema itself is saved and sampled

    optimizer = torch.optim.AdamW(
        param_groups([model, objective], cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), fused=False
    )
    clock = Clock(
        float(resumed["state"].get("train_seconds", 0.0)) if resumed else 0.0, cfg.time_limit_min * 60.0
    )

    def factor(s: int) -> float:
        return lr_factor(s, cfg, clock.spent / clock.budget if clock.budget else 0.0)

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    logger = (logger or MetricLogger(run_dir)) if rank == 0 else None
    step = _restore_state(resumed, run_dir, optimizer, schedule, params, logger) if resumed else 0

    micro = cfg.batch_size // (cfg.grad_accum * world)
    batches = EpochBatches(
        len(dataset), micro * world, cfg.seed, start=step * cfg.batch_size, rank=rank, world=world
    )
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=cfg.num_workers,
        collate_fn=collate,
        generator=torch.Generator(),  # keeps the loader from drawing on the global RNG
        persistent_workers=cfg.num_workers > 0,
        worker_init_fn=_ignore_sigint,  # Ctrl-C reaches the whole process group: the main process decides
    )
    return TrainState(
        cfg, run_dir, meta, device, autocast_dtype(cfg.precision, device), rank, world, sharded, model,
        objective, ema, dist.ModelProxy(model, forward), forward, teacher, sample_model, optimizer, schedule,
        params, iter(loader), logger, clock, step,
    )  # fmt: skip


def train_step(state: TrainState, interrupt: threading.Event, clock_start: tuple[float, float]) -> dict:
    """One optimizer step over `grad_accum` micro-batches; returns the step's mean metrics, its gradient
    norm and whether any rank asked to stop. clock_start = (training seconds, now()) when this process
    began, from which every rank agrees on the clock through the step's one collective."""
    cfg, model = state.cfg, state.model
    model.train()
    state.optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    for i in range(cfg.grad_accum):
        # DDP/FSDP2 reduce the gradients on the last micro-step only (forward and backward in it)
        with dist.grad_sync(state.forward, last=i == cfg.grad_accum - 1):
            batch = to_device(next(state.data), state.device)
            with torch.autocast(state.device.type, dtype=state.amp, enabled=state.amp is not None):
                loss, metrics = state.objective(state.proxy, state.teacher, batch)
            # one collective for the checks; every rank sees the same Ctrl-C and clock, stops at the same step
            checks = dist.mean(
                {
                    "bad": float(not math.isfinite(loss.item())),
                    "stop": float(interrupt.is_set()),
                    "time": clock_start[0] + now() - clock_start[1],
                }
            )
            if checks["bad"] > 0:
                raise TrainingError(
                    f"loss is {loss.item()} at step {state.step + 1}; stopping (no checkpoint written)"
                )
            (loss / cfg.grad_accum).backward()
        for k, v in {"loss": loss.item(), **metrics}.items():
            sums[k] = sums.get(k, 0.0) + v / cfg.grad_accum
    dist.all_reduce_grads(state.objective.parameters())
    state.clock.spent = checks["time"]
    grad_norm = dist.clip_grad_norm(state.params, cfg.grad_clip)
    state.optimizer.step()
    state.schedule.step()
    ema_update(state.ema, model, cfg.ema_decay)
    state.step += 1
    return {"sums": sums, "grad_norm": float(grad_norm), "stop": checks["stop"] > 0}


def save(state: TrainState) -> Path | None:
    """A checkpoint at the state's step, full tensors whatever the engine (gathering FSDP2 shards is a
    collective: every rank takes part); rank 0 writes it."""
    path = None
    if state.sharded or state.main:
        model_state, ema_state, optim_state = (
            dist.full(m.state_dict()) for m in (state.model, state.ema, state.optimizer)
        )
    if state.main:
        model_state.update({f"objective.{k}": v for k, v in state.objective.state_dict().items()})
        extra = {
            "optimizer": optim_state,
            "schedule": state.schedule.state_dict(),
            "rng": rng_state(),
            "step": state.step,
            "train_seconds": state.clock.spent,
        }
        path = ckpt.save_checkpoint(
            state.run_dir / "checkpoints", state.step, model_state, ema_state, extra, state.meta,
            state.cfg.keep_checkpoints,
        )  # fmt: skip
    dist.barrier()
    return path


def sample(state: TrainState, sample_fn: Callable[[nn.Module, int, Path], None]) -> None:
    """sample_fn(EMA weights, step, run_dir) on rank 0 (FSDP2: the EMA gathered first)."""
    if state.sharded:
        weights = dist.full(state.ema.state_dict())
        if state.main:
            state.sample_model.load_state_dict(weights)
    if state.main:
        sample_fn(state.sample_model, state.step, state.run_dir)
    dist.barrier()


def log(state: TrainState, out: dict, seen: int, elapsed: float, bar) -> dict:
    """The step's metrics, averaged over ranks, to the logger and the progress bar."""
    sums = dist.mean(out["sums"])
    row = {
        "step": state.step,
        **sums,
        "grad_norm": out["grad_norm"],
        "lr": state.schedule.get_last_lr()[0],
        "samples_per_s": seen / elapsed,
    }
    if state.main:
        state.logger.log(row)
    clock = state.clock
    left = {"left": f"{max(0.0, clock.budget - clock.spent) / 60:.1f}min"} if clock.budget else {}
    bar.set_postfix(loss=f"{sums['loss']:.4f}", sps=f"{seen / elapsed:.1f}", **left)
    return row


def train(model, objective, dataset, cfg: TrainConfig, run_dir, meta: dict, *, sample_fn=None, **kw) -> dict:
    """Train `model` with `objective` on `dataset`; returns the last logged metrics. Keywords go to `setup`
    (resume, init_from, expected_missing, init_drop, logger); `sample_fn(ema, step, run_dir)` runs every
    `sample_every` steps and at the end.

    Under torchrun every rank runs this with the same arguments: the model is wrapped in DDP (or sharded
    with FSDP2), each rank takes its slice of every global batch, rank 0 logs, samples and writes
    checkpoints. Ctrl-C finishes the step in flight, writes a checkpoint and raises KeyboardInterrupt."""
    state = setup(model, objective, dataset, cfg, run_dir, meta, **kw)
    last: dict = {}
    bar = tqdm(total=cfg.steps, initial=state.step, desc=state.run_dir.name, dynamic_ncols=True,
               mininterval=1.0, file=sys.stdout, disable=not state.main)  # fmt: skip
    every = lambda n: n and state.step % n == 0 and state.step < cfg.steps  # noqa: E731
    with stop_on_sigint() as interrupt:
        t0, seen, start = now(), 0, (state.clock.spent, now())
        while state.step < cfg.steps and not state.clock.out_of_time:
            out = train_step(state, interrupt, start)
            seen += cfg.batch_size
            bar.update(1)
            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                last = log(state, out, seen, now() - t0, bar)
            if every(cfg.ckpt_every):
                save(state)
            if sample_fn is not None and every(cfg.sample_every):
                sample(state, sample_fn)
            if out["stop"]:
                break
        bar.close()
        if state.clock.out_of_time and state.main:
            print(f"time limit of {cfg.time_limit_min:g} min reached at step {state.step}")
        done = ckpt.list_checkpoints(state.run_dir / "checkpoints")
        if not done or done[-1].name != f"step_{state.step:07d}":
            path = save(state)
            if state.main:
                print(f"checkpoint: {path}")
    if interrupt.is_set():
        if state.main:
            print(f"interrupted at step {state.step}: checkpoint written; resume=true continues from it",
                  file=sys.stderr)  # fmt: skip
        raise KeyboardInterrupt
    if sample_fn is not None:
        sample(state, sample_fn)
    if state.main:
        state.logger.close()
    return last


@contextlib.contextmanager
def stop_on_sigint():
    """Within the block, Ctrl-C (SIGINT) only sets the yielded event: the loop finishes its step, writes a
    checkpoint and stops. A second Ctrl-C interrupts at once (checkpoint writes are atomic either way).
    Outside the main thread signals cannot be caught, and the event is never set."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handler(signum, frame):
        event.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


def _ignore_sigint(worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
