"""Training windows for the world model (DESIGN.md §2–3): `context` frames up to the current step, `horizon`
future frames and `action_horizon` actions from the current step, never crossing an episode boundary.

Frames are `frame_gap` env steps apart (context t - (context - 1) * gap, ..., t; future t + gap, ...,
t + horizon * gap); actions are every step. Context before an episode's first frame repeats that frame;
future frames and actions past the last step repeat the last one and are marked invalid (`frame_valid`,
`action_valid`), so the loss ignores them.

With `mirror` (the robot's sign vectors for a reflection y -> -y), the dataset also holds every window
left-right mirrored: frames flipped horizontally, actions and proprioception multiplied by the signs. Items
stay a function of the index: index n + i is window i mirrored. Only right for a scene and camera symmetric
about the camera's vertical plane (the CPU suite's head camera looks straight ahead at y = 0).

With `repeats` (see `keyframe_repeats`), window i appears repeats[i] times in the index, so a permutation
sampler draws the windows where the image decides the action more often.
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
        repeats: np.ndarray | None = None,
        frame_gap: int = 1,
    ):
        self.cache = cache
        self.proprio, self.terminate = proprio, terminate
        if proprio and cache.proprio.shape[1] == 0:
            raise DataError(f"episode cache {cache.path} has no proprioception; set worldmodel.proprio=false")
        self.context, self.horizon, self.action_horizon = context, horizon, action_horizon
        if frame_gap < 1:
            raise ConfigError(f"frame_gap={frame_gap}: must be >= 1")
        self.frame_gap = frame_gap
        self.stats = stats or cache.stats
        self.episodes = list(range(len(cache))) if episodes is None else list(episodes)
        self.index = window_index(cache, self.episodes)
        if not len(self.index):
            raise DataError(f"episode cache {cache.path}: no episode with at least 2 steps")
        if repeats is not None:
            repeats = np.asarray(repeats)
            if repeats.shape != (len(self.index),) or (repeats < 1).any():
                raise ConfigError(
                    f"window repeats: expected {len(self.index)} counts >= 1, got shape {repeats.shape}"
                )
            self.index = np.repeat(self.index, repeats, axis=0)
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
        frame_steps = t + self.frame_gap * np.arange(1 - self.context, self.horizon + 1)
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


def window_index(cache: EpisodeCache, episodes: list[int]) -> np.ndarray:
    """(N, 2) (episode, step) of every window of `episodes`: each step with at least one real future frame."""
    rows = [(e, t) for e in episodes for t in range(cache.episodes[e][1] - 1)]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def keyframe_repeats(
    cache: EpisodeCache,
    episodes: list[int],
    action_horizon: int,
    repeat: int,
    neighbours: int = 16,
    reference: int = 20_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per window, how many times to repeat it: 1 + round(repeat * min(1, r / r90)), and r itself.

    r is how far the window's normalised action chunk lies from the mean chunk of its `neighbours` nearest
    windows by proprioception, among windows of *other* episodes with the same instruction; r90 its 90th
    percentile. Where the arm's state alone fixes the next actions (opening a drawer that is always in the
    same place) r is ~0; where the same state leads to different actions (the first steps toward an apple
    that is somewhere else in every episode) only the image can tell, and those windows are drawn up to
    1 + repeat times as often. The idea is the keyframe weighting of Wen et al., "Keyframe-Focused Visual
    Imitation Learning" (ICML 2021), which upweights the steps whose action the past alone predicts badly.
    Each instruction's windows are compared with at most `reference` of them (seeded), bounding the cost.
    """
    if repeat < 0:
        raise ConfigError(f"keyframe_repeat={repeat}: must be >= 0")
    if cache.proprio.shape[1] == 0:
        raise DataError(f"episode cache {cache.path}: keyframe_repeat needs proprioception, and it has none")
    index = window_index(cache, episodes)
    starts, lengths = cache.episodes[index[:, 0], 0], cache.episodes[index[:, 0], 1]
    steps = np.minimum(index[:, 1:2] + np.arange(action_horizon), lengths[:, None] - 1)
    chunks = torch.from_numpy(cache.stats.normalize(cache.actions[starts[:, None] + steps]).reshape(len(index), -1))
    state = torch.from_numpy(cache.proprio_stats.normalize(cache.proprio[starts + index[:, 1]])).float()
    instructions = np.asarray(cache.meta["instructions"])[index[:, 0]]
    rng = np.random.default_rng(seed)
    residual = np.zeros(len(index), np.float32)
    for instruction in np.unique(instructions):
        rows = np.flatnonzero(instructions == instruction)
        ref = rows if len(rows) <= reference else np.sort(rng.choice(rows, reference, replace=False))
        ref_ep = torch.from_numpy(index[ref, 0])
        for lo in range(0, len(rows), 1024):
            batch = rows[lo : lo + 1024]
            dist = torch.cdist(state[batch], state[ref])
            dist[torch.from_numpy(index[batch, 0])[:, None] == ref_ep[None]] = float("inf")
            k = min(neighbours, len(ref))
            d, nearest = dist.topk(k, largest=False)
            valid = torch.isfinite(d).unsqueeze(-1).float()  # an instruction seen in one episode: no peers
            mean = (chunks[ref][nearest] * valid).sum(1) / valid.sum(1).clamp(min=1)
            r = (chunks[batch] - mean).norm(dim=1) * (valid.sum(1).squeeze(-1) > 0)
            residual[batch] = r.numpy()
    top = float(np.quantile(residual, 0.9)) if len(residual) else 0.0
    scaled = np.clip(residual / top, 0.0, 1.0) if top > 0 else np.zeros_like(residual)
    return 1 + np.rint(repeat * scaled).astype(np.int64), residual
