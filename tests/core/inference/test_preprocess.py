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


# --------------------------------------------------------------------------------------------
# the scale rule (issue 20): rescale only when the model and the image both know their size
# --------------------------------------------------------------------------------------------


def test_the_scale_rule_rescales_only_when_both_pixel_sizes_are_known():
    from napari_deparray_ctc.core.inference.preprocess import input_scale

    assert input_scale(None, None) is None
    assert input_scale(None, 0.62) is None  # the model knows no scale: the file is ignored
    assert input_scale(0.55, None) is None  # the cell declares none: resized whole
    assert input_scale(0.55, 0.62) == pytest.approx(0.62 / 0.55)
    for nonsense in (0, -1, float("nan"), float("inf"), True, "0.5"):
        assert input_scale(0.55, nonsense) is None
        assert input_scale(nonsense, 0.55) is None


def test_a_model_trained_without_a_pixel_size_resizes_declared_cells_whole():
    """Issue 20: training cells declared nothing; the new camera's cells declare 0.62 µm."""
    from napari_deparray_ctc.core.inference.preprocess import training_normalisation

    spec = training_normalisation(0.55, None, n_cells=10)  # what crossfit stores
    assert spec["pixel_size_um"] is None
    assert spec["training_pixel_sizes"] == {"known": 0, "unknown": 10}
    cell = _disc(80, 14)
    declared = prepare_batch([cell], 64, spec, pixel_sizes=[0.62])
    undeclared = prepare_batch([cell], 64, spec, pixel_sizes=[None])
    np.testing.assert_array_equal(declared.numpy(), undeclared.numpy())
    # the bug: rescaling to 0.55 µm and cutting to 64 px made the cell ~1.4x larger
    buggy = prepare_batch([cell], 64, {**spec, "pixel_size_um": 0.55}, pixel_sizes=[0.62])
    assert _radius(buggy[0, 0].numpy()) > 1.3 * _radius(declared[0, 0].numpy())


def test_the_model_pixel_size_is_the_one_training_used():
    from napari_deparray_ctc.core.inference.preprocess import (
        model_pixel_size,
        training_normalisation,
    )

    assert model_pixel_size(0.55, None) is None
    assert model_pixel_size(0.55, [None, None]) is None
    assert model_pixel_size(0.55, [None, 0.6]) == 0.55
    assert model_pixel_size(None, [0.6, 0.6]) is None
    mixed = training_normalisation(0.55, [None, 0.6, 0.42])
    assert mixed["pixel_size_um"] == 0.55
    assert mixed["training_pixel_sizes"] == {"known": 2, "unknown": 1}
    assert check_normalisation(mixed) == mixed  # stored and read back as it is
    with pytest.raises(ValueError, match="training cells had a pixel size"):
        check_normalisation({"training_pixel_sizes": {"known": -1, "unknown": 0}})


def test_a_note_when_cells_without_a_pixel_size_meet_a_model_that_never_saw_whole_crops():
    from napari_deparray_ctc.core.inference.preprocess import scale_note, training_normalisation

    all_known = training_normalisation(0.55, [0.55, 0.55])
    note = scale_note(all_known, [0.55, None, None])
    assert note is not None and note.startswith("2 of 3 cells declare no pixel size")
    assert "--pixel-size" in note
    assert scale_note(all_known, [0.55, 0.6]) is None
    assert scale_note(training_normalisation(0.55, [0.55, None]), [None]) is None  # mixed
    assert scale_note(training_normalisation(None, [0.55]), [None]) is None  # whole crops
    assert scale_note({"pixel_size_um": 0.55}, [None]) is None  # older file: unknown


def test_prepare_image_is_one_row_of_prepare_batch():
    from napari_deparray_ctc.core.inference.preprocess import prepare_image

    spec = {**DEFAULT_NORMALISATION, "pixel_size_um": 0.5}
    images = [_disc(70, 12), _disc(50, 9)]
    batch = prepare_batch(images, 64, spec, pixel_sizes=[0.6, None])
    for row, (img, size) in enumerate(zip(images, [0.6, None], strict=True)):
        np.testing.assert_array_equal(
            prepare_image(img, 64, spec, size).numpy(), batch[row : row + 1]
        )


# ------------------------------------------------------------------ flat-field correction


def test_flatten_illumination_removes_a_tilt_and_keeps_the_level():
    from napari_deparray_ctc.core.inference.preprocess import flatten_illumination

    _yy, xx = np.mgrid[:48, :48].astype(np.float32)
    illumination = 1000 * (1 + 0.4 * (xx - 23.5) / 48)  # 40 % brighter on one side
    cell = np.ones((48, 48), np.float32)
    cell[16:32, 16:32] = 0.5  # the cell transmits half
    flat = flatten_illumination(cell * illumination)
    assert flat.dtype == np.float32
    background = np.concatenate([flat[:3].ravel(), flat[-3:].ravel()])
    assert background.std() / background.mean() < 0.01  # the tilt is gone
    assert background.mean() == pytest.approx(1000, rel=0.01)
    assert flat[24, 24] == pytest.approx(500, rel=0.05)


def test_flatten_illumination_subtracts_a_plane_that_reaches_zero_and_keeps_nan():
    from napari_deparray_ctc.core.inference.preprocess import flatten_illumination

    _yy, xx = np.mgrid[:32, :32].astype(np.float32)
    dark = 10 * (xx - 15.5) / 32  # a plane through zero: no division by it
    image = dark.copy()
    image[10, 10] = np.nan
    flat = flatten_illumination(image)
    assert np.isnan(flat[10, 10])
    finite = np.isfinite(flat)
    assert np.nanstd(flat[finite]) < 1e-3
    tiny = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_array_equal(flatten_illumination(tiny), tiny)  # too small for a ring


def test_the_flat_field_spec_is_checked_and_applied_only_when_asked():
    from napari_deparray_ctc.core.inference.preprocess import (
        check_normalisation,
        prepare_batch,
        training_normalisation,
    )

    with pytest.raises(ValueError, match="flat-field"):
        check_normalisation({"flat_field": "vignette"})
    assert check_normalisation(None)["flat_field"] is None  # older model files: none
    spec = training_normalisation(None, None, 4, flat_field=True)
    assert spec["flat_field"] == "plane"
    _yy, xx = np.mgrid[:64, :64].astype(np.float32)
    tilted = 1000 + 600 * xx / 64
    plain = prepare_batch([tilted], 32, training_normalisation(None, None, 1))[0, 0]
    flat = prepare_batch([tilted], 32, spec)[0, 0]
    assert float(plain.std()) > 0.2  # a ramp from 0 to 1
    assert float(flat.std()) < float(plain.std()) / 2
