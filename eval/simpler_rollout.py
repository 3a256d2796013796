"""python eval/simpler_rollout.py [suite=cpu|simpler] [tasks=[google_robot_all]]
                                 [episodes=20|visual_matching|variant_aggregation]
                                 [policy.name=world_model policy.checkpoint=<run>] [workers=2]
                                 [simpler.python=/path/to/simpler/venv/bin/python]

Evaluates a policy with SIMPLER's protocol (DESIGN.md §4) on the CPU suite or on real SimplerEnv in a
worker process; writes episodes.jsonl (resumable), summary.json, summary.md and videos to out_dir.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from eval import simpler_grids  # noqa: E402
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
    python: str | None = None  # the Python of SimplerEnv's own venv (scripts/setup_simpler.sh prints it)


@dataclass
class EnvKwargs:
    """Keyword arguments for each suite's env; only the running suite's are passed, so the CPU suite's
    image_size never reaches simpler_env.make (where an unknown keyword stops the run at make)."""

    cpu: dict = field(default_factory=dict)  # envs.make: image_size, visual_variation, ...
    simpler: dict = field(default_factory=dict)  # simpler_env.make: render_config, urdf_version, ...


@dataclass
class TimeoutConfig:
    """Seconds a worker may take to answer before it is killed: a step (and every other request), building
    the env, a reset; `tasks` maps fnmatch patterns of task names to overrides of these (first match)."""

    default: float = 120.0
    make: float = 900.0
    reset: float = 300.0
    tasks: dict = field(default_factory=dict)


@dataclass
class RolloutConfig:
    suite: str = "cpu"
    tasks: list[str] = field(default_factory=lambda: ["google_robot_all"])
    episodes: int | str = (
        20  # per task, or SIMPLER's grid: visual_matching | variant_aggregation (suite=simpler)
    )
    seed_start: int = 1000  # evaluation seeds start here, apart from the demonstration seeds
    seeds: list[int] | None = None  # explicit seeds override episodes/seed_start
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    robot: str = "rt1"
    env: EnvKwargs = field(default_factory=EnvKwargs)
    workers: int = 2
    timeout: TimeoutConfig = field(default_factory=TimeoutConfig)
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


def episode_seeds(cfg: RolloutConfig, tasks: list[str]) -> list[int] | dict[str, list[int]]:
    """The seeds of every task, or for an episode set the indices of each task's episodes in its grid."""
    if isinstance(cfg.episodes, int):
        return (
            list(cfg.seeds)
            if cfg.seeds is not None
            else list(range(cfg.seed_start, cfg.seed_start + cfg.episodes))
        )
    if cfg.episodes not in simpler_grids.EPISODE_SETS:
        raise ConfigError(
            f"episodes={cfg.episodes!r}; use a number or one of {list(simpler_grids.EPISODE_SETS)}"
        )
    if cfg.suite != "simpler" or cfg.seeds is not None:
        raise ConfigError(f"episodes={cfg.episodes} is SIMPLER's grid: it needs suite=simpler and no seeds")
    return {task: list(range(len(simpler_grids.episodes(task, cfg.episodes)))) for task in tasks}


def run(cfg: RolloutConfig) -> dict:
    tasks = task_list(cfg)
    seeds = episode_seeds(cfg, tasks)
    if cfg.policy.terminate not in TERMINATE_MODES:
        raise ConfigError(f"policy.terminate={cfg.policy.terminate!r}; use one of {list(TERMINATE_MODES)}")
    make_policy = policy_factory(cfg.policy, cfg.robot, cfg.suite)
    env_kwargs = dict(cfg.env.cpu if cfg.suite == "cpu" else cfg.env.simpler)
    if cfg.suite == "cpu" and "image_size" in env_kwargs:
        env_kwargs["image_size"] = tuple(env_kwargs["image_size"])
    if isinstance(seeds, dict):  # the worker builds each episode's env from the grid
        env_kwargs["episode_set"] = cfg.episodes
        title = f"{cfg.policy.name} on {cfg.suite}, SIMPLER's {cfg.episodes} episodes"
    else:
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
        timeout=asdict(cfg.timeout),
        title=title,
        terminate=cfg.policy.terminate,
    )


@hydra.main(config_path=CONFIG_DIR, config_name="rollout", version_base="1.3")
@entry_point
def main(raw: DictConfig) -> None:
    run(typed(RolloutConfig, raw))


if __name__ == "__main__":
    main()
