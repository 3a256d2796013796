"""Does the policy look where the decision is? A probe at one subtask's first step on the CPU suite, as JSON.

    python eval/decision_probe.py CHECKPOINT [CHECKPOINT ...] [--task google_robot_place_apple_in_closed_top_drawer]
                                  [--subtask 1] [--seeds 24] [--first-seed 3000] [--steps 10]
                                  [--keypoint-images DIR]

For each seed the scripted expert runs SIMPLER's loop up to the first step of `--subtask` (for the drawer +
apple task's 1: "place apple into top drawer", where the arm always starts from the same pose and only the
image says where the apple is), and its next actions are recorded. Each checkpoint's policy then predicts
one whole chunk from that observation, and per translation axis (x, y, z, summed over the chunk) the probe
reports the correlation with the expert's, the mean error (m), the expert's spread, and how far the chunk
moves when the image is swapped for another seed's (same proprioception and noise) or when only the noise
seed changes. A policy that samples the data's spread of positions instead of finding the object shows a
large `seed_change` and a near-zero `image_swap` on the axis the object varies along.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from worldflow.errors import ConfigError, WorldflowError  # noqa: E402

AXES = ("x", "y", "z")
EXPERT_STEPS = 16  # recorded; compared over the policy's chunk length


@dataclass
class Decision:
    seed: int
    obs: dict
    instruction: str
    expert: np.ndarray  # (EXPERT_STEPS, 7) the expert's next actions


def decisions(task: str, subtask: int, seeds: list[int], image_size=(256, 320)) -> list[Decision]:
    """The observation at the first step of `subtask` for each seed, with the expert's next actions."""
    import envs
    from envs.experts import make_expert

    env = envs.make(task, image_size=image_size)
    base = env.unwrapped
    if not 0 <= subtask < base.task.num_subtasks:
        raise ConfigError(f"--subtask {subtask}: {task} has subtasks 0..{base.task.num_subtasks - 1}")
    expert = make_expert(env)
    out = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        expert.reset()
        while base.subtask_index < subtask:  # SIMPLER's loop: terminate advances a non-final subtask
            action, terminate = expert.act(obs)
            if terminate:
                base.advance_to_next_subtask()
            obs, *_, truncated, _ = env.step(action)
            if truncated:
                raise ConfigError(f"{task} seed {seed}: the expert never reached subtask {subtask}")
        instruction, start = base.get_language_instruction(), obs
        actions = []
        for _ in range(EXPERT_STEPS):
            action, _ = expert.act(obs)
            actions.append(action)
            obs, *_, truncated, _ = env.step(action)
            if truncated:
                break
        out.append(Decision(seed, start, instruction, np.asarray(actions, np.float32)))
    env.close()
    return out


ChunkFn = Callable[[dict, str, int], np.ndarray]  # (obs, instruction, noise seed) -> (n, 7) env actions


def probe(items: list[Decision], chunk: ChunkFn) -> dict:
    """Per axis: corr with the expert, mean error, expert spread, change under an image swap / a new seed."""
    n = len(items)
    if n < 3:
        raise ConfigError(f"the probe needs at least 3 seeds, got {n}")

    def total(obs, instruction, seed, length=None):
        a = np.asarray(chunk(obs, instruction, seed), np.float64)[:length, :3]
        return a.sum(0), len(a)

    own, lengths = zip(*(total(d.obs, d.instruction, 0) for d in items))
    own = np.array(own)
    expert = np.array([d.expert[:k, :3].sum(0) for d, k in zip(items, lengths)])
    swapped = np.array(
        [
            total({**d.obs, "image": items[(i + 1) % n].obs["image"]}, d.instruction, 0, lengths[i])[0]
            for i, d in enumerate(items)
        ]
    )
    reseeded = np.array([total(d.obs, d.instruction, 1, lengths[i])[0] for i, d in enumerate(items)])
    result = {}
    for k, axis in enumerate(AXES):
        spread = float(expert[:, k].std())
        corr = (
            float(np.corrcoef(own[:, k], expert[:, k])[0, 1]) if own[:, k].std() > 0 and spread > 0 else 0.0
        )
        result[axis] = {
            "corr_with_expert": round(corr, 3),
            "mean_error_m": round(float(np.abs(own[:, k] - expert[:, k]).mean()), 4),
            "expert_spread_m": round(spread, 4),
            "image_swap_m": round(float(np.abs(swapped[:, k] - own[:, k]).mean()), 4),
            "seed_change_m": round(float(np.abs(reseeded[:, k] - own[:, k]).mean()), 4),
        }
    result["chunk_steps"] = float(np.mean(lengths))
    return result


