"""The env worker: one environment in its own process, driven by JSON lines on stdin/stdout.

Runs under any Python: the CPU suite's (this project's venv) or SimplerEnv's own venv (sapien 2.2.2,
numpy < 2, gymnasium < 1), so it imports nothing of worldflow and only numpy at module level.

  python eval/worker.py --suite cpu|simpler

Requests -> responses (one JSON object per line; images as base64 raw bytes with shape and dtype):
  {"cmd": "make", "task": str, "kwargs": {}}  -> {"max_steps": int}
  {"cmd": "reset", "seed": int}                -> {"obs": OBS, "instruction": str}
  {"cmd": "step", "action": [7 floats]}        -> {"obs": OBS, "reward", "terminated", "truncated", "success"}
  {"cmd": "instruction"}                       -> {"instruction": str}
  {"cmd": "is_final_subtask"}                  -> {"value": bool}
  {"cmd": "advance"}                           -> {}
  {"cmd": "expert"}                            -> {"action": [7], "terminate": bool}   (CPU suite only)
  {"cmd": "close"}                             -> {}
Every response has "ok"; a failure is {"ok": false, "error": "..."} and the worker keeps serving. For
SimplerEnv, make also fails when the scene's stage file is missing or the env has no proprioception.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import traceback

import numpy as np


def encode_array(a) -> dict:
    a = np.ascontiguousarray(a)
    return {"b64": base64.b64encode(a.tobytes()).decode(), "shape": list(a.shape), "dtype": str(a.dtype)}


def decode_array(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["b64"]), dtype=d["dtype"]).reshape(d["shape"])


class CpuSuite:
    """The CPU suite (or a plug-in env) in this process through eval.loop.LocalEnv, the one adapter of a
    gymnasium env to this protocol; only the observations are encoded here."""

    def __init__(self):
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        import envs
        from eval.loop import LocalEnv

        self.envs, self.local_env = envs, LocalEnv
        self.env = None

    def make(self, task, kwargs):
        if str(task).endswith((".yaml", ".yml")):  # a plug-in env described by a config file (envs/plugin.py)
            self.env = self.local_env(self.envs.make_from_config(task))
        else:
            self.env = self.local_env(self.envs.make(task, **kwargs))
        return {"max_steps": self.env.max_steps}

    def reset(self, seed):
        obs, instruction = self.env.reset(seed)
        return {"obs": self._obs(obs), "instruction": instruction}

    def step(self, action):
        res = self.env.step(action)
        return {**res, "obs": self._obs(res["obs"])}

    def instruction(self):
        return self.env.instruction()

    def is_final_subtask(self):
        return self.env.is_final_subtask()

    def advance(self):
        self.env.advance()

    def expert_action(self):
        action, terminate = self.env.expert()
        return {"action": np.asarray(action, np.float64).tolist(), "terminate": bool(terminate)}

    @staticmethod
    def _obs(obs):
        return {
            "image": encode_array(obs["image"]),
            "proprio": encode_array(np.asarray(obs.get("proprio", np.zeros(0)), np.float32)),
        }


class SimplerSuite:
    """Real SimplerEnv (simpler-env/SimplerEnv): `simpler_env.make(task)` and its image helper, or, with the
    make keyword `episode_set`, SIMPLER's episode grid of the task (eval/simpler_grids.py): the env is then
    built with each episode's keywords (rebuilt when they change) and reset to its start poses; the seed of
    a reset is the episode's index in the grid."""

    def __init__(self):
        import simpler_env
        from simpler_env.utils.env.observation_utils import get_image_from_maniskill2_obs_dict

        self.simpler_env, self.get_image = simpler_env, get_image_from_maniskill2_obs_dict
        self.env = self.grid = self.built = None

    def make(self, task, kwargs):
        kwargs = dict(kwargs)
        episode_set = kwargs.pop("episode_set", None)
        self.close()
        self.grid = None
        if episode_set is None:
            self._use(self.simpler_env.make(task, **kwargs))
            return {"max_steps": int(getattr(self.env.spec, "max_episode_steps", 0) or 0)}
        from mani_skill2_real2sim import ASSET_DIR
        from simpler_grids import episodes  # beside this file, plain Python

        self.grid, self.extra, self.asset_dir = episodes(task, episode_set), kwargs, str(ASSET_DIR)
        stages = os.path.join(self.asset_dir, "hab2_bench_assets")  # as CustomSceneEnv's DEFAULT_SCENE_ROOT
        overlays = [e["kwargs"].get("rgb_overlay_path") for e in self.grid]
        check_assets(  # every scene of the grid now, not as failed episodes later
            [stage_path(stages, e["kwargs"].get("scene_name")) for e in self.grid]
            + [os.path.join(self.asset_dir, path) for path in overlays if path]
        )
        self._build(self.grid[0])  # a bad keyword fails here, at make
        return {"max_steps": int(self.grid[0]["kwargs"]["max_episode_steps"])}

    def _build(self, episode) -> None:
        spec = json.dumps([episode["env_id"], episode["kwargs"]], sort_keys=True)
        if spec == self.built:
            return
        from simpler_env.utils.env.env_builder import build_maniskill2_env

        self.close()
        kwargs = {**episode["kwargs"], **self.extra}
        if kwargs.get("rgb_overlay_path"):
            kwargs["rgb_overlay_path"] = os.path.join(self.asset_dir, kwargs["rgb_overlay_path"])
        self._use(build_maniskill2_env(episode["env_id"], **kwargs))
        self.built = spec

    def _use(self, env) -> None:
        self.env = env
        base = env.unwrapped
        check_assets([stage_path(getattr(base, "scene_root", None), getattr(base, "scene_name", None))])
        self.eef_in_obs = check_proprio_source(env)  # at make: a missing source is a setup error

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env = self.built = None

    def reset(self, seed):
        if self.grid is None:
            obs, _ = self.env.reset(seed=seed)
        else:
            if not 0 <= seed < len(self.grid):
                raise ValueError(f"episode {seed} of a grid of {len(self.grid)}")
            self._build(self.grid[seed])
            options = {k: {n: np.asarray(v) if isinstance(v, list) else v for n, v in o.items()}
                       for k, o in self.grid[seed]["options"].items()}  # fmt: skip
            obs, _ = self.env.reset(options=options)  # as simpler_env/main_inference.py: no seed
        return {"obs": self._obs(obs), "instruction": self.env.get_language_instruction()}

    def step(self, action):
        obs, reward, done, truncated, info = self.env.step(np.asarray(action, np.float64))
        return {
            "obs": self._obs(obs),
            "reward": float(reward),
            "terminated": bool(done),
            "truncated": bool(truncated),
            "success": bool(info.get("success", done)),
        }

    def instruction(self):
        return self.env.get_language_instruction()

    def is_final_subtask(self):
        return bool(self.env.is_final_subtask())

    def advance(self):
        self.env.advance_to_next_subtask()

    def expert_action(self):
        raise RuntimeError("real SimplerEnv has no scripted expert")

    def _obs(self, obs):
        if self.eef_in_obs:
            proprio = simpler_proprio(obs["agent"]["eef_pos"])
        else:  # upstream ManiSkill2_real2sim: what a fork packs as eef_pos, computed from the env
            base = self.env.unwrapped
            pose = base.agent.base_pose.inv() * base.tcp.pose  # sapien.Pose; q is (w, x, y, z)
            proprio = tcp_proprio(pose.p, pose.q, base.agent.get_gripper_closedness())
        return {"image": encode_array(self.get_image(self.env, obs)), "proprio": encode_array(proprio)}


