"""python eval/simpler_rollout.py [suite=cpu|simpler] [tasks=[google_robot_all]] [episodes=20]
                                 [policy.name=world_model policy.checkpoint=<run>] [workers=2]
                                 [simpler.python=/path/to/simpler/venv/bin/python]

Evaluates a policy with SIMPLER's protocol (DESIGN.md §4) on the CPU suite or on real SimplerEnv in a
worker process; writes episodes.jsonl (resumable), summary.json, summary.md and videos to out_dir.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from eval.harness import evaluate, expand_tasks  # noqa: E402
from eval.loop import TERMINATE_MODES  # noqa: E402
from policies.factory import PolicyConfig, policy_factory  # noqa: E402
from worldflow.config import CONFIG_DIR, entry_point, typed  # noqa: E402
from worldflow.errors import ConfigError  # noqa: E402

# SIMPLER's Google-robot task ids and groups, for suite=simpler (the CPU suite has the same names).
SIMPLER_TASKS = [
    "google_robot_pick_coke_can",
    "google_robot_pick_horizontal_coke_can",
    "google_robot_pick_vertical_coke_can",
    "google_robot_pick_standing_coke_can",
    "google_robot_move_near",
    "google_robot_open_drawer",
    "google_robot_open_top_drawer",
    "google_robot_open_middle_drawer",
    "google_robot_open_bottom_drawer",
    "google_robot_close_drawer",
    "google_robot_close_top_drawer",
    "google_robot_close_middle_drawer",
    "google_robot_close_bottom_drawer",
    "google_robot_place_apple_in_closed_top_drawer",
]
SIMPLER_GROUPS = {"google_robot_vm": SIMPLER_TASKS, "google_robot_all": SIMPLER_TASKS}


@dataclass
class SimplerConfig:
    python: str | None = None  # the Python of SimplerEnv's own venv


@dataclass
class RolloutConfig:
    suite: str = "cpu"
    tasks: list[str] = field(default_factory=lambda: ["google_robot_all"])
    episodes: int = 20
    seed_start: int = 1000  # evaluation seeds start here, apart from the demonstration seeds
    seeds: list[int] | None = None  # explicit seeds override episodes/seed_start
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    robot: str = "rt1"
    env: dict = field(default_factory=dict)  # keyword arguments for the env (CPU suite: image_size, ...)
    workers: int = 2
    timeout: float = 120.0
    videos_per_task: int = 2
    out_dir: str = "runs/eval"
    simpler: SimplerConfig = field(default_factory=SimplerConfig)


def task_list(cfg: RolloutConfig) -> list[str]:
    if cfg.suite == "cpu":
        import envs

        return expand_tasks(cfg.tasks, list(envs.TASKS), envs.TASK_GROUPS)
    if cfg.suite == "simpler":
        if not cfg.simpler.python:
            raise ConfigError("suite=simpler needs simpler.python=<python of SimplerEnv's venv> (see README)")
        return expand_tasks(cfg.tasks, SIMPLER_TASKS, SIMPLER_GROUPS)
    raise ConfigError(f"suite={cfg.suite!r}; use cpu or simpler")


def run(cfg: RolloutConfig) -> dict:
    tasks = task_list(cfg)
    seeds = (
        list(cfg.seeds)
        if cfg.seeds is not None
        else list(range(cfg.seed_start, cfg.seed_start + cfg.episodes))
    )
    if cfg.policy.terminate not in TERMINATE_MODES:
        raise ConfigError(f"policy.terminate={cfg.policy.terminate!r}; use one of {list(TERMINATE_MODES)}")
    make_policy = policy_factory(cfg.policy, cfg.robot, cfg.suite)
    env_kwargs = dict(cfg.env)
    if "image_size" in env_kwargs:
        env_kwargs["image_size"] = tuple(env_kwargs["image_size"])
    title = f"{cfg.policy.name} on {cfg.suite} ({len(seeds)} episodes per task)"
    return evaluate(
        tasks,
        seeds,
        make_policy,
        cfg.out_dir,
        suite=cfg.suite,
        python=cfg.simpler.python if cfg.suite == "simpler" else None,
        env_kwargs=env_kwargs,
        workers=cfg.workers,
        videos_per_task=cfg.videos_per_task,
        timeout=cfg.timeout,
        title=title,
        terminate=cfg.policy.terminate,
    )


@hydra.main(config_path=CONFIG_DIR, config_name="rollout", version_base="1.3")
@entry_point
def main(raw: DictConfig) -> None:
    run(typed(RolloutConfig, raw))


if __name__ == "__main__":
    main()
