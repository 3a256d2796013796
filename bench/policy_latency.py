"""Benchmark: milliseconds per action chunk of the world-model policy on CPU (goal <= 50 ms at the debug
size), for the debug and B sizes, and with the planning option (N sampled chunks, imagined futures); each
both ways: full forward at every Euler step, and with the context key/value cache of a model trained with
`model.isolate_fixed=true` (DESIGN.md §2), side by side in one process.

python bench/policy_latency.py [--image 32] [--steps 10] [--repeats 10] [--plan 4] [--threads 2]   -> JSON
Models are randomly initialised (latency does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from policies.world_model import PlanConfig, WorldModelPolicy
from worldflow.data.actions import ActionStats
from worldflow.model.dit import DiT, ModelConfig
from worldflow.worldmodel.bundle import WorldModel
from worldflow.worldmodel.modes import WorldModelConfig


def bundle(size: str, image: int, patch: int, isolate_fixed: bool) -> WorldModel:
    wm = WorldModelConfig()
    torch.manual_seed(0)
    base = ModelConfig(size=size, patch=patch, tubelet=2, isolate_fixed=isolate_fixed)
    model = DiT(wm.model_config(base, image, cond_dim=512)).eval()
    stats = ActionStats.compute(np.random.default_rng(0).normal(0, 0.02, (100, 7)))
    return WorldModel(model, {"name": "rt1"}, stats, wm, {})


def chunk_ms(policy, repeats: int) -> float:
    obs = {"image": np.zeros((256, 320, 3), np.uint8)}
    policy.reset("open top drawer", 0)
    policy.act(obs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        policy.act(obs)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--plan", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", nargs="+", default=["debug", "B"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {"image": args.image, "euler_steps": args.steps, "threads": args.threads, "ms_per_chunk": {}}
    ms = out["ms_per_chunk"]
    for size in args.sizes:
        for cached in (False, True):
            name = f"{size}_kv_cache" if cached else size
            wm = bundle(size, args.image, 4, isolate_fixed=cached)
            ms[name] = chunk_ms(WorldModelPolicy(wm, steps=args.steps), args.repeats)
            ms[f"{name}_plan{args.plan}_consistency"] = chunk_ms(
                WorldModelPolicy(wm, steps=args.steps, plan=PlanConfig(args.plan, "consistency")),
                max(2, args.repeats // 3),
            )
        out.setdefault("speedup_kv_cache", {})[size] = ms[size] / ms[f"{size}_kv_cache"]
    out["goal"] = "debug <= 50 ms per chunk"
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
