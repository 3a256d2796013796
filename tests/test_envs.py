"""envs/: SIMPLER's tasks on the CPU suite — experts, two-stage logic, determinism, action conventions,
registration, errors. Images are 32-64 px to keep the file fast."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import mujoco
import numpy as np
import pytest

import envs
from envs import scene
from envs.geometry import axis_angle_to_quat, quat_mul
from envs.google_robot import TASK_FACTORIES
from eval.loop import play
from policies.baselines import FunctionPolicy
from worldflow.errors import DataError, EnvError

SMALL = 32


def run_expert(env, seed: int):
    return play(env, "expert", seed=seed)


noop = FunctionPolicy(lambda obs, instruction: np.zeros(7, np.float32))


def test_task_names_groups_and_ids():
    assert set(envs.TASKS) == set(TASK_FACTORIES)
    for group, tasks in envs.TASK_GROUPS.items():
        assert tasks and set(tasks) <= set(envs.TASKS), group
    assert len(envs.TASK_GROUPS["google_robot_all"]) == 12
    assert envs.gym_id("google_robot_pick_coke_can") == "worldflow/GoogleRobotPickCokeCan-v0"
    env = envs.make("worldflow/GoogleRobotCloseMiddleDrawer-v0", image_size=SMALL)
    env.reset(seed=0)
    assert env.unwrapped.get_language_instruction() == "close middle drawer"
    assert env.unwrapped.max_episode_steps == 113


@pytest.mark.parametrize("task", envs.TASKS)
def test_expert_succeeds_and_noop_fails(task):
    env = envs.make(task, image_size=SMALL)
    for seed in (0, 1):
        result = run_expert(env, seed)
        assert result["success"], (task, seed)
        assert result["steps"] < env.unwrapped.max_episode_steps  # ended by terminate, not truncation
    result = play(env, noop, seed=0)
    assert not result["success"]
    assert result["steps"] == env.unwrapped.max_episode_steps  # SIMPLER's limits: 80, 113, 200


def test_instructions_follow_simpler():
    expected = {
        "google_robot_pick_vertical_coke_can": "pick coke can",
        "google_robot_open_bottom_drawer": "open bottom drawer",
        "google_robot_close_top_drawer": "close top drawer",
        "google_robot_place_apple_in_closed_top_drawer": "open top drawer",
    }
    for task, instruction in expected.items():
        env = envs.make(task, image_size=SMALL)
        env.reset(seed=0)
        assert env.unwrapped.get_language_instruction() == instruction
    env = envs.make("google_robot_move_near", image_size=SMALL).unwrapped
    env.reset(seed=4)
    labels = {scene.OBJECTS[n].label for n in (env.task.source, env.task.target)}
    assert env.get_language_instruction() == (
        f"move {scene.OBJECTS[env.task.source].label} near {scene.OBJECTS[env.task.target].label}"
    )
    assert len(labels) == 2


def test_two_stage_advance_and_forced_switch():
    env = envs.make("google_robot_place_apple_in_closed_top_drawer", image_size=SMALL)
    base = env.unwrapped
    env.reset(seed=0)
    assert (base.get_language_instruction(), base.is_final_subtask()) == ("open top drawer", False)
    base.advance_to_next_subtask()
    assert (base.get_language_instruction(), base.is_final_subtask()) == ("place apple into top drawer", True)
    base.advance_to_next_subtask()  # already final: stays
    assert base.subtask_index == 1
    env.reset(seed=0)  # a reset starts again at the first subtask
    assert not base.is_final_subtask()
    for step in range(1, 101):
        _, _, terminated, truncated, info = env.step(np.zeros(7, np.float32))
        assert not terminated and not truncated and info["elapsed_steps"] == step
        assert base.is_final_subtask() == (step >= 100)  # forced at step 100
    assert base.get_language_instruction() == "place apple into top drawer"


def test_two_stage_success_only_on_final_subtask_and_judged_each_step():
    env = envs.make("google_robot_place_apple_in_closed_top_drawer", image_size=SMALL)
    base = env.unwrapped
    result = run_expert(env, seed=2)
    assert result["success"]
    assert (
        result["instructions"][0] == "open top drawer"
        and result["instructions"][-1] == "place apple into top drawer"
    )
    assert base.drawer_qpos("top") >= 0.05 and "drawer_top" in base.contact_bodies("apple")
    base.subtask_index = 0  # the same apple-in-drawer state on the first subtask is no success
    assert not env.step(np.zeros(7, np.float32))[4]["success"]
    base.subtask_index = 1
    assert env.step(np.zeros(7, np.float32))[4]["success"]
    base.place_free_body("apple", np.array([0.76, 0.0, scene.CABINET_TOP_Z + 0.032]))  # back on the cabinet
    assert not env.step(np.zeros(7, np.float32))[4]["success"]  # not latched: the last step decides


def test_success_logic_of_single_stage_tasks():
    env = envs.make("google_robot_open_middle_drawer", image_size=SMALL).unwrapped
    env.reset(seed=0)
    for qpos, ok in [(0.14, False), (0.16, True)]:
        env.set_drawer("middle", qpos)
        assert env.task.evaluate(env) is ok
    env = envs.make("google_robot_pick_standing_coke_can", image_size=SMALL).unwrapped
    env.reset(seed=0)
    pos = env.body_pos("coke_can")
    env.place_free_body("coke_can", pos + [0, 0, 0.05])  # lifted but not grasped
    env.step(np.zeros(7, np.float32))
    assert not env.task.evaluate(env)
    env = envs.make("google_robot_move_near", image_size=SMALL).unwrapped
    task = env.task

    def place_source_near_target():
        env.reset(seed=1)
        target, source = env.body_pos(task.target), env.body_pos(task.source)
        gap = scene.OBJECTS[task.source].half_diagonal + scene.OBJECTS[task.target].half_diagonal + 0.02
        env.place_free_body(task.source, np.array([target[0] - gap, target[1], source[2]]))
        mujoco.mj_forward(env.model, env.data)
        return source

    place_source_near_target()
    env.step(np.zeros(7, np.float32))
    assert env.task.evaluate(env)
    source_start = place_source_near_target()  # ... and another object moved further than the source
    other = env.body_pos(task.other)
    source_moved = np.linalg.norm(env.body_pos(task.source)[:2] - source_start[:2])
    env.place_free_body(task.other, other + [-(source_moved + 0.05), 0, 0])
    env.step(np.zeros(7, np.float32))
    assert not env.task.evaluate(env)
    place_source_near_target()  # ... and another object lifted off the table
    env.place_free_body(task.other, env.body_pos(task.other) + [0, 0, 0.05])
    mujoco.mj_forward(env.model, env.data)  # positions without letting it fall back
    assert not env.task.evaluate(env)


def test_reset_is_deterministic_per_seed():
    a = envs.make("google_robot_move_near", image_size=SMALL, visual_variation=True)
    b = envs.make("google_robot_move_near", image_size=SMALL, visual_variation=True)
    obs_a, _ = a.reset(seed=7)
    obs_b, _ = b.reset(seed=7)
    np.testing.assert_array_equal(obs_a["image"], obs_b["image"])
    np.testing.assert_array_equal(obs_a["proprio"], obs_b["proprio"])
    np.testing.assert_array_equal(a.unwrapped.data.qpos, b.unwrapped.data.qpos)
    actions = np.random.default_rng(0).uniform(-0.05, 0.05, (4, 7)).astype(np.float32)
    for action in actions:
        obs_a, obs_b = a.step(action)[0], b.step(action)[0]
    np.testing.assert_array_equal(obs_a["image"], obs_b["image"])
    obs_c, _ = b.reset(seed=8)
    assert not np.array_equal(a.unwrapped.data.qpos, b.unwrapped.data.qpos)
    assert not np.array_equal(obs_a["image"], obs_c["image"])


def test_visual_variation_changes_pixels_not_state():
    plain = envs.make("google_robot_open_top_drawer", image_size=SMALL)
    varied = envs.make("google_robot_open_top_drawer", image_size=SMALL, visual_variation=True)
    obs_plain, obs_varied = plain.reset(seed=3)[0], varied.reset(seed=3)[0]
    np.testing.assert_allclose(obs_plain["proprio"], obs_varied["proprio"], atol=1e-6)
    assert np.abs(obs_plain["image"].astype(int) - obs_varied["image"]).mean() > 5
    other = varied.reset(seed=4)[0]["image"]
    assert np.abs(other.astype(int) - obs_varied["image"]).mean() > 5


def test_observation_layout_and_image_sizes():
    env = envs.make("google_robot_pick_coke_can")
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (128, 128, 3) and obs["image"].dtype == np.uint8
    assert obs["proprio"].shape == (8,) and obs["proprio"].dtype == np.float32
    assert np.isclose(np.linalg.norm(obs["proprio"][3:7]), 1, atol=1e-5) and obs["proprio"][3] >= 0
    assert env.observation_space.contains(obs) and info == {"success": False, "elapsed_steps": 0}
    env = envs.make("google_robot_pick_coke_can", image_size=(256, 320), render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (256, 320, 3)
    np.testing.assert_array_equal(env.render(), obs["image"])


def test_action_conventions_against_hand_computed_poses():
    env = envs.make("google_robot_pick_coke_can", image_size=SMALL)
    obs, _ = env.reset(seed=0)
    p0, q0 = obs["proprio"][:3].astype(np.float64), obs["proprio"][3:7]
    np.testing.assert_allclose(q0, [1, 0, 0, 0], atol=1e-6)  # gripper pointing down, fingers along y

    def step(*action):
        return env.step(np.array(action, np.float32))[0]["proprio"].astype(np.float64)

    np.testing.assert_allclose(step(0, 0, 0, 0, 0, 0, 0)[:3], p0, atol=1e-3)  # zero action holds
    p1 = step(0.03, -0.02, 0.01, 0, 0, 0, 0)
    np.testing.assert_allclose(p1[:3], p0 + [0.03, -0.02, 0.01], atol=2e-3)  # base-frame translation
    p2 = step(0, 0, 0, 0, 0, 0.2, 0)
    yaw = axis_angle_to_quat(np.array([0, 0, 0.2]))
    np.testing.assert_allclose(p2[3:7], yaw, atol=5e-3)
    np.testing.assert_allclose(p2[:3], p1[:3], atol=2e-3)  # rotation about the TCP
    p3 = step(0, 0, 0, 0.15, 0, 0, 0)
    expected = quat_mul(axis_angle_to_quat(np.array([0.15, 0, 0])), yaw)  # delta · current, in the base frame
    np.testing.assert_allclose(p3[3:7], expected, atol=5e-3)
    wrong_order = quat_mul(yaw, axis_angle_to_quat(np.array([0.15, 0, 0])))
    assert np.abs(p3[3:7] - wrong_order).max() > 0.01
    p4 = step(0.04, 0, 0, 0, 0, 0, 0)  # along base x although the hand is yawed and tilted
    np.testing.assert_allclose(p4[:3], p3[:3] + [0.04, 0, 0], atol=2e-3)
    p5 = step(1.0, 0, 0, 0, 0, 0, 0)  # clipped to 0.05 m
    np.testing.assert_allclose(p5[0] - p4[0], 0.05, atol=2e-3)
    assert step(0, 0, 0, 0, 0, 0, 1.0)[7] > 0.95  # relative gripper: +1 closes fully
    assert abs(step(0, 0, 0, 0, 0, 0, -0.5)[7] - 0.5) < 0.05  # -0.5 opens by half
    assert step(0, 0, 0, 0, 0, 0, 0)[7] == pytest.approx(0.5, abs=0.05)  # 0 keeps the command
    assert step(0, 0, 0, 0, 0, 0, -1.0)[7] < 0.05


WORLDFLOW_IDS = sorted(i for i in gym.registry if i.startswith("worldflow/"))


def test_every_task_is_registered():
    assert sorted(envs.gym_id(t) for t in envs.TASKS) == WORLDFLOW_IDS


@pytest.mark.parametrize("env_id", WORLDFLOW_IDS)
def test_check_env_passes(env_id):
    from gymnasium.utils.env_checker import check_env

    env = gym.make(env_id, image_size=SMALL, render_mode="rgb_array")
    check_env(env.unwrapped)
    assert env.unwrapped.render().shape == (SMALL, SMALL, 3)


def test_errors_name_the_input(tmp_path):
    env = envs.make("google_robot_open_top_drawer", image_size=SMALL)
    env.reset(seed=0)
    with pytest.raises(EnvError, match=r"shape \(6,\).*\(7,\)"):
        env.step(np.zeros(6, np.float32))
    with pytest.raises(EnvError, match="NaN"):
        env.unwrapped.step(np.full(7, np.nan))
    with pytest.raises(EnvError, match="'google_robot_open_top_drawr'.*google_robot_open_top_drawer"):
        envs.make("google_robot_open_top_drawr")
    with pytest.raises(EnvError, match="image_size"):
        envs.make("google_robot_open_top_drawer", image_size=(4, 4, 4))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(DataError, match="a_file"):
        play(env, noop, seed=0, video_path=blocker / "video.gif")


def test_rollout_writes_video_of_every_step(tmp_path):
    env = envs.make("google_robot_close_top_drawer", image_size=SMALL)
    result = run_expert(env, seed=0)
    video = play(env, "expert", seed=0, video_path=tmp_path / "v" / "ep.mp4")
    assert video["success"] == result["success"] and video["steps"] == result["steps"]
    frames = iio.imread(tmp_path / "v" / "ep.mp4")  # mp4: GIF writers merge identical frames
    assert frames.shape[0] == result["steps"] + 1 and frames.shape[1:3] == (SMALL, SMALL)


def test_eval_worker_runs_the_cpu_suite():
    from eval.worker import CpuSuite, decode_array

    suite = CpuSuite()
    assert suite.make("google_robot_pick_standing_coke_can", {"image_size": SMALL}) == {"max_steps": 80}
    first = suite.reset(3)
    assert first["instruction"] == "pick coke can"
    assert decode_array(first["obs"]["image"]).shape == (SMALL, SMALL, 3)
    for _ in range(40):
        expert = suite.expert_action()
        out = suite.step(expert["action"])
        if expert["terminate"]:
            break
    assert expert["terminate"] and out["success"]


TF_THEN_RENDER = """
import hashlib, sys
order = sys.argv[1]
if order == "tensorflow_first":
    import tensorflow
import envs
env = envs.make("google_robot_move_near", image_size=32)
image = env.reset(seed=3)[0]["image"]
if order == "render_first":
    import tensorflow
    image = env.reset(seed=3)[0]["image"]
print(hashlib.md5(image.tobytes()).hexdigest())
"""


@pytest.mark.slow  # multi-process; run with -m slow
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
def test_rendering_and_tensorflow_share_a_process_in_either_order():
    """Mesa's LLVM and TensorFlow's crash each other without RTLD_DEEPBIND (envs/_gl.py)."""
    hashes = set()
    for order in ("tensorflow_first", "render_first"):
        run = subprocess.run(
            [sys.executable, "-c", TF_THEN_RENDER, order], capture_output=True, text=True, timeout=300,
            cwd=Path(__file__).resolve().parents[1], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )  # fmt: skip
        assert run.returncode == 0, (order, run.stderr[-2000:])
        hashes.add(run.stdout.split()[-1])
    assert len(hashes) == 1  # the same picture either way
