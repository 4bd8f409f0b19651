"""Class names and ``labels.csv`` files.

Classes are ``"CTC"``, ``"WBC"`` or ``None`` (not annotated), matched case-insensitively with
many aliases (:data:`CLASS_ALIASES`), also as class sub-folder names. The accepted names and the
``labels.csv`` format are described for users in ``docs/reader.md``. :func:`write_labels_csv`
writes that format atomically, through the one CSV writer (``core.annotations.csv_safe``: a
cell id a spreadsheet would run as a formula is escaped), and :func:`read_labels_csv` reads
such ids back as they were.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from napari_deparray_ctc.core.annotations.csv_safe import unescape_cell, write_csv
from napari_deparray_ctc.core.constants import CLASS_NAMES
from napari_deparray_ctc.core.errors import LabelsFileError

__all__ = [
    "CELL_ID_COLUMNS",
    "CLASS_ALIASES",
    "CLASS_NAMES",
    "GROUP_COLUMNS",
    "LABEL_COLUMNS",
    "LabelRecord",
    "LabelsFileError",
    "canonical_label",
    "class_from_folder_name",
    "read_labels_csv",
    "write_labels_csv",
]


CLASS_ALIASES: dict[str, tuple[str, ...]] = {
    "CTC": (
        "CTC",
        "tumor",
        "tumour",
        "tumor cell",
        "tumour cell",
        "circulating tumor cell",
        "circulating tumour cell",
        "cancer",
        "cancer cell",
        "malignant",
        "positive",
        "pos",
        "CK+",
        "1",
    ),
    "WBC": (
        "WBC",
        "leukocyte",
        "leucocyte",
        "white blood cell",
        "non-CTC",
        "nonCTC",
        "not CTC",
        "negative",
        "neg",
        "CD45",
        "CD45+",
        "lymphocyte",
        "0",
    ),
}
"""Accepted names per class (case-insensitive; spaces, ``-``, ``_``, ``.`` ignored)."""

_UNKNOWN_NAMES = ("", "unknown", "none", "na", "n/a", "nan", "?", "unlabeled", "unlabelled")

CELL_ID_COLUMNS: tuple[str, ...] = ("cell_id", "cellid", "cell", "id", "name", "file", "filename")
LABEL_COLUMNS: tuple[str, ...] = ("label", "class", "class_name", "annotation", "type")
GROUP_COLUMNS: tuple[str, ...] = ("sample", "group", "patient", "sample_id", "patient_id")

_IGNORED_CHARS_RE = re.compile(r"[\s_\-.]+")


def _normalise(text: str) -> str:
    return _IGNORED_CHARS_RE.sub("", text.strip().lower())


_ALIAS_TABLE: dict[str, str] = {
    _normalise(alias): canonical
    for canonical, aliases in CLASS_ALIASES.items()
    for alias in aliases
}
_UNKNOWN_TABLE = {_normalise(n) for n in _UNKNOWN_NAMES}


@dataclass(frozen=True)
class LabelRecord:
    """One row of a labels file."""

    cell_id: str
    label: str | None
    group: str | None = None


def _lookup(value: str) -> tuple[bool, str | None]:
    key = _normalise(value)
    if key in _UNKNOWN_TABLE:
        return True, None
    if key in _ALIAS_TABLE:
        return True, _ALIAS_TABLE[key]
    if key.endswith("s") and key[:-1] in _ALIAS_TABLE:
        return True, _ALIAS_TABLE[key[:-1]]
    return False, None


def canonical_label(value: object) -> str | None:
    """Return ``"CTC"``, ``"WBC"`` or ``None`` for a class name.

    Parameters
    ----------
    value
        A class name (any accepted alias), ``None``, or a float NaN.

    Returns
    -------
    str or None

    Raises
    ------
    ValueError
        When ``value`` is not a known class name (the message lists the accepted names).
    """
    if value is None or (isinstance(value, float) and value != value):
        return None
    known, label = _lookup(str(value))
    if not known:
        raise ValueError(
            f"unknown class {value!r}; use CTC (or tumour, cancer, positive, ...) or "
            f"WBC (or leukocyte, non-CTC, negative, CD45, ...), or leave it empty"
        )
    return label


def class_from_folder_name(name: str) -> str | None:
    """Class of a sub-folder called ``name`` (``"CTC"``/``"WBC"``), or ``None`` if not a class.

    Purely numeric names (``0/``, ``1/``) are not taken as classes here: such folders are far
    more often sample or run numbers.
    """
    if name.strip().isdigit():
        return None
    known, label = _lookup(name)
    return label if known else None


def _find_column(header: list[str], candidates: tuple[str, ...]) -> int | None:
    normalised = [_normalise(h) for h in header]
    for candidate in candidates:
        key = _normalise(candidate)
        if key in normalised:
            return normalised.index(key)
    return None


def read_labels_csv(path: str | os.PathLike) -> dict[str, LabelRecord]:
    """Read a ``labels.csv`` file (format in ``docs/reader.md``).

    Parameters
    ----------
    path
        The labels file.

    Returns
    -------
    dict
        ``cell_id -> LabelRecord`` in file order. Rows listing the same cell twice with the same
        class are merged.

    Raises
    ------
    LabelsFileError
        The file cannot be read, is empty, lacks a cell-id or label column, has an unknown class
        name, or lists one cell with two different classes. The message names the file, the line
        and the reason.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            text = handle.read()
    except OSError as exc:
        raise LabelsFileError(path, f"cannot read labels file ({exc.strerror or exc})") from exc
    if not text.strip():
        raise LabelsFileError(path, "labels file is empty")
    first_line = text.splitlines()[0]
    delimiter = max((",", ";", "\t"), key=first_line.count)
    rows = [
        [unescape_cell(field) for field in row]
        for row in csv.reader(io.StringIO(text), delimiter=delimiter)
    ]
    header = [h.strip() for h in rows[0]]
    id_col = _find_column(header, CELL_ID_COLUMNS)
    label_col = _find_column(header, LABEL_COLUMNS)
    group_col = _find_column(header, GROUP_COLUMNS)
    if id_col is None or label_col is None:
        missing = "a cell id column ('cell_id')" if id_col is None else "a 'label' column"
        raise LabelsFileError(
            path, f"header {','.join(header)!r} lacks {missing}; expected 'cell_id,label[,sample]'"
        )
    records: dict[str, LabelRecord] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(field.strip() for field in row):
            continue
        if len(row) <= max(id_col, label_col):
            raise LabelsFileError(path, f"line {line_no}: expected {len(header)} fields")
        cell_id = row[id_col].strip()
        if not cell_id:
            raise LabelsFileError(path, f"line {line_no}: empty cell id")
        try:
            label = canonical_label(row[label_col])
        except ValueError as exc:
            raise LabelsFileError(path, f"line {line_no}: {exc}") from None
        group = row[group_col].strip() if group_col is not None and group_col < len(row) else ""
        record = LabelRecord(cell_id, label, group or None)
        previous = records.get(cell_id)
        if previous is not None and previous.label != label:
            raise LabelsFileError(
                path,
                f"line {line_no}: cell {cell_id!r} is listed twice with different classes "
                f"({previous.label} and {label})",
            )
        records[cell_id] = record
    return records


