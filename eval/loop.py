"""SIMPLER's evaluation loop (maniskill2_evaluator.py): the project's one episode loop.

Exactly: the policy sees the current instruction and is reset when it changes; a terminate flag in a
non-final subtask calls `advance_to_next_subtask()` and the step is still executed; the loop stops on
terminate in the final subtask or at truncation, never on success; success is judged at the last step.

It runs any env behind the worker protocol's interface (reset, step, instruction, is_final_subtask,
advance, expert): an env worker's client (eval/client.py), or `LocalEnv` around a gymnasium env in this
process. The harness evaluates with it, eval/collect.py records demonstrations with it (`on_step`, and
`execute` for DART noise), and the env worker serves the CPU suite through `LocalEnv`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from eval.client import EnvRequestError, WorkerError
from policies.base import ActionChunk


class PolicyError(RuntimeError):
    """The policy returned something the env cannot take (wrong action shape, NaN)."""


class LocalEnv:
    """A gymnasium env with SIMPLER's methods on `unwrapped` (the CPU suite, a plug-in env) behind the
    worker protocol's interface, in this process. `expert()` asks the CPU suite's scripted expert (built
    on first use, reset with every episode) what to do from the last observation."""

    def __init__(self, env):
        self.env, self.base = env, env.unwrapped
        self.max_steps = int(getattr(self.base, "max_episode_steps", 0) or 0)
        self.obs, self._expert = None, None

    def reset(self, seed: int) -> tuple[dict, str]:
        self.obs, _ = self.env.reset(seed=int(seed))
        if self._expert is not None:
            self._expert.reset()
        return self.obs, self.instruction()

    def step(self, action) -> dict:
        self.obs, reward, terminated, truncated, info = self.env.step(np.asarray(action, np.float32))
        return {
            "obs": self.obs,
            "reward": float(reward),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "success": bool(info.get("success", False)),
        }

    def instruction(self) -> str:
        return self.base.get_language_instruction()

    def is_final_subtask(self) -> bool:
        return bool(self.base.is_final_subtask())

    def advance(self) -> None:
        self.base.advance_to_next_subtask()

    def expert(self) -> tuple[np.ndarray, bool]:
        if self._expert is None:
            from envs.experts import make_expert

            self._expert = make_expert(self.env)
            self._expert.reset()
        action, terminate = self._expert.act(self.obs)
        return np.asarray(action, np.float32), bool(terminate)


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
    on_step: Callable[[dict, np.ndarray, bool, str], None] | None = None,
    execute: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """One episode; returns the row for episodes.jsonl (and `frames` when recording).

    on_step(obs, action, flag, instruction) sees every step before it runs: the observation the action
    was chosen from, the policy's action and terminate flag, the instruction it was chosen under.
    execute(action) is what the env runs instead of the action (DART noise); None: the action itself.

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
        observe = getattr(policy, "observe", None)
        if record:
            frames.append(obs["image"])
        stop = False
        while not stop:
            chunk = policy.act(obs)
            check_chunk(chunk, action_dim)
            for i, (action, flag) in enumerate(zip(chunk.actions, chunk.terminate)):
                if on_step is not None:
                    on_step(obs, action, bool(flag), instruction)
                if flag and terminate != "never":
                    if env.is_final_subtask():
                        stop = terminate == "all"
                    else:
                        env.advance()
                res = env.step(action if execute is None else execute(action))
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
                if observe is not None and i < len(chunk.actions) - 1:  # the next act() sees the last one
                    observe(obs)
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


def play(env, policy, seed: int, video_path=None, fps: int = 3, **kw) -> dict:
    """One episode of a gymnasium env in this process under the loop -> its row, plus "instructions" (the
    instruction of every step). policy: a policy object, or "expert" for the CPU suite's scripted expert.
    With `video_path` (.gif or .mp4, checked before the episode) every frame is written as a video."""
    from worldflow.viz import check_output_path, save_video

    if video_path is not None:
        check_output_path(video_path, (".gif", ".mp4"))  # fail before the episode, not after it
    local = LocalEnv(env)
    if policy == "expert":
        from policies.baselines import ScriptedPolicy

        policy = ScriptedPolicy(local)
    instructions: list[str] = []
    row = run_episode(
        local, policy, getattr(env.spec, "id", "env"), seed, local.max_steps, record=video_path is not None,
        on_step=lambda obs, action, flag, instruction: instructions.append(instruction), **kw,
    )  # fmt: skip
    frames = row.pop("frames", None)
    if video_path is not None:
        save_video(np.stack(frames), video_path, fps=fps)
    return {**row, "instructions": instructions}
