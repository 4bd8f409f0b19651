"""Synthetic cells together with the generator's own mask of each cell (for saliency checks).

``core.synth`` draws each cell's outline in ``scene.add_cell`` and keeps only the images. This
helper records the first mask ``add_cell`` returns while each cell is rendered (the cell
itself; a neighbour, when there is one, is drawn after it), without changing the generator:
the images are byte-identical to ``synth_cells`` with the same arguments. Used by
``benchmarks/bench_explain.py`` and ``tests/core/test_explain.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np


@contextlib.contextmanager
def _recording() -> Iterator[list]:
    from napari_deparray_ctc.core.synth import cells as cells_module
    from napari_deparray_ctc.core.synth import imaging

    masks: list = []
    current: dict[str, Any] = {}
    original_add, original_render = imaging.add_cell, cells_module.render_cell

    def add_cell(*args, **kwargs):
        result = original_add(*args, **kwargs)
        if "mask" not in current:
            current["mask"] = np.asarray(result[0]) > 0.5
        return result

    def render_cell(*args, **kwargs):
        current.clear()
        cell = original_render(*args, **kwargs)
        masks.append(current.get("mask"))
        return cell

    imaging.add_cell, cells_module.render_cell = add_cell, render_cell
    try:
        yield masks
    finally:
        imaging.add_cell, cells_module.render_cell = original_add, original_render


def synth_cells_with_masks(n: int, **kwargs: Any) -> tuple[list, list[np.ndarray]]:
    """``core.synth.synth_cells(n, **kwargs)`` and each cell's boolean mask (same order)."""
    from napari_deparray_ctc.core.synth import synth_cells

    with _recording() as masks:
        cells = synth_cells(n, **kwargs)
    if len(masks) != len(cells) or any(m is None for m in masks):
        raise RuntimeError("the generator's cell masks could not be recorded")
    return cells, masks


def inside_fraction(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Share of a saliency map (summing to 1) that falls on the cell's pixels."""
    return float(saliency[mask].sum() / max(float(saliency.sum()), 1e-12))
