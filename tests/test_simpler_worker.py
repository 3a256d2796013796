"""eval/worker.py's SimplerEnv suite against a fake `simpler_env` (tests/helpers/fake_simpler_env): the real
worker, client and harness, without SimplerEnv. The fake's poses are documented in its module."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from eval.client import EnvClient, EnvRequestError, WorkerError, task_timeouts
from eval.harness import evaluate
from policies.baselines import RandomPolicy
from worldflow.errors import ConfigError, EnvError

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "helpers" / "fake_simpler_env"
COKE, DRAWER = "google_robot_pick_coke_can", "google_robot_open_top_drawer"


@pytest.fixture(autouse=True)
def fake_simpler(monkeypatch):
    """Workers are started with this process's environment: they import the fake `simpler_env`."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKE), str(ROOT)]))
    for var in ("PROPRIO", "MISSING", "STEP_ERROR_AT", "STEP_SECONDS"):
        monkeypatch.delenv(f"FAKE_SIMPLER_{var}", raising=False)
    monkeypatch.delenv("SIMPLER_ALLOW_MISSING_ASSETS", raising=False)


def simpler_client(**kw) -> EnvClient:
    return EnvClient("simpler", sys.executable, timeout=30, **kw)


def test_proprio_is_the_tcp_pose_in_the_base_frame_when_obs_has_no_eef_pos():
    # base at (1, 2, 0.5) turned +90 deg about z; TCP in the world at (1, 2.4, 1.4), quaternion
    # (-0.6124, -0.3536, -0.3536, -0.6124). In the base frame, by hand: position R_z(-90)(0, 0.4, 0.9) =
    # (0.4, 0, 0.9); rotation (cos45 - sin45 z)^-1 * q_world = (-cos30, -sin30, 0, 0), i.e. 60 deg about x,
    # sent with w >= 0 as (0.8660, 0.5, 0, 0); gripper open (closedness 0)
    client = simpler_client()
    try:
        assert client.make(COKE) == 80
        obs, instruction = client.reset(0)
        assert instruction == "pick coke can" and obs["image"].shape == (8, 10, 3)
        assert obs["proprio"].dtype == np.float32
        np.testing.assert_allclose(obs["proprio"], [0.4, 0, 0.9, 0.8660254, 0.5, 0, 0, 0], atol=1e-6)
        # +x of the action is +x of the base frame (the world's +y here); +1 closes the gripper by 0.5
        res = client.step([0.05, 0, 0, 0, 0, 0, 1.0])
        np.testing.assert_allclose(
            res["obs"]["proprio"], [0.45, 0, 0.9, 0.8660254, 0.5, 0, 0, 0.5], atol=1e-6
        )
    finally:
        client.close()


def test_eef_pos_is_used_where_the_env_packs_it(monkeypatch):
    monkeypatch.setenv("FAKE_SIMPLER_PROPRIO", "eef")  # eef_pos (0.1, 0.2, 0.3, identity, openness 1)
    client = simpler_client()
    try:
        client.make(COKE)
        obs, _ = client.reset(0)
        np.testing.assert_allclose(obs["proprio"], [0.1, 0.2, 0.3, 1, 0, 0, 0, 0], atol=1e-6)
    finally:
        client.close()


