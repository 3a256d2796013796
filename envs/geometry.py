"""Quaternions (w, x, y, z) and axis-angle vectors, the conventions of MuJoCo and of RT-1's actions."""

from __future__ import annotations

import numpy as np


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a ⊗ b: rotate by b, then by a."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def quat_conj(q: np.ndarray) -> np.ndarray:
    return np.array([q[0], -q[1], -q[2], -q[3]])


def canonical_quat(q: np.ndarray) -> np.ndarray:
    """Unit quaternion with w >= 0 (q and -q are the same rotation)."""
    q = np.asarray(q, np.float64) / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def axis_angle_to_quat(rotvec: np.ndarray) -> np.ndarray:
    """(3,) axis * angle (rad) -> unit quaternion."""
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    axis = np.asarray(rotvec, np.float64) / angle
    return np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis])


def quat_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """Unit quaternion -> (3,) axis * angle with angle in [0, pi]."""
    q = canonical_quat(q)
    s = float(np.linalg.norm(q[1:]))
    if s < 1e-12:
        return np.zeros(3)
    return q[1:] / s * 2.0 * np.arctan2(s, q[0])


def rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vector v by unit quaternion q."""
    return quat_mul(quat_mul(q, np.concatenate([[0.0], v])), quat_conj(q))[1:]


def yaw_quat(yaw: float) -> np.ndarray:
    return axis_angle_to_quat(np.array([0.0, 0.0, yaw]))


def quat_yaw(q: np.ndarray) -> float:
    """Heading of the rotated x axis in the xy plane (rad)."""
    x_axis = rotate(q, np.array([1.0, 0.0, 0.0]))
    return float(np.arctan2(x_axis[1], x_axis[0]))


def look_at_xyaxes(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """MuJoCo camera `xyaxes` (6,) for a camera at `pos` looking at `target` with world z up."""
    forward = np.asarray(target, np.float64) - np.asarray(pos, np.float64)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return np.concatenate([right, up])  # MuJoCo cameras look along -z = forward
