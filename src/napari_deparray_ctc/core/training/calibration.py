"""Calibrated P(CTC) and the decision threshold, from out-of-fold predictions.

Training uses a class-weighted loss (``pos_weight = n_WBC / n_CTC``), so the network's
sigmoid is not a probability: it over-calls the rare class. The trainer therefore fits a
calibration of the logit on **out-of-fold** predictions (every labelled cell scored by a
network that did not train on it) and stores it in the model file; ``LoadedModel`` applies
it, so ``predict_proba`` and ``classify(...).p_ctc`` are calibrated P(CTC).

* ``"platt"`` (default): ``P = sigmoid(a * logit + b)``, fitted by maximum likelihood on
  Platt's smoothed targets (``(n+ + 1) / (n+ + 2)`` and ``1 / (n- + 2)``), which keeps the
  slope finite when the held-out cells are perfectly separated. Two numbers: stable with a
  few dozen cells, and monotone, so it never reorders cells.
* ``"isotonic"``: a monotone step function (scikit-learn), stored as breakpoints; more
  flexible, needs hundreds of cells.
* ``"none"``: ``P = sigmoid(logit)``.

The threshold is then chosen on the calibrated out-of-fold probabilities of the whole
labelled set (:func:`choose_threshold`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from napari_deparray_ctc.core.constants import is_called_ctc

__all__ = [
    "CALIBRATIONS",
    "THRESHOLD_RULES",
    "apply_calibration",
    "assess_learning",
    "choose_threshold",
    "fit_calibration",
]

#: Calibration methods accepted by :func:`fit_calibration`.
CALIBRATIONS: tuple[str, ...] = ("platt", "isotonic", "none")
#: Threshold rules accepted by :func:`choose_threshold`.
THRESHOLD_RULES: tuple[str, ...] = ("f1", "half_f1")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _fit_platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.optimize import minimize

    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    target = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = params
        z = a * logits + b
        # binary cross-entropy with soft targets, from logits (numerically stable)
        value = np.sum(np.logaddexp(0.0, z) - target * z)
        grad_z = _sigmoid(z) - target
        return float(value), np.array([np.sum(grad_z * logits), np.sum(grad_z)])

    prior = np.log((n_pos + 1) / (n_neg + 1))
    result = minimize(loss, x0=np.array([1.0, prior]), jac=True, method="L-BFGS-B")
    a, b = (float(v) for v in result.x)
    if not np.isfinite([a, b]).all() or a <= 0:  # a model that ranks backwards: prior only
        return 0.0, float(prior)
    return a, b


def fit_calibration(logits: Sequence[float], y_true: Sequence[int], method: str = "platt") -> dict:
    """Fit a calibration of the logit on held-out predictions.

    Parameters
    ----------
    logits
        Out-of-fold logits (before any sigmoid).
    y_true
        0/1 labels (1 = CTC), aligned.
    method
        One of :data:`CALIBRATIONS`.

    Returns
    -------
    dict
        JSON-safe spec stored as ``metadata["calibration"]``: ``{"method": "platt", "a", "b"}``,
        ``{"method": "isotonic", "x", "y"}`` (logit breakpoints and probabilities) or
        ``{"method": "none"}``; plus ``n_cells``.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    if method not in CALIBRATIONS:
        raise ValueError(f"the calibration {method} is not known; choose one of {CALIBRATIONS}")
    if method == "none" or len(z) == 0 or y.min() == y.max():
        return {"method": "none", "n_cells": len(z)}
    if method == "platt":
        a, b = _fit_platt(z, y)
        return {"method": "platt", "a": a, "b": b, "n_cells": len(z)}
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(z, y)
    x_points = [float(v) for v in iso.X_thresholds_]
    y_points = [float(v) for v in iso.y_thresholds_]
    if len(x_points) < 2:
        x_points, y_points = [float(z.min()), float(z.max()) + 1e-6], [y_points[0]] * 2
    return {"method": "isotonic", "x": x_points, "y": y_points, "n_cells": len(z)}


def apply_calibration(spec: Mapping[str, Any] | None, logits: Sequence[float]) -> np.ndarray:
    """Calibrated P(CTC) for logits (``spec`` ``None`` or ``"none"``: the plain sigmoid)."""
    z = np.asarray(logits, dtype=np.float64)
    method = (spec or {}).get("method", "none")
    if method == "platt":
        return _sigmoid(float(spec["a"]) * z + float(spec["b"]))
    if method == "isotonic":
        return np.interp(z, np.asarray(spec["x"], float), np.asarray(spec["y"], float))
    return _sigmoid(z)


