"""python eval/collect.py task=<task or group>|'<task>,<task>,...' episodes=N out=<dir> [seed=0] [image_size=256x320]
                         [shard_size=64] [overwrite=false] [noise=0.0] [record=expert|executed] [+env.<key>=<value> ...]

Runs the CPU suite's scripted experts under SIMPLER's loop (DESIGN.md §4: a terminate flag in a non-final
subtask advances to the next one and the step is still executed; the episode ends on terminate in the final
subtask or at truncation; success is judged at the last step) and writes the successful episodes as an
RT-1-schema RLDS dataset, `out/fractal20220817_data/0.1.0/` (envs/rlds_writer.py). `episodes` is the number
of attempts per task, with seeds seed, seed + 1, ...; failed attempts are dropped and counted.

Interrupted (crash, Ctrl-C, `kill -9`), the same command continues: every completed shard is journaled with
the attempt it reached, and the rerun skips those attempts (they are deterministic in the seed).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from envs.rlds_writer import Episode, RT1Writer, episode_from_rollout  # noqa: E402
from eval.loop import LocalEnv, run_episode  # noqa: E402
from policies.baselines import ScriptedPolicy  # noqa: E402
from worldflow.config import entry_point, typed  # noqa: E402
from worldflow.errors import ConfigError, EnvError  # noqa: E402

MAX_STEPS = 1000  # a safety net only: the suite's envs truncate at SIMPLER's limits (80, 113, 200)


@dataclass
class CollectConfig:
    task: str = "google_robot_all"  # a task, a group (envs.TASK_GROUPS) or a comma-separated list of them
    episodes: int = 10  # attempts per task
    out: str = "data/rt1_collected"
    seed: int = 0
    image_size: str = "256x320"  # HxW; RT-1 is 256x320
    shard_size: int = 64  # episodes per TFRecord shard
    overwrite: bool = False
    env: dict = field(default_factory=dict)  # extra keyword arguments to envs.make
    progress: bool = True
    # DART (Laskey et al. 2017, "DART: Noise Injection for Robust Imitation Learning"): Gaussian noise of
    # this std (metres per step) is added to the translation the env executes; with record=expert the
    # recorded action stays the expert's, so the data shows how to come back from states a learned policy
    # drifts into
    noise: float = 0.0
    # which action the data keeps under noise: "expert" (DART: the label a policy should learn) or
    # "executed" (what the env ran: the action that explains the next frame, which a world model's forward
    # mode needs; with the expert's label the action is a function of the frames and carries nothing new)
    record: str = "expert"


RECORDS = ("expert", "executed")


def check_record(record: str) -> None:
    if record not in RECORDS:
        raise ConfigError(f"record={record!r}; use {' or '.join(RECORDS)}")


def parse_image_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ConfigError(f"image_size={text!r}; expected HxW, e.g. 256x320") from None
    return h, w


def perturbed(action: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The action the env executes under DART noise: translation + N(0, noise²), kept within the action
    bounds of the suite; rotation and gripper as the expert sent them."""
    if noise <= 0:
        return action
    from envs.suite import ACTION_HIGH

    out = np.asarray(action, np.float32).copy()
    out[:3] = np.clip(out[:3] + rng.normal(0.0, noise, 3), -ACTION_HIGH[:3], ACTION_HIGH[:3])
    return out


def rollout(env, seed: int, noise: float = 0.0, record: str = "expert") -> tuple[Episode, bool]:
    """One scripted-expert episode under SIMPLER's loop (eval.loop.run_episode) -> (Episode, success at
    the last step). `env` is a LocalEnv; with `noise`, the executed translation is perturbed (DART) and
    the expert's own action is recorded (`record="expert"`) or the perturbed one the env ran
    (`record="executed"`)."""
    check_record(record)
    rng = np.random.default_rng([seed, 1_000_003])  # deterministic in the seed, as a resumed run needs
    steps: list[tuple] = []
    executed: list[np.ndarray] = []

    def execute(action):
        executed.append(perturbed(action, noise, rng))
        return executed[-1]

    def keep(obs, action, flag, instruction):
        steps.append(
            (np.asarray(obs["image"]), np.asarray(obs["proprio"], np.float32), action, flag, instruction)
        )

    row = run_episode(
        env, ScriptedPolicy(env), "collect", seed, MAX_STEPS, on_step=keep,
        execute=execute,
    )  # fmt: skip
    if row["failure"] not in (None, "terminated", "timeout"):
        raise EnvError(f"collecting seed {seed}: {row['failure']}")
    frames, proprios, actions, terminates, texts = zip(*steps, strict=True)
    if record == "executed":  # on_step and execute see the same steps, one call each
        actions = tuple(np.asarray(e, np.float32) for e in executed)
    episode = episode_from_rollout(
        list(frames), np.stack(proprios), np.stack(actions).astype(np.float32), list(terminates), list(texts),
        success=row["success"],
    )  # fmt: skip
    return episode, row["success"]


