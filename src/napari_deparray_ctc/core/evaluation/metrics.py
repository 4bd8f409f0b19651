"""Evaluation metrics with CTC as the positive class.

Everything here is computed with scikit-learn and returned as JSON-safe plain Python types
(``float``, ``int``, ``list``, ``dict``), so the results can go straight into a model file's
metadata, a JSON report or a widget table. No torch import.

Conventions
-----------
* ``y_true`` may be ``0/1`` integers, booleans, or the class names ``"CTC"`` / ``"WBC"``
  (``1`` / ``True`` / ``"CTC"`` = CTC, the positive class).
* ``p_ctc`` are probabilities of CTC; a cell is called CTC when ``p_ctc >= threshold``.
* The confusion matrix is ordered ``["WBC", "CTC"]``: ``[[TN, FP], [FN, TP]]``.
* Undefined ratios (e.g. precision with no positive calls) are reported as ``0.0``
  (scikit-learn's ``zero_division=0``), never NaN, so JSON stays valid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from napari_deparray_ctc.core.constants import CLASS_NAMES as _CLASS_NAMES
from napari_deparray_ctc.core.constants import is_called_ctc

__all__ = [
    "CLASS_NAMES",
    "best_threshold",
    "classification_metrics",
    "confusion",
    "expected_calibration_error",
    "log_loss",
    "pr_auc",
    "pr_curve",
    "precision_recall_f1",
    "roc_auc",
    "summarise_folds",
    "to_binary",
]

#: Class order used everywhere: index 0 = WBC (negative), 1 = CTC (positive).
CLASS_NAMES = _CLASS_NAMES

#: PR curves are thinned to at most this many points before they are stored (model metadata
#: and reports stay small even for 10,000 cells).
PR_CURVE_MAX_POINTS = 201


def to_binary(y_true: Iterable) -> np.ndarray:
    """Convert labels to a ``0/1`` integer array (1 = CTC).

    Parameters
    ----------
    y_true
        ``0/1``, booleans, or ``"CTC"`` / ``"WBC"`` (case-insensitive).

    Returns
    -------
    numpy.ndarray
        ``int64`` array of 0 and 1.

    Raises
    ------
    ValueError
        If a value is none of the accepted forms (e.g. an unlabelled ``None``).
    """
    values = list(y_true)
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        if isinstance(value, str):
            name = value.strip().upper()
            if name == "CTC":
                out[i] = 1
            elif name == "WBC":
                out[i] = 0
            else:
                raise ValueError(f"label {value!r} at position {i} is neither 'CTC' nor 'WBC'")
        elif isinstance(value, (bool, np.bool_, int, np.integer, float, np.floating)) and value in (
            0,
            1,
        ):
            out[i] = int(value)
        else:
            raise ValueError(f"label {value!r} at position {i} is neither 0/1 nor 'CTC'/'WBC'")
    return out


def _as_probabilities(p_ctc: Iterable[float]) -> np.ndarray:
    p = np.asarray(list(p_ctc) if not isinstance(p_ctc, np.ndarray) else p_ctc, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_ctc must be one-dimensional, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("p_ctc contains NaN or infinite values")
    return p


def _check_same_length(y: np.ndarray, p: np.ndarray) -> None:
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    if len(y) == 0:
        raise ValueError("no cells to evaluate")


def precision_recall_f1(y_true: Iterable, y_pred: Iterable) -> dict[str, float]:
    """Precision, recall and F1 of the CTC class.

    Parameters
    ----------
    y_true, y_pred
        True and predicted labels (any form accepted by :func:`to_binary`).

    Returns
    -------
    dict
        ``{"precision", "recall", "f1"}`` as floats (0.0 where undefined).
    """
    from sklearn.metrics import precision_recall_fscore_support

    y = to_binary(y_true)
    yp = to_binary(y_pred)
    _check_same_length(y, yp)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, yp, average="binary", pos_label=1, zero_division=0
    )
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def confusion(y_true: Iterable, y_pred: Iterable) -> dict:
    """Confusion matrix with a fixed ``["WBC", "CTC"]`` order.

    Returns
    -------
    dict
        ``{"labels": ["WBC", "CTC"], "matrix": [[TN, FP], [FN, TP]], "tn", "fp", "fn", "tp"}``.
    """
    from sklearn.metrics import confusion_matrix

    y = to_binary(y_true)
    yp = to_binary(y_pred)
    _check_same_length(y, yp)
    matrix = confusion_matrix(y, yp, labels=[0, 1])
    (tn, fp), (fn, tp) = matrix.tolist()
    return {
        "labels": list(CLASS_NAMES),
        "matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
        "tn": int(tn),
        "fp": int(fp),
        "fn": int(fn),
        "tp": int(tp),
    }


def pr_curve(
    y_true: Iterable, p_ctc: Iterable[float], max_points: int = PR_CURVE_MAX_POINTS
) -> dict:
    """Precision-recall curve of the CTC class, thinned to at most ``max_points`` points.

    Parameters
    ----------
    y_true, p_ctc
        True labels (as :func:`to_binary` takes them) and predicted CTC probabilities.
    max_points
        Keep at most this many points (evenly spaced along the curve, end points kept).

    Returns
    -------
    dict
        ``{"precision": [...], "recall": [...], "thresholds": [...], "average_precision": float}``.
        ``thresholds[i]`` belongs to ``precision[i]`` / ``recall[i]``; the final point
        (recall 0, precision 1) has no threshold, as in scikit-learn, so ``thresholds`` is one
        shorter. ``average_precision`` is 0.0 when there is no CTC in ``y_true``.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y = to_binary(y_true)
    p = _as_probabilities(p_ctc)
    _check_same_length(y, p)
    if y.sum() == 0:
        return {"precision": [], "recall": [], "thresholds": [], "average_precision": 0.0}
    precision, recall, thresholds = precision_recall_curve(y, p, pos_label=1)
    n = len(thresholds)
    if max_points >= 2 and n > max_points - 1:
        keep = np.unique(np.linspace(0, n - 1, max_points - 1).round().astype(int))
    else:
        keep = np.arange(n)
    return {
        "precision": [float(v) for v in precision[keep]] + [float(precision[-1])],
        "recall": [float(v) for v in recall[keep]] + [float(recall[-1])],
        "thresholds": [float(v) for v in thresholds[keep]],
        "average_precision": float(average_precision_score(y, p, pos_label=1)),
    }


