"""SIMPLER's evaluation loop (maniskill2_evaluator.py), over any env that speaks the worker protocol.

Exactly: the policy sees the current instruction and is reset when it changes; a terminate flag in a
non-final subtask calls `advance_to_next_subtask()` and the step is still executed; the loop stops on
terminate in the final subtask or at truncation, never on success; success is judged at the last step.
"""

from __future__ import annotations

import time

import numpy as np

from eval.client import EnvRequestError, WorkerError
from policies.base import ActionChunk


class PolicyError(RuntimeError):
    """The policy returned something the env cannot take (wrong action shape, NaN)."""


def check_chunk(chunk: ActionChunk, action_dim: int) -> None:
    if chunk.actions.ndim != 2 or chunk.actions.shape[1] != action_dim or len(chunk.actions) == 0:
        raise PolicyError(
            f"policy returned actions of shape {chunk.actions.shape}; the env takes (K, {action_dim})"
        )
    if not np.isfinite(chunk.actions).all():
        raise PolicyError("policy returned NaN or inf actions")


TERMINATE_MODES = ("all", "subtask", "never")


def run_episode(
    env,
    policy,
    task: str,
    seed: int,
    max_steps: int,
    record: bool = False,
    action_dim: int = 7,
    terminate: str = "all",
) -> dict:
    """One episode; returns the row for episodes.jsonl (and `frames` when recording).

    terminate: which of the policy's terminate flags reach the env, as a SIMPLER policy wrapper decides —
    "all" (RT-1's wrapper), "subtask" (only those that advance a non-final subtask; the final subtask runs
    to its step limit), "never" (Octo's and OpenVLA's wrappers send 0; two-stage tasks switch at step 100)."""
    if terminate not in TERMINATE_MODES:
        raise ValueError(f"terminate={terminate!r}; use one of {TERMINATE_MODES}")
    t0 = time.perf_counter()
    steps, success, failure = 0, False, None
    frames: list[np.ndarray] = []
    instruction = ""
    try:
        obs, instruction = env.reset(seed)
        policy.reset(instruction, seed)
        if record:
            frames.append(obs["image"])
        stop = False
        while not stop:
            chunk = policy.act(obs)
            check_chunk(chunk, action_dim)
            for action, flag in zip(chunk.actions, chunk.terminate):
                if flag and terminate != "never":
                    if env.is_final_subtask():
                        stop = terminate == "all"
                    else:
                        env.advance()
                res = env.step(action)
                steps += 1
                obs, success = res["obs"], res["success"]
                if record:
                    frames.append(obs["image"])
                if res["truncated"] or (max_steps and steps >= max_steps):  # 0: the env truncates itself
                    stop = True
                    failure = None if success else "timeout"
                    break
                if stop:
                    failure = None if success else "terminated"
                    break
                new_instruction = env.instruction()
                if (
                    new_instruction != instruction
                ):  # the model is reset on a new instruction, as SIMPLER's wrappers do
                    instruction = new_instruction
                    policy.reset(instruction, seed)
                    break
    except WorkerError as e:
        success, failure = False, str(e)
    except (EnvRequestError, PolicyError) as e:
        success, failure = False, f"error: {e}"
    row = {
        "task": task,
        "seed": int(seed),
        "success": bool(success),
        "steps": steps,
        "instruction": instruction,
        "failure": failure,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if record:
        row["frames"] = frames
    return row