def successful_episodes(
    cfg: CollectConfig, tasks: list[str], counts: Counter, after: list[int] | None = None
) -> Iterator[tuple[Episode, list[int]]]:
    """Yield (episode, [task index, attempt]) for the successful rollouts one at a time (the writer streams
    them), counting per task; attempts up to and including `after` are skipped (already written)."""
    from tqdm import tqdm

    import envs

    size = parse_image_size(cfg.image_size)
    done = 0 if after is None else after[0] * cfg.episodes + after[1] + 1
    bar = tqdm(
        total=len(tasks) * cfg.episodes, initial=done, desc="collecting", unit="ep", disable=not cfg.progress
    )
    for ti, task in enumerate(tasks):
        if (ti + 1) * cfg.episodes <= done:
            continue
        env = LocalEnv(envs.make(task, image_size=size, **cfg.env))
        for i in range(cfg.episodes):
            if ti * cfg.episodes + i < done:
                continue
            episode, success = rollout(env, cfg.seed + i, cfg.noise, cfg.record)
            counts[(task, success)] += 1
            bar.update()
            bar.set_postfix(
                kept=sum(v for (_, ok), v in counts.items() if ok),
                failed=sum(v for (_, ok), v in counts.items() if not ok),
            )
            if success:
                yield episode, [ti, i]
        env.env.close()
    bar.close()


def collect(cfg: CollectConfig) -> Path:
    import envs
    from eval.harness import expand_tasks

    if not hasattr(envs, "make"):
        raise EnvError("the CPU suite is not available: envs.make is missing (is mujoco installed?)")
    from envs.suite import ACTION_HIGH

    high = float(ACTION_HIGH[:3].max())  # the suite's translation bound, as `perturbed` clips to
    if not 0 <= cfg.noise < high:
        raise ConfigError(f"noise={cfg.noise}; use a translation std in [0, {high:g}) m per step (0: none)")
    check_record(cfg.record)  # before the writer touches `out`
    if cfg.episodes < 1:
        raise ConfigError(f"episodes={cfg.episodes}; need at least 1 attempt per task")
    tasks = expand_tasks(
        [t.strip() for t in cfg.task.split(",") if t.strip()], list(envs.TASKS), envs.TASK_GROUPS
    )
    # Mesa's EGL crashes if TensorFlow (the writer) loads before this process's first MuJoCo renderer:
    # make and reset one env first, and keep it open for the whole collection.
    warm = envs.make(tasks[0], image_size=parse_image_size(cfg.image_size), **cfg.env)
    warm.reset(seed=cfg.seed)
    counts: Counter = Counter()
    about = f"CPU-suite scripted experts (eval/collect.py): tasks {tasks}, {cfg.episodes} attempts each from seed {cfg.seed}; successes only."
    if cfg.noise > 0:
        about += f" DART noise {cfg.noise} m per step on the executed translation; the {cfg.record} action recorded."
    recipe = json.dumps(
        {"about": about, "image_size": cfg.image_size, "shard_size": cfg.shard_size, "env": dict(cfg.env)},
        sort_keys=True,
    )
    writer = RT1Writer(
        cfg.out, image_size=parse_image_size(cfg.image_size), shard_size=cfg.shard_size,
        overwrite=cfg.overwrite, description=about, resumable=recipe,
    )  # fmt: skip
    if writer.resumed is not None:
        print(f"continuing an interrupted collection: {writer.episodes} episodes already written")
    try:
        for episode, marker in successful_episodes(cfg, tasks, counts, writer.resumed):
            writer.add(episode, marker)
        path = writer.finish()
    except BaseException:
        writer.abort()  # keeps the journaled shards for the next run
        raise
    warm.close()
    print(writer.report(path))
    print(f"{'task':50s} kept failed")
    for task in tasks:
        print(f"{task:50s} {counts[(task, True)]:4d} {counts[(task, False)]:6d}")
    failed = sum(v for (_, ok), v in counts.items() if not ok)
    print(
        f"kept {sum(counts.values()) - failed} of {sum(counts.values())} episodes ({failed} failed) -> {path}"
        + (
            " (this run's attempts only; the rest were written before the interruption)"
            if writer.resumed
            else ""
        )
    )
    return path


def ensure_embedded_dataset(root: str | Path, tasks: list[str], episodes_per_task: int, seed: int) -> Path:
    """The embedded default RT-1-schema dataset (DESIGN.md §3): written once from the CPU suite's scripted
    experts, reused while its recipe (tasks, episodes, seed) is unchanged. Returns the dataset root."""
    root = Path(root)
    recipe = {"tasks": list(tasks), "episodes_per_task": episodes_per_task, "seed": seed}
    stamp = root / "embedded.json"
    ready = root / "fractal20220817_data" / "0.1.0" / "dataset_info.json"
    if ready.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return root
    print(f"writing the embedded RT-1-schema dataset to {root} (once): {recipe}")
    collect(
        CollectConfig(
            task=",".join(tasks), episodes=episodes_per_task, out=str(root), seed=seed, overwrite=True
        )
    )
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps(recipe))
    tmp.replace(stamp)
    return root


ConfigStore.instance().store(name="collect", node=CollectConfig)


@hydra.main(config_path=None, config_name="collect", version_base="1.3")
@entry_point
def main(raw: DictConfig) -> None:
    collect(typed(CollectConfig, raw))


if __name__ == "__main__":
    # no Hydra output folder or log files: the dataset is the output (as configs/pretrain.yaml sets up)
    sys.argv += [
        "hydra.run.dir=.",
        "hydra.output_subdir=null",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
    ]
    main()
