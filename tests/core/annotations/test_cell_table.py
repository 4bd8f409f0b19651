"""The one per-cell CSV: how P(CTC) is written."""


def test_probabilities_near_0_and_1_keep_their_order_in_the_csv():
    from napari_deparray_ctc.core.annotations.cell_table import format_probability

    assert format_probability(0.875) == "0.875000"
    assert format_probability(0.0) == "0.000000" and format_probability(1.0) == "1.000000"
    tiny = [3e-9, 2e-8, 7.5e-7, 4e-5]
    near_one = [0.9995, 0.99999, 0.9999999]
    for values in (tiny, near_one):
        written = [float(format_probability(v)) for v in values]
        assert written == sorted(written) and len(set(written)) == len(values)
        assert all(
            abs(w - v) <= 1e-9 * max(v, 1e-300) + 1e-16
            for w, v in zip(written, values, strict=True)
        )


def test_each_classified_row_says_what_its_call_is_calibrated_for(tmp_path):
    from napari_deparray_ctc.core.annotations.cell_table import (
        cell_rows,
        read_cell_table,
        write_cell_table,
    )
    from napari_deparray_ctc.core.constants import PREDICTION_CSV_COLUMNS
    from napari_deparray_ctc.core.inference.counts import NOT_CALIBRATED

    path = tmp_path / "cells.csv"
    rows = cell_rows(["a", "b"], p_ctc=[0.9, 0.1], threshold=0.5, calibration=NOT_CALIBRATED)
    assert write_cell_table(path, rows) == 2
    written = read_cell_table(path)
    assert tuple(written[0]) == PREDICTION_CSV_COLUMNS
    assert [r["calibration"] for r in written] == [NOT_CALIBRATED, NOT_CALIBRATED]
    assert [r["label"] for r in written] == ["CTC", "WBC"]
    # cells that were not classified have no call, so nothing is calibrated
    write_cell_table(path, cell_rows(["c"], calibration=NOT_CALIBRATED))
    assert read_cell_table(path)[0]["calibration"] == ""
