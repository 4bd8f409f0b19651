"""Calibration of the logit, the threshold rules, the learned check and ECE."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deparray_ctc.core.evaluation.metrics import expected_calibration_error
from napari_deparray_ctc.core.training.calibration import (
    apply_calibration,
    assess_learning,
    choose_threshold,
    fit_calibration,
)


def _scores(n: int = 2000, seed: int = 0, prevalence: float = 0.25):
    """Logits of a shifted, over-confident model: true log-odds z, reported 3 z + 2."""
    rng = np.random.default_rng(seed)
    z = rng.normal(np.log(prevalence / (1 - prevalence)), 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return 3 * z + 2, y


def test_platt_recovers_a_known_distortion():
    logits, y = _scores()
    spec = fit_calibration(logits, y, "platt")
    assert spec["method"] == "platt" and spec["n_cells"] == len(y)
    assert spec["a"] == pytest.approx(1 / 3, rel=0.15)
    assert spec["b"] == pytest.approx(-2 / 3, abs=0.25)
    raw = 1 / (1 + np.exp(-logits))
    calibrated = apply_calibration(spec, logits)
    assert expected_calibration_error(y, calibrated) < 0.03 < expected_calibration_error(y, raw)
    assert np.all(np.diff(calibrated[np.argsort(logits)]) >= 0)  # never reorders cells


def test_isotonic_and_none():
    logits, y = _scores()
    iso = fit_calibration(logits, y, "isotonic")
    p = apply_calibration(iso, logits)
    assert iso["method"] == "isotonic" and 0 <= p.min() and p.max() <= 1
    assert expected_calibration_error(y, p) < 0.03
    none = fit_calibration(logits, y, "none")
    np.testing.assert_allclose(apply_calibration(none, logits), 1 / (1 + np.exp(-logits)))
    np.testing.assert_allclose(apply_calibration(None, [0.0]), [0.5])
    with pytest.raises(ValueError, match="not known"):
        fit_calibration(logits, y, "magic")


def test_platt_stays_finite_on_perfectly_separated_cells():
    spec = fit_calibration([-5, -4, -3, 3, 4, 5], [0, 0, 0, 1, 1, 1], "platt")
    assert np.isfinite([spec["a"], spec["b"]]).all() and spec["a"] > 0


def test_threshold_rules():
    logits, y = _scores()
    p = apply_calibration(fit_calibration(logits, y), logits)
    t_f1, f1 = choose_threshold(y, p, "f1")
    t_half, f1_again = choose_threshold(y, p, "half_f1")
    assert f1 == f1_again and t_half == pytest.approx(f1 / 2)
    # for calibrated scores the F1-optimal threshold is close to half the best F1
    assert abs(t_f1 - t_half) < 0.08
    with pytest.raises(ValueError, match="not known"):
        choose_threshold(y, p, "median")


def test_learned_check():
    logits, y = _scores(400)
    p = apply_calibration(fit_calibration(logits, y), logits)
    good = assess_learning(y, p, choose_threshold(y, p)[0])
    assert good["learned"] and good["warning"] is None and good["p_value"] < 1e-6
    rng = np.random.default_rng(1)
    noise = rng.random(400)
    bad = assess_learning(y, noise, choose_threshold(y, noise)[0])
    assert not bad["learned"] and "learned nothing" in bad["warning"]
    assert bad["trivial"]["all_ctc_f1"] == pytest.approx(2 * y.mean() / (1 + y.mean()))
    tiny = assess_learning([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1], 0.5)
    assert not tiny["learned"] and "Too few labelled cells (2 CTC, 2 WBC)" in tiny["warning"]


def test_ece_is_zero_when_calibrated_and_large_when_not():
    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.0)
    assert expected_calibration_error([0, 0, 0, 0], [0.9, 0.9, 0.9, 0.9]) == pytest.approx(0.9)
