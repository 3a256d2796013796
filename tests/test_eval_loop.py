import sys
import textwrap

import numpy as np
import pytest

from eval.client import EnvClient, WorkerError
from eval.harness import evaluate, expand_tasks
from eval.loop import PolicyError, check_chunk, run_episode
from eval.worker import decode_array, encode_array
from policies.base import ActionChunk
from worldflow.errors import EnvError


class TwoStageEnv:
    """A scripted stand-in for SIMPLER's drawer + apple task: stage 2 on advance or forced at step 100;
    success = stage 2 and the last action's x > 0 (judged at the last step only)."""

    def __init__(self, max_steps=200):
        self.max_steps = max_steps

    def reset(self, seed):
        self.t, self.stage, self.advanced_at = 0, 1, None
        return {"image": np.zeros((4, 4, 3), np.uint8)}, self.instruction()

    def instruction(self):
        return "open top drawer" if self.stage == 1 else "place apple into top drawer"

    def is_final_subtask(self):
        return self.stage == 2

    def advance(self):
        self.stage, self.advanced_at = 2, self.t

    def step(self, action):
        self.t += 1
        if self.t == 100 and self.stage == 1:
            self.advance()
        success = self.stage == 2 and action[0] > 0
        return {
            "obs": {"image": np.zeros((4, 4, 3), np.uint8)},
            "success": success,
            "truncated": self.t >= self.max_steps,
            "terminated": False,
        }


class ScriptPolicy:
    """Emits x = +1 except where told; terminates at the given steps; records every reset."""

    def __init__(self, terminate_at=(), negative_from=None):
        self.terminate_at, self.negative_from = set(terminate_at), negative_from
        self.resets, self.t = [], 0

    def reset(self, instruction, seed):
        self.resets.append(instruction)

    def act(self, obs):
        self.t += 1
        x = -1.0 if self.negative_from is not None and self.t >= self.negative_from else 1.0
        return ActionChunk(np.array([[x, 0, 0, 0, 0, 0, 0]]), np.array([self.t in self.terminate_at]))


def test_terminate_advances_then_stops_in_final_subtask():
    env, pol = TwoStageEnv(), ScriptPolicy(terminate_at=(10, 30))
    row = run_episode(env, pol, "apple", 0, 200)
    assert env.advanced_at == 9  # terminate at the 10th action advances before that step executes
    assert pol.resets == ["open top drawer", "place apple into top drawer"]
    assert row["steps"] == 30 and row["success"] and row["failure"] is None
    assert row["instruction"] == "place apple into top drawer"


def test_forced_switch_at_step_100_and_success_at_last_step():
    env, pol = TwoStageEnv(), ScriptPolicy(negative_from=150)
    row = run_episode(env, pol, "apple", 0, 200)
    assert env.advanced_at == 100 and pol.resets[-1] == "place apple into top drawer"
    # successful between steps 100 and 149, failed at the last step: the episode is a failure
    assert row["steps"] == 200 and not row["success"] and row["failure"] == "timeout"
    row = run_episode(TwoStageEnv(), ScriptPolicy(), "apple", 1, 200)
    assert row["success"] and row["steps"] == 200  # the loop does not stop on success


def test_bad_policy_output_is_one_clear_error():
    with pytest.raises(PolicyError, match=r"shape \(1, 7\); the env takes \(K, 6\)"):
        check_chunk(ActionChunk(np.zeros((1, 7)), [False]), 6)
    with pytest.raises(ValueError, match="terminate flags"):
        ActionChunk(np.zeros((2, 7)), [False])

    class NaNPolicy(ScriptPolicy):
        def act(self, obs):
            return ActionChunk(np.full((1, 7), np.nan), [False])

    row = run_episode(TwoStageEnv(), NaNPolicy(), "apple", 0, 10)
    assert not row["success"] and "NaN" in row["failure"]


def test_array_encoding_round_trip():
    a = (np.arange(24) % 256).astype(np.uint8).reshape(2, 4, 3)
    assert np.array_equal(decode_array(encode_array(a)), a)