def pr_auc(y_true: Iterable, p_ctc: Iterable[float]) -> float:
    """Area under the precision-recall curve (average precision; 0.0 without any CTC)."""
    from sklearn.metrics import average_precision_score

    y = to_binary(y_true)
    p = _as_probabilities(p_ctc)
    _check_same_length(y, p)
    return float(average_precision_score(y, p)) if y.sum() else 0.0


def roc_auc(y_true: Iterable, p_ctc: Iterable[float]) -> float:
    """Area under the ROC curve (0.5 when only one class is present)."""
    from sklearn.metrics import roc_auc_score

    y = to_binary(y_true)
    p = _as_probabilities(p_ctc)
    _check_same_length(y, p)
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else 0.5


def log_loss(y_true: Iterable, p_ctc: Iterable[float]) -> float:
    """Mean negative log-likelihood of the labels (probabilities clipped to [1e-7, 1 - 1e-7])."""
    y = to_binary(y_true).astype(np.float64)
    p = np.clip(_as_probabilities(p_ctc), 1e-7, 1 - 1e-7)
    _check_same_length(y, p)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def expected_calibration_error(y_true: Iterable, p_ctc: Iterable[float], bins: int = 10) -> float:
    """Expected calibration error: the cell-weighted mean |observed CTC rate - mean P(CTC)|.

    Parameters
    ----------
    y_true, p_ctc
        Labels and probabilities.
    bins
        Equal-width bins of P(CTC) on [0, 1] (the usual definition, Guo et al. 2017).
    """
    y = to_binary(y_true).astype(np.float64)
    p = _as_probabilities(p_ctc)
    _check_same_length(y, p)
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.sum() * abs(y[members].mean() - p[members].mean())
    return float(total / len(y))


