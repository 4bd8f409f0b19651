"""The shift warning (``core.shift``): compact summary, fires on other instruments, quiet in-domain."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_deparray_ctc.core.inference.shift import (
    FEATURE_NAMES,
    image_features,
    shift_check,
    shift_warning,
    training_feature_summary,
)
from napari_deparray_ctc.core.synth import domain, synth_cells


def _bf(cells) -> list[np.ndarray]:
    return [c.channels["BF"] for c in cells]


@pytest.fixture(scope="module")
def metadata() -> dict:
    cells = synth_cells(160, ctc_fraction=0.25, seed=31, n_samples=4)
    summary = training_feature_summary(_bf(cells), [c.sample for c in cells])
    return {"feature_summary": summary}


def _domain_cells(name: str, n: int, seed: int):
    d = domain(name)
    return synth_cells(n, ctc_fraction=0.2, seed=seed, optics=d.optics, image_size=d.image_size)


def test_summary_is_small_and_json_safe(metadata):
    summary = metadata["feature_summary"]
    text = json.dumps(summary)
    assert len(text) < 3000
    assert summary["names"] == list(FEATURE_NAMES)
    assert summary["n_cells"] == 160 and summary["n_groups"] == 4
    assert len(summary["covariance"]) == len(FEATURE_NAMES)


def test_quiet_on_new_samples_of_the_training_instrument(metadata):
    for seed in (500, 501, 502):
        result = shift_check(_bf(_domain_cells("reference", 40, seed)), metadata)
        assert not result["fire"], result
        assert shift_warning(_bf(_domain_cells("reference", 40, seed)), metadata) is None


@pytest.mark.parametrize("name", ["uneven_background", "low_light_8bit", "defocus"])
def test_fires_on_another_instrument_with_the_figures(metadata, name):
    cells = _domain_cells(name, 40, 600)
    message = shift_warning(_bf(cells), metadata)
    assert message is not None
    assert "40 cells" in message and "160 cells" in message and "%" in message
    result = shift_check(image_features(_bf(cells)), metadata)  # features work as well
    assert result["fire"] and result["warning"] == message
    assert result["mean_shift"] > 2.0
    # the command line's advice names its commands; the widget's names its own controls
    assert "(deparray-ctc calibrate)" in message
    in_napari = shift_warning(_bf(cells), metadata, remedy="napari")
    assert "'Calibrate to this instrument'" in in_napari and "deparray-ctc" not in in_napari
    assert "'Start from the current model'" in in_napari


def test_too_few_cells_or_no_summary_say_nothing(metadata):
    few = _bf(_domain_cells("uneven_background", 5, 700))
    assert shift_warning(few, metadata) is None
    assert shift_check(few, {}) is None
    assert shift_check(few, {"feature_summary": {"version": 999}}) is None
    stack = np.stack(_bf(_domain_cells("reference", 25, 701)))
    assert shift_check(stack, metadata)["n_cells"] == 25


def test_features_of_any_size_and_bad_images():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 4000, s).astype(np.uint16) for s in [(64, 64), (40, 90), (128, 128)]]
    features = image_features(images)
    assert features.shape == (3, len(FEATURE_NAMES)) and np.isfinite(features).all()
    with pytest.raises(ValueError, match="2-D"):
        image_features([np.zeros((2, 3, 4))])
