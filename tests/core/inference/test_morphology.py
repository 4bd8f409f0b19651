"""Morphology features of the network's input (core.inference.morphology)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_deparray_ctc.core.inference.morphology import MORPHOLOGY_FEATURES, morphology_features

SIZE = 64
COLUMN = {name: i for i, name in enumerate(MORPHOLOGY_FEATURES)}


def ellipse(radius: float, stretch: float = 1.0, shift: float = 0.0, rim: bool = False):
    """A grey background (0.5) with a brighter ellipse (0.8); optionally a dark rim."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    c = (SIZE - 1) / 2
    r = np.hypot((yy - c) / stretch, xx - c - shift)
    image = np.full((SIZE, SIZE), 0.5, np.float32)
    image[r < radius] = 0.8
    if rim:
        image[(r < radius) & (r > radius - 2)] = 0.1
    return image


def features_of(*images: np.ndarray) -> np.ndarray:
    return morphology_features(torch.from_numpy(np.stack(images)[:, None]))


def test_area_grows_with_the_cell_and_matches_the_disc():
    small, large = features_of(ellipse(8), ellipse(16))
    assert np.exp(small[COLUMN["log_area"]]) == pytest.approx(np.pi * 8**2 / SIZE**2, rel=0.1)
    assert np.exp(large[COLUMN["log_area"]]) == pytest.approx(np.pi * 16**2 / SIZE**2, rel=0.1)


def test_eccentricity_is_zero_for_a_disc_and_that_of_the_ellipse_otherwise():
    disc, stretched = features_of(ellipse(12), ellipse(12, stretch=2.0))
    assert disc[COLUMN["eccentricity"]] < 0.1
    assert stretched[COLUMN["eccentricity"]] == pytest.approx(np.sqrt(1 - 1 / 4), abs=0.05)


def test_contrast_rim_and_offset_are_read_from_the_cell():
    plain, rimmed, moved = features_of(ellipse(12), ellipse(12, rim=True), ellipse(10, shift=8))
    assert plain[COLUMN["inner_contrast"]] == pytest.approx(0.3, abs=0.02)
    assert plain[COLUMN["rim_contrast"]] > 0
    assert rimmed[COLUMN["rim_contrast"]] < 0  # the dark rim is the boundary
    assert plain[COLUMN["offset"]] < 0.01
    assert moved[COLUMN["offset"]] == pytest.approx(8 / SIZE, abs=0.02)


def test_images_of_one_batch_do_not_touch_each_other_and_an_empty_crop_gives_zeros():
    together = features_of(ellipse(8), np.full((SIZE, SIZE), 0.3, np.float32), ellipse(16))
    alone = np.concatenate([features_of(ellipse(8)), features_of(ellipse(16))])
    np.testing.assert_allclose(together[[0, 2]], alone, atol=1e-9)
    assert not together[1].any()


def test_a_noisy_cell_away_from_clutter_is_the_one_measured():
    rng = np.random.default_rng(0)
    image = ellipse(12) + rng.normal(0, 0.02, (SIZE, SIZE)).astype(np.float32)
    image[2:6, 2:6] = 1.0  # a speck in a corner
    (row,) = features_of(np.clip(image, 0, 1))
    assert np.exp(row[COLUMN["log_area"]]) == pytest.approx(np.pi * 12**2 / SIZE**2, rel=0.15)


def test_a_batch_that_is_not_square_images_is_refused():
    with pytest.raises(ValueError, match="prepared batch"):
        morphology_features(np.zeros((2, 1, 8, 9)))
    assert morphology_features(np.zeros((0, 1, 8, 8))).shape == (0, len(MORPHOLOGY_FEATURES))