def best_threshold(y_true: Iterable, p_ctc: Iterable[float]) -> tuple[float, float]:
    """Decision threshold on ``p_ctc`` that maximises the CTC F1.

    The F1 is maximised over every distinct score (scikit-learn's PR curve). The maximiser
    ``t*`` is a score of a CTC cell, so calling ``p >= t*`` sits exactly on a training example;
    the threshold returned is therefore the midpoint between ``t*`` and the next lower score
    (the highest score still called WBC), which gives the same F1 on these data but a margin on
    both sides for new cells. When several thresholds tie, the highest is taken (fewer false
    positives for the same F1).

    Parameters
    ----------
    y_true, p_ctc
        True labels (as :func:`to_binary` takes them) and predicted CTC probabilities.

    Returns
    -------
    (float, float)
        ``(threshold, f1)``. With no CTC in ``y_true`` F1 is undefined: ``(0.5, 0.0)``.
    """
    from sklearn.metrics import precision_recall_curve

    y = to_binary(y_true)
    p = _as_probabilities(p_ctc)
    _check_same_length(y, p)
    if y.sum() == 0:
        return 0.5, 0.0
    precision, recall, thresholds = precision_recall_curve(y, p, pos_label=1)
    precision, recall = precision[:-1], recall[:-1]
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    best_f1 = float(f1.max())
    # thresholds are increasing: the last index reaching the maximum is the highest threshold
    best_index = int(np.flatnonzero(np.isclose(f1, best_f1, rtol=0, atol=1e-12))[-1])
    t_star = float(thresholds[best_index])
    below = p[p < t_star]
    threshold = 0.5 * (t_star + float(below.max())) if below.size else t_star
    return float(threshold), best_f1


def classification_metrics(
    y_true: Iterable, p_ctc: Iterable[float], threshold: float = 0.5
) -> dict:
    """All metrics of one evaluation at a given threshold.

    Parameters
    ----------
    y_true, p_ctc
        True labels (as :func:`to_binary` takes them) and predicted CTC probabilities.
    threshold
        A cell is called CTC when ``p_ctc >= threshold``.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1``, ``accuracy``, ``threshold``, ``n_cells``, ``n_ctc``,
        ``n_wbc``, ``confusion_matrix`` (see :func:`confusion`), ``pr_curve`` (see
        :func:`pr_curve`), ``average_precision`` (PR-AUC), ``roc_auc``, ``log_loss`` and
        ``ece`` (:func:`expected_calibration_error`). JSON-safe.
    """
    y = to_binary(y_true)
    p = _as_probabilities(p_ctc)
    _check_same_length(y, p)
    predicted = is_called_ctc(p, threshold).astype(np.int64)
    result: dict = dict(precision_recall_f1(y, predicted))
    result["accuracy"] = float(np.mean(predicted == y))
    result["threshold"] = float(threshold)
    result["n_cells"] = len(y)
    result["n_ctc"] = int(y.sum())
    result["n_wbc"] = int(len(y) - y.sum())
    result["confusion_matrix"] = confusion(y, predicted)
    curve = pr_curve(y, p)
    result["pr_curve"] = curve
    result["average_precision"] = curve["average_precision"]
    result["roc_auc"] = roc_auc(y, p)
    result["log_loss"] = log_loss(y, p)
    result["ece"] = expected_calibration_error(y, p)
    return result


def summarise_folds(
    fold_metrics: Sequence[dict],
    keys: Sequence[str] = ("precision", "recall", "f1", "average_precision", "accuracy"),
) -> dict:
    """Mean and sample standard deviation of per-fold metrics (k-fold cross-validation).

    Parameters
    ----------
    fold_metrics
        One dict per fold (e.g. from :func:`classification_metrics`).
    keys
        Metrics to summarise; keys missing from a fold are skipped for that fold.

    Returns
    -------
    dict
        ``{"mean": {key: float}, "sd": {key: float}, "n_folds": int}``. The standard deviation
        uses ``ddof=1`` (as papers report mean ± sd over folds); it is 0.0 for a single fold.
    """
    mean: dict[str, float] = {}
    sd: dict[str, float] = {}
    for key in keys:
        values = [float(m[key]) for m in fold_metrics if key in m and m[key] is not None]
        if not values:
            continue
        mean[key] = float(np.mean(values))
        sd[key] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        if math.isnan(sd[key]):
            sd[key] = 0.0
    return {"mean": mean, "sd": sd, "n_folds": len(fold_metrics)}