def _as_row(row: LabelRecord | Mapping[str, object] | tuple | list) -> dict[str, object]:
    if isinstance(row, LabelRecord):
        return {"cell_id": row.cell_id, "label": row.label, "sample": row.group}
    if isinstance(row, Mapping):
        out = dict(row)
        if "group" in out and "sample" not in out:
            out["sample"] = out.pop("group")
        return out
    values = list(row)
    if len(values) not in (2, 3):
        raise ValueError(f"a labels row needs (cell_id, label[, sample]), got {row!r}")
    keys = ("cell_id", "label", "sample")
    return dict(zip(keys, values, strict=False))


def write_labels_csv(
    path: str | os.PathLike,
    rows: Iterable[LabelRecord | Mapping[str, object] | tuple | list],
) -> None:
    """Write a labels file atomically (temporary file, then rename).

    Parameters
    ----------
    path
        Destination; its folder must exist. A previous file there is replaced only once the new
        one is complete, so a crash never leaves a half-written file.
    rows
        :class:`LabelRecord` objects, ``(cell_id, label[, sample])`` tuples, or mappings with
        keys ``cell_id``, ``label`` and optionally ``sample`` (or ``group``) plus any extra
        columns (written after those, in order of first appearance, e.g. ``p_ctc``).

    Raises
    ------
    LabelsFileError
        When a row has no cell id or an unknown class; nothing is written then.
    """
    path = os.fspath(path)
    prepared: list[dict[str, object]] = []
    extra_columns: list[str] = []
    has_group = False
    for index, raw in enumerate(rows):
        try:
            row = _as_row(raw)
            row["label"] = canonical_label(row.get("label"))
        except ValueError as exc:
            raise LabelsFileError(path, f"row {index}: {exc}") from None
        cell_id = row.get("cell_id")
        if cell_id is None or str(cell_id) == "":
            raise LabelsFileError(path, f"row {index}: missing cell_id")
        if row.get("sample") not in (None, ""):
            has_group = True
        for key in row:
            if key not in ("cell_id", "label", "sample") and key not in extra_columns:
                extra_columns.append(key)
        prepared.append(row)
    columns = ["cell_id", "label"] + (["sample"] if has_group else []) + extra_columns
    write_csv(
        path, columns, ([row.get(c) for c in columns] for row in prepared), lineterminator="\n"
    )
