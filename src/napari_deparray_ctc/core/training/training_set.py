"""Training sets: the one assembler from cells, loading from exports, and the checks.

* :class:`TrainingSet` is the in-memory set every trainer takes.
* :func:`training_set_from_cells` is the **one** way to build it from ``core.io.Cell``
  objects (read from disk by :func:`load_training_set` and the CLI, or made from layer slices
  by the training widget): BF is required (cells without it are skipped and named), DAPI is
  optional (a DAPI plane with no variation counts as missing), labels, sample groups, paths
  and pixel sizes come along.
* :func:`check_training_set` validates a set **before any work** and raises
  :class:`TrainingDataError` with a message a user can act on.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_deparray_ctc.core.errors import TrainingDataError

__all__ = [
    "MIN_PER_CLASS",
    "MIN_TOTAL",
    "TrainingDataError",
    "TrainingSet",
    "check_training_set",
    "load_training_set",
    "name_cells",
    "training_set_from_cells",
]

#: Fewest labelled cells per class for training (one for training, one for validation).
MIN_PER_CLASS = 2
#: Fewest labelled cells in total for training.
MIN_TOTAL = 8


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
        Aligned source paths, or ``None``.
    pixel_sizes
        Aligned pixel sizes in µm (``None`` where unknown), or ``None``.
    """

    bf: list[np.ndarray]
    labels: list[str | None]
    dapi: list[np.ndarray | None] | None = None
    cell_ids: list[str] | None = None
    groups: list[str | None] | None = None
    paths: list[str] | None = field(default=None)
    pixel_sizes: list[float | None] | None = field(default=None)

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
            pixel_sizes=pick(self.pixel_sizes),
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


def name_cells(ids: Sequence[str], limit: int = 5) -> str:
    """``a, b, c and 4 more``: a short list of cell ids for messages."""
    ids = list(ids)
    shown = ", ".join(str(i) for i in ids[:limit])
    return f"{shown} and {len(ids) - limit} more" if len(ids) > limit else shown


def _has_signal(image: Any) -> bool:
    """A plane with some variation among its finite pixels (a blank DAPI plane is none)."""
    arr = np.asarray(image)
    if arr.ndim != 2 or arr.size == 0:
        return True  # let check_training_set name it
    finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
    return finite.size > 0 and bool(finite.max() > finite.min())


def training_set_from_cells(
    cells: Iterable[Any], on_skip: Callable[[str, str], Any] | None = None
) -> TrainingSet:
    """Build a :class:`TrainingSet` from ``core.io.Cell`` objects (streamed, one pass).

    Parameters
    ----------
    cells
        Objects with ``.channels`` (``"BF"`` required, ``"DAPI"`` optional), ``.label``,
        ``.group``, ``.cell_id``, ``.path`` and optionally ``.pixel_size_um``.
    on_skip
        Called as ``on_skip(path, reason)`` for each cell left out (no BF image). Without it,
        one warning names the cells left out.

    Returns
    -------
    TrainingSet
        Labels may be ``None`` (:func:`check_training_set` drops those). ``dapi`` is ``None``
        when no cell has a DAPI plane with any variation; likewise ``groups`` and
        ``pixel_sizes`` when none is known.

    Raises
    ------
    TrainingDataError
        No cell has a bright-field image.
    """
    bf, labels, dapi, ids, groups, paths, sizes = [], [], [], [], [], [], []
    no_bf: list[str] = []
    for cell in cells:
        channels = cell.channels
        image = channels.get("BF")
        if image is None:
            no_bf.append(str(cell.cell_id))
            if on_skip is not None:
                on_skip(str(cell.path), "no bright-field (BF) image, so it cannot be used")
            continue
        nucleus = channels.get("DAPI")
        bf.append(image)
        dapi.append(nucleus if nucleus is not None and _has_signal(nucleus) else None)
        labels.append(cell.label)
        ids.append(str(cell.cell_id))
        groups.append(cell.group)
        paths.append(str(cell.path))
        size = getattr(cell, "pixel_size_um", None)
        sizes.append(float(size) if size else None)
    if no_bf and on_skip is None:
        warnings.warn(
            f"{len(no_bf)} cell(s) without a bright-field (BF) image left out: {name_cells(no_bf)}",
            stacklevel=2,
        )
    if not bf:
        detail = f" ({len(no_bf)} cell(s) without one: {name_cells(no_bf)})" if no_bf else ""
        raise TrainingDataError(f"no cell with a bright-field image was found{detail}")
    return TrainingSet(
        bf=bf,
        labels=labels,
        dapi=dapi if any(d is not None for d in dapi) else None,
        cell_ids=ids,
        groups=groups if any(g is not None for g in groups) else None,
        paths=paths,
        pixel_sizes=sizes if any(s is not None for s in sizes) else None,
    )


