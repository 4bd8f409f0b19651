"""Per-sample counts and their 95 % interval (``core.counts``)."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest

from napari_deparray_ctc.core.inference.counts import (
    NOT_CALIBRATED,
    SUMMARY_COLUMNS,
    calibration_status,
    count_interval,
    error_rate_interval,
    poisson_binomial_interval,
    poisson_binomial_pmf,
    sample_counts,
    validation_confusion,
    write_sample_counts,
)

#: a model's validation counts: recall 0.8, false-positive rate 0.05
CONFUSION = {"tp": 80, "fn": 20, "fp": 15, "tn": 285, "threshold": 0.5}
META = {
    "threshold": 0.5,
    "metrics": {
        "threshold": 0.5,
        "confusion_matrix": {k: CONFUSION[k] for k in ("tp", "fn", "fp", "tn")},
    },
}


def test_poisson_binomial_is_exact():
    p = [0.1, 0.5, 0.9, 0.3, 1.0, 0.0]
    brute = np.zeros(len(p) + 1)
    for outcome in itertools.product([0, 1], repeat=len(p)):
        brute[sum(outcome)] += np.prod([q if o else 1 - q for q, o in zip(p, outcome, strict=True)])
    pmf = poisson_binomial_pmf(p)
    np.testing.assert_allclose(pmf, brute[: len(pmf)], atol=1e-12)
    assert pmf.sum() == pytest.approx(1.0)


def test_probability_interval_covers_95_percent_when_the_calibration_holds():
    rng = np.random.default_rng(0)
    hits = 0
    trials = 400
    for _ in range(trials):
        p = rng.beta(0.3, 2.0, size=150)
        truth = int(np.sum(rng.random(150) < p))
        low, high = poisson_binomial_interval(p)
        hits += low <= truth <= high
    assert 0.92 <= hits / trials <= 0.99


def test_error_rate_interval_covers_the_true_count():
    rng = np.random.default_rng(1)
    hits = 0
    trials = 60
    for _ in range(trials):
        n, truth = 300, int(rng.integers(0, 40))
        recall = rng.beta(CONFUSION["tp"] + 0.5, CONFUSION["fn"] + 0.5)
        fpr = rng.beta(CONFUSION["fp"] + 0.5, CONFUSION["tn"] + 0.5)
        calls = rng.binomial(truth, recall) + rng.binomial(n - truth, fpr)
        low, high = error_rate_interval(n, calls, CONFUSION)
        hits += low <= truth <= high
    assert hits / trials >= 0.88


def test_a_patient_without_ctc_gets_no_confident_nonzero_count():
    # 300 WBCs: 15 false positives expected at a 5 % false-positive rate, and probabilities
    # that over-call a little (a calibration fitted at 25 % prevalence)
    rng = np.random.default_rng(2)
    p = np.clip(rng.beta(0.6, 9.0, size=300), 0, 1)
    p[:15] = rng.uniform(0.5, 0.8, size=15)  # the false positives
    low, high = count_interval(p, CONFUSION)
    assert low == 0
    assert high >= 1
    # and a large patient with many CTCs gets a clearly nonzero interval
    p_many = np.concatenate([rng.uniform(0.7, 1.0, 60), rng.uniform(0.0, 0.1, 240)])
    low_many, high_many = count_interval(p_many, CONFUSION)
    assert 30 < low_many <= 60 <= high_many


def test_many_cells_use_the_normal_approximation_quickly():
    low, high = error_rate_interval(20000, 1400, CONFUSION)
    # T = (1400 - 0.05 * 20000) / (0.8 - 0.05) ~ 533; the false-positive rate is known to
    # about +-0.013 from 300 validation WBCs, i.e. +-260 false positives among 20,000 cells
    assert low < 533 < high
    assert 300 < high - low < 1500


def test_validation_confusion_from_counts_or_from_precision_and_recall():
    assert validation_confusion(META) == CONFUSION
    meta = {
        "threshold": 0.4,
        "metrics": {"precision": 0.8, "recall": 0.8, "n_ctc": 100, "n_wbc": 300},
    }
    assert validation_confusion(meta) == {"tp": 80, "fn": 20, "fp": 20, "tn": 280, "threshold": 0.4}
    assert validation_confusion({"threshold": 0.5}) is None
    # no CTC in validation: the rates cannot be estimated
    assert (
        validation_confusion(
            {
                "metrics": {
                    "threshold": 0.5,
                    "confusion_matrix": {"tp": 0, "fn": 0, "fp": 3, "tn": 9},
                }
            }
        )
        is None
    )


def test_sample_counts_rows(tmp_path):
    rng = np.random.default_rng(3)
    samples = ["A"] * 50 + [None] * 30 + ["B"] * 20
    p = rng.uniform(0, 1, size=100)
    rows = sample_counts(samples, p, 0.6, META, default_sample="export1")
    assert [r["sample"] for r in rows] == ["A", "export1", "B"]
    assert [r["n_cells"] for r in rows] == [50, 30, 20]
    for row, part in zip(rows, (p[:50], p[50:80], p[80:]), strict=True):
        assert set(row) == set(SUMMARY_COLUMNS)
        assert row["n_called_ctc"] == int(np.sum(part >= 0.6))
        assert row["expected_ctc"] == pytest.approx(part.sum())
        assert 0 <= row["ctc_low"] <= row["expected_ctc"] <= row["ctc_high"] <= row["n_cells"]
        assert row["threshold"] == 0.6
    # the interval uses the calls at the validation threshold, not the display threshold
    again = sample_counts(samples, p, 0.9, META, default_sample="export1")
    assert [(r["ctc_low"], r["ctc_high"]) for r in again] == [
        (r["ctc_low"], r["ctc_high"]) for r in rows
    ]
    out = tmp_path / "summary.csv"
    assert write_sample_counts(out, rows) == 3
    with open(out, newline="") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == list(SUMMARY_COLUMNS)
    assert read[1]["sample"] == "export1" and int(read[1]["n_cells"]) == 30


def test_counts_say_what_they_are_calibrated_for():
    p = np.full(10, 0.3)
    assert {r["calibration"] for r in sample_counts([None] * 10, p, 0.5, META)} == {
        "training instrument"
    }
    site = {**META, "site_profile": {"data_name": "Lab B export"}}
    assert sample_counts([None] * 10, p, 0.5, site)[0]["calibration"] == "site: Lab B export"
    for metadata in (META, site):
        rows = sample_counts(["a"] * 5 + ["b"] * 5, p, 0.5, metadata, shifted=True)
        assert [r["calibration"] for r in rows] == [NOT_CALIBRATED, NOT_CALIBRATED]
    assert calibration_status({"site_profile": {}}, False) == "site: calibrated site"


def test_without_validation_counts_the_probability_interval_is_used():
    p = np.full(100, 0.1)
    rows = sample_counts([None] * 100, p, 0.5, {"threshold": 0.5})
    assert (rows[0]["ctc_low"], rows[0]["ctc_high"]) == poisson_binomial_interval(p)
    with pytest.raises(ValueError, match="sample ids"):
        sample_counts(["a"], p, 0.5, {})
