"""``stack_channel``: many cells of one channel into an (N, Y, X) array for display."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deparray_ctc.core.io import (
    Cell,
    stack_channel,
)


def _cell(cell_id: str, image: np.ndarray) -> Cell:
    return Cell(cell_id, {"BF": image}, f"{cell_id}.tif", original_shape=image.shape)


def test_stack_channel_pads_with_the_border_median_and_centre_crops() -> None:
    small = np.full((4, 4), 7, "uint16")
    small[1:3, 1:3] = 100
    large = np.arange(64, dtype="uint16").reshape(8, 8)
    stacked = stack_channel([_cell("a", small), _cell("b", large)], "BF")
    assert stacked.shape == (2, 8, 8) and stacked.dtype == np.uint16
    np.testing.assert_array_equal(stacked[1], large)
    np.testing.assert_array_equal(stacked[0, 2:6, 2:6], small)
    assert (stacked[0, :2] == 7).all() and (stacked[0, :, :2] == 7).all()
    cropped = stack_channel([_cell("a", small), _cell("b", large)], "BF", shape=(4, 4))
    np.testing.assert_array_equal(cropped[1], large[2:6, 2:6])
    np.testing.assert_array_equal(cropped[0], small)


def test_stack_channel_ignores_an_outlier_size_and_fills_missing_channels() -> None:
    cells = [_cell(f"c{i}", np.ones((10, 10), "uint8")) for i in range(5)]
    cells.append(_cell("huge", np.ones((200, 200), "uint8")))
    cells.append(Cell("nobf", {"DAPI": np.ones((10, 10), "uint8")}, "x.tif"))
    stacked = stack_channel(cells, "BF")
    assert stacked.shape == (7, 10, 10)
    assert (stacked[6] == 0).all()
    with pytest.raises(ValueError, match="no cell has a 'PE' channel"):
        stack_channel(cells, "PE")
