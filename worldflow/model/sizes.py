"""The size table (DESIGN.md §5): hidden / depth / heads, as SiT names them, plus a CPU debug size."""

from __future__ import annotations

from worldflow.errors import ConfigError

# name -> (hidden, depth, heads). S/B/L/XL are SiT's (Ma et al. 2024, Table 1).
SIZES: dict[str, tuple[int, int, int]] = {
    "debug": (128, 6, 4),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1152, 28, 16),
}


def size_spec(name: str) -> tuple[int, int, int]:
    if name not in SIZES:
        raise ConfigError(f"unknown model size {name!r}; choose one of {sorted(SIZES)}")
    return SIZES[name]


def default_blocks(depth: int) -> tuple[int, int]:
    """Self-Flow's student/teacher blocks (1-indexed): l ~ 0.3 depth, k ~ 0.7 depth.

    For depth 28 this gives (8, 20), the official README's numbers.
    """
    student = max(1, round(0.3 * depth))
    teacher = min(depth, max(student + 1, round(0.7 * depth)))
    return student, teacher
