"""Metrics to `metrics.jsonl` in the run folder (always) and optionally to wandb (imported lazily)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from worldflow.errors import ConfigError


class MetricLogger:
    def __init__(self, run_dir: str | Path, wandb: dict | None = None, config: dict | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a"):
                pass
        except OSError as e:
            raise ConfigError(f"run folder {self.path.parent} is not writable: {e}") from e
        self.wandb_run = None
        if wandb is not None:
            try:
                import wandb as wb
            except ImportError as e:
                raise ConfigError(
                    "logger=wandb needs the wandb package: pip install 'worldflow[wandb]'"
                ) from e
            os.environ.setdefault("WANDB_MODE", wandb.get("mode", "offline"))
            self.wandb_run = wb.init(
                project=wandb.get("project", "worldflow"), dir=str(self.path.parent), config=config
            )

    def log(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log(row, step=row.get("step"))

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint so the file reads as one uninterrupted run."""
        rows = read_metrics(self.path)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows if r.get("step", 0) <= step))
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return rows
