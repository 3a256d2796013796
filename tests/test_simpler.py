"""Against real SimplerEnv, where it is installed in its own venv (README): deselected by default.

SIMPLER_PYTHON=~/simpler/bin/python .venv/bin/python -m pytest -m simpler tests/test_simpler.py
"""

import os

import pytest

pytestmark = pytest.mark.simpler


@pytest.fixture
def simpler_python():
    path = os.environ.get("SIMPLER_PYTHON")
    if not path or not os.path.exists(os.path.expanduser(path)):
        pytest.skip("set SIMPLER_PYTHON to the Python of a SimplerEnv venv")
    return os.path.expanduser(path)


def test_worker_speaks_the_protocol_with_real_simpler(simpler_python):
    from eval.client import EnvClient

    client = EnvClient("simpler", simpler_python, timeout=600)
    try:
        max_steps = client.make("google_robot_pick_coke_can")
        obs, instruction = client.reset(0)
        assert instruction == "pick coke can" and max_steps == 80
        assert obs["image"].ndim == 3 and obs["image"].shape[-1] == 3
        res = client.step([0, 0, 0, 0, 0, 0, 0])
        assert set(res) >= {"obs", "success", "truncated"} and client.is_final_subtask()
    finally:
        client.close()


def test_two_stage_task_with_real_simpler(simpler_python, tmp_path):
    from eval.harness import evaluate
    from policies.baselines import RandomPolicy

    summary = evaluate(
        ["google_robot_place_apple_in_closed_top_drawer"], [0], lambda c: RandomPolicy(), tmp_path,
        suite="simpler", python=simpler_python, videos_per_task=1, timeout=600,
    )  # fmt: skip
    row = summary["google_robot_place_apple_in_closed_top_drawer"]
    assert (
        row["episodes"] == 1 and row["mean_steps"] == 200
    )  # random never terminates: forced switch, truncation