def choose_threshold(
    y_true: Sequence[int], p_ctc: Sequence[float], rule: str = "f1"
) -> tuple[float, float]:
    """Decision threshold on calibrated probabilities.

    Parameters
    ----------
    y_true, p_ctc
        Labels and calibrated P(CTC) (out-of-fold).
    rule
        ``"f1"``: the threshold that maximises F1 on these cells
        (:func:`napari_deparray_ctc.core.evaluation.metrics.best_threshold`). ``"half_f1"``: half the
        best F1, the F1-optimal threshold of a calibrated classifier (Lipton, Elkan &
        Narayanaswamy 2014), which moves less from one set of cells to the next.

    Returns
    -------
    (float, float)
        The threshold and the best F1 on these cells.
    """
    from napari_deparray_ctc.core.evaluation.metrics import best_threshold

    if rule not in THRESHOLD_RULES:
        raise ValueError(f"the threshold rule {rule} is not known; choose one of {THRESHOLD_RULES}")
    threshold, f1 = best_threshold(y_true, p_ctc)
    if rule == "half_f1" and f1 > 0:
        threshold = 0.5 * f1
    return float(threshold), float(f1)


def assess_learning(
    y_true: Sequence[int],
    p_ctc: Sequence[float],
    threshold: float,
    alpha: float = 0.01,
    calibrated: bool = True,
) -> dict:
    """Whether held-out predictions beat chance and the trivial calls.

    A model has *learned* when, on cells it did not train on, (1) its scores rank CTCs above
    WBCs beyond chance (one-sided Mann-Whitney U test, ``p < alpha``), (2) its F1 at the
    threshold beats calling every cell CTC (F1 ``2q / (1 + q)`` at prevalence ``q``; calling
    every cell WBC has F1 0) and (3), for calibrated probabilities, its log-loss beats the
    constant class prior (the best call that ignores the image).

    Returns
    -------
    dict
        ``learned`` (bool), ``warning`` (a sentence, or ``None``), ``p_value``, ``roc_auc``,
        ``f1``, ``log_loss`` and ``trivial`` (``all_ctc_f1``, ``all_wbc_f1``,
        ``prior_log_loss``).
    """
    from scipy.stats import mannwhitneyu

    from napari_deparray_ctc.core.evaluation.metrics import log_loss, precision_recall_f1, roc_auc

    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(p_ctc, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    prevalence = n_pos / max(len(y), 1)
    trivial = {
        "all_ctc_f1": 2 * prevalence / (1 + prevalence),
        "all_wbc_f1": 0.0,
        "prior_log_loss": log_loss(y, np.full(len(y), min(max(prevalence, 1e-7), 1 - 1e-7))),
    }
    if n_pos == 0 or n_neg == 0:
        return {
            "learned": False,
            "warning": "The held-out cells hold one class only, so nothing could be checked.",
            "p_value": 1.0,
            "roc_auc": 0.5,
            "f1": 0.0,
            "log_loss": trivial["prior_log_loss"],
            "trivial": trivial,
        }
    p_value = float(mannwhitneyu(p[y == 1], p[y == 0], alternative="greater").pvalue)
    auc = roc_auc(y, p)
    f1 = precision_recall_f1(y, is_called_ctc(p, threshold).astype(int))["f1"]
    loss = log_loss(y, p)
    beats_prior = loss < trivial["prior_log_loss"] or not calibrated
    learned = p_value < alpha and f1 > trivial["all_ctc_f1"] + 1e-9 and beats_prior
    warning = None
    if not learned:
        if p_value >= alpha and min(n_pos, n_neg) < 5:
            warning = (
                f"Too few labelled cells ({n_pos} CTC, {n_neg} WBC) to show that the model "
                "learned anything: treat its calls as untested, and label more cells."
            )
        else:
            warning = (
                "Training learned nothing that could be shown: on cells it did not train on, "
                f"the model did no better than the trivial calls (ROC-AUC {auc:.2f}, chance "
                f"0.50; F1 {f1:.2f}, against {trivial['all_ctc_f1']:.2f} for calling every "
                "cell CTC). Do not use its calls; check the labels, or label more cells."
            )
    return {
        "learned": bool(learned),
        "warning": warning,
        "p_value": p_value,
        "roc_auc": auc,
        "f1": f1,
        "log_loss": loss,
        "trivial": trivial,
    }
