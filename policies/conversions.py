"""Action conversions between policy outputs and SIMPLER's Google-robot action (DESIGN.md §4).

The env takes 7-d: translation delta ‖ axis-angle rotation delta ‖ relative gripper (+1 close, −1 open).
RT-1-style outputs pass rotation and gripper through; Octo/OpenVLA-style outputs give roll-pitch-yaw and an
absolute gripper (1 open, 0 closed), converted as SimplerEnv's Octo/OpenVLA wrappers do.
"""

from __future__ import annotations

import numpy as np

from worldflow.data.actions import ACTION_DIM


def euler2axangle(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Static-axis xyz Euler angles (transforms3d's 'sxyz', as SimplerEnv uses) -> axis·angle vector."""
    cr, sr = np.cos(roll), np.sin(roll)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return matrix2axangle(rz @ ry @ rx)


def matrix2axangle(r: np.ndarray) -> np.ndarray:
    cos = np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)
    angle = float(np.arccos(cos))
    if angle < 1e-8:
        return np.zeros(3)
    if np.pi - angle < 1e-6:  # 180°: axis from the symmetric part
        axis = np.sqrt(np.clip((np.diag(r) + 1) / 2, 0, None))
        i = int(np.argmax(axis))
        axis[(i + 1) % 3] = np.copysign(axis[(i + 1) % 3], r[i, (i + 1) % 3])
        axis[(i + 2) % 3] = np.copysign(axis[(i + 2) % 3], r[i, (i + 2) % 3])
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2 * np.sin(angle))
    return axis * angle


def axangle2matrix(v: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = np.asarray(v) / angle
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


class RT1Converter:
    """RT-1 style: axis-angle passthrough, relative gripper as is; terminate from the one-hot flag."""

    def reset(self) -> None:
        pass

    def __call__(self, action: np.ndarray, terminate: bool = False) -> tuple[np.ndarray, bool]:
        return np.asarray(action, np.float32).copy(), bool(terminate)


class OctoConverter:
    """Octo/OpenVLA style: rpy -> axis-angle; absolute gripper (1 open) -> relative (+1 close) as SimplerEnv's
    wrappers: relative = previous − current, and once |Δ| > 0.5 the command is latched ("sticky") for 15
    steps; terminate is never signalled."""

    sticky_steps = 15

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.previous: float | None = None
        self.sticky_action = 0.0
        self.sticky_left = 0

    def __call__(self, action: np.ndarray, terminate: bool = False) -> tuple[np.ndarray, bool]:
        a = np.asarray(action, np.float64)
        out = np.zeros(ACTION_DIM, np.float32)
        out[:3] = a[:3]
        out[3:6] = euler2axangle(*a[3:6])
        current = float(a[6])
        relative = 0.0 if self.previous is None else self.previous - current
        self.previous = current
        if abs(relative) > 0.5 and self.sticky_left == 0:
            self.sticky_action = relative
            self.sticky_left = self.sticky_steps
        if self.sticky_left > 0:
            relative = self.sticky_action
            self.sticky_left -= 1
        out[6] = relative
        return out, False


def absolute_to_relative_rt1(absolute_open: np.ndarray, previous_open: float) -> np.ndarray:
    """For our world model (absolute gripper, 1 open): relative command for the env, +1 close, −1 open,
    0 hold, thresholded at 0.5 like the standardisation's inverse."""
    a = np.asarray(absolute_open, np.float32).reshape(-1)
    prev = np.concatenate([[previous_open], a[:-1]])
    state, prev_state = a > 0.5, prev > 0.5
    return np.where(state == prev_state, 0.0, np.where(state, -1.0, 1.0)).astype(np.float32)


CONVERTERS = {"rt1": RT1Converter, "octo": OctoConverter}
