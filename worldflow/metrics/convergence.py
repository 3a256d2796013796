"""Summaries for the convergence study (DESIGN.md §6): crossings of a target FD, an iso-FD ladder, plateau
checks and seed spread."""

from __future__ import annotations

import math

import numpy as np


def crossing(steps: list[int], values: list[float], target: float, at: list[float]) -> float:
    """`at` (e.g. steps, or training seconds at each evaluation) where `values` first reach `target`,
    interpolated linearly between the two evaluations around the crossing; inf if never."""
    for i, v in enumerate(values):
        if v <= target:
            if i == 0:
                return float(at[0])
            v0 = values[i - 1]
            frac = (v0 - target) / (v0 - v) if v0 != v else 1.0
            return float(at[i - 1] + frac * (at[i] - at[i - 1]))
    return math.inf


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if len(finite) < len(a):
        return math.inf, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def relative_change(steps: list[int], values: list[float], window: int) -> float:
    """|v(T) − v(T − window)| / v(T − window) at the last evaluation T, with v(T − window) interpolated;
    nan when the curve is shorter than the window."""
    if not steps or steps[-1] - steps[0] < window:
        return math.nan
    before = float(np.interp(steps[-1] - window, steps, values))
    return abs(values[-1] - before) / before
