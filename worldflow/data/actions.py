"""Action standardisation as Octo and OpenVLA do it (DESIGN.md §3).

7-d action = world_vector ‖ rotation_delta ‖ absolute gripper (1 = open, 0 = closed). Normalisation is
OpenVLA's BOUNDS_Q99: clip(2·(x − q01)/(q99 − q01 + 1e-8) − 1, −1, 1), the gripper left as is (mask
6×True + False). Dimensions whose q01..q99 range is under MIN_RANGE are constant: normalised to 0 and
restored as the middle of that range. OpenVLA zeroes only q01 == q99; a range of numerical noise (the CPU
suite's experts send rotation deltas of ±3e-4 rad, yaw ±3e-7, where RT-1's span ±0.1 rad) would otherwise
be stretched to [−1, 1] and the model trained to predict noise in three of its seven channels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from worldflow.errors import DataError

# RT-1's action, which SIMPLER's Google-robot envs (and the CPU suite) take: translation (3) ‖ rotation (3)
# ‖ gripper (1), the gripper absolute in the data, relative in the env. A robot's own layout is its config's
# (robot.data.action_keys / action_dims, whose default this is); the world model may add a terminate
# channel after it.
ACTION_DIM = 7
GRIPPER_THRESHOLD = 0.1
MIN_RANGE = 1e-3  # metres or radians per step: a q01..q99 range below this is numerical noise


def rel2abs_gripper(relative: np.ndarray) -> np.ndarray:
    """Relative gripper commands (+1 close, −1 open, ~0 none) -> absolute state (1 open, 0 closed).

    As Octo's `rel2abs_gripper_actions`: a < −0.1 opens, a > 0.1 closes, otherwise the last state is
    carried; before the first command the gripper is in the opposite state of that command (open if
    there is none).
    """
    a = np.asarray(relative, dtype=np.float32).reshape(-1)
    command = np.where(a < -GRIPPER_THRESHOLD, 1.0, np.where(a > GRIPPER_THRESHOLD, -1.0, 0.0))  # +1 open
    nonzero = np.flatnonzero(command)
    state = -command[nonzero[0]] if len(nonzero) else 1.0
    out = np.empty_like(command)
    for i, c in enumerate(command):
        state = c if c != 0 else state
        out[i] = state
    return (out + 1.0) / 2.0


def abs2rel_gripper(absolute: np.ndarray) -> np.ndarray:
    """Absolute (1 open, 0 closed) -> relative (+1 close, −1 open, 0 hold): the env's convention."""
    a = np.asarray(absolute, dtype=np.float32).reshape(-1)
    prev = np.concatenate([[a[0]], a[:-1]])
    return np.sign(prev - a).astype(np.float32)


@dataclass
class ActionStats:
    """Per-dimension statistics of the standardised actions (saved in every checkpoint); the last dimension
    is the gripper."""

    q01: list[float]
    q99: list[float]
    mean: list[float]
    std: list[float]
    mask: list[bool]  # which dimensions are normalised (the gripper is not)
    count: int

    @classmethod
    def compute(cls, actions: np.ndarray, mask: list[bool] | None = None) -> ActionStats:
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or len(actions) == 0:
            raise DataError(
                f"action statistics need a non-empty (steps, dims) array, got shape {actions.shape}"
            )
        if not np.isfinite(actions).all():
            bad = np.argwhere(~np.isfinite(actions))[0]
            raise DataError(f"actions contain NaN/inf (first at step {bad[0]}, dimension {bad[1]})")
        d = actions.shape[1]
        mask = mask if mask is not None else [True] * (d - 1) + [False]
        return cls(
            q01=np.quantile(actions, 0.01, axis=0).tolist(),
            q99=np.quantile(actions, 0.99, axis=0).tolist(),
            mean=actions.mean(0).tolist(),
            std=actions.std(0).tolist(),
            mask=list(mask),
            count=len(actions),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ActionStats:
        return cls(**d)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        q01, q99 = np.asarray(self.q01), np.asarray(self.q99)
        mask = np.asarray(self.mask)
        x = np.asarray(actions, dtype=np.float64)
        normed = np.clip(2 * (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)
        normed = np.where(q99 - q01 < MIN_RANGE, 0.0, normed)
        return np.where(mask, normed, x).astype(np.float32)

    def denormalize(self, normed: np.ndarray) -> np.ndarray:
        """Inverse of `normalize` inside [q01, q99] (values clipped there stay at the bound)."""
        q01, q99 = np.asarray(self.q01), np.asarray(self.q99)
        mask = np.asarray(self.mask)
        x = np.asarray(normed, dtype=np.float64)
        raw = (np.clip(x, -1, 1) + 1) / 2 * (q99 - q01 + 1e-8) + q01
        raw = np.where(q99 - q01 < MIN_RANGE, (q01 + q99) / 2, raw)
        return np.where(mask, raw, x).astype(np.float32)
