"""Training sets: loading, validation, splits and DAPI incorporation strategies.

* :class:`TrainingSet` is the in-memory set the widgets build from layers and
  :func:`load_training_set` builds from exports on disk.
* :func:`check_training_set` validates a set **before any work** and raises
  :class:`TrainingDataError` with a message a user can act on.
* :func:`split_train_val` and :func:`kfold_splits` are stratified by class and, when cells
  carry a sample/patient id, split **by group** so no sample is on both sides.
* :class:`SampleBank` turns prepared tensors into training batches according to the DAPI
  strategy. Validation and test data are always bright-field only.

DAPI strategies (inference never uses DAPI)
-------------------------------------------
``"none"``
    Bright-field only.
``"substitute"``
    Channel substitution, as in the seed paper: each cell's normalised DAPI image is an
    extra training sample carrying the cell's label.
``"blend"``
    Each cell with DAPI adds one extra sample ``alpha * BF + (1 - alpha) * DAPI`` of the
    normalised images, with ``alpha`` drawn uniformly in [0.5, 1] anew every time the sample
    is used. The mix is always BF-dominated, so the sample stays close to the inference
    domain, while the DAPI term marks where the nucleus is (size, lobes, position) and
    teaches the network to look at the nuclear features that bright-field shows only
    faintly. Unlike mixup the label is exact: both images are the same cell.
``"aux_nucleus"``
    Multi-task learning: an auxiliary head (training only) predicts a coarse (1/8
    resolution) DAPI map from the BF features of ``layer2``; the loss adds
    ``aux_weight * MSE`` for cells with DAPI. The head is dropped when the model is saved,
    so the saved network is a plain BF-only ResNet.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_deparray_ctc.core.constants import DAPI_STRATEGIES as _DAPI_STRATEGIES
from napari_deparray_ctc.core.errors import TrainingDataError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DAPI_STRATEGIES",
    "MIN_PER_CLASS",
    "MIN_TOTAL",
    "PreparedData",
    "SampleBank",
    "TrainingDataError",
    "TrainingSet",
    "check_training_set",
    "kfold_splits",
    "load_training_set",
    "prepare_tensors",
    "split_train_val",
]

#: Selectable DAPI incorporation strategies.
DAPI_STRATEGIES = _DAPI_STRATEGIES
#: Fewest labelled cells per class for training (one for training, one for validation).
MIN_PER_CLASS = 2
#: Fewest labelled cells in total for training.
MIN_TOTAL = 8
#: Range of the BF weight ``alpha`` of the ``"blend"`` strategy.
BLEND_ALPHA_RANGE = (0.5, 1.0)
#: Down-sampling factor of the nucleus target of ``"aux_nucleus"`` (ResNet layer2 stride).
AUX_TARGET_STRIDE = 8


@dataclass
class TrainingSet:
    """Cells for training or evaluation, in memory.

    Attributes
    ----------
    bf
        2-D bright-field images (any size and dtype).
    labels
        ``"CTC"`` / ``"WBC"`` per cell; ``None`` (unlabelled) cells are dropped by
        :func:`check_training_set`. Aliases accepted by ``core.labels`` are normalised.
    dapi
        Aligned DAPI images (``None`` for a cell without one), or ``None`` if no DAPI.
    cell_ids
        Aligned cell ids, or ``None`` (then ``"cell-00000"``... are used).
    groups
        Aligned sample/patient ids (``None`` for unknown), or ``None``; used for group splits.
    paths
        Aligned source paths, or ``None`` (extension of the contract, for reports).
    """

    bf: list[np.ndarray]
    labels: list[str | None]
    dapi: list[np.ndarray | None] | None = None
    cell_ids: list[str] | None = None
    groups: list[str | None] | None = None
    paths: list[str] | None = field(default=None)

    def __len__(self) -> int:
        return len(self.bf)

    def ids(self) -> list[str]:
        """Cell ids, generated as ``cell-00000``... when not given."""
        if self.cell_ids is not None:
            return [str(c) for c in self.cell_ids]
        return [f"cell-{i:05d}" for i in range(len(self.bf))]

    def subset(self, indices: Iterable[int]) -> TrainingSet:
        """The cells at ``indices`` (in that order) as a new set sharing the arrays."""
        idx = [int(i) for i in indices]

        def pick(values):
            return None if values is None else [values[i] for i in idx]

        return TrainingSet(
            bf=[self.bf[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            dapi=pick(self.dapi),
            cell_ids=pick(self.cell_ids),
            groups=pick(self.groups),
            paths=pick(self.paths),
        )

    def summary(self) -> dict[str, Any]:
        """JSON-safe counts: cells, per class, unlabelled, with DAPI, groups, image sizes."""
        labels = list(self.labels)
        shapes = [tuple(np.shape(b)) for b in self.bf]
        groups = sorted({str(g) for g in (self.groups or []) if g is not None})
        return {
            "n_cells": len(self.bf),
            "n_ctc": sum(1 for v in labels if v == "CTC"),
            "n_wbc": sum(1 for v in labels if v == "WBC"),
            "n_unlabelled": sum(1 for v in labels if v is None),
            "n_with_dapi": sum(1 for d in (self.dapi or []) if d is not None),
            "n_groups": len(groups),
            "groups": groups[:100],
            "min_shape": [int(min(s[i] for s in shapes)) for i in range(2)] if shapes else None,
            "max_shape": [int(max(s[i] for s in shapes)) for i in range(2)] if shapes else None,
        }


# --------------------------------------------------------------------------------------------
# loading and validation
# --------------------------------------------------------------------------------------------


def load_training_set(
    paths: str | os.PathLike | Sequence[str | os.PathLike], channel_map=None
) -> TrainingSet:
    """Read labelled cells from DEPArray exports (any layout ``core.io`` reads).

    Parameters
    ----------
    paths
        Export folders or files.
    channel_map
        Passed to :func:`napari_deparray_ctc.core.io.read_export`.

    Returns
    -------
    TrainingSet
        All cells with a BF image (labels may be ``None``; :func:`check_training_set` drops
        those). Cells without BF are left out with a warning naming them.

    Raises
    ------
    TrainingDataError
        No readable cell with a bright-field image was found (the message lists skipped files).
    """
    from napari_deparray_ctc.core import io

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    export = io.read_export(paths, channel_map=channel_map)
    bf, labels, dapi, ids, groups, sources, no_bf = [], [], [], [], [], [], []
    for cell in export.cells:
        image = cell.channels.get("BF")
        if image is None:
            no_bf.append(cell.cell_id)
            continue
        bf.append(image)
        labels.append(cell.label)
        dapi.append(cell.channels.get("DAPI"))
        ids.append(cell.cell_id)
        groups.append(cell.group)
        sources.append(cell.path)
    if no_bf:
        warnings.warn(
            f"{len(no_bf)} cell(s) without a bright-field (BF) image left out: "
            f"{', '.join(no_bf[:5])}{' ...' if len(no_bf) > 5 else ''}",
            stacklevel=2,
        )
    if not bf:
        skipped = "; ".join(f"{p}: {r}" for p, r in list(export.skipped)[:5])
        raise TrainingDataError(
            f"{', '.join(paths)}: no cell with a bright-field image found"
            + (f" (skipped: {skipped})" if skipped else "")
        )
    return TrainingSet(
        bf=bf,
        labels=labels,
        dapi=dapi if any(d is not None for d in dapi) else None,
        cell_ids=ids,
        groups=groups if any(g is not None for g in groups) else None,
        paths=sources,
    )


def _name_cells(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return f"{shown} and {len(ids) - limit} more" if len(ids) > limit else shown


def _canonical_labels(labels: Sequence[Any], ids: list[str]) -> list[str | None]:
    from napari_deparray_ctc.core.labels import canonical_label

    out: list[str | None] = []
    bad: list[str] = []
    for cell_id, value in zip(ids, labels, strict=True):
        try:
            out.append(canonical_label(value))
        except ValueError:
            bad.append(f"{cell_id}={value!r}")
            out.append(None)
    if bad:
        raise TrainingDataError(
            f"unknown class name(s) for {_name_cells(bad)}; use CTC or WBC (or leave empty)"
        )
    return out


def check_training_set(
    ts: TrainingSet, min_per_class: int = MIN_PER_CLASS, min_total: int = MIN_TOTAL
) -> TrainingSet:
    """Validate a training set before any work; return its labelled cells.

    Parameters
    ----------
    ts
        The set to check.
    min_per_class
        Fewest cells of each class.
    min_total
        Fewest labelled cells in total.

    Returns
    -------
    TrainingSet
        The labelled cells only (labels canonical ``"CTC"``/``"WBC"``). The number of
        unlabelled cells dropped is ``len(ts) - len(result)`` (a warning says so).

    Raises
    ------
    TrainingDataError
        Misaligned lists (e.g. BF/DAPI length mismatch), no cells, images that are not
        2-D or contain NaN/inf (the cells are named), all images identical, unknown class
        names, fewer than ``min_total`` labelled cells, one class only, or fewer than
        ``min_per_class`` cells of a class.
    """
    n = len(ts.bf)
    for name in ("labels", "dapi", "cell_ids", "groups", "paths"):
        values = getattr(ts, name)
        if values is not None and len(values) != n:
            what = "DAPI images" if name == "dapi" else name.replace("_", " ")
            raise TrainingDataError(
                f"{n} bright-field images but {len(values)} {what}: the lists must be aligned"
            )
    if n == 0:
        raise TrainingDataError("the training set is empty: no cells given")
    ids = ts.ids()
    not_2d = [ids[i] for i, img in enumerate(ts.bf) if np.ndim(img) != 2 or np.size(img) == 0]
    if not_2d:
        raise TrainingDataError(f"bright-field image(s) not 2-D or empty: {_name_cells(not_2d)}")
    non_finite = [
        ids[i]
        for i, img in enumerate(ts.bf)
        if np.issubdtype(np.asarray(img).dtype, np.floating) and not np.isfinite(img).all()
    ]
    if non_finite:
        raise TrainingDataError(
            f"bright-field image(s) with NaN or infinite pixels: {_name_cells(non_finite)}"
        )
    if ts.dapi is not None:
        bad_dapi = [
            ids[i]
            for i, img in enumerate(ts.dapi)
            if img is not None
            and (
                np.ndim(img) != 2
                or np.size(img) == 0
                or (
                    np.issubdtype(np.asarray(img).dtype, np.floating) and not np.isfinite(img).all()
                )
            )
        ]
        if bad_dapi:
            raise TrainingDataError(
                f"DAPI image(s) not 2-D, empty or with NaN/inf pixels: {_name_cells(bad_dapi)}"
            )
    labels = _canonical_labels(ts.labels, ids)
    keep = [i for i, v in enumerate(labels) if v is not None]
    if not keep:
        raise TrainingDataError(
            f"none of the {n} cells is labelled CTC or WBC; annotate some cells first"
        )
    dropped = n - len(keep)
    if dropped:
        warnings.warn(
            f"{dropped} unlabelled cell(s) left out of training ({len(keep)} labelled remain)",
            stacklevel=2,
        )
    clean = ts.subset(keep)
    clean.labels = [labels[i] for i in keep]
    first = np.asarray(clean.bf[0])
    if len(clean.bf) > 1 and all(
        np.shape(img) == first.shape and np.array_equal(img, first) for img in clean.bf[1:]
    ):
        raise TrainingDataError(
            f"all {len(clean.bf)} bright-field images are identical; nothing to learn from"
        )
    n_ctc = sum(1 for v in clean.labels if v == "CTC")
    n_wbc = len(clean.labels) - n_ctc
    if n_ctc == 0 or n_wbc == 0:
        only = "CTC" if n_wbc == 0 else "WBC"
        missing = "WBC" if n_wbc == 0 else "CTC"
        raise TrainingDataError(
            f"only one class: all {len(clean.labels)} labelled cells are {only}; "
            f"label at least {min_per_class} {missing} cells too"
        )
    if len(clean.labels) < min_total:
        raise TrainingDataError(
            f"too few labelled cells: {len(clean.labels)} ({n_ctc} CTC, {n_wbc} WBC); "
            f"at least {min_total} are needed"
        )
    for name, count in (("CTC", n_ctc), ("WBC", n_wbc)):
        if count < min_per_class:
            raise TrainingDataError(
                f"too few {name} cells: {count}; at least {min_per_class} of each class are "
                f"needed ({n_ctc} CTC, {n_wbc} WBC labelled)"
            )
    return clean


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------


def _binary(labels: Sequence[Any]) -> np.ndarray:
    from napari_deparray_ctc.core.metrics import to_binary

    return to_binary(labels)


def _group_codes(groups: Sequence[Any] | None, n: int) -> np.ndarray | None:
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
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    y = _binary(labels)
    n = len(y)
    codes = _group_codes(groups, n)
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
            raise TrainingDataError(f"cannot make a stratified validation split: {exc}") from None
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
    codes = _group_codes(groups, len(y))
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


# --------------------------------------------------------------------------------------------
# tensors and the DAPI strategies
# --------------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    """Normalised, resized tensors of a training set (computed once, augmented per batch).

    Attributes
    ----------
    bf
        ``(N, 1, S, S)`` float32 in [0, 1].
    y
        ``(N,)`` float32, 1 = CTC.
    dapi
        ``(N, 1, S, S)`` float32 (zeros where a cell has no DAPI), or ``None``.
    has_dapi
        ``(N,)`` bool, or ``None``.
    """

    bf: Any
    y: Any
    dapi: Any = None
    has_dapi: Any = None

    def __len__(self) -> int:
        return int(self.bf.shape[0])


def prepare_tensors(
    ts: TrainingSet,
    image_size: int,
    normalisation: dict | None = None,
    with_dapi: bool = True,
    batch: int = 256,
) -> PreparedData:
    """Normalise and resize every image once (see ``core.model.prepare_batch``).

    Parameters
    ----------
    ts
        A checked set (labels ``"CTC"``/``"WBC"``).
    image_size
        Network input size.
    normalisation
        Normalisation spec (default: the model default).
    with_dapi
        Prepare DAPI images too (when the set has any).
    batch
        Images converted per step (bounds temporary memory).

    Returns
    -------
    PreparedData
    """
    import torch

    from napari_deparray_ctc.core.model import prepare_batch

    def convert(images: list[np.ndarray]) -> torch.Tensor:
        parts = [
            prepare_batch(images[i : i + batch], image_size, normalisation)
            for i in range(0, len(images), batch)
        ]
        return torch.cat(parts) if parts else torch.zeros((0, 1, image_size, image_size))

    bf = convert(list(ts.bf))
    y = torch.from_numpy(_binary(ts.labels).astype(np.float32))
    dapi = has_dapi = None
    if with_dapi and ts.dapi is not None and any(d is not None for d in ts.dapi):
        present = [i for i, d in enumerate(ts.dapi) if d is not None]
        dapi = torch.zeros_like(bf)
        dapi[present] = convert([ts.dapi[i] for i in present])
        has_dapi = torch.zeros(len(ts.bf), dtype=torch.bool)
        has_dapi[present] = True
    return PreparedData(bf=bf, y=y, dapi=dapi, has_dapi=has_dapi)


class SampleBank:
    """Training samples of one DAPI strategy, drawn as batches.

    Sample ``i < N`` is the bright-field image of cell ``i``. For ``"substitute"`` and
    ``"blend"`` the samples ``N + j`` are extra samples made from the ``j``-th cell that has
    DAPI (see the module docstring). For ``"aux_nucleus"`` there are no extra samples; batches
    carry the DAPI image as a nucleus target instead.

    Parameters
    ----------
    data
        Prepared training tensors.
    strategy
        One of :data:`DAPI_STRATEGIES`. A strategy that needs DAPI on a set without DAPI
        falls back to ``"none"`` with a warning.
    """

    def __init__(self, data: PreparedData, strategy: str = "none"):
        import torch

        if strategy not in DAPI_STRATEGIES:
            raise ValueError(
                f"unknown DAPI strategy {strategy!r}; choose one of {', '.join(DAPI_STRATEGIES)}"
            )
        if strategy != "none" and data.dapi is None:
            warnings.warn(
                f"DAPI strategy {strategy!r} chosen but no cell has a DAPI image; "
                "training on bright-field only",
                stacklevel=2,
            )
            strategy = "none"
        self.data = data
        self.strategy = strategy
        if strategy in ("substitute", "blend"):
            self.extra = torch.nonzero(data.has_dapi).flatten()
        else:
            self.extra = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.data) + int(self.extra.numel())

    @property
    def labels(self):
        """``(len(self),)`` float32 labels of every sample (extras carry their cell's label)."""
        import torch

        return torch.cat([self.data.y, self.data.y[self.extra]])

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Images, labels and (``"aux_nucleus"`` only) nucleus targets for sample indices.

        Parameters
        ----------
        indices
            1-D long tensor of sample indices.

        Returns
        -------
        (x, y, nucleus)
            ``x`` ``(B, 1, S, S)``, ``y`` ``(B,)``; ``nucleus`` is ``(B, 1, S, S)`` DAPI with
            NaN for cells without DAPI (``"aux_nucleus"``), else ``None``.
        """
        import torch

        indices = torch.as_tensor(indices, dtype=torch.long)
        n = len(self.data)
        is_bf = indices < n
        cells = indices.clone()
        if not bool(is_bf.all()):
            if not self.extra.numel():
                raise IndexError(f"sample index out of range (only {n} samples)")
            cells[~is_bf] = self.extra[indices[~is_bf] - n]
        x = self.data.bf[cells].clone()
        y = self.data.y[cells].clone()
        if self.strategy in ("substitute", "blend") and not bool(is_bf.all()):
            extra_rows = torch.nonzero(~is_bf).flatten()
            dapi = self.data.dapi[cells[extra_rows]]
            if self.strategy == "substitute":
                x[extra_rows] = dapi
            else:
                lo, hi = BLEND_ALPHA_RANGE
                alpha = lo + (hi - lo) * torch.rand(len(extra_rows), 1, 1, 1)
                x[extra_rows] = alpha * x[extra_rows] + (1 - alpha) * dapi
        nucleus = None
        if self.strategy == "aux_nucleus":
            nucleus = self.data.dapi[cells].clone()
            nucleus[~self.data.has_dapi[cells]] = math.nan
        return x, y, nucleus
