"""CSV injection (issue 21): every CSV the plugin writes escapes text a spreadsheet would run as
a formula, and every reader gives the original text back."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from napari_deparray_ctc.core.annotations.cell_table import (
    CellRow,
    cell_rows,
    read_cell_table,
    write_cell_table,
)
from napari_deparray_ctc.core.annotations.csv_safe import (
    escape_cell,
    read_csv,
    unescape_cell,
    write_csv,
)
from napari_deparray_ctc.core.annotations.labels import (
    LabelRecord,
    read_labels_csv,
    write_labels_csv,
)
from napari_deparray_ctc.core.annotations.sidecars import load_annotations, save_annotations
from napari_deparray_ctc.core.inference.counts import (
    SUMMARY_COLUMNS,
    sample_counts,
    write_sample_counts,
)

#: the id a TIFF named ``=HYPERLINK("http://x","click")_BF.tif`` gives
FORMULA_ID = '=HYPERLINK("http://x","click")'
FORMULAS = [
    FORMULA_ID,
    "+1+1",
    "-2+3",
    "-cmd|' /C calc'!A0",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
    "'=already quoted",
    "''-2+3",
]
HARMLESS = ["cell_001", "", "a=b", "'quoted", "-5", "-0.25", "+3", "1e-3", "-1.5E+2", ".5"]


def _raw_rows(path: Path) -> list[list[str]]:
    """The cells as a spreadsheet sees them (no unescaping)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def _is_live_formula(cell: str) -> bool:
    return cell[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(cell)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("value", FORMULAS)
def test_formula_text_gets_one_quote_and_comes_back(value: str) -> None:
    escaped = escape_cell(value)
    assert escaped == "'" + value
    assert unescape_cell(escaped) == value


@pytest.mark.parametrize("value", HARMLESS)
def test_harmless_text_and_plain_numbers_are_left_alone(value: str) -> None:
    assert escape_cell(value) == value
    assert unescape_cell(value) == value


@pytest.mark.parametrize("value", [-0.5, -3, 0.25, None, True])
def test_non_text_values_are_never_escaped(value) -> None:
    assert escape_cell(value) is value


def test_a_path_is_escaped_as_its_text() -> None:
    assert escape_cell(Path("=x.tif")) == "'=x.tif"


def test_write_csv_round_trips_every_value(tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    values = FORMULAS + HARMLESS
    assert write_csv(out, ["value", "number"], [{"value": v, "number": -0.5} for v in values])
    raw = _raw_rows(out)[1:]
    assert not any(_is_live_formula(cell) for row in raw for cell in row)
    assert [row[1] for row in raw] == ["-0.5"] * len(values)  # a genuine number is untouched
    assert [row["value"] for row in read_csv(out)] == values


def test_write_csv_refuses_an_unknown_column(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not in"):
        write_csv(tmp_path / "t.csv", ["a"], [{"b": 1}])
    assert not (tmp_path / "t.csv").exists()


def test_cell_table_escapes_a_formula_cell_id_and_reads_it_back(tmp_path: Path) -> None:
    out = tmp_path / "cells.csv"
    rows = cell_rows(
        [FORMULA_ID, "-2+3", "plain"],
        [f"/x/{FORMULA_ID}_BF.tif", "@evil.tif", "/x/plain.tif"],
        [0.9, 0.1, 0.5],
        threshold=0.4,
        annotations=["CTC", None, "WBC"],
    )
    write_cell_table(out, rows)
    raw = _raw_rows(out)
    assert raw[1][:2] == ["'" + FORMULA_ID, f"/x/{FORMULA_ID}_BF.tif"]
    assert raw[2][:2] == ["'-2+3", "'@evil.tif"]
    assert raw[1][2] == "0.900000" and raw[1][4] == "0.400000"  # numbers as they were
    back = read_cell_table(out)
    assert [r["cell_id"] for r in back] == [FORMULA_ID, "-2+3", "plain"]
    assert [r["path"] for r in back] == [r.path for r in rows]
    assert [r["annotation"] for r in back] == ["CTC", "", "WBC"]


def test_cell_table_of_unclassified_rows(tmp_path: Path) -> None:
    out = tmp_path / "cells.csv"
    write_cell_table(out, [CellRow(cell_id="+SUM(1)", annotation="WBC")])
    assert read_cell_table(out) == [
        {"cell_id": "+SUM(1)", "path": "", "p_ctc": "", "label": "", "threshold": "",
         "calibration": "", "annotation": "WBC"}
    ]  # fmt: skip


def test_labels_csv_escapes_ids_and_samples_and_reads_them_back(tmp_path: Path) -> None:
    out = tmp_path / "labels.csv"
    write_labels_csv(
        out,
        [
            LabelRecord(FORMULA_ID, "CTC", "=patient"),
            LabelRecord("-2+3", "WBC", "p2"),
            {"cell_id": "'=x", "label": "WBC", "sample": "p2", "p_ctc": -0.0},
        ],
    )
    raw = _raw_rows(out)
    assert raw[0] == ["cell_id", "label", "sample", "p_ctc"]
    assert not any(_is_live_formula(cell) for row in raw for cell in row)
    records = read_labels_csv(out)
    assert list(records) == [FORMULA_ID, "-2+3", "'=x"]
    assert records[FORMULA_ID] == LabelRecord(FORMULA_ID, "CTC", "=patient")
    assert records["-2+3"].label == "WBC"


def test_labels_csv_written_by_hand_keeps_a_leading_quote_that_is_not_an_escape(
    tmp_path: Path,
) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("cell_id,label\n'quoted,CTC\n-5,WBC\n", encoding="utf-8")
    assert list(read_labels_csv(path)) == ["'quoted", "-5"]


def test_annotation_sidecar_round_trips_a_formula_cell_id(tmp_path: Path) -> None:
    path = tmp_path / "deparray_annotations.csv"
    save_annotations(path, [{"cell_id": FORMULA_ID, "label": "CTC"}, ("@x", "WBC")])
    assert not any(_is_live_formula(c) for row in _raw_rows(path) for c in row)
    assert load_annotations(path) == {FORMULA_ID: "CTC", "@x": "WBC"}


def test_sample_counts_escape_a_formula_sample_name(tmp_path: Path) -> None:
    out = tmp_path / "summary.csv"
    rows = sample_counts([FORMULA_ID, FORMULA_ID, "-p2"], [0.9, 0.2, 0.6], 0.5, {})
    assert write_sample_counts(out, rows) == 2
    raw = _raw_rows(out)
    assert raw[0] == list(SUMMARY_COLUMNS)
    assert [r[0] for r in raw[1:]] == ["'" + FORMULA_ID, "'-p2"]
    assert raw[1][3] == "1.10" and raw[1][6] == "0.5000"
    assert [r["sample"] for r in read_csv(out)] == [FORMULA_ID, "-p2"]


def test_annotation_store_keeps_the_timestamp_of_a_formula_cell_id(tmp_path: Path) -> None:
    from napari_deparray_ctc.core.annotations.sidecars import AnnotationStore, _entries

    path = tmp_path / "deparray_annotations.csv"
    store = AnnotationStore(path)
    store.update(FORMULA_ID, "CTC")
    assert _entries(path)[FORMULA_ID][1] != ""
