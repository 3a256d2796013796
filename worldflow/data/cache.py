"""The fast local episode store (DESIGN.md §3): decoded, resized frames and standardised actions in flat
memory-mapped files, so TensorFlow stays out of the training process's hot path.

Layout of a cache folder: `frames.u8` (S, H, W, 3) uint8 raw, `actions.npy` (S, 7) float32 (absolute
gripper, not normalised), `terminate.npy` (S,) bool, `proprio.npy` (S, P) float32, `episodes.npy` (E, 2)
int64 (start, length), `embeddings.npy` (E, 512) float32, `meta.json` (source, hash, image size,
instructions, action statistics). Written into a temporary sibling folder and renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from worldflow.data.actions import ActionStats
from worldflow.errors import DataError


def proprio_statistics(proprio: np.ndarray) -> ActionStats | None:
    """BOUNDS_Q99 statistics of the proprioception, every dimension normalised (None: no proprioception)."""
    if proprio.ndim != 2 or proprio.shape[1] == 0 or len(proprio) == 0:
        return None
    return ActionStats.compute(proprio, mask=[True] * proprio.shape[1])


class CacheWriter:
    def __init__(self, out_dir: str | Path, image_size: int, meta: dict, action_dim: int | None = None):
        """`action_dim`: the robot's action size (RobotDataConfig.action_dim); None: the first episode's."""
        self.out = Path(out_dir)
        self.tmp = self.out.with_name(f".tmp-{self.out.name}")
        try:
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            self.tmp.mkdir(parents=True)
        except OSError as e:
            raise DataError(f"cannot write the episode cache at {self.out}: {e}") from e
        self.image_size, self.action_dim = image_size, action_dim
        self.meta = dict(meta)
        self.frames = open(self.tmp / "frames.u8", "wb")
        self.actions, self.terminate, self.proprio = [], [], []
        self.episodes, self.embeddings, self.instructions = [], [], []
        self.steps = 0

    def add(self, frames, actions, terminate, proprio, instruction: str, embedding) -> None:
        s = self.image_size
        t = len(frames)
        if frames.shape != (t, s, s, 3) or frames.dtype != np.uint8:
            raise DataError(
                f"episode {len(self.episodes)}: frames {frames.shape} {frames.dtype}, expected ({t}, {s}, {s}, 3) uint8"
            )
        if self.action_dim is None and actions.ndim == 2:
            self.action_dim = actions.shape[1]
        if actions.shape != (t, self.action_dim) or not np.isfinite(actions).all():
            raise DataError(
                f"episode {len(self.episodes)}: actions must be finite with shape ({t}, {self.action_dim}), got {actions.shape}"
            )
        self.frames.write(np.ascontiguousarray(frames).tobytes())
        self.actions.append(actions.astype(np.float32))
        self.terminate.append(np.asarray(terminate, dtype=bool).reshape(t))
        self.proprio.append(np.asarray(proprio, dtype=np.float32).reshape(t, -1))
        self.episodes.append((self.steps, t))
        self.embeddings.append(np.asarray(embedding, dtype=np.float32).reshape(-1))
        self.instructions.append(instruction)
        self.steps += t

    def abort(self) -> None:
        self.frames.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def finish(self) -> Path:
        self.frames.close()
        if not self.episodes:
            self.abort()
            raise DataError(f"no episodes were written to the cache {self.out}")
        actions = np.concatenate(self.actions)
        stats = ActionStats.compute(actions)
        proprio = np.concatenate(self.proprio)
        proprio_stats = proprio_statistics(proprio)
        np.save(self.tmp / "actions.npy", actions)
        np.save(self.tmp / "terminate.npy", np.concatenate(self.terminate))
        np.save(self.tmp / "proprio.npy", proprio)
        np.save(self.tmp / "episodes.npy", np.asarray(self.episodes, dtype=np.int64))
        np.save(self.tmp / "embeddings.npy", np.stack(self.embeddings))
        meta = {
            **self.meta,
            "image_size": self.image_size,
            "action_dim": self.action_dim,
            "steps": self.steps,
            "episodes": len(self.episodes),
            "instructions": self.instructions,
            "action_stats": stats.to_dict(),
            "proprio_stats": proprio_stats.to_dict() if proprio_stats else None,
        }
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)
        return self.out


class EpisodeCache:
    """Read side: memory-mapped frames, small arrays in memory. Cheap to open in every worker."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "meta.json").is_file():
            raise DataError(f"{self.path} is not a complete episode cache (no meta.json)")
        self.meta = json.loads((self.path / "meta.json").read_text())
        s = self.meta["image_size"]
        self.frames = np.memmap(
            self.path / "frames.u8", dtype=np.uint8, mode="r", shape=(self.meta["steps"], s, s, 3)
        )
        self.actions = np.load(self.path / "actions.npy")
        self.terminate = np.load(self.path / "terminate.npy")
        self.proprio = np.load(self.path / "proprio.npy")
        self.episodes = np.load(self.path / "episodes.npy")
        self.embeddings = np.load(self.path / "embeddings.npy")
        self.stats = ActionStats.from_dict(self.meta["action_stats"])
        ps = self.meta.get("proprio_stats")
        self.proprio_stats = ActionStats.from_dict(ps) if ps else proprio_statistics(self.proprio)

    def __len__(self) -> int:
        return len(self.episodes)

    def episode(self, e: int) -> dict:
        start, length = self.episodes[e]
        sl = slice(start, start + length)
        return {
            "frames": np.asarray(self.frames[sl]),
            "actions": self.actions[sl],
            "terminate": self.terminate[sl],
            "proprio": self.proprio[sl],
            "instruction": self.meta["instructions"][e],
            "embedding": self.embeddings[e],
        }
