"""The morphology stack: the network's logit and explicit cell-shape features, combined (issue 20).

With ``TrainConfig.morphology`` on, training fits a logistic regression (scikit-learn) on the
out-of-fold logit of every labelled cell and the :data:`~..inference.morphology.MORPHOLOGY_FEATURES`
of the same cell's network input, each standardised on the training cells. Its decision
function becomes the model's logit: the calibration and the threshold are then fitted on
out-of-fold *stacked* logits (the regression itself cross-fitted over the cells, so that no
cell's score comes from a regression that saw it), and classification applies the regression
to every batch before the calibration (``LoadedModel.predict_logits``). Site calibration
(``deparray-ctc calibrate``) therefore recalibrates the stacked logit, and the network is
never changed.

The stack is stored in the model file (``metadata["morphology_stack"]``, a few hundred bytes)
together with the calibration and threshold the network alone had (``network_only``), so that
a benchmark can score both on the very same networks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["STACK_VERSION", "fit_morphology_stack", "stacked_logits", "stacked_oof_logits"]

STACK_VERSION = 1
#: L2 strength of the regression (scikit-learn's ``C``): mild, the inputs are standardised
REGULARISATION_C = 1.0
#: folds of the cross-fitting of the regression itself (fewer where a class has fewer cells)
STACK_FOLDS = 5


def _columns(logits: Any, features: np.ndarray) -> np.ndarray:
    """The regression's inputs: the logit, then the features, one row per cell."""
    return np.column_stack([np.asarray(logits, dtype=np.float64).reshape(-1), features])


def _standardised(spec: Mapping[str, Any], columns: np.ndarray) -> np.ndarray:
    mean = np.asarray(spec["mean"], dtype=np.float64)
    scale = np.asarray(spec["scale"], dtype=np.float64)
    return (columns - mean) / scale


def _fit(logits: np.ndarray, y: np.ndarray, features: np.ndarray, seed: int) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    from napari_deparray_ctc.core.inference.morphology import MORPHOLOGY_FEATURES

    columns = _columns(logits, features)
    mean = columns.mean(axis=0)
    scale = columns.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    spec: dict[str, Any] = {
        "version": STACK_VERSION,
        "inputs": ["network_logit", *MORPHOLOGY_FEATURES],
        "mean": mean.tolist(),
        "scale": scale.tolist(),
    }
    regression = LogisticRegression(C=REGULARISATION_C, max_iter=1000, random_state=seed)
    regression.fit(_standardised(spec, columns), y)
    spec["coef"] = regression.coef_.reshape(-1).tolist()
    spec["intercept"] = float(regression.intercept_[0])
    return spec


def fit_morphology_stack(
    logits: Sequence[float], y: Sequence[int], features: np.ndarray, seed: int = 0
) -> dict[str, Any]:
    """Fit the stack on the labelled cells' out-of-fold logits and shape features.

    Parameters
    ----------
    logits
        The network's out-of-fold logit of each cell, ``(N,)``.
    y
        1 for CTC, 0 for WBC.
    features
        :func:`~napari_deparray_ctc.core.inference.morphology.morphology_features` of the same
        cells' network inputs, ``(N, F)``.
    seed
        Seed of the regression (its solver is deterministic; kept for the record).

    Returns
    -------
    dict
        The stored spec: ``inputs``, ``mean``, ``scale``, ``coef``, ``intercept``,
        ``version``.

    Raises
    ------
    ValueError
        Fewer than two cells of a class, or the inputs do not line up.
    """
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    labels = np.asarray(y, dtype=np.int64).reshape(-1)
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or len(feats) != len(z) or len(labels) != len(z):
        raise ValueError("logits, labels and features must describe the same cells")
    if min(int(labels.sum()), int(len(labels) - labels.sum())) < 2:
        raise ValueError("the morphology stack needs at least two cells of each class")
    return _fit(z, labels, feats, seed)


def stacked_oof_logits(
    logits: Sequence[float], y: Sequence[int], features: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Stacked logits of the labelled cells, each from a regression fitted without it.

    The regression is cross-fitted over the cells (stratified, :data:`STACK_FOLDS` folds or
    fewer), so the calibration and threshold fitted on these scores are not flattered by
    the regression having seen the cell.

    Returns
    -------
    numpy.ndarray
        ``float64`` ``(N,)``.
    """
    from sklearn.model_selection import StratifiedKFold

    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    labels = np.asarray(y, dtype=np.int64).reshape(-1)
    feats = np.asarray(features, dtype=np.float64)
    smallest = min(int(labels.sum()), int(len(labels) - labels.sum()))
    folds = min(STACK_FOLDS, smallest)
    if folds < 2:
        raise ValueError("the morphology stack needs at least two cells of each class")
    out = np.empty(len(z))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_idx, held in splitter.split(feats, labels):
        spec = _fit(z[fit_idx], labels[fit_idx], feats[fit_idx], seed)
        out[held] = stacked_logits(spec, z[held], feats[held])
    return out


def stacked_logits(
    spec: Mapping[str, Any], logits: Sequence[float], features: np.ndarray
) -> np.ndarray:
    """Apply a stored stack: the combined logit of each cell.

    Parameters
    ----------
    spec
        From :func:`fit_morphology_stack` (``metadata["morphology_stack"]``).
    logits
        The network's logits ``(N,)``.
    features
        The cells' morphology features ``(N, F)``.

    Returns
    -------
    numpy.ndarray
        ``float64`` ``(N,)``, to be calibrated like a network logit.

    Raises
    ------
    ValueError
        The spec is of another version or does not match the features.
    """
    if spec.get("version") != STACK_VERSION:
        raise ValueError(
            f"the model's morphology stack is of version {spec.get('version')!r}; this "
            f"version of the plugin reads version {STACK_VERSION}"
        )
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[1] != len(spec["coef"]) - 1:
        raise ValueError(
            f"the morphology stack takes {len(spec['coef']) - 1} features, not shape {feats.shape}"
        )
    design = _standardised(spec, _columns(logits, feats))
    return design @ np.asarray(spec["coef"], dtype=np.float64) + float(spec["intercept"])