def policy_chunk(checkpoint: str, steps: int) -> ChunkFn:
    """The world-model policy's whole first chunk (stride = action horizon) for one observation."""
    from policies.world_model import WorldModelPolicy
    from worldflow.worldmodel.bundle import from_checkpoint

    wm = from_checkpoint(checkpoint)
    policy = WorldModelPolicy(wm, steps=steps, stride=wm.worldmodel.action_horizon)

    def chunk(obs, instruction, seed):
        policy.reset(instruction, seed)
        return policy.act(obs).actions

    return chunk


def keypoint_image(
    checkpoint: str, items: list[Decision], path: str, show: int = 8, zoom: int = 4
) -> str | None:
    """For a checkpoint with `model.keypoints`: the first `show` seeds' model frames (crop and size as the
    policy sees them), enlarged `zoom` times, each keypoint drawn as a coloured square. None without them."""
    import colorsys

    import torch
    from PIL import Image, ImageDraw

    from policies.world_model import to_model_frame
    from worldflow.viz import make_grid, save_image
    from worldflow.worldmodel.bundle import from_checkpoint

    wm = from_checkpoint(checkpoint)
    model = wm.model
    if model.keypoints is None:
        return None
    crop, size, patch = wm.robot.data.crop, wm.image_size, model.cfg.patch
    grid = size // patch
    colours = [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb(k / model.cfg.keypoints, 1.0, 1.0))
        for k in range(model.cfg.keypoints)
    ]
    tiles = []
    for d in items[:show]:
        frame = to_model_frame(d.obs["image"], size, crop)
        clip = frame[None, None].expand(1, model.cfg.frames, -1, -1, -1)  # context repeats the first frame
        with torch.no_grad():
            rc = model.keypoints.coordinates(model.keypoint_input(model.patchify(clip)))[0].numpy()  # (K, 2)
        centre = ((rc + 1) / 2 * (grid - 1) * patch + (patch - 1) / 2 + 0.5) * zoom  # token centres, pixels
        image = Image.fromarray(((frame.permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8))
        image = image.resize((size * zoom, size * zoom), Image.NEAREST)
        draw = ImageDraw.Draw(image)
        for (r, c), colour in zip(centre, colours):
            draw.rectangle([c - 3, r - 3, c + 3, r + 3], outline=colour, width=2)
        tiles.append(np.asarray(image))
    save_image(make_grid(np.stack(tiles), cols=4), path)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--task", default="google_robot_place_apple_in_closed_top_drawer")
    p.add_argument("--subtask", type=int, default=1)
    p.add_argument("--seeds", type=int, default=24)
    p.add_argument(
        "--first-seed", type=int, default=3000
    )  # apart from demonstrations (0...) and evaluation (1000...)
    p.add_argument("--steps", type=int, default=10, help="Euler steps per chunk")
    p.add_argument(
        "--keypoint-images", metavar="DIR", help="write DIR/<run>_<step>_keypoints.png for keypoint models"
    )
    args = p.parse_args(argv)
    try:
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        items = decisions(args.task, args.subtask, seeds)
        report = {
            "task": args.task,
            "subtask": args.subtask,
            "instruction": items[0].instruction,
            "seeds": seeds,
        }
        report["checkpoints"] = {ck: probe(items, policy_chunk(ck, args.steps)) for ck in args.checkpoints}
        if args.keypoint_images:
            from pathlib import Path

            for ck in args.checkpoints:
                name = "_".join(Path(ck).resolve().parts[-3::2]) + "_keypoints.png"  # run_step_...
                path = keypoint_image(ck, items, str(Path(args.keypoint_images) / name))
                if path:
                    report["checkpoints"][ck]["keypoint_image"] = path
    except WorldflowError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
