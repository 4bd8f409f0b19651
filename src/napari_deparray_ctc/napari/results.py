"""Results of one classification run, Qt-free: what the table, the gallery and the CSV show.

One :class:`CellResult` per classified cell (its id, the layer and index it came from, P(CTC)
and the human annotation). :class:`ClassificationResults` calls the cells at a threshold
(``CTC`` if ``p_ctc >= threshold``, as ``core.classify.Predictions`` does), relabels them when
the threshold moves, counts the calls, orders the cells for review (nearest the threshold
first) and writes the one cell table of ``core.cell_table``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from napari_deparray_ctc.core.annotations.cell_table import CellRow, write_cell_table
from napari_deparray_ctc.core.constants import call_label, is_called_ctc

__all__ = ["CellResult", "ClassificationResults"]

_CLASSES = ("CTC", "WBC")


@dataclass
class CellResult:
    """One classified cell.

    Attributes
    ----------
    cell_id
        The cell's id (from the layer metadata, or generated for plain layers).
    layer
        Name of the layer the cell was read from.
    index
        Index of the cell in that layer (slice of a stack; 0 for a 2-D layer).
    p_ctc
        Predicted probability that the cell is a CTC.
    path
        Source file of the cell, when known.
    annotation
        Human label, ``"CTC"``, ``"WBC"`` or ``None``.
    group
        The sample (patient) the cell comes from, when known.
    """

    cell_id: str
    layer: str
    index: int
    p_ctc: float
    path: str | None = None
    annotation: str | None = None
    group: str | None = None


def _check_threshold(threshold: float) -> float:
    value = float(threshold)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, not {threshold!r}")
    return value


class ClassificationResults:
    """Classified cells and their calls at an adjustable threshold.

    Parameters
    ----------
    rows
        The cells, in the order they were classified.
    threshold
        Current decision threshold on P(CTC).
    model_threshold
        The threshold stored in the model file (default: ``threshold``).
    model_path
        The model file that produced the probabilities.
    """

    def __init__(
        self,
        rows: Iterable[CellResult],
        threshold: float,
        model_threshold: float | None = None,
        model_path: str | None = None,
        model_metadata: dict | None = None,
    ) -> None:
        self.rows: list[CellResult] = list(rows)
        self.model_metadata = dict(model_metadata or {})
        for row in self.rows:
            if row.annotation not in (*_CLASSES, None):
                raise ValueError(f"cell {row.cell_id!r}: unknown annotation {row.annotation!r}")
        self._threshold = _check_threshold(threshold)
        self.model_threshold = (
            self._threshold if model_threshold is None else _check_threshold(model_threshold)
        )
        self.model_path = model_path
        #: set when the cells look unlike the model's training cells (its instrument): the
        #: calls, counts and intervals then rest on a calibration made elsewhere
        self.calibration_warning: str | None = None
        self._p = np.array([row.p_ctc for row in self.rows], dtype=np.float64)
        self._by_id: dict[str, list[int]] = {}
        self._by_position: dict[tuple[str, int], int] = {}
        for i, row in enumerate(self.rows):
            self._by_id.setdefault(row.cell_id, []).append(i)
            self._by_position[(row.layer, int(row.index))] = i

    # ---------------------------------------------------------------- basic access

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def p_ctc(self) -> np.ndarray:
        """P(CTC) of every cell, shape ``(N,)`` (a copy)."""
        return self._p.copy()

    @property
    def threshold(self) -> float:
        """The threshold the calls are made at."""
        return self._threshold

    @property
    def layers(self) -> list[str]:
        """Names of the layers the cells came from, in first-seen order."""
        return list(dict.fromkeys(row.layer for row in self.rows))

    def indices_of(self, cell_id: str) -> list[int]:
        """Row indices of the cell with this id (usually one)."""
        return list(self._by_id.get(cell_id, []))

    def index_at(self, layer: str, index: int) -> int | None:
        """Row index of cell ``index`` of ``layer``, or ``None`` if it was not classified."""
        return self._by_position.get((layer, int(index)))

    # ---------------------------------------------------------------- calls

    def call(self, row: int) -> str:
        """``"CTC"`` or ``"WBC"`` for row ``row`` at the current threshold."""
        return "CTC" if self._p[row] >= self._threshold else "WBC"

    @property
    def calls(self) -> list[str]:
        """The call of every cell at the current threshold."""
        return self.calls_at(self._threshold)

    def calls_at(self, threshold: float) -> list[str]:
        """The call of every cell at ``threshold`` (the current threshold is not changed)."""
        t = _check_threshold(threshold)
        return [call_label(p, t) for p in self._p]

    def set_threshold(self, threshold: float) -> list[int]:
        """Move the threshold; no rerun needed.

        Returns
        -------
        list of int
            Rows whose call changed.
        """
        t = _check_threshold(threshold)
        before = self._p >= self._threshold
        after = is_called_ctc(self._p, t)
        self._threshold = t
        return [int(i) for i in np.flatnonzero(before != after)]

    def counts(self) -> dict[str, int]:
        """Number of cells called CTC and WBC at the current threshold."""
        n_ctc = int(np.count_nonzero(self._p >= self._threshold))
        return {"CTC": n_ctc, "WBC": len(self.rows) - n_ctc}

    def annotation_counts(self) -> dict[str, int]:
        """Number of cells annotated CTC, WBC, and not annotated (key ``None``)."""
        counts: dict[str | None, int] = {"CTC": 0, "WBC": 0, None: 0}
        for row in self.rows:
            counts[row.annotation] += 1
        return counts  # type: ignore[return-value]

    def uncertainty(self, row: int) -> float:
        """Distance of the cell's P(CTC) from the threshold (0 = most doubtful)."""
        return abs(float(self._p[row]) - self._threshold)

    def uncertainty_order(self) -> list[int]:
        """Row indices, most doubtful first (``|p_ctc - threshold|`` ascending, stable)."""
        distance = np.abs(self._p - self._threshold)
        return [int(i) for i in np.argsort(distance, kind="stable")]

    # ---------------------------------------------------------------- annotations

    def set_annotation(self, cell_id: str, label: str | None) -> list[int]:
        """Record a human label for a cell.

        Returns
        -------
        list of int
            Rows updated (every row holding ``cell_id``).
        """
        if label not in (*_CLASSES, None):
            raise ValueError(f"annotation must be 'CTC', 'WBC' or None, not {label!r}")
        rows = self.indices_of(cell_id)
        for i in rows:
            self.rows[i].annotation = label
        return rows

    # ---------------------------------------------------------------- outputs

    @property
    def calibration(self) -> str:
        """What the calls are calibrated for, in words (``core.counts.calibration_status``):
        not calibrated when the shift check fired on these cells."""
        from napari_deparray_ctc.core.inference.counts import calibration_status

        return calibration_status(self.model_metadata, self.calibration_warning is not None)

    def sample_counts(self, default_sample: str = "all cells") -> list[dict]:
        """Per sample: cells, calls at the threshold, expected CTCs and a 95 % interval.

        See ``core.counts.sample_counts`` (the same figures as ``classify --summary``).
        """
        from napari_deparray_ctc.core.inference.counts import sample_counts

        return sample_counts(
            [row.group for row in self.rows],
            self._p,
            self._threshold,
            self.model_metadata,
            default_sample=default_sample,
            shifted=self.calibration_warning is not None,
        )

    def predictions_for_layer(self, layer: str, n_cells: int) -> list[dict] | None:
        """The ``metadata["deparray"]["predictions"]`` list of one layer.

        Parameters
        ----------
        layer
            Layer name.
        n_cells
            How many cells the layer holds.

        Returns
        -------
        list of dict or None
            ``[{"cell_id", "p_ctc", "label"}]`` aligned with the layer's cells, or ``None``
            when not every cell of the layer was classified.
        """
        out: list[dict | None] = [None] * n_cells
        for i, row in enumerate(self.rows):
            if row.layer == layer and 0 <= row.index < n_cells:
                out[row.index] = {
                    "cell_id": row.cell_id,
                    "p_ctc": float(self._p[i]),
                    "label": self.call(i),
                }
        if any(item is None for item in out):
            return None
        return out  # type: ignore[return-value]

    def cell_rows(self, order: Sequence[int] | None = None) -> list[CellRow]:
        """The rows of the cell table, in ``order`` (default: as classified)."""
        indices = range(len(self.rows)) if order is None else order
        calibration = self.calibration
        return [
            CellRow(
                cell_id=self.rows[i].cell_id,
                path=self.rows[i].path,
                p_ctc=float(self._p[i]),
                threshold=self._threshold,
                annotation=self.rows[i].annotation,
                calibration=calibration,
            )
            for i in indices
        ]

    def to_csv(self, path: str | os.PathLike, order: Sequence[int] | None = None) -> None:
        """Write the results to ``path`` atomically (``core.cell_table.write_cell_table``).

        Parameters
        ----------
        path
            Destination CSV file; its folder must exist.
        order
            Row order (e.g. the table's current sort); default: as classified.
        """
        write_cell_table(path, self.cell_rows(order))
