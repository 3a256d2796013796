"""CPU-suite env throughput (DESIGN.md §4 goal: >= 300 env steps/s with two worker processes at 128 px).

    python bench/env_throughput.py [--task google_robot_pick_coke_can] [--steps 600] [--image-size 128]

Prints JSON: env steps/s (uniform random actions in the bounds, reset at truncation) in one process and in
two worker processes (each its own env, timed together after both are built), plus the cost of one action's
physics and of one rendered frame. The machine's other load counts: note it when reporting.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_steps(task: str, steps: int, image_size: int, barrier=None) -> float:
    """Seconds for `steps` env steps (after construction and the first reset)."""
    import numpy as np

    import envs

    env = envs.make(task, image_size=image_size)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    low, high = env.action_space.low, env.action_space.high
    if barrier is not None:
        barrier.wait()
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(rng.uniform(low, high).astype(np.float32))
        if terminated or truncated:
            env.reset()
    return time.perf_counter() - start


def _worker(task, steps, image_size, barrier, out):
    out.put(run_steps(task, steps, image_size, barrier))


def parts(task: str, image_size: int, n: int = 200) -> dict:
    """Milliseconds per action's physics and per rendered frame."""
    import numpy as np

    import envs

    base = envs.make(task, image_size=image_size).unwrapped
    base.reset(seed=0)
    start = time.perf_counter()
    for _ in range(n):
        base._move_mocap(base.ee_pos, base.ee_quat)
    physics = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for _ in range(n):
        np.asarray(base.render_image())
    render = (time.perf_counter() - start) / n
    return {"physics_ms_per_action": round(1e3 * physics, 3), "render_ms_per_frame": round(1e3 * render, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="google_robot_pick_coke_can")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    single = run_steps(args.task, args.steps, args.image_size)
    ctx = mp.get_context("spawn")  # a fresh GL context per process
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(args.task, args.steps, args.image_size, barrier, out))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    seconds = [out.get() for _ in procs]
    for p in procs:
        p.join()
    report = {
        "task": args.task,
        "image_size": args.image_size,
        "steps_per_process": args.steps,
        "one_process_steps_per_s": round(args.steps / single, 1),
        "two_workers_steps_per_s": round(2 * args.steps / max(seconds), 1),
        **parts(args.task, args.image_size),
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "machine": platform.processor() or platform.machine(),
        "MUJOCO_GL": os.environ.get("MUJOCO_GL"),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
