"""Success rate of the CPU suite's scripted experts under SIMPLER's loop, per task, as JSON.

    python eval/expert_success.py [--tasks google_robot_all] [--seeds 100] [--workers 2] [--image-size 64]
                                  [--visual-variation] [--first-seed 0]

Seeds first-seed .. first-seed + N - 1 per task; the image size only changes rendering cost (the experts use privileged state).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def task_success(
    task: str, seeds: int, image_size: int, visual_variation: bool = False, first_seed: int = 0
) -> dict:
    import envs
    from envs.experts import make_expert

    env = envs.make(task, image_size=image_size, visual_variation=visual_variation)
    expert = make_expert(env)
    failures, steps, start = [], 0, time.perf_counter()
    for seed in range(first_seed, first_seed + seeds):
        expert.reset()
        result = envs.rollout(env, lambda obs, instruction: expert.act(obs), seed=seed)
        steps += result.steps
        if not result.success:
            failures.append(seed)
    env.close()
    return {
        "task": task,
        "success_rate": 1 - len(failures) / seeds,
        "episodes": seeds,
        "failed_seeds": failures,
        "mean_steps": steps / seeds,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    import envs
    from eval.harness import expand_tasks

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="google_robot_all", help="comma-separated task names or groups")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--visual-variation", action="store_true")
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()
    tasks = expand_tasks([t.strip() for t in args.tasks.split(",")], envs.TASKS, envs.TASK_GROUPS)
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [
            pool.submit(task_success, t, args.seeds, args.image_size, args.visual_variation, args.first_seed)
            for t in tasks
        ]
        results = [f.result() for f in futures]
    summary = {
        "seeds": args.seeds,
        "first_seed": args.first_seed,
        "visual_variation": args.visual_variation,
        "image_size": args.image_size,
        "tasks": results,
        "min_success_rate": min(r["success_rate"] for r in results),
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
