"""The one per-cell CSV the plugin writes: cell id, path, P(CTC), call, threshold, what the call
is calibrated for, annotation.

``deparray-ctc classify --out``, the classify widget's *Export CSV* and napari's
*File ▸ Save Selected Layer(s)* on a DEPArray layer all go through :func:`write_cell_table`, so
the three files have the same columns (:data:`~napari_deparray_ctc.core.constants.PREDICTION_CSV_COLUMNS`)
and the same number format. Prediction columns are empty for cells that were not classified.
Text cells that a spreadsheet would run as a formula (a cell id from a file named ``=...``) are
escaped by the one CSV writer (``core.annotations.csv_safe``); :func:`read_cell_table` undoes it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from napari_deparray_ctc.core.annotations.csv_safe import read_csv, write_csv_rows
from napari_deparray_ctc.core.atomic import atomic_write
from napari_deparray_ctc.core.constants import PREDICTION_CSV_COLUMNS, call_label

__all__ = ["CellRow", "cell_rows", "format_probability", "read_cell_table", "write_cell_table"]


def format_probability(p: float) -> str:
    """P(CTC) or a threshold as written to CSV: six decimals, and more near 0 and 1.

    Within 0.001 of 0 or 1, six decimals would round different cells to the same value (a
    site calibration can move a whole export there), so ten significant digits keep them
    apart and the ranking survives the CSV.
    """
    value = float(p)
    if 0.001 <= value <= 0.999 or value in (0.0, 1.0) or value != value:
        return f"{value:.6f}"
    return f"{value:.10g}"


@dataclass
class CellRow:
    """One row of the cell table.

    Attributes
    ----------
    cell_id, path
        The cell and its source file (``None`` when unknown).
    p_ctc, threshold
        P(CTC) and the threshold of the call, or ``None`` when not classified.
    calibration
        What the call is calibrated for, in words
        (``core.inference.counts.calibration_status``: ``"training instrument"``,
        ``"site: NAME"`` or ``NOT_CALIBRATED`` when the shift check fired), or ``None``.
    annotation
        The user's label, ``"CTC"``, ``"WBC"`` or ``None``.
    """

    cell_id: str
    path: str | None = None
    p_ctc: float | None = None
    threshold: float | None = None
    annotation: str | None = None
    calibration: str | None = None

    @property
    def label(self) -> str | None:
        """The call at :attr:`threshold` (``None`` when not classified)."""
        if self.p_ctc is None or self.threshold is None:
            return None
        return call_label(self.p_ctc, self.threshold)

    def as_strings(self) -> dict[str, str]:
        """The row as the CSV writes it."""
        classified = self.p_ctc is not None and self.threshold is not None
        return {
            "cell_id": str(self.cell_id),
            "path": "" if self.path is None else os.fspath(self.path),
            "p_ctc": format_probability(self.p_ctc) if classified else "",
            "label": self.label or "",
            "threshold": format_probability(self.threshold) if classified else "",
            "calibration": (self.calibration or "") if classified else "",
            "annotation": self.annotation or "",
        }


def cell_rows(
    cell_ids: Sequence[str],
    paths: Sequence[str | None] | None = None,
    p_ctc: Sequence[float] | None = None,
    threshold: float | None = None,
    annotations: Sequence[str | None] | None = None,
    calibration: str | None = None,
) -> list[CellRow]:
    """Aligned per-cell lists as :class:`CellRow` objects (missing lists give empty columns;
    ``calibration``, what the calls are calibrated for, is the same for every cell)."""
    n = len(cell_ids)
    for name, values in (("paths", paths), ("p_ctc", p_ctc), ("annotations", annotations)):
        if values is not None and len(values) != n:
            raise ValueError(f"{n} cell ids but {len(values)} {name}")
    return [
        CellRow(
            cell_id=str(cell_ids[i]),
            path=None if paths is None else paths[i],
            p_ctc=None if p_ctc is None else float(p_ctc[i]),
            threshold=None if p_ctc is None else threshold,
            annotation=None if annotations is None else annotations[i],
            calibration=None if p_ctc is None else calibration,
        )
        for i in range(n)
    ]


def write_cell_table(path: str | os.PathLike, rows: Iterable[CellRow]) -> int:
    """Write the cell table to ``path`` atomically (the old file stays whole on any failure).

    Parameters
    ----------
    path
        Destination CSV file; its folder must exist.
    rows
        The rows, in the order to write them.

    Returns
    -------
    int
        Number of rows written.
    """
    # surrogateescape: paths with non-UTF-8 bytes are written as they are (as in labels.csv)
    with atomic_write(path, "w", newline="", errors="surrogateescape") as handle:
        return write_csv_rows(handle, PREDICTION_CSV_COLUMNS, (r.as_strings() for r in rows))


def read_cell_table(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a cell table as dicts of strings (for tests and scripts).

    Parameters
    ----------
    path
        A file written by :func:`write_cell_table`.

    Returns
    -------
    list of dict
        ``column -> text`` per row; escaped formula-like text is read back as written
        (``core.annotations.csv_safe``).
    """
    return read_csv(path)
