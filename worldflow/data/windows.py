"""Training windows for the world model (DESIGN.md §2–3): `context` frames up to the current step, `horizon`
future frames and `action_horizon` actions from the current step, never crossing an episode boundary.

Context before an episode's first frame repeats that frame; future frames and actions past the last step
repeat the last one and are marked invalid (`frame_valid`, `action_valid`), so the loss ignores them.

With `mirror` (the robot's sign vectors for a reflection y -> -y), the dataset also holds every window
left-right mirrored: frames flipped horizontally, actions and proprioception multiplied by the signs. Items
stay a function of the index: index n + i is window i mirrored. Only right for a scene and camera symmetric
about the camera's vertical plane (the CPU suite's head camera looks straight ahead at y = 0).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from worldflow.data.actions import ActionStats
from worldflow.data.cache import EpisodeCache
from worldflow.errors import ConfigError, DataError


def split_episodes(n: int, val_episodes: int) -> tuple[list[int], list[int]]:
    """The last `val_episodes` episodes are held out (deterministic, so every run agrees)."""
    if n - val_episodes < 1:
        raise DataError(f"the dataset has {n} episodes: too few to hold out {val_episodes} for validation")
    return list(range(n - val_episodes)), list(range(n - val_episodes, n))


class WindowDataset(Dataset):
    def __init__(
        self,
        cache: EpisodeCache,
        context: int,
        horizon: int,
        action_horizon: int,
        episodes: list[int] | None = None,
        stats: ActionStats | None = None,
        proprio: bool = False,
        terminate: bool = False,
        mirror: tuple[list[float], list[float]] | None = None,
    ):
        self.cache = cache
        self.proprio, self.terminate = proprio, terminate
        if proprio and cache.proprio.shape[1] == 0:
            raise DataError(f"episode cache {cache.path} has no proprioception; set worldmodel.proprio=false")
        self.context, self.horizon, self.action_horizon = context, horizon, action_horizon
        self.stats = stats or cache.stats
        self.episodes = list(range(len(cache))) if episodes is None else list(episodes)
        index = []
        for e in self.episodes:
            start, length = cache.episodes[e]
            if length < 2:
                continue
            index += [(e, t) for t in range(length - 1)]  # at least one real future frame
        if not index:
            raise DataError(f"episode cache {cache.path}: no episode with at least 2 steps")
        self.index = np.asarray(index, dtype=np.int64)
        self.mirror = None
        if mirror is not None:
            action_signs, proprio_signs = (np.asarray(v, np.float32) for v in mirror)
            if action_signs.shape != (cache.actions.shape[1],) or proprio_signs.shape != (cache.proprio.shape[1],):
                raise ConfigError(
                    f"robot.mirror_action_signs has {action_signs.size} signs and robot.mirror_proprio_signs "
                    f"{proprio_signs.size}; the data has {cache.actions.shape[1]} action and "
                    f"{cache.proprio.shape[1]} proprioception dimensions"
                )
            self.mirror = action_signs, proprio_signs
        self.num_classes = 0
        s = cache.meta["image_size"]
        self.sample_shape = (context + horizon, 3, s, s)

    def __len__(self) -> int:
        return len(self.index) * (2 if self.mirror else 1)

    def __getitem__(self, i: int) -> dict:
        mirrored = i >= len(self.index)
        e, t = self.index[i - len(self.index) if mirrored else i]
        start, length = self.cache.episodes[e]
        frame_steps = np.arange(t - self.context + 1, t + self.horizon + 1)
        action_steps = np.arange(t, t + self.action_horizon)
        frame_valid = frame_steps <= length - 1
        action_valid = action_steps <= length - 1
        frames = self.cache.frames[start + np.clip(frame_steps, 0, length - 1)]
        action_rows = start + np.clip(action_steps, 0, length - 1)
        actions = self.cache.actions[action_rows]
        proprio = self.cache.proprio[start + t]
        if mirrored:
            frames, actions, proprio = frames[:, :, ::-1], actions * self.mirror[0], proprio * self.mirror[1]
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        actions = self.stats.normalize(actions)
        if self.terminate:  # +1 on the step that ends the (sub)task
            term = self.cache.terminate[action_rows] & action_valid
            actions = np.concatenate([actions, np.where(term, 1.0, -1.0)[:, None]], 1).astype(np.float32)
        cond = self.cache.embeddings[e]
        if self.proprio:  # the current step's proprioception, standardised
            cond = np.concatenate([cond, self.cache.proprio_stats.normalize(proprio)])
        return {
            "x": x,  # (context + horizon, 3, S, S) in [-1, 1]
            "actions": torch.from_numpy(actions),  # (action_horizon, 7 [+ terminate])
            "cond": torch.from_numpy(cond.astype(np.float32)),  # instruction [‖ proprioception]
            "frame_valid": torch.from_numpy(frame_valid),
            "action_valid": torch.from_numpy(action_valid),
        }
