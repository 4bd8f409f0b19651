"""Shared helpers of the core reader tests (a plain module: see ``tests/core/tiff_planes.py``)."""

from __future__ import annotations

import numpy as np

from napari_deparray_ctc.core.io import Cell

CHANNELS = ("BF", "DAPI", "PE", "APC")


def assert_cell_matches(
    cell: Cell, planes: dict[str, np.ndarray], order: list[str] | None = None
) -> None:
    """Same channel names (in display order), dtypes and pixels."""
    if order is None:
        order = [c for c in CHANNELS if c in planes] + [c for c in planes if c not in CHANNELS]
    assert list(cell.channels) == order
    for name, expected in planes.items():
        got = cell.channels[name]
        assert got.dtype == expected.dtype.newbyteorder("=")
        assert got.dtype.isnative
        np.testing.assert_array_equal(got, expected)
    assert cell.original_shape == next(iter(planes.values())).shape


def stack_data(n_cells: int = 5, channels=CHANNELS, dtype="uint16") -> np.ndarray:
    from tiff_planes import make_planes

    return np.stack(
        [
            np.stack(list(make_planes(channels, dtype=dtype, cell=i).values()))
            for i in range(n_cells)
        ]
    )