def test_no_proprioception_source_is_an_error_at_make(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SIMPLER_PROPRIO", "none")
    client = simpler_client()
    try:
        with pytest.raises(EnvRequestError, match=r"no proprioception in BaseEnv.*no agent\.eef_pos"):
            client.make(COKE)
    finally:
        client.close()
    with pytest.raises(EnvError, match=rf"cannot make task '{COKE}'.*no proprioception"):
        evaluate([COKE], [0], lambda c: RandomPolicy(), tmp_path, suite="simpler", python=sys.executable)


def test_a_make_error_stops_the_run_and_an_episode_error_is_a_failure_row(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with pytest.raises(
        EnvError, match=rf"cannot make task '{COKE}'.*unexpected keyword argument 'image_size'"
    ):
        evaluate(
            [COKE], [0, 1], lambda c: RandomPolicy(), out, suite="simpler", python=sys.executable,
            env_kwargs={"image_size": (256, 320)},
        )  # fmt: skip
    assert not (out / "episodes.jsonl").exists() and not (out / "summary.json").exists()
    # a step that raises mid-episode fails that episode only; the run goes on and writes its summary
    monkeypatch.setenv("FAKE_SIMPLER_STEP_ERROR_AT", "3")
    summary = evaluate([COKE], [0, 1], lambda c: RandomPolicy(), out, suite="simpler", python=sys.executable)
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert summary[COKE]["episodes"] == 2 and [r["steps"] for r in rows] == [2, 2]
    assert all("physics exploded at step 3" in r["failure"] for r in rows)


def test_a_make_error_in_one_worker_stops_the_others_mid_episode(tmp_path, monkeypatch):
    # worker 1 runs a coke episode (80 steps x 1 s); worker 2's drawer scene is missing its asset
    monkeypatch.setenv("FAKE_SIMPLER_MISSING", DRAWER)
    monkeypatch.setenv("FAKE_SIMPLER_STEP_SECONDS", "1.0")
    t0 = time.perf_counter()
    with pytest.raises(
        EnvError,
        match=rf"cannot make task '{DRAWER}'.*FileNotFoundError: scene asset\(s\) missing: .*{DRAWER}_stage\.glb",
    ):
        evaluate(
            [COKE, DRAWER], [0], lambda c: RandomPolicy(), tmp_path / "out", suite="simpler",
            python=sys.executable, workers=2,
        )  # fmt: skip
    # the coke episode was cut, not finished (it would take 80 s; the margin is for a loaded machine)
    assert time.perf_counter() - t0 < 40
    assert not (tmp_path / "out" / "episodes.jsonl").exists()  # and not logged as a failure


def test_rollout_cli_exits_non_zero_naming_the_task_and_the_keyword(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(FAKE)])}

    def rollout(*overrides):
        return subprocess.run(
            [sys.executable, str(ROOT / "eval" / "simpler_rollout.py"), "suite=simpler",
             f"simpler.python={sys.executable}", "policy.name=random", f"tasks=[{COKE}]", "episodes=1",
             "workers=1", "videos_per_task=0", f"out_dir={tmp_path / 'out'}", *overrides],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    res = rollout("+env.simpler.image_size=[256,320]")
    assert res.returncode == 2, res.stderr
    assert f"cannot make task '{COKE}'" in res.stderr and "'image_size'" in res.stderr
    assert not (tmp_path / "out" / "episodes.jsonl").exists()
    # by default the CPU suite's image_size is not passed to simpler_env.make: the episode runs to its end
    res = rollout()
    assert res.returncode == 0, res.stderr
    row = json.loads((tmp_path / "out" / "episodes.jsonl").read_text())
    assert row["task"] == COKE and row["steps"] == 80 and row["failure"] == "timeout"


def test_timeouts_per_request_and_per_task(tmp_path):
    timeout = {"default": 120, "make": 900, "reset": 300, "tasks": {"*drawer*": {"default": 600}, "*": {}}}
    assert task_timeouts(timeout, COKE) == {"default": 120, "make": 900, "reset": 300}
    assert task_timeouts(timeout, DRAWER) == {"default": 600, "make": 900, "reset": 300}
    assert task_timeouts(30, DRAWER) == {"default": 30}
    with pytest.raises(ConfigError, match="needs a default"):
        task_timeouts({"make": 900}, COKE)
    # the client reads the same setting: the commands' timeouts, then a task's overrides once it is chosen
    client = EnvClient("simpler", sys.executable, timeout=timeout)
    assert client.timeouts == {"default": 120, "make": 900, "reset": 300}
    client.use_task_timeouts(DRAWER)
    assert client.timeouts == {"default": 600, "make": 900, "reset": 300}
    # a worker that takes 2 s to make its env and answers a step at once
    worker = tmp_path / "slow_make.py"
    worker.write_text(
        "import json, sys, time\n"
        "for line in sys.stdin:\n"
        "    if json.loads(line)['cmd'] == 'make': time.sleep(2)\n"
        "    print(json.dumps({'ok': True, 'max_steps': 5}), flush=True)\n"
    )
    client = EnvClient(python=sys.executable, worker=worker, timeout={"default": 1, "make": 10})
    assert client.make("t") == 5
    client.close()
    client = EnvClient(python=sys.executable, worker=worker, timeout={"default": 10, "make": 1})
    with pytest.raises(WorkerError, match="no answer to 'make' within 1 s"):
        client.make("t")


def test_simplers_grids_have_the_sizes_of_its_scripts():
    from eval.simpler_grids import episodes, robot_quat

    # SimplerEnv's scripts/rt1_*: orientations x URDFs x 5x5 can positions; URDFs x 60 object triplets;
    # drawers x URDFs x 9 overlay poses; URDFs x 3 overlay poses x 3x3 apple positions; variant aggregation:
    # 11 coke scenes, 10 move-near scenes, 7 drawer scenes x 3x3 robot poses, 7 x 3 robot y x 3x3 apples
    sizes = {"pick_coke_can": (300, 825), "pick_standing_coke_can": (100, 275), "move_near": (240, 600),
             "open_drawer": (108, 189), "close_bottom_drawer": (36, 63), "place_apple_in_closed_top_drawer": (108, 189)}  # fmt: skip
    for task, (vm, va) in sizes.items():
        assert len(episodes(f"google_robot_{task}", "visual_matching")) == vm, task
        assert len(episodes(f"google_robot_{task}", "variant_aggregation")) == va, task
    # yaw -0.09 about z, then SimplerEnv's centre (0, 0, 0, 1): (-sin(-0.045), 0, 0, cos(-0.045))
    np.testing.assert_allclose(robot_quat(-0.09), [0.0449848, 0, 0, 0.9989877], atol=1e-6)
    with pytest.raises(ValueError, match="unknown episode set 'visual'"):
        episodes(COKE, "visual")


def test_a_grid_episode_is_built_and_reset_as_simplers_scripts(tmp_path, monkeypatch):
    log = tmp_path / "fake.jsonl"
    monkeypatch.setenv("FAKE_SIMPLER_LOG", str(log))
    task = "google_robot_pick_horizontal_coke_can"
    summary = evaluate(
        [task], {task: [0, 7, 30]}, lambda c: RandomPolicy(), tmp_path / "out", suite="simpler",
        python=sys.executable, env_kwargs={"episode_set": "visual_matching"}, videos_per_task=0,
    )  # fmt: skip
    assert summary[task]["episodes"] == 3
    records = [json.loads(line) for line in log.read_text().splitlines()]
    builds = [r for r in records if "build" in r]
    resets = [r["options"] for r in records if "reset" in r]
    # one build at make (the client sends make once), none for episode 7 (same URDF as 0), one for episode
    # 30: the second URDF, its 6th can position
    assert [b["kwargs"]["urdf_version"] for b in builds] == [None, "recolor_tabletop_visual_matching_1"]
    first = builds[0]
    assert first["build"] == "GraspSingleOpenedCokeCanInScene-v0" and first["kwargs"]["lr_switch"] is True
    assert first["kwargs"]["rgb_overlay_path"] == str(
        FAKE / "simpler_env/data/real_inpainting/google_coke_can_real_eval_1.png"
    )
    assert first["kwargs"]["max_episode_steps"] == 80 and first["kwargs"]["rgb_overlay_cameras"] == [
        "overhead_camera"
    ]
    # can x in linspace(-0.35, -0.12, 5) = -0.35, -0.2925, ...; y in linspace(-0.02, 0.42, 5) = -0.02, 0.09, 0.2
    cans = [r["obj_init_options"]["init_xy"]["ndarray"] for r in resets]
    np.testing.assert_allclose(cans, [[-0.35, -0.02], [-0.2925, 0.2], [-0.2925, -0.02]], atol=1e-9)
    robot = resets[0]["robot_init_options"]
    assert robot["init_xy"]["ndarray"] == [0.35, 0.2] and np.allclose(
        robot["init_rot_quat"]["ndarray"], [0, 0, 0, 1]
    )


def test_a_grid_with_a_missing_scene_stops_at_make(tmp_path):
    with pytest.raises(
        EnvError, match=r"scene asset\(s\) missing: .*Baked_sc1_staging_objaverse_cabinet1_h870\.glb"
    ):
        evaluate(
            [COKE], {COKE: [0]}, lambda c: RandomPolicy(), tmp_path, suite="simpler", python=sys.executable,
            env_kwargs={"episode_set": "variant_aggregation"},
        )  # fmt: skip


def test_episode_sets_are_simplers_grids_and_need_the_simpler_suite():
    from eval.simpler_rollout import RolloutConfig, episode_seeds
    from worldflow.errors import ConfigError

    seeds = episode_seeds(RolloutConfig(suite="simpler", episodes="visual_matching"), [COKE, DRAWER])
    assert seeds == {COKE: list(range(300)), DRAWER: list(range(36))}
    assert episode_seeds(RolloutConfig(episodes=3, seed_start=5), [COKE]) == [5, 6, 7]
    with pytest.raises(
        ConfigError, match="episodes=visual_matching is SIMPLER's grid: it needs suite=simpler"
    ):
        episode_seeds(RolloutConfig(episodes="visual_matching"), [COKE])
    with pytest.raises(ConfigError, match="episodes='visual'; use a number or one of"):
        episode_seeds(RolloutConfig(suite="simpler", episodes="visual"), [COKE])


@pytest.mark.skipif(
    not (3, 10) <= sys.version_info[:2] <= (3, 11), reason="the script wants Python 3.10 or 3.11"
)
def test_setup_script_names_the_missing_scene_assets_before_installing(tmp_path):
    checkout = tmp_path / "SimplerEnv"
    (checkout / "simpler_env").mkdir(parents=True)
    (checkout / "simpler_env" / "__init__.py").touch()
    (checkout / "ManiSkill2_real2sim" / "data" / "custom").mkdir(parents=True)
    (checkout / "ManiSkill2_real2sim" / "setup.py").touch()
    models = checkout / "ManiSkill2_real2sim" / "data" / "custom" / "info_pick_custom_v0.json"
    models.write_text(json.dumps({"opened_coke_can": {}}))
    res = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup_simpler.sh"), str(checkout), str(tmp_path / "venv")],
        env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 1 and not (tmp_path / "venv").exists()
    assert "hab2_bench_assets/stages/google_pick_coke_can_1_v4.glb" in res.stderr
    assert "custom/models/opened_coke_can/collision.obj" in res.stderr
    assert (
        "info_pick_custom_baked_tex_v1.json" in res.stderr and "SIMPLER_ALLOW_MISSING_ASSETS=1" in res.stderr
    )
