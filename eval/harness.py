"""Running an evaluation: tasks x seeds over parallel env workers, resumable, with videos and summaries."""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path

from tqdm import tqdm

from eval.client import EnvClient, EnvRequestError, WorkerError
from eval.loop import run_episode
from eval.results import EpisodeLog, markdown_table, write_summary
from worldflow.errors import EnvError


def expand_tasks(tasks: list[str], known: list[str], groups: dict[str, list[str]]) -> list[str]:
    """Task names and group names -> task names, in order, without repeats; unknown names are an error."""
    out: list[str] = []
    for name in tasks:
        if name in groups:
            out += [t for t in groups[name] if t not in out]
        elif name in known or (name.endswith((".yaml", ".yml")) and Path(name).is_file()):
            if name not in out:  # a task, or a plug-in env's config file (envs.make_from_config)
                out.append(name)
        else:
            import difflib

            close = difflib.get_close_matches(name, list(known) + list(groups), n=3)
            raise EnvError(
                f"unknown task {name!r}"
                + (f"; did you mean {close}?" if close else f"; known groups: {sorted(groups)}")
            )
    return out


def evaluate(
    tasks: list[str],
    seeds: list[int] | Mapping[str, list[int]],
    make_policy: Callable[[EnvClient], object],
    out_dir: str | Path,
    *,
    suite: str = "cpu",
    python: str | None = None,
    env_kwargs: dict | None = None,
    workers: int = 1,
    videos_per_task: int = 2,
    timeout: float | Mapping = 120.0,
    title: str = "",
    terminate: str = "all",
) -> dict:
    """Run every (task, seed) not already in out_dir/episodes.jsonl; returns the summary. seeds: one list
    for every task, or a list per task (SIMPLER's grids: the indices of a task's episodes).

    An env that cannot be made (an unknown keyword argument, a missing asset, a worker that crashes or
    times out while building it) is a setup error, not an episode's failure: every worker stops, the
    episodes that finished stay in episodes.jsonl, and EnvError names the task and the worker's message.
    A failure once the env exists (a reset or step that errors, crashes or times out) fails that episode."""
    out_dir = Path(out_dir)
    log = EpisodeLog(out_dir)
    done = log.finished()
    seeds_of = {t: list(seeds[t] if isinstance(seeds, Mapping) else seeds) for t in tasks}
    total = sum(len(s) for s in seeds_of.values())
    todo = [(t, s) for t in tasks for s in seeds_of[t] if (t, s) not in done]
    video_seeds = {t: set(seeds_of[t][:videos_per_task]) for t in tasks}
    jobs: queue.Queue = queue.Queue()
    for job in todo:
        jobs.put(job)
    lock = threading.Lock()
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in log.rows():
        counts[r["task"]][0] += int(bool(r["success"]))
        counts[r["task"]][1] += 1
    bar = tqdm(
        total=total,
        initial=total - len(todo),
        desc="episodes",
        dynamic_ncols=True,
    )
    errors: list[BaseException] = []
    clients: list[EnvClient] = []

    def stop_all(e: BaseException) -> None:  # the first error stops every worker; their episodes are dropped
        with lock:
            errors.append(e)
            for c in clients:
                c.abort()

    def work() -> None:
        client = EnvClient(suite, python, timeout)
        with lock:
            clients.append(client)
        current = None
        try:
            policy = make_policy(client)
            while not errors:
                try:
                    task, seed = jobs.get_nowait()
                except queue.Empty:
                    return
                if current != task:
                    client.use_task_timeouts(task)
                    plugin = task.endswith((".yaml", ".yml"))  # its kwargs come from its own config
                    try:
                        max_steps = client.make(task, {} if plugin else env_kwargs)
                    except (WorkerError, EnvRequestError) as e:
                        if client.aborted:  # another worker's error stopped the run
                            return
                        raise EnvError(f"cannot make task {task!r} ({suite} suite): {e}") from e
                    current = task
                row = run_episode(
                    client, policy, task, seed, max_steps, record=seed in video_seeds[task], terminate=terminate
                )  # fmt: skip
                if errors:  # cut short by another worker's error (set before it aborts us): not finished
                    return
                frames = row.pop("frames", None)
                if frames:
                    from worldflow.viz import save_video

                    save_video(
                        frames,
                        out_dir / "videos" / f"{task}_seed{seed}_{'ok' if row['success'] else 'fail'}.mp4",
                        fps=5,
                    )
                with lock:
                    log.append(row)
                    counts[task][0] += int(row["success"])
                    counts[task][1] += 1
                    bar.update(1)
                    bar.set_postfix_str(" ".join(f"{t[-14:]}:{k}/{n}" for t, (k, n) in counts.items()))
        except BaseException as e:  # a setup error or a policy bug: stop everything, keep what finished
            stop_all(e)
        finally:
            client.close()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, min(workers, len(todo))))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    bar.close()
    if errors:
        raise errors[0]
    rows = [r for r in log.rows() if r["task"] in tasks and int(r["seed"]) in set(seeds_of[r["task"]])]
    summary = write_summary(out_dir, rows, title)
    print(markdown_table(summary, title))
    return summary