def fake_worker(tmp_path, body: str):
    path = tmp_path / "fake_worker.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_crashing_worker_is_reported_and_restarted(tmp_path):
    script = fake_worker(
        tmp_path,
        """
        import json, sys
        for line in sys.stdin:
            req = json.loads(line)
            if req["cmd"] == "reset":
                sys.stderr.write("segfault in physics\\n"); sys.stderr.flush(); sys.exit(3)
            sys.stdout.write(json.dumps({"ok": True, "max_steps": 5}) + "\\n"); sys.stdout.flush()
        """,
    )
    client = EnvClient(python=sys.executable, worker=script, timeout=20)
    assert client.make("t") == 5
    with pytest.raises(WorkerError, match="worker_crash: worker exited with code 3.*segfault in physics"):
        client.reset(0)
    assert client.make("t") == 5  # a fresh worker serves the next request
    client.close()


def test_hanging_worker_times_out(tmp_path):
    script = fake_worker(tmp_path, "import time, sys\nsys.stdin.readline()\ntime.sleep(60)\n")
    client = EnvClient(python=sys.executable, worker=script, timeout=1)
    with pytest.raises(WorkerError, match="worker_timeout"):
        client.make("t")
    assert client.proc is None  # killed


def test_harness_marks_crashed_episode_failed_and_resumes(tmp_path):
    script = fake_worker(
        tmp_path,
        """
        import json, sys, base64
        img = {"b64": base64.b64encode(bytes(12)).decode(), "shape": [2, 2, 3], "dtype": "uint8"}
        seed = None
        for line in sys.stdin:
            req = json.loads(line); cmd = req["cmd"]
            if cmd == "make": res = {"max_steps": 3}
            elif cmd == "reset":
                seed = req["seed"]; res = {"obs": {"image": img}, "instruction": "pick coke can"}
            elif cmd == "step":
                if seed == 1: sys.exit(9)
                res = {"obs": {"image": img}, "reward": 0, "terminated": False, "truncated": False, "success": seed == 0}
            elif cmd == "instruction": res = {"instruction": "pick coke can"}
            elif cmd == "close": res = {}
            else: res = {"value": True}
            res["ok"] = True
            sys.stdout.write(json.dumps(res) + "\\n"); sys.stdout.flush()
        """,
    )
    import eval.harness as harness

    real_client = harness.EnvClient
    harness.EnvClient = lambda suite, python, timeout: real_client(
        suite, sys.executable, timeout, worker=script
    )
    try:
        summary = evaluate(["coke"], [0, 1, 2], lambda c: ScriptPolicy(), tmp_path / "out", videos_per_task=1)
        rows = (tmp_path / "out" / "episodes.jsonl").read_text().splitlines()
        assert len(rows) == 3 and summary["coke"]["successes"] == 1
        assert "worker_crash" in [r for r in rows if '"seed": 1' in r][0]
        assert list((tmp_path / "out" / "videos").glob("coke_seed0_ok.mp4"))
        again = evaluate(["coke"], [0, 1, 2, 3], lambda c: ScriptPolicy(), tmp_path / "out")
        assert again["coke"]["episodes"] == 4  # only seed 3 ran; the others counted once
        assert len((tmp_path / "out" / "episodes.jsonl").read_text().splitlines()) == 4
    finally:
        harness.EnvClient = real_client


def test_task_expansion():
    groups = {"drawers": ["open_top", "close_top"]}
    assert expand_tasks(["drawers", "coke", "open_top"], ["open_top", "close_top", "coke"], groups) == [
        "open_top",
        "close_top",
        "coke",
    ]
    with pytest.raises(EnvError, match="unknown task 'cokee'.*did you mean"):
        expand_tasks(["cokee"], ["coke"], groups)


def test_episode_log_survives_a_line_cut_by_a_kill(tmp_path):
    from eval.results import EpisodeLog

    log = EpisodeLog(tmp_path)
    log.append({"task": "coke", "seed": 0, "success": True})
    with open(log.path, "a") as f:
        f.write('{"task": "coke", "seed": 1, "succ')  # killed mid-write: no newline
    assert log.finished() == {("coke", 0)}  # the cut episode runs again
    log.append({"task": "coke", "seed": 1, "success": False})
    log.append({"task": "coke", "seed": 2, "success": False})
    assert log.finished() == {("coke", 0), ("coke", 1), ("coke", 2)}
    assert len(log.rows()) == 3


def test_terminate_modes_decide_which_flags_reach_the_env():
    # "subtask": the first-stage flag advances, the final-stage one is ignored (the episode runs to 200)
    env, pol = TwoStageEnv(), ScriptPolicy(terminate_at=(10, 30))
    row = run_episode(env, pol, "apple", 0, 200, terminate="subtask")
    assert env.advanced_at == 9 and row["steps"] == 200 and row["failure"] is None and row["success"]
    # "never": no flag reaches the env, the switch comes at step 100
    env, pol = TwoStageEnv(), ScriptPolicy(terminate_at=(10, 30))
    row = run_episode(env, pol, "apple", 0, 200, terminate="never")
    assert env.advanced_at == 100 and row["steps"] == 200
    with pytest.raises(ValueError, match="terminate='sometimes'"):
        run_episode(TwoStageEnv(), ScriptPolicy(), "apple", 0, 10, terminate="sometimes")


