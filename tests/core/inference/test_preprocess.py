"""The network input: physical-scale normalisation when the pixel size is known."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deparray_ctc.core.inference.preprocess import (
    DEFAULT_NORMALISATION,
    check_normalisation,
    pixel_size_list,
    prepare_batch,
)


def _disc(side: int, radius_px: float) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side]
    c = (side - 1) / 2
    return (1000 + 2000 * (np.hypot(yy - c, xx - c) < radius_px)).astype(np.uint16)


def _radius(plane: np.ndarray) -> float:
    return float(np.sqrt((plane > 0.5).sum() / np.pi))


def test_cells_have_the_same_size_in_pixels_whatever_the_camera():
    spec = {**DEFAULT_NORMALISATION, "pixel_size_um": 0.55}
    # a 10 um cell: 18.2 px at 0.55 um/px (64 px crop), 23.8 px at 0.42 um/px (64 px crop)
    coarse = _disc(64, 5 / 0.55)
    fine = _disc(64, 5 / 0.42)
    batch = prepare_batch([coarse, fine], 64, spec, pixel_sizes=[0.55, 0.42])
    assert batch.shape == (2, 1, 64, 64)
    assert _radius(batch[0, 0].numpy()) == pytest.approx(_radius(batch[1, 0].numpy()), rel=0.05)
    # without a canonical size (or a pixel size) the crop is resized whole: sizes differ
    plain = prepare_batch([coarse, fine], 64, DEFAULT_NORMALISATION, pixel_sizes=[0.55, 0.42])
    assert _radius(plain[1, 0].numpy()) > 1.2 * _radius(plain[0, 0].numpy())
    unknown = prepare_batch([fine], 64, spec, pixel_sizes=[None])
    np.testing.assert_allclose(unknown[0], plain[1])


def test_a_large_field_is_cropped_and_a_small_one_padded_with_background():
    spec = {**DEFAULT_NORMALISATION, "pixel_size_um": 0.5}
    big = prepare_batch([_disc(128, 10)], 64, spec, pixel_sizes=[0.5])  # 128 px -> crop
    small = prepare_batch([_disc(32, 10)], 64, spec, pixel_sizes=[0.5])  # 32 px -> pad
    assert big.shape == small.shape == (1, 1, 64, 64)
    assert _radius(big[0, 0].numpy()) == pytest.approx(10, rel=0.05)
    assert _radius(small[0, 0].numpy()) == pytest.approx(10, rel=0.05)
    assert float(small[0, 0, 0, 0]) == pytest.approx(0.0)  # padding = the background


def test_pixel_size_lists_and_spec_checks():
    assert pixel_size_list(None, 2) == [None, None]
    assert pixel_size_list(0.5, 2) == [0.5, 0.5]
    assert pixel_size_list([0.5, None], 2) == [0.5, None]
    with pytest.raises(ValueError, match="2 pixel sizes given for 3 images"):
        pixel_size_list([0.5, 0.6], 3)
    assert check_normalisation(None)["pixel_size_um"] is None
    for bad in (-1, 0, "big", float("nan")):
        with pytest.raises(ValueError, match="canonical pixel size"):
            check_normalisation({"pixel_size_um": bad})
