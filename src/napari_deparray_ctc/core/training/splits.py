"""Train/validation splits and k folds: stratified by class, and by sample when known.

When cells carry a sample/patient id, every split is **by group** so that no sample is on
both sides (scikit-learn's ``StratifiedGroupKFold``); otherwise by cell
(``StratifiedKFold``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_deparray_ctc.core.errors import TrainingDataError

__all__ = ["kfold_splits", "split_train_val", "to_groups"]


def _binary(labels: Sequence[Any]) -> np.ndarray:
    from napari_deparray_ctc.core.evaluation.metrics import to_binary

    return to_binary(labels)


def to_groups(groups: Sequence[Any] | None, n: int) -> np.ndarray | None:
    """Integer group codes; cells without a group get a group of their own."""
    if groups is None or all(g is None for g in groups):
        return None
    names = [f"\0cell{i}" if g is None else str(g) for i, g in enumerate(groups)]
    _, codes = np.unique(np.asarray(names, dtype=object).astype(str), return_inverse=True)
    return codes


def split_train_val(
    labels: Sequence[Any],
    groups: Sequence[Any] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation split; by group when groups are given.

    Parameters
    ----------
    labels
        ``"CTC"``/``"WBC"`` or 0/1 per cell.
    groups
        Sample/patient id per cell (``None`` entries are singleton groups), or ``None``.
        With two or more groups, every group lands entirely on one side
        (``StratifiedGroupKFold``; of its folds, the one with both classes whose size is
        closest to ``val_fraction`` is the validation set). With a single group the split is
        by cell, with a warning.
    val_fraction
        Target fraction of cells for validation, in (0, 1).
    seed
        Random seed.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Sorted train and validation indices.

    Raises
    ------
    TrainingDataError
        No split with both classes in training is possible.
    """
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"the validation fraction must be between 0 and 1, not {val_fraction}")
    y = _binary(labels)
    n = len(y)
    codes = to_groups(groups, n)
    if codes is not None and len(np.unique(codes)) < 2:
        warnings.warn(
            "all cells belong to one sample/group: the validation split is by cell", stacklevel=2
        )
        codes = None
    if codes is None:
        n_val = max(2, round(val_fraction * n))
        n_val = min(n_val, n - 2)
        try:
            train_idx, val_idx = train_test_split(
                np.arange(n), test_size=n_val, stratify=y, random_state=seed
            )
        except ValueError as exc:
            raise TrainingDataError(
                f"cannot hold out {n_val} of {n} cells for validation with both classes on "
                "both sides; label more cells of the rarer class"
            ) from exc
        return np.sort(train_idx), np.sort(val_idx)
    n_groups = len(np.unique(codes))
    n_splits = min(n_groups, max(2, round(1.0 / val_fraction)))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "least populated class has fewer members..."
        for train_idx, val_idx in splitter.split(np.zeros(n), y, codes):
            if len(np.unique(y[train_idx])) < 2:
                continue
            both = len(np.unique(y[val_idx])) == 2
            score = abs(len(val_idx) / n - val_fraction) + (0.0 if both else 10.0)
            if best is None or score < best[0]:
                best = (score, train_idx, val_idx)
    if best is None:
        raise TrainingDataError(
            f"cannot split {n_groups} sample group(s) so that training holds both classes"
        )
    if best[0] >= 10.0:
        warnings.warn(
            "no group split puts both classes into validation; validation F1 is unreliable "
            "(add samples with both classes)",
            stacklevel=2,
        )
    return np.sort(best[1]), np.sort(best[2])


def kfold_splits(
    labels: Sequence[Any],
    groups: Sequence[Any] | None = None,
    k: int = 5,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold (group k-fold when groups are given) train/test index pairs.

    Parameters
    ----------
    labels
        ``"CTC"``/``"WBC"`` or 0/1 per cell.
    groups
        Sample/patient ids (``None`` entries are singleton groups), or ``None``.
    k
        Number of folds (>= 2).
    seed
        Random seed.

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        ``k`` pairs of sorted (train, test) indices; every cell is in exactly one test fold.

    Raises
    ------
    TrainingDataError
        ``k`` larger than the cells of a class (or than the number of groups).
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if k < 2:
        raise TrainingDataError(f"k-fold cross-validation needs k >= 2, got {k}")
    y = _binary(labels)
    counts = {name: int((y == v).sum()) for name, v in (("CTC", 1), ("WBC", 0))}
    for name, count in counts.items():
        if count < k:
            raise TrainingDataError(
                f"{k}-fold cross-validation needs at least {k} {name} cells; there are {count}"
            )
    codes = to_groups(groups, len(y))
    if codes is not None and len(np.unique(codes)) < 2:
        codes = None
    if codes is None:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        folds = list(splitter.split(np.zeros(len(y)), y))
    else:
        n_groups = len(np.unique(codes))
        if n_groups < k:
            raise TrainingDataError(
                f"{k}-fold cross-validation by sample needs at least {k} sample groups; "
                f"there are {n_groups}"
            )
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            folds = list(splitter.split(np.zeros(len(y)), y, codes))
    return [(np.sort(a), np.sort(b)) for a, b in folds]
