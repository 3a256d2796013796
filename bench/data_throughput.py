"""Benchmark: world-model windows per second from the episode-cache loader vs the trainer's consumption
(goal: loader >= 5x consumption) at the debug and B sizes, measured in one process.

python bench/data_throughput.py [--image 64] [--batch 16] [--workers 0 2]   -> JSON
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from worldflow.data.cache import CacheWriter, EpisodeCache
from worldflow.data.windows import WindowDataset
from worldflow.model.dit import DiT, ModelConfig
from worldflow.objectives import build_objective
from worldflow.train import EpochBatches, collate
from worldflow.worldmodel.modes import WorldModelConfig, WorldModelObjective


def synthetic_cache(path, image: int, episodes: int = 60, steps: int = 40) -> EpisodeCache:
    rng = np.random.default_rng(0)
    w = CacheWriter(path, image, {"source": "synthetic benchmark"})
    for e in range(episodes):
        frames = rng.integers(0, 255, (steps, image, image, 3), dtype=np.uint8)
        w.add(
            frames,
            rng.normal(0, 0.02, (steps, 7)).astype(np.float32),
            np.arange(steps) == steps - 1,
            np.zeros((steps, 8)),
            f"task {e % 5}",
            rng.normal(size=512),
        )
    return EpisodeCache(w.finish())


def loader_rate(ds, batch: int, workers: int, batches: int = 40) -> float:
    loader = DataLoader(
        ds, batch_sampler=EpochBatches(len(ds), batch, seed=0), num_workers=workers, collate_fn=collate
    )
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - t0)


def train_rate(ds, size: str, image: int, patch: int, batch: int, steps: int = 3) -> float:
    wm = WorldModelConfig()
    torch.manual_seed(0)
    model = DiT(wm.model_config(ModelConfig(size=size, patch=patch, tubelet=2), image, cond_dim=512))
    teacher = DiT(model.cfg).requires_grad_(False)
    obj = WorldModelObjective(wm, build_objective({"name": "selfflow"}, model))
    opt = torch.optim.AdamW([*model.parameters(), *obj.parameters()], lr=1e-4)
    b = collate([ds[i] for i in range(batch)])

    def step():
        opt.zero_grad()
        loss, _ = obj(model, teacher, b)
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = synthetic_cache(f"{tmp}/cache", args.image)
        ds = WindowDataset(cache, context=2, horizon=4, action_horizon=8)
        out = {
            "image": args.image,
            "batch": args.batch,
            "loader_windows_per_s": {},
            "train_windows_per_s": {},
        }
        for w in args.workers:
            out["loader_windows_per_s"][f"workers={w}"] = loader_rate(ds, args.batch, w)
        for size, patch in (("debug", 8), ("B", 8)):
            out["train_windows_per_s"][size] = train_rate(ds, size, args.image, patch, args.batch)
        best = max(out["loader_windows_per_s"].values())
        single = out["loader_windows_per_s"].get("workers=0", best)
        out["loader_over_train"] = {
            s: {"workers=0": single / r, "best": best / r} for s, r in out["train_windows_per_s"].items()
        }
        out["goal"] = "loader >= 5x train consumption"
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
