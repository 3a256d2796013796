"""One episode under SIMPLER's loop (maniskill2_evaluator.py), optionally saved as a video.

The policy sees the current instruction; a terminate flag on a non-final subtask calls
advance_to_next_subtask() and the episode goes on; the action is executed either way; the episode stops after
a terminate on the final subtask or at truncation; success is info["success"] of the last executed step.
This is the small loop for looking at envs and measuring experts; eval/ holds the harness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worldflow.viz import check_output_path, save_video

PolicyFn = Callable[[dict, str], "np.ndarray | tuple[np.ndarray, bool]"]


@dataclass
class RolloutResult:
    success: bool
    steps: int
    instructions: list[str] = field(default_factory=list)  # the instruction each action was chosen under
    video_path: Path | None = None


def rollout(
    env,
    policy_fn: PolicyFn,
    seed: int,
    max_steps: int | None = None,
    video_path: str | Path | None = None,
    fps: int = 3,
) -> RolloutResult:
    """Run one episode. `policy_fn(obs, instruction)` returns an action (7,) or (action, terminate)."""
    video = Path(video_path) if video_path is not None else None
    if video is not None:
        check_output_path(video, (".gif", ".mp4"))  # fail before the episode, not after it
    base = env.unwrapped
    obs, info = env.reset(seed=seed)
    frames, instructions = [obs["image"]], []
    limit = max_steps or getattr(base, "max_episode_steps", None) or 1000
    for _ in range(limit):
        instruction = base.get_language_instruction()
        out = policy_fn(obs, instruction)
        action, terminate = out if isinstance(out, tuple) else (out, False)
        stop = bool(terminate) and base.is_final_subtask()
        if terminate and not stop:
            base.advance_to_next_subtask()
        instructions.append(instruction)
        obs, _, terminated, truncated, info = env.step(action)
        frames.append(obs["image"])
        if stop or truncated or terminated:
            break
    if video is not None:
        save_video(np.stack(frames), video, fps=fps)
    return RolloutResult(bool(info.get("success", False)), len(instructions), instructions, video)