def stage_path(scene_root, scene_name) -> str | None:
    """The stage SimplerEnv loads for a scene (`scene_root/stages/<scene_name>.glb`); None where it loads
    none (the drawer scenes' "dummy_*")."""
    if scene_root is None or scene_name is None or "dummy" in scene_name:
        return None
    return os.path.join(str(scene_root), "stages", f"{scene_name}.glb")


def check_assets(paths) -> None:
    """SimplerEnv only logs a missing stage (the objects then fall through the table): here it is an
    error, as any missing asset. SIMPLER_ALLOW_MISSING_ASSETS=1 skips the check (scripts/setup_simpler.sh)."""
    missing = sorted({p for p in paths if p is not None and not os.path.isfile(p)})
    if missing and os.environ.get("SIMPLER_ALLOW_MISSING_ASSETS") != "1":
        raise FileNotFoundError(
            f"scene asset(s) missing: {', '.join(missing)}; SimplerEnv would go on without them (objects fall "
            "through the table): use a complete ManiSkill2_real2sim checkout, see scripts/setup_simpler.sh"
        )


def check_proprio_source(env) -> bool:
    """Where a SimplerEnv env's proprioception comes from: True for `obs["agent"]["eef_pos"]` (a fork of
    ManiSkill2_real2sim packs it), False for the env's agent and TCP link (upstream: `agent.base_pose`,
    `tcp`, `agent.get_gripper_closedness()`). Having neither is an error: an empty proprioception is
    never sent."""
    agent_space = getattr(env.observation_space, "spaces", {}).get("agent")
    if "eef_pos" in getattr(agent_space, "spaces", {}):
        return True
    base = env.unwrapped
    agent, tcp = getattr(base, "agent", None), getattr(base, "tcp", None)
    if tcp is not None and hasattr(agent, "base_pose") and hasattr(agent, "get_gripper_closedness"):
        return False
    raise RuntimeError(
        f"no proprioception in {type(base).__name__}: its observation has no agent.eef_pos and the env has "
        "no agent.base_pose, tcp link and agent.get_gripper_closedness() to compute it from"
    )


