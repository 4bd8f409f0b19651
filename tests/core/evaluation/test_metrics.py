"""Metrics: CTC-positive precision/recall/F1, confusion matrix, PR curve, threshold choice."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_deparray_ctc.core.evaluation.metrics import (
    best_threshold,
    classification_metrics,
    confusion,
    pr_curve,
    precision_recall_f1,
    summarise_folds,
    to_binary,
)


def test_label_forms_are_equivalent():
    strings = ["CTC", "wbc", "WBC", "ctc "]
    assert to_binary(strings).tolist() == [1, 0, 0, 1]
    assert to_binary([True, False, False, True]).tolist() == [1, 0, 0, 1]
    assert to_binary(np.array([1, 0, 0, 1])).tolist() == [1, 0, 0, 1]
    with pytest.raises(ValueError, match="neither"):
        to_binary(["CTC", None])
    with pytest.raises(ValueError, match="neither"):
        to_binary([2])


def test_precision_recall_f1_by_hand():
    # TP=2 (cells 0, 1), FN=1 (cell 2), FP=1 (cell 3), TN=2
    y_true = ["CTC", "CTC", "CTC", "WBC", "WBC", "WBC"]
    y_pred = ["CTC", "CTC", "WBC", "CTC", "WBC", "WBC"]
    scores = precision_recall_f1(y_true, y_pred)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    matrix = confusion(y_true, y_pred)
    assert matrix["labels"] == ["WBC", "CTC"]
    assert matrix["matrix"] == [[2, 1], [1, 2]]
    assert (matrix["tn"], matrix["fp"], matrix["fn"], matrix["tp"]) == (2, 1, 1, 2)


def test_no_positive_calls_gives_zero_not_nan():
    scores = precision_recall_f1([1, 0, 0], [0, 0, 0])
    assert scores == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_best_threshold_maximises_f1_with_margin():
    y = [0, 0, 1, 1, 0]
    p = [0.1, 0.3, 0.8, 0.6, 0.65]
    threshold, f1 = best_threshold(y, p)
    # calling p >= 0.6 gives TP=2, FP=1 -> F1 = 0.8, the maximum; the threshold sits
    # halfway between 0.6 and the next lower score 0.3
    assert f1 == pytest.approx(0.8)
    assert threshold == pytest.approx(0.45)
    at_threshold = precision_recall_f1(y, (np.asarray(p) >= threshold).astype(int))
    assert at_threshold["f1"] == pytest.approx(f1)
    # exhaustively, no threshold does better
    grid = np.linspace(0, 1, 201)
    best_grid = max(precision_recall_f1(y, (np.asarray(p) >= t).astype(int))["f1"] for t in grid)
    assert f1 >= best_grid - 1e-12


def test_best_threshold_separable_and_degenerate():
    threshold, f1 = best_threshold([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9])
    assert f1 == 1.0
    assert 0.2 < threshold <= 0.7
    assert best_threshold([0, 0, 0], [0.1, 0.5, 0.9]) == (0.5, 0.0)


def test_classification_metrics_is_json_safe_and_consistent():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.4 + rng.uniform(0, 0.6, 300), 0, 1)
    result = classification_metrics(y, p, threshold=0.5)
    json.dumps(result)  # must not raise
    cm = result["confusion_matrix"]
    assert cm["tp"] + cm["fn"] == result["n_ctc"] == int(y.sum())
    assert cm["tn"] + cm["fp"] == result["n_wbc"]
    assert result["precision"] == pytest.approx(cm["tp"] / (cm["tp"] + cm["fp"]))
    assert result["recall"] == pytest.approx(cm["tp"] / (cm["tp"] + cm["fn"]))
    curve = result["pr_curve"]
    assert len(curve["precision"]) == len(curve["recall"]) == len(curve["thresholds"]) + 1
    assert 0.0 < result["average_precision"] <= 1.0


def test_pr_curve_is_thinned_but_keeps_end_points():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 5000)
    p = rng.uniform(size=5000)
    curve = pr_curve(y, p, max_points=50)
    assert len(curve["precision"]) <= 50
    assert curve["recall"][0] == 1.0
    assert curve["recall"][-1] == 0.0
    assert curve["precision"][-1] == 1.0
    assert np.all(np.diff(curve["thresholds"]) > 0)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="2 labels but 3 predictions"):
        classification_metrics([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="no cells"):
        classification_metrics([], [])


def test_summarise_folds_mean_and_sample_sd():
    folds = [{"f1": 0.8, "precision": 0.9}, {"f1": 0.6, "precision": 0.7}, {"f1": 0.7}]
    stats = summarise_folds(folds)
    assert stats["n_folds"] == 3
    assert stats["mean"]["f1"] == pytest.approx(0.7)
    assert stats["sd"]["f1"] == pytest.approx(0.1)  # sample sd (ddof=1)
    assert stats["mean"]["precision"] == pytest.approx(0.8)
    assert "recall" not in stats["mean"]
    assert summarise_folds([{"f1": 0.5}])["sd"]["f1"] == 0.0
