"""Harness outputs (DESIGN.md §4): one JSON line per finished episode, appended as it finishes (so a rerun
skips finished episodes), a summary JSON and a markdown table with 95% Wilson intervals per task."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

from eval.stats import wilson_interval


class EpisodeLog:
    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.path = self.dir / "episodes.jsonl"

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash: that episode runs again
        return out

    def finished(self) -> set[tuple[str, int]]:
        return {(r["task"], int(r["seed"])) for r in self.rows()}

    def append(self, row: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # a kill mid-write can leave a last line without its newline: start a new line, or this row would
        # be glued to the broken one and lost
        broken = False
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                broken = f.read(1) != b"\n"
        with open(self.path, "a") as f:
            f.write(("\n" if broken else "") + json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def summarize(rows: list[dict]) -> dict:
    """Per task: episodes, successes, rate, Wilson 95% interval, mean steps, failure reasons. Each
    (task, seed) counts once (the last record wins)."""
    unique = {(r["task"], int(r["seed"])): r for r in rows}
    by_task: dict[str, list[dict]] = defaultdict(list)
    for (task, _), r in sorted(unique.items()):
        by_task[task].append(r)
    out = {}
    for task, rs in by_task.items():
        n = len(rs)
        k = sum(bool(r["success"]) for r in rs)
        lo, hi = wilson_interval(k, n)
        reasons: dict[str, int] = defaultdict(int)
        for r in rs:
            if r.get("failure"):
                reasons[r["failure"].split(":")[0]] += 1
        out[task] = {
            "episodes": n,
            "successes": k,
            "success_rate": k / n,
            "wilson95": [lo, hi],
            "mean_steps": sum(r["steps"] for r in rs) / n,
            "failures": dict(reasons),
        }
    return out


def markdown_table(summary: dict, title: str = "") -> str:
    lines = [f"### {title}", ""] if title else []
    lines += ["| task | episodes | success | 95% Wilson interval |", "|---|---|---|---|"]
    for task, s in summary.items():
        lo, hi = s["wilson95"]
        lines.append(
            f"| {task} | {s['episodes']} | {100 * s['success_rate']:.1f}% ({s['successes']}) | [{100 * lo:.1f}, {100 * hi:.1f}] |"
        )
    return "\n".join(lines) + "\n"


def write_summary(out_dir: str | Path, rows: list[dict], title: str = "") -> dict:
    out_dir = Path(out_dir)
    summary = summarize(rows)
    for name, text in (
        ("summary.json", json.dumps(summary, indent=1)),
        ("summary.md", markdown_table(summary, title)),
    ):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out_dir / name)
    return summary
