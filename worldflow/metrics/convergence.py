"""Summaries for the convergence study (DESIGN.md §6): steps to reach a target FD, seed spread."""

from __future__ import annotations

import math

import numpy as np


def steps_to_reach(steps: list[int], values: list[float], target: float) -> float:
    """First step at which a decreasing metric reaches `target`, linearly interpolated between evaluations;
    inf if it never does."""
    for i, (s, v) in enumerate(zip(steps, values)):
        if v <= target:
            if i == 0:
                return float(s)
            s0, v0 = steps[i - 1], values[i - 1]
            return float(s0 + (v0 - target) / (v0 - v) * (s - s0)) if v0 != v else float(s)
    return math.inf


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if len(finite) < len(a):
        return math.inf, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0
