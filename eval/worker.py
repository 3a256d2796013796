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
Every response has "ok"; a failure is {"ok": false, "error": "..."} and the worker keeps serving.
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
    """Real SimplerEnv (simpler-env/SimplerEnv): `simpler_env.make(task)` and its image helper."""

    def __init__(self):
        import simpler_env
        from simpler_env.utils.env.observation_utils import get_image_from_maniskill2_obs_dict

        self.simpler_env, self.get_image = simpler_env, get_image_from_maniskill2_obs_dict
        self.env = None

    def make(self, task, kwargs):
        self.env = self.simpler_env.make(task, **kwargs)
        return {"max_steps": int(getattr(self.env.spec, "max_episode_steps", 0) or 0)}

    def reset(self, seed):
        obs, _ = self.env.reset(seed=seed)
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
        eef = obs.get("agent", {}).get("eef_pos")
        return {
            "image": encode_array(self.get_image(self.env, obs)),
            "proprio": encode_array(simpler_proprio(eef) if eef is not None else np.zeros(0, np.float32)),
        }


def simpler_proprio(eef_pos) -> np.ndarray:
    """SimplerEnv's `obs["agent"]["eef_pos"]` -> the CPU suite's proprioception (8,) float32.

    SimplerEnv packs the TCP pose in the robot base frame and the gripper's opening: x, y, z, qw, qx, qy, qz,
    openness (1 open, 0 closed); open-pi-zero's SimplerEnv adapter (allenzren/open-pi-zero) reads it the same
    way. The suite sends x, y, z, quaternion (w, x, y, z) with w >= 0, closedness in [0, 1]."""
    e = np.asarray(eef_pos, np.float64).reshape(-1)
    if e.shape != (8,) or not np.isfinite(e).all():
        raise ValueError(f"SimplerEnv eef_pos must be 8 finite numbers, got {e.tolist()}")
    quat = e[3:7] / max(np.linalg.norm(e[3:7]), 1e-12)
    quat = -quat if quat[0] < 0 else quat
    return np.concatenate([e[:3], quat, [1.0 - e[7]]]).astype(np.float32)


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
