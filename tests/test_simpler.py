"""Against real SimplerEnv, where it is installed in its own venv (scripts/setup_simpler.sh): deselected by
default. The conventions the harness relies on, checked on the env itself.

SIMPLER_PYTHON=<venv>/bin/simpler-python .venv/bin/python -m pytest -m simpler tests/test_simpler.py
"""

import os

import numpy as np
import pytest

from eval.client import EnvClient

pytestmark = pytest.mark.simpler
COKE, APPLE = "google_robot_pick_coke_can", "google_robot_place_apple_in_closed_top_drawer"
FAST_RT = {"render_config": {"rt_samples_per_pixel": 1}}  # the ray-traced drawer scenes: ~3 s a step on a CPU


@pytest.fixture(scope="module")
def simpler_python():
    path = os.environ.get("SIMPLER_PYTHON")
    if not path or not os.path.exists(os.path.expanduser(path)):
        pytest.skip("set SIMPLER_PYTHON to the Python of a SimplerEnv venv (scripts/setup_simpler.sh)")
    return os.path.expanduser(path)


@pytest.fixture(scope="module")
def coke(simpler_python):
    client = EnvClient("simpler", simpler_python, timeout={"default": 120, "make": 900, "reset": 300})
    assert client.make(COKE) == 80
    yield client
    client.close()


def test_image_instruction_and_proprio_after_reset(coke):
    obs, instruction = coke.reset(1000)
    assert instruction == "pick coke can" and coke.is_final_subtask()
    assert obs["image"].shape == (512, 640, 3) and obs["image"].dtype == np.uint8
    assert obs["image"].std() > 10  # a rendered scene, not a blank frame
    proprio = obs["proprio"]
    assert proprio.shape == (8,) and proprio.dtype == np.float32 and np.isfinite(proprio).all()
    assert abs(np.linalg.norm(proprio[3:7]) - 1) < 1e-5 and proprio[3] >= 0
    assert proprio[7] < 0.05  # the gripper starts open
    # the TCP frame (link_gripper_tcp) in the base frame at the start pose, as measured in issue 24
    np.testing.assert_allclose(proprio[:3], [0.439, -0.218, 0.962], atol=0.01)
    np.testing.assert_allclose(np.abs(proprio[3:7]), [0.160, 0.604, 0.780, 0.033], atol=0.01)


def test_gripper_action_sign_and_translation_frame(coke):
    obs, _ = coke.reset(1000)
    start = obs["proprio"]
    for _ in range(3):  # +1 closes (RT-1's convention, as SimplerEnv's Google robot takes it)
        obs = coke.step([0, 0, 0, 0, 0, 0, 1.0])["obs"]
    assert obs["proprio"][7] > start[7] + 0.4  # 0.66 after 3 steps
    closed = obs["proprio"]
    for _ in range(3):
        obs = coke.step([0, 0, 0, 0, 0, 0, -1.0])["obs"]
    assert obs["proprio"][7] < closed[7] - 0.3  # 0.22 after 3 steps
    before = obs["proprio"]
    for _ in range(3):  # +x of the action moves the TCP along +x of the base frame (~0.0065 m a step)
        obs = coke.step([0.02, 0, 0, 0, 0, 0, -1.0])["obs"]
    moved = obs["proprio"][:3] - before[:3]
    assert moved[0] > 0.01 and abs(moved[1]) < 0.3 * moved[0] and abs(moved[2]) < 0.3 * moved[0]


def test_two_stage_task_advances_on_terminate(simpler_python):
    client = EnvClient("simpler", simpler_python, timeout={"default": 600, "make": 1800, "reset": 1200})
    try:
        assert client.make(APPLE, FAST_RT) == 200
        _, instruction = client.reset(0)
        assert instruction == "open top drawer" and not client.is_final_subtask()
        client.advance()  # what the loop does on a terminate in a non-final subtask
        assert client.instruction() == "place apple into top drawer" and client.is_final_subtask()
    finally:
        client.close()


def test_an_unknown_keyword_fails_at_make(simpler_python):
    from eval.client import EnvRequestError

    client = EnvClient("simpler", simpler_python, timeout=900)
    try:
        with pytest.raises(EnvRequestError, match="unexpected keyword argument 'image_size'"):
            client.make(COKE, {"image_size": [256, 320]})
    finally:
        client.close()


GRID_CHECK = """
import json, sys
sys.path.insert(0, sys.argv[1])  # eval/: the worker and the grids, as the worker process has them
import numpy as np
from sapien.core import Pose
from transforms3d.euler import euler2quat
from simpler_grids import robot_quat
from worker import SimplerSuite

for yaw in (0.0, -0.09, -0.025):  # as simpler_env/evaluation/argparse.py builds the start orientation
    assert np.allclose(robot_quat(yaw), (Pose(q=euler2quat(0, 0, yaw)) * Pose(q=[0, 0, 0, 1])).q), yaw
suite = SimplerSuite()
out = suite.make("google_robot_pick_horizontal_coke_can", {"episode_set": "visual_matching"})
suite.reset(30)
base = suite.env.unwrapped
out.update(robot=base.agent.robot.pose.p[:2].tolist(), urdf=base.urdf_version, overlay=base.rgb_overlay_path)
print(json.dumps(out))
"""


def test_a_grid_episode_starts_where_simplers_script_puts_it(simpler_python):
    import json
    import subprocess
    from pathlib import Path

    eval_dir = Path(__file__).resolve().parents[1] / "eval"
    res = subprocess.run(
        [simpler_python, "-c", GRID_CHECK, str(eval_dir)], capture_output=True, text=True, timeout=900
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["max_steps"] == 80
    # episode 30 of horizontal coke can: the second URDF, the robot at (0.35, 0.20) as rt1_pick_coke_can_visual_matching.sh
    assert out["urdf"] == "recolor_tabletop_visual_matching_1" and out["overlay"].endswith(
        "google_coke_can_real_eval_1.png"
    )
    np.testing.assert_allclose(out["robot"], [0.35, 0.20], atol=1e-3)