def test_rollout_cli_rejects_an_unknown_terminate_mode(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    res = subprocess.run(
        [sys.executable, str(root / "eval" / "simpler_rollout.py"), "policy.name=random",
         "policy.terminate=sometimes", f"out_dir={tmp_path / 'out'}"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode != 0 and "policy.terminate='sometimes'" in res.stderr
    assert not (tmp_path / "out").exists()


def test_simpler_proprio_becomes_the_suites_convention():
    from eval.worker import simpler_proprio

    # SimplerEnv: x, y, z, qw, qx, qy, qz, openness; suite: x, y, z, quaternion (w >= 0), closedness
    eef = [0.4, -0.1, 0.9, -0.5, 0.5, -0.5, 0.5, 0.25]
    out = simpler_proprio(eef)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.4, -0.1, 0.9, 0.5, -0.5, 0.5, -0.5, 0.75], atol=1e-6)
    with pytest.raises(ValueError, match="eef_pos must be 8 finite numbers"):
        simpler_proprio([0.0] * 7)
    with pytest.raises(ValueError, match="eef_pos must be 8 finite numbers"):
        simpler_proprio([0.0] * 7 + [float("nan")])


def test_a_terminate_is_sent_only_after_enough_chunks_in_a_row_predict_it():
    from policies.world_model import cut_at_terminate

    def chunk(*flag_at):  # 8 steps, terminate channel -1 except +1 at flag_at
        c = np.zeros((8, 8), np.float32)
        c[:, 7] = -1.0
        c[list(flag_at), 7] = 1.0
        return c

    # the chunk is cut after its first positive step in every case; the flag waits for the second chunk
    cut, flags, streak = cut_at_terminate(chunk(2, 5), 0, after=2)
    assert len(cut) == 3 and not flags.any() and streak == 1
    cut, flags, streak = cut_at_terminate(chunk(0), streak, after=2)
    assert len(cut) == 1 and flags.tolist() == [True] and streak == 0
    # a chunk without a terminate breaks the run
    _, flags, streak = cut_at_terminate(chunk(), 1, after=2)
    assert len(flags) == 8 and not flags.any() and streak == 0
    _, flags, _ = cut_at_terminate(chunk(4), 0, after=1)  # after=1: the first prediction is sent (RT-1)
    assert flags.tolist() == [False] * 4 + [True]
    from policies.factory import PolicyConfig, policy_factory
    from worldflow.errors import ConfigError

    with pytest.raises(ConfigError, match="policy.terminate_after=0 must be >= 1"):
        policy_factory(PolicyConfig(name="random", terminate_after=0), robot="rt1", suite="cpu")


def test_a_policy_that_observes_sees_every_observation_once():
    class CountingEnv(TwoStageEnv):
        def reset(self, seed):
            obs, instruction = super().reset(seed)
            return {"image": np.full((4, 4, 3), self.t, np.uint8)}, instruction

        def step(self, action):
            res = super().step(action)
            res["obs"] = {"image": np.full((4, 4, 3), self.t % 256, np.uint8)}
            return res

    class ObservingPolicy(ScriptPolicy):
        def __init__(self):
            super().__init__()
            self.seen = []

        def observe(self, obs):
            self.seen.append(("observe", int(obs["image"][0, 0, 0])))

        def act(self, obs):
            self.seen.append(("act", int(obs["image"][0, 0, 0])))
            return ActionChunk(np.tile([1.0, 0, 0, 0, 0, 0, 0], (3, 1)), np.zeros(3, bool))

    pol = ObservingPolicy()
    row = run_episode(CountingEnv(max_steps=110), pol, "apple", 0, 110)
    assert row["steps"] == 110
    # every observation but the final one, once, in order; act on every third, and again at the forced
    # switch to the second instruction after step 100 (a new chunk starts there)
    assert [s for _, s in pol.seen] == list(range(110))
    acts = [s for kind, s in pol.seen if kind == "act"]
    assert acts == list(range(0, 100, 3)) + [100, 103, 106, 109]