def simpler_proprio(eef_pos) -> np.ndarray:
    """SimplerEnv's `obs["agent"]["eef_pos"]` -> the CPU suite's proprioception (8,) float32.

    SimplerEnv packs the TCP pose in the robot base frame and the gripper's opening: x, y, z, qw, qx, qy, qz,
    openness (1 open, 0 closed); open-pi-zero's SimplerEnv adapter (allenzren/open-pi-zero) reads it the same
    way."""
    e = np.asarray(eef_pos, np.float64).reshape(-1)
    if e.shape != (8,) or not np.isfinite(e).all():
        raise ValueError(f"SimplerEnv eef_pos must be 8 finite numbers, got {e.tolist()}")
    return tcp_proprio(e[:3], e[3:7], 1.0 - e[7])


def tcp_proprio(position, quat_wxyz, closedness) -> np.ndarray:
    """The suite's proprioception (8,) float32: TCP x, y, z and quaternion (w, x, y, z) with w >= 0 in the
    robot base frame, gripper closedness in [0, 1] (1 closed)."""
    p, q = np.asarray(position, np.float64).reshape(3), np.asarray(quat_wxyz, np.float64).reshape(4)
    if not (np.isfinite(p).all() and np.isfinite(q).all() and np.isfinite(closedness)):
        raise ValueError(f"non-finite TCP pose or closedness: {p.tolist()}, {q.tolist()}, {closedness}")
    q = q / max(np.linalg.norm(q), 1e-12)
    q = -q if q[0] < 0 else q  # q and -q are one rotation: one sign, as the CPU suite sends
    return np.concatenate([p, q, [np.clip(closedness, 0.0, 1.0)]]).astype(np.float32)


def serve(suite, inp, out) -> None:
    for line in inp:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            cmd = req["cmd"]
            if cmd == "make":
                res = suite.make(req["task"], req.get("kwargs", {}))
            elif cmd == "reset":
                res = suite.reset(int(req["seed"]))
            elif cmd == "step":
                res = suite.step(req["action"])
            elif cmd == "instruction":
                res = {"instruction": suite.instruction()}
            elif cmd == "is_final_subtask":
                res = {"value": suite.is_final_subtask()}
            elif cmd == "advance":
                suite.advance()
                res = {}
            elif cmd == "expert":
                res = suite.expert_action()
            elif cmd == "close":
                out.write(json.dumps({"ok": True}) + "\n")
                out.flush()
                return
            else:
                raise ValueError(f"unknown command {cmd!r}")
            res["ok"] = True
        except Exception as e:  # report and keep serving: the harness decides what a failure means
            res = {
                "ok": False,
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(limit=5),
            }
        out.write(json.dumps(res) + "\n")
        out.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", choices=["cpu", "simpler"], default="cpu")
    args = ap.parse_args()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # anything the env prints must not corrupt the protocol
    suite = CpuSuite() if args.suite == "cpu" else SimplerSuite()
    serve(suite, sys.stdin, out)


if __name__ == "__main__":
    main()
