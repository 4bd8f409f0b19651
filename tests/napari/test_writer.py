"""File ▸ Save Selected Layer(s) on DEPArray layers writes the one cell table (CSV)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from napari_deparray_ctc.core.annotations.cell_table import read_cell_table
from napari_deparray_ctc.core.constants import PREDICTION_CSV_COLUMNS
from napari_deparray_ctc.core.errors import DeparrayError
from napari_deparray_ctc.core.synth import write_export
from napari_deparray_ctc.napari.writer import write_cells_csv

PLUGIN = "napari-deparray-ctc"


def _meta(channel, predictions=None):
    meta = {
        "channel": channel,
        "cell_ids": ["a", "b"],
        "paths": ["/x/a.tif", "/x/b.tif"],
        "labels": ["CTC", None],
    }
    if predictions is not None:
        meta["predictions"] = predictions
        meta["predictions_threshold"] = 0.4
        meta["predictions_calibration"] = "site: ward 3"
    return meta


def test_writer_writes_each_cell_once_with_predictions(tmp_path: Path) -> None:
    predictions = [
        {"cell_id": "a", "p_ctc": 0.9, "label": "CTC"},
        {"cell_id": "b", "p_ctc": 0.1, "label": "WBC"},
    ]
    layers = [
        (None, {"metadata": {"deparray": _meta("DAPI")}}, "image"),
        (None, {"metadata": {"deparray": _meta("BF", predictions)}}, "image"),
    ]
    out = tmp_path / "cells.csv"
    assert write_cells_csv(str(out), layers) == [str(out)]
    rows = read_cell_table(out)
    assert tuple(rows[0]) == PREDICTION_CSV_COLUMNS
    assert rows == [
        {"cell_id": "a", "path": "/x/a.tif", "p_ctc": "0.900000", "label": "CTC",
         "threshold": "0.400000", "calibration": "site: ward 3", "annotation": "CTC"},
        {"cell_id": "b", "path": "/x/b.tif", "p_ctc": "0.100000", "label": "WBC",
         "threshold": "0.400000", "calibration": "site: ward 3", "annotation": ""},
    ]  # fmt: skip


def test_writer_without_predictions_leaves_those_columns_empty(tmp_path: Path) -> None:
    out = tmp_path / "cells.csv"
    write_cells_csv(str(out), [(None, {"metadata": {"deparray": _meta("BF")}}, "image")])
    rows = read_cell_table(out)
    assert [r["p_ctc"] for r in rows] == ["", ""] and [r["label"] for r in rows] == ["", ""]
    assert [r["calibration"] for r in rows] == ["", ""]
    assert rows[0]["annotation"] == "CTC"


def test_writer_escapes_a_formula_cell_id_and_reads_it_back(tmp_path: Path) -> None:
    """CSV injection (issue 21): a TIFF named ``=HYPERLINK(...)_BF.tif`` is text in the file."""
    formula = '=HYPERLINK("http://x","click")'
    meta = {
        "channel": "BF",
        "cell_ids": [formula, "@b"],
        "paths": [f"/x/{formula}_BF.tif", "/x/b.tif"],
        "labels": [None, "WBC"],
        "predictions": [{"p_ctc": 0.9}, {"p_ctc": 0.1}],
        "predictions_threshold": 0.5,
    }
    out = tmp_path / "cells.csv"
    write_cells_csv(str(out), [(None, {"metadata": {"deparray": meta}}, "image")])
    with open(out, newline="", encoding="utf-8") as handle:
        raw = list(csv.reader(handle))  # the cells as a spreadsheet sees them
    assert [r[0] for r in raw[1:]] == ["'" + formula, "'@b"]
    assert raw[1][2] == "0.900000"
    rows = read_cell_table(out)
    assert [r["cell_id"] for r in rows] == [formula, "@b"]
    assert rows[0]["path"] == f"/x/{formula}_BF.tif"


def test_writer_refuses_layers_without_cells_in_words(tmp_path: Path) -> None:
    with pytest.raises(DeparrayError, match="none of the selected layers holds DEPArray cells"):
        write_cells_csv(str(tmp_path / "x.csv"), [(None, {"metadata": {}}, "image")])
    assert not (tmp_path / "x.csv").exists()


def test_save_selected_layers_in_napari(make_napari_viewer, tmp_path: Path) -> None:
    export = write_export(tmp_path / "export", 6, ctc_fraction=0.5, seed=1, image_size=24)
    viewer = make_napari_viewer()
    layers = viewer.open(str(export), plugin=PLUGIN)
    out = tmp_path / "saved.csv"
    written = viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    assert [str(p) for p in written] == [str(out)]
    rows = read_cell_table(out)
    assert [r["cell_id"] for r in rows] == layers[0].metadata["deparray"]["cell_ids"]
