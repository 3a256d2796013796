"""Pool the episodes of several evaluation folders (one per training seed of a recipe) into one rate per task.

    python eval/pool.py runs/eval/wml_k2 runs/eval/wmm_k2 runs/eval/wmn_k2 [--markdown]

Each folder is an `eval/simpler_rollout.py` output (`episodes.jsonl`); within a folder each (task, seed) counts
once, as in its own summary. Per task the output gives the pooled successes over all folders with a 95% Wilson
interval, and each folder's own rate. The pooled interval treats every episode as an independent draw, so it
says how well the recipe's mean rate is known only when the folders' rates agree; their spread (`runs`) shows
how much the training seed moves it. JSON on stdout, or a markdown table with `--markdown`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from eval.results import EpisodeLog, summarize  # noqa: E402
from eval.stats import wilson_interval  # noqa: E402
from worldflow.errors import ConfigError, WorldflowError  # noqa: E402


def pool(folders: list[str | Path]) -> dict:
    """{task: {episodes, successes, success_rate, wilson95, runs: [{folder, episodes, successes, success_rate}]}}
    for the tasks every folder evaluated."""
    if not folders:
        raise ConfigError("eval/pool.py: name at least one evaluation folder")
    per_folder = {}
    for folder in folders:
        log = EpisodeLog(folder)
        if not log.path.is_file():
            raise ConfigError(f"{folder}: no episodes.jsonl here (is it an eval/simpler_rollout.py out_dir?)")
        rows = log.rows()
        if not rows:
            raise ConfigError(f"{log.path}: no finished episodes")
        per_folder[str(folder)] = summarize(rows)
    tasks = set.intersection(*(set(s) for s in per_folder.values()))
    if not tasks:
        raise ConfigError(
            f"the folders share no task: {', '.join(f'{f} has {sorted(s)}' for f, s in per_folder.items())}"
        )
    out = {}
    for task in sorted(tasks):
        runs = [
            {"folder": f, **{k: s[task][k] for k in ("episodes", "successes", "success_rate")}}
            for f, s in per_folder.items()
        ]
        n = sum(r["episodes"] for r in runs)
        k = sum(r["successes"] for r in runs)
        out[task] = {
            "episodes": n,
            "successes": k,
            "success_rate": k / n,
            "wilson95": list(wilson_interval(k, n)),
            "runs": runs,
        }
    return out


def markdown(pooled: dict) -> str:
    lines = ["| task | runs | pooled success | 95% Wilson interval | per run |", "|---|---|---|---|---|"]
    for task, s in pooled.items():
        lo, hi = s["wilson95"]
        per_run = ", ".join(f"{r['successes']}/{r['episodes']}" for r in s["runs"])
        lines.append(
            f"| {task} | {len(s['runs'])} | {s['successes']}/{s['episodes']} = {100 * s['success_rate']:.1f}% "
            f"| [{100 * lo:.1f}, {100 * hi:.1f}] | {per_run} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="eval/simpler_rollout.py output folders")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table instead of JSON")
    args = parser.parse_args(argv)
    try:
        pooled = pool(args.folders)
    except WorldflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(pooled) if args.markdown else json.dumps(pooled, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
