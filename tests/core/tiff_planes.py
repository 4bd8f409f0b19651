"""Seeded, distinct test planes shared by the core reader tests and their conftest.

A plain module rather than ``from conftest import ...``: several test folders have a
``conftest.py``, so the name ``conftest`` is ambiguous once they are all collected.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_CHANNELS = ("BF", "DAPI", "PE", "APC")


def make_planes(
    channels: Sequence[str] = DEFAULT_CHANNELS,
    shape: tuple[int, int] = (12, 10),
    dtype: str = "uint16",
    seed: int = 0,
    cell: int = 0,
) -> dict[str, np.ndarray]:
    """One small, distinct plane per channel name."""
    rng = np.random.default_rng(seed + 7919 * cell)
    dt = np.dtype(dtype)
    planes = {}
    for index, name in enumerate(channels):
        base = rng.integers(0, 90, size=shape).astype(np.float64) + 1000 * index + 100 * cell
        if dt.kind == "u" and dt.itemsize == 1:
            base = base % 250
        if dt.kind == "f":
            planes[name] = (base / 7.0).astype(dt)
        else:
            planes[name] = base.astype(dt)
    return planes