def load_training_set(
    paths: str | os.PathLike | Sequence[str | os.PathLike], channel_map=None
) -> TrainingSet:
    """Read cells from DEPArray exports (any layout ``core.io`` reads) into a set.

    Parameters
    ----------
    paths
        Export folders or files.
    channel_map
        Passed to :func:`napari_deparray_ctc.core.io.iter_cells`.

    Returns
    -------
    TrainingSet
        See :func:`training_set_from_cells`; cells without BF are left out with a warning
        naming them.

    Raises
    ------
    TrainingDataError
        No readable cell with a bright-field image (the message lists skipped files).
    """
    from napari_deparray_ctc.core import io

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    skipped: list[tuple[str, str]] = []
    try:
        return training_set_from_cells(
            io.iter_cells(
                paths, channel_map=channel_map, on_skip=lambda p, r: skipped.append((p, r))
            )
        )
    except TrainingDataError as exc:
        shown = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
        raise TrainingDataError(
            ", ".join(paths), exc.reason + (f" (skipped: {shown})" if shown else "")
        ) from None


def _canonical_labels(labels: Sequence[Any], ids: list[str]) -> list[str | None]:
    from napari_deparray_ctc.core.annotations.labels import canonical_label

    out: list[str | None] = []
    bad: list[str] = []
    for cell_id, value in zip(ids, labels, strict=True):
        try:
            out.append(canonical_label(value))
        except ValueError:
            bad.append(f"{cell_id} ({value})")
            out.append(None)
    if bad:
        raise TrainingDataError(
            f"unknown class names for {name_cells(bad)}; use CTC or WBC (or leave the label empty)"
        )
    return out


def _bad_planes(images: Sequence[Any], ids: list[str]) -> tuple[list[str], list[str]]:
    """Cells whose plane is not 2-D / empty, and cells with NaN or infinite pixels."""
    not_2d, non_finite = [], []
    for cell_id, img in zip(ids, images, strict=True):
        if img is None:
            continue
        if np.ndim(img) != 2 or np.size(img) == 0:
            not_2d.append(cell_id)
        elif np.issubdtype(np.asarray(img).dtype, np.floating) and not np.isfinite(img).all():
            non_finite.append(cell_id)
    return not_2d, non_finite


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
        The labelled cells only (labels canonical ``"CTC"``/``"WBC"``); a warning says how
        many unlabelled cells were dropped.

    Raises
    ------
    TrainingDataError
        Misaligned lists, no cells, images that are not 2-D or contain NaN/inf (the cells
        are named), all images identical, unknown class names, fewer than ``min_total``
        labelled cells, one class only, or fewer than ``min_per_class`` cells of a class.
    """
    n = len(ts.bf)
    for name in ("labels", "dapi", "cell_ids", "groups", "paths", "pixel_sizes"):
        values = getattr(ts, name)
        if values is not None and len(values) != n:
            what = "DAPI images" if name == "dapi" else name.replace("_", " ")
            raise TrainingDataError(
                f"{n} bright-field images but {len(values)} {what}: the lists must be aligned"
            )
    if n == 0:
        raise TrainingDataError("the training set is empty: no cells given")
    ids = ts.ids()
    not_2d, non_finite = _bad_planes(ts.bf, ids)
    if not_2d:
        raise TrainingDataError(f"bright-field image(s) not 2-D or empty: {name_cells(not_2d)}")
    if non_finite:
        raise TrainingDataError(
            f"bright-field image(s) with NaN or infinite pixels: {name_cells(non_finite)}"
        )
    if ts.dapi is not None:
        not_2d_dapi, non_finite_dapi = _bad_planes(ts.dapi, ids)
        bad = not_2d_dapi + non_finite_dapi
        if bad:
            raise TrainingDataError(
                f"DAPI image(s) not 2-D, empty or with NaN/inf pixels: {name_cells(bad)}"
            )
    labels = _canonical_labels(ts.labels, ids)
    keep = [i for i, v in enumerate(labels) if v is not None]
    if not keep:
        raise TrainingDataError(
            f"none of the {n} cells is labelled CTC or WBC; annotate some cells first"
        )
    if n - len(keep):
        warnings.warn(
            f"{n - len(keep)} unlabelled cell(s) left out of training ({len(keep)} labelled "
            "remain)",
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
        only, missing = ("CTC", "WBC") if n_wbc == 0 else ("WBC", "CTC")
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
