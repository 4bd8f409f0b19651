"""ClassificationResults: calls, relabelling, counts, review order, CSV (no Qt)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_deparray_ctc.core.annotations.cell_table import format_probability
from napari_deparray_ctc.core.constants import PREDICTION_CSV_COLUMNS as CSV_COLUMNS
from napari_deparray_ctc.napari.results import CellResult, ClassificationResults

P = [0.875, 0.125, 0.625, 0.375, 0.5]  # exact in binary: ties are real ties


@pytest.fixture
def results():
    rows = [
        CellResult(f"c{i}", "stack :: BF", i, p, path=f"/data/c{i}.tif") for i, p in enumerate(P)
    ]
    rows[1].annotation = "WBC"
    return ClassificationResults(rows, threshold=0.5, model_path="/m.pt")


def test_calls_use_greater_or_equal(results):
    assert results.calls == ["CTC", "WBC", "CTC", "WBC", "CTC"]
    assert results.counts() == {"CTC": 3, "WBC": 2}
    assert results.model_threshold == 0.5


def test_threshold_relabels_without_rerun(results):
    changed = results.set_threshold(0.7)
    assert results.threshold == 0.7
    assert sorted(changed) == [2, 4]  # 0.625 and 0.5 flip to WBC
    assert results.calls == ["CTC", "WBC", "WBC", "WBC", "WBC"]
    assert results.counts() == {"CTC": 1, "WBC": 4}
    assert results.calls_at(0.0) == ["CTC"] * 5
    assert results.threshold == 0.7  # calls_at does not move it
    np.testing.assert_array_equal(results.p_ctc, P)


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan")])
def test_bad_threshold_rejected(results, bad):
    with pytest.raises(ValueError, match="between 0 and 1"):
        results.set_threshold(bad)
    assert results.threshold == 0.5


def test_uncertainty_order_nearest_threshold_first(results):
    # |p - 0.5| = 0.375, 0.375, 0.125, 0.125, 0.0 -> stable ties keep classification order
    assert results.uncertainty_order() == [4, 2, 3, 0, 1]
    assert results.uncertainty(4) == 0.0
    results.set_threshold(0.1)
    assert results.uncertainty_order()[0] == 1


def test_annotations(results):
    assert results.annotation_counts() == {"CTC": 0, "WBC": 1, None: 4}
    assert results.set_annotation("c0", "CTC") == [0]
    assert results.rows[0].annotation == "CTC"
    assert results.set_annotation("unknown", "CTC") == []
    with pytest.raises(ValueError, match="annotation"):
        results.set_annotation("c0", "tumour")


def test_lookup(results):
    assert results.indices_of("c3") == [3]
    assert results.index_at("stack :: BF", 2) == 2
    assert results.index_at("other", 2) is None
    assert results.layers == ["stack :: BF"]


def test_predictions_for_layer_follow_the_contract(results):
    preds = results.predictions_for_layer("stack :: BF", 5)
    assert [p["cell_id"] for p in preds] == [f"c{i}" for i in range(5)]
    assert all(set(p) == {"cell_id", "p_ctc", "label"} for p in preds)
    assert [p["label"] for p in preds] == results.calls
    assert preds[0]["p_ctc"] == pytest.approx(0.875)
    # a layer not fully classified gets no prediction list
    assert results.predictions_for_layer("stack :: BF", 6) is None


def test_csv_matches_rows_and_order(results, tmp_path):
    out = tmp_path / "calls.csv"
    results.set_threshold(0.7)
    order = results.uncertainty_order()
    results.to_csv(out, order=order)
    with out.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert [r["cell_id"] for r in rows] == [f"c{i}" for i in order]
    by_id = {r["cell_id"]: r for r in rows}
    assert by_id["c0"] == {
        "cell_id": "c0",
        "path": "/data/c0.tif",
        "p_ctc": format_probability(0.875),
        "label": "CTC",
        "threshold": "0.700000",
        "calibration": "training instrument",
        "annotation": "",
    }
    assert by_id["c1"]["annotation"] == "WBC"
    assert by_id["c2"]["label"] == "WBC"
    assert float(by_id["c2"]["p_ctc"]) == pytest.approx(0.625)


def test_failed_csv_write_keeps_the_old_file(results, tmp_path, monkeypatch):
    out = tmp_path / "calls.csv"
    out.write_text("precious\n")

    # a failure while writing rows (the one CSV writer fails on a row) inside atomic_write
    monkeypatch.setattr(
        "napari_deparray_ctc.core.annotations.csv_safe.escape_cell",
        lambda value: (_ for _ in ()).throw(OSError("disk full")),
    )
    with pytest.raises(OSError, match="disk full"):
        results.to_csv(out)
    assert out.read_text() == "precious\n"
    assert [p.name for p in tmp_path.iterdir()] == ["calls.csv"]


def test_unknown_annotation_rejected_at_construction():
    with pytest.raises(ValueError, match="unknown annotation"):
        ClassificationResults([CellResult("a", "l", 0, 0.5, annotation="x")], threshold=0.5)
