"""envs/plugin.py: a researcher's own gymnasium env joins collection and evaluation through registration and
a config file; the suite's own config loads the same way."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

import envs
from envs.plugin import load_env_config
from eval.loop import play
from policies.baselines import FunctionPolicy
from worldflow.errors import ConfigError, EnvError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "env"


class ToyPushEnv(gym.Env):
    """A block on a line, pushed by the translation's x; the image is the block's column lit. No SIMPLER API."""

    def __init__(self, size: int = 16):
        self.size = size
        self.observation_space = gym.spaces.Dict(
            {
                "rgb": gym.spaces.Box(0, 255, (size, size, 3), np.uint8),
                "state": gym.spaces.Box(-1, 1, (1,), np.float32),
            }
        )
        self.action_space = gym.spaces.Box(-1, 1, (7,), np.float32)

    def _obs(self):
        rgb = np.zeros((self.size, self.size, 3), np.uint8)
        rgb[:, int((self.x + 1) / 2 * (self.size - 1))] = 255
        return {"rgb": rgb, "state": np.array([self.x], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-0.5, -0.3))
        return self._obs(), {}

    def step(self, action):
        self.x = float(np.clip(self.x + action[0], -1, 1))
        return self._obs(), 0.0, False, False, {"at_goal": self.x > 0.5}


@pytest.fixture(scope="module")
def toy_id():
    gym.register("testlab/ToyPush-v0", entry_point=ToyPushEnv)
    yield "testlab/ToyPush-v0"
    gym.registry.pop("testlab/ToyPush-v0")


def write_config(tmp_path, **cfg) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_plugin_env_runs_simplers_loop_from_a_config_file(tmp_path, toy_id):
    path = write_config(
        tmp_path, id=toy_id, image_key="rgb", proprio_key="state", instruction="push the block",
        max_steps=6, success_key="at_goal", kwargs={"size": 8},
    )  # fmt: skip
    env = envs.make_from_config(path)
    base = env.unwrapped  # the loop reads the protocol through unwrapped
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (8, 8, 3) and obs["proprio"].shape == (1,)
    assert info["success"] is False and env.observation_space.contains(obs)
    assert base.get_language_instruction() == "push the block" and base.is_final_subtask()
    base.advance_to_next_subtask()  # a no-op
    assert base.is_final_subtask() and base.max_episode_steps == 6
    push = play(env, FunctionPolicy(lambda o, i: np.array([0.3, 0, 0, 0, 0, 0, 0], np.float32)), seed=0)
    assert push["success"] and push["steps"] == 6 and push["instructions"] == ["push the block"] * 6
    still = play(env, FunctionPolicy(lambda o, i: np.zeros(7, np.float32)), seed=0)
    assert not still["success"] and still["steps"] == 6  # truncated by max_steps from the config
    stop = play(env, FunctionPolicy(lambda o, i: (np.array([0.5, 0, 0, 0, 0, 0, 0]), True)), seed=0)
    assert stop["steps"] == 1 and stop["failure"] == "terminated"  # terminate on the final subtask
    with pytest.raises(EnvError, match=r"\(3,\)"):
        env.step(np.zeros(3))


def test_entry_point_in_config_registers_the_env():
    cfg = {
        "id": "testlab/OpenTopDrawer-v0",
        "entry_point": "envs.suite:CpuSuiteEnv",
        "kwargs": {"task": "google_robot_open_top_drawer", "image_size": 16},
        "instruction": "ignored: the env has its own",
    }
    env = envs.make_from_config(cfg)
    env.reset(seed=0)
    assert "testlab/OpenTopDrawer-v0" in gym.registry
    assert env.unwrapped.get_language_instruction() == "open top drawer"
    assert env.unwrapped.max_episode_steps == 113
    gym.registry.pop("testlab/OpenTopDrawer-v0")


def test_config_mistakes_are_named(tmp_path, toy_id):
    with pytest.raises(ConfigError, match="image_kee"):
        envs.make_from_config({"id": toy_id, "image_kee": "rgb"})
    with pytest.raises(ConfigError, match="needs an `id`"):
        envs.make_from_config({"image_key": "rgb"})
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        envs.make_from_config(tmp_path / "nowhere.yaml")
    with pytest.raises(ConfigError, match="no_such_module"):
        envs.make_from_config({"id": "testlab/Missing-v0", "entry_point": "no_such_module:Env"})
    with pytest.raises(EnvError, match="get_language_instruction"):
        envs.make_from_config({"id": toy_id, "image_key": "rgb"})  # no instruction anywhere
    env = envs.make_from_config({"id": toy_id, "image_key": "state", "instruction": "x"})
    with pytest.raises(EnvError, match="image_key='state'"):
        env.reset(seed=0)


def test_cpu_suite_config_file():
    cfg = load_env_config(CONFIGS / "cpu_suite.yaml")
    assert cfg.id in envs.TASKS and cfg.tasks == ["google_robot_all"]
    env = envs.make_from_config(CONFIGS / "cpu_suite.yaml", image_size=(16, 20))
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (16, 20, 3) and obs["proprio"].shape == (8,)
    assert env.unwrapped.get_language_instruction() == "pick coke can"
    assert env.unwrapped.max_episode_steps == 80
    assert play(env, "expert", seed=0)["success"]  # the expert finds the CPU-suite env under the adapter


def test_plugin_env_through_the_evaluation_harness(tmp_path):
    """The harness runs a plug-in env (defined only in this test module) in its worker process from the
    config file alone: the entry point string registers it there."""
    from eval.harness import evaluate, expand_tasks
    from policies.base import ActionChunk

    path = write_config(
        tmp_path, id="testlab/ToyPushHarness-v0", entry_point="tests.test_envs_plugin:ToyPushEnv",
        image_key="rgb", proprio_key="state", instruction="push the block", max_steps=6,
        success_key="at_goal", kwargs={"size": 8},
    )  # fmt: skip
    tasks = expand_tasks([str(path)], list(envs.TASKS), envs.TASK_GROUPS)

    class Push:
        action_dim = 7

        def reset(self, instruction, seed):
            assert instruction == "push the block"

        def act(self, obs):
            assert obs["image"].shape == (8, 8, 3)
            return ActionChunk(np.array([[0.3, 0, 0, 0, 0, 0, 0]]), [False])

    summary = evaluate(tasks, [0, 1], lambda client: Push(), tmp_path / "out", videos_per_task=0)
    assert summary[str(path)]["successes"] == 2 and summary[str(path)]["mean_steps"] == 6
