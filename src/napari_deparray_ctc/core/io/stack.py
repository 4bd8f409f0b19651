"""Stacking one channel of many cells into an (N, Y, X) array for display."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_deparray_ctc.core.io.types import Cell


def common_shape(shapes: list[tuple[int, int]]) -> tuple[int, int]:
    """Per-axis maximum over the cells whose area is not an outlier (> 4× the median area)."""
    areas = np.array([h * w for h, w in shapes], dtype=float)
    typical = [s for s, a in zip(shapes, areas, strict=True) if a <= 4 * np.median(areas)]
    return max(h for h, _ in typical), max(w for _, w in typical)


def _border_median(image: np.ndarray) -> float:
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    if border.dtype.kind == "f":
        border = border[np.isfinite(border)]
        if border.size == 0:
            return 0.0
    return float(np.median(border))


def fit_plane(image: np.ndarray, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """Centre-crop and/or pad ``image`` to ``shape`` (padding with its border median)."""
    height, width = image.shape
    target_h, target_w = shape
    top = max(0, (height - target_h) // 2)
    left = max(0, (width - target_w) // 2)
    cropped = image[top : top + target_h, left : left + target_w]
    if cropped.shape == shape:
        return cropped.astype(dtype, copy=False)
    fill = _border_median(image)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        fill = min(max(round(fill), info.min), info.max)
    out = np.full(shape, fill, dtype=dtype)
    pad_top = (target_h - cropped.shape[0]) // 2
    pad_left = (target_w - cropped.shape[1]) // 2
    out[pad_top : pad_top + cropped.shape[0], pad_left : pad_left + cropped.shape[1]] = cropped
    return out


def stack_channel(
    cells: Sequence[Cell], channel: str, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Stack one channel of many cells into an (N, Y, X) array.

    Parameters
    ----------
    cells
        Cells (e.g. ``export.cells``); their ``original_shape`` keeps the size before fitting.
    channel
        Canonical channel name.
    shape
        ``(Y, X)`` of the result. Default: the per-axis maximum over the cells, ignoring cells
        more than 4× the median area (those are centre-cropped instead, so one huge image does
        not blow up the stack).

    Returns
    -------
    numpy.ndarray
        ``(N, Y, X)`` in the common dtype of the cells' planes. Smaller images are centred and
        padded with the median of their border (the background); larger ones are centre-cropped.
        A cell without this channel gives a plane of zeros.
    """
    planes = [cell.channels.get(channel) for cell in cells]
    present = [p for p in planes if p is not None]
    if not present:
        raise ValueError(f"no cell has a {channel!r} channel")
    if shape is None:
        shape = common_shape([p.shape for p in present])
    shape = (int(shape[0]), int(shape[1]))
    dtype = np.result_type(*{p.dtype for p in present})
    out = np.zeros((len(cells), *shape), dtype=dtype)
    for index, plane in enumerate(planes):
        if plane is not None:
            out[index] = plane if plane.shape == shape else fit_plane(plane, shape, dtype)
    return out
