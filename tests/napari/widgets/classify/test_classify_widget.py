"""The "Classify cells" dock widget.

Most tests replace core's ``load_model`` and ``classify`` (what the worker calls) with a
stand-in whose P(CTC) is a known function of the image, so they check the widget's wiring
exactly; the ``real`` tests run a tiny ResNet trained in a module-scoped fixture end to end,
and compare the widget with ``core.classify`` and with the ``deparray-ctc classify`` CLI.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_deparray_ctc.napari.caption import _text_overlay
from napari_deparray_ctc.napari.layer_info import LayerInfo
from napari_deparray_ctc.napari.session import session_for
from napari_deparray_ctc.napari.widgets.classify import widget as cw
from napari_deparray_ctc.napari.widgets.classify.inputs import CONFIG_DIR_ENV, last_model_path
from napari_deparray_ctc.napari.widgets.classify.table import COL_ANNOTATION
from napari_deparray_ctc.napari.widgets.classify.widget import ClassifyWidget

WAIT_MS = 60_000


# ============================================================================ helpers


@pytest.fixture(autouse=True)
def _settings_in_tmp(tmp_path, monkeypatch):
    """Never touch the user's remembered model."""
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "settings"))


@pytest.fixture
def errors(monkeypatch):
    """Messages passed to napari's show_error by the widget."""
    shown: list[str] = []
    monkeypatch.setattr(
        "napari.utils.notifications.show_error", lambda message: shown.append(str(message))
    )
    return shown


@dataclass
class FakeModel:
    threshold: float = 0.5
    metadata: dict = field(default_factory=lambda: {"input_channel": "BF"})


@dataclass
class FakePredictions:
    p_ctc: np.ndarray
    threshold: float
    cell_ids: list
    cancelled: bool = False


class FakeCore:
    """Stand-in for load_model + classify: P(CTC) = mean pixel value / 100."""

    def __init__(self, threshold: float = 0.5, delay_s: float = 0.0):
        self.threshold = threshold
        self.delay_s = delay_s
        self.calls = 0
        self.images_seen = 0
        self.first_chunk_done = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def load_model(self, path, device=None):
        return FakeModel(self.threshold)

    def classify(
        self,
        images,
        model,
        batch_size=64,
        device=None,
        cell_ids=None,
        progress=None,
        should_stop=None,
        **options,
    ):
        self.calls += 1
        p = []
        for image in images:
            if should_stop is not None and should_stop():
                return FakePredictions(np.array(p), model.threshold, list(cell_ids)[: len(p)], True)
            assert image.ndim == 2
            p.append(float(np.mean(image)) / 100.0)
            self.images_seen += 1
            if progress is not None and len(p) % batch_size == 0:
                progress(len(p), None)
                if len(p) == batch_size:
                    self.first_chunk_done.set()
                    self.release.wait(10)
        if progress is not None:  # core reports after the last (partial) batch too
            progress(len(p), None)
        time.sleep(self.delay_s)
        return FakePredictions(np.array(p), model.threshold, list(cell_ids))


def _patch_core(monkeypatch, core) -> None:
    monkeypatch.setattr("napari_deparray_ctc.core.model.loaded.load_model", core.load_model)
    monkeypatch.setattr("napari_deparray_ctc.core.inference.classify.classify", core.classify)


@pytest.fixture
def fake_core(monkeypatch):
    core = FakeCore()
    _patch_core(monkeypatch, core)
    return core


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "fake-model.pt"
    path.write_bytes(b"read by the patched loader only")
    return path


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def widget(viewer, qtbot):
    w = ClassifyWidget(viewer)
    viewer.window.add_dock_widget(w, name="Classify cells")
    yield w
    if w.is_running:
        w.cancel()
        qtbot.waitUntil(lambda: not w.is_running, timeout=WAIT_MS)


def _meta(channel, ids, labels=None):
    n = len(ids)
    return {
        "deparray": {
            "channel": channel,
            "cell_ids": list(ids),
            "paths": [f"/export/{i}.tif" for i in ids],
            "labels": list(labels) if labels is not None else [None] * n,
            "groups": [None] * n,
            "pixel_size_um": None,
            "original_shapes": [[8, 8]] * n,
        }
    }


# P(CTC) of the stand-in = value / 100
STACK_VALUES = [93.0, 12.0, 55.0, 48.0, 70.0]


def _add_stack(viewer, values=STACK_VALUES, name="export", labels=None):
    ids = [f"cell{i:04d}" for i in range(len(values))]
    bf = np.stack([np.full((8, 8), v, dtype=np.float32) for v in values])
    dapi = np.zeros_like(bf)
    bf_layer = viewer.add_image(bf, name=f"{name} :: BF", metadata=_meta("BF", ids, labels))
    dapi_layer = viewer.add_image(
        dapi, name=f"{name} :: DAPI", metadata=_meta("DAPI", ids, labels), blending="additive"
    )
    return bf_layer, dapi_layer


def _choose_model(widget, qtbot, path):
    widget.set_model_path(path)
    qtbot.waitUntil(lambda: not widget.model_box.is_checking, timeout=WAIT_MS)


def _caption(viewer) -> str:
    return session_for(viewer).caption.text


def _run(widget, qtbot):
    qtbot.waitUntil(lambda: not widget.model_box.is_checking, timeout=WAIT_MS)
    worker = widget.run()
    assert worker is not None, widget.status_label.text()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=WAIT_MS)
    return worker


# ============================================================================ contribution / UI


def test_widget_is_contributed_to_napari(viewer, qtbot, fake_core, model_file):
    """Docked through npe2 (napari hands plugins a public-only proxy of the viewer)."""
    bf_layer, _ = _add_stack(viewer)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-deparray-ctc", "Classify cells")
    assert isinstance(widget, ClassifyWidget)
    _choose_model(widget, qtbot, model_file)
    _run(widget, qtbot)
    assert len(bf_layer.metadata["deparray"]["predictions"]) == len(STACK_VALUES)
    widget.table.setCurrentCell(3, 0)
    assert viewer.dims.current_step[0] == 3
    assert viewer.layers.selection.active is bf_layer


def test_widget_says_only_bf_is_used(widget, viewer):
    _add_stack(viewer)
    note = widget.findChild(cw.QLabel, "bf_only_note").text()
    assert "Only the bright-field (BF)" in note and "not used" in note
    choices = [
        widget.cells.target_combo.itemText(i) for i in range(widget.cells.target_combo.count())
    ]
    assert choices == ["export  (5 cells, BF)"]  # fluorescence layers are not offered


def test_two_exports_classify_only_the_chosen_one(widget, viewer, qtbot, fake_core, model_file):
    old_bf, _ = _add_stack(viewer, name="training")
    _new_bf, _ = _add_stack(viewer, values=[10.0, 90.0], name="new export")
    # the newest export is offered first and chosen
    assert widget.cells.target_combo.currentData() == ("new export :: BF",)
    _choose_model(widget, qtbot, model_file)
    _run(widget, qtbot)
    assert len(widget.results) == 2 and widget.results.layers == ["new export :: BF"]
    assert "predictions" not in old_bf.metadata["deparray"]
    assert [r["layer"] for r in widget.table.visible_rows()] == ["new export", "new export"]
    widget.choose_layers(["training :: BF"])
    _run(widget, qtbot)
    assert widget.results.layers == ["training :: BF"] and len(widget.results) == 5


# ============================================================================ running (patched core)


def test_classify_stack_stores_predictions(widget, viewer, qtbot, fake_core, model_file):
    bf_layer, dapi_layer = _add_stack(viewer)
    _choose_model(widget, qtbot, model_file)
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)  # the real button
    assert widget.is_running or widget.results is not None
    qtbot.waitUntil(lambda: not widget.is_running, timeout=WAIT_MS)

    meta = bf_layer.metadata["deparray"]
    predictions = meta["predictions"]
    # the metadata contract: aligned with cell_ids, {"cell_id", "p_ctc", "label"}
    assert [p["cell_id"] for p in predictions] == meta["cell_ids"]
    assert all(set(p) >= {"cell_id", "p_ctc", "label"} for p in predictions)
    np.testing.assert_allclose([p["p_ctc"] for p in predictions], np.array(STACK_VALUES) / 100)
    assert [p["label"] for p in predictions] == ["CTC", "WBC", "CTC", "WBC", "CTC"]
    assert meta["predictions_threshold"] == pytest.approx(0.5)
    # what the stored calls are calibrated for, read back through the typed layer info
    assert LayerInfo.of(bf_layer).predictions_calibration == "training instrument"
    assert "predictions" not in dapi_layer.metadata["deparray"]  # fluorescence ignored
    assert fake_core.images_seen == 5

    assert widget.table.rowCount() == 5
    rows = widget.table.visible_rows()
    assert [r["cell id"] for r in rows] == meta["cell_ids"]
    assert rows[0] == {
        "cell id": "cell0000",
        "layer": "export",
        "P(CTC)": "0.930",
        "call": "CTC",
        "annotation": "",
    }
    assert "CTC 3 · WBC 2" in widget.results_box.counts_label.text()
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert widget.results_box.threshold_slider.value() == pytest.approx(0.5)
    assert session_for(viewer).results is widget.results  # shared with the other widgets


def test_classify_set_of_plain_2d_layers(widget, viewer, qtbot, fake_core, model_file):
    layers = [
        viewer.add_image(np.full((6, 7), v, dtype=np.uint16), name=f"cell{i}")
        for i, v in enumerate([80, 20, 60])
    ]
    assert widget.cells.target_combo.currentData() == ("cell0", "cell1", "cell2")
    _choose_model(widget, qtbot, model_file)
    _run(widget, qtbot)
    for layer, expected in zip(layers, [0.8, 0.2, 0.6], strict=True):
        (prediction,) = layer.metadata["deparray"]["predictions"]
        assert prediction["cell_id"] == layer.metadata["deparray"]["cell_ids"][0]
        assert prediction["p_ctc"] == pytest.approx(expected)
    # clicking a row selects that cell's layer, and the caption shows its call
    row = next(r for r in range(3) if widget.table.item(r, 0).text() == "cell1")
    qtbot.mouseClick(
        widget.table.viewport(),
        Qt.MouseButton.LeftButton,
        pos=widget.table.visualItemRect(widget.table.item(row, 2)).center(),
    )
    assert viewer.layers.selection.active is layers[1]
    assert "called WBC 0.20" in _caption(viewer)


def test_no_cells_is_refused_with_a_reason(widget, viewer, qtbot, fake_core, model_file, errors):
    _choose_model(widget, qtbot, model_file)
    assert widget.run() is None
    assert errors and "Choose the cells to classify" in errors[-1]
    assert widget.run_button.isEnabled()


def test_an_export_without_bf_says_classification_needs_bf(
    widget, viewer, qtbot, fake_core, model_file, errors
):
    for channel in ("DAPI", "CK"):
        viewer.add_image(
            np.zeros((2, 5, 5)),
            name=f"run7 :: {channel}",
            metadata={"deparray": {"channel": channel}},
        )
    _choose_model(widget, qtbot, model_file)
    assert widget.cells.target_combo.count() == 0
    assert "no bright-field (BF)" in widget.status_label.text()
    assert widget.run() is None
    assert "'run7' has no bright-field (BF) images, only DAPI, CK" in errors[-1]
    assert "classification needs BF" in errors[-1]


def test_plain_stack_without_metadata_gets_generated_ids(
    widget, viewer, qtbot, fake_core, model_file
):
    layer = viewer.add_image(np.stack([np.full((5, 5), v) for v in (10.0, 90.0)]), name="raw")
    _choose_model(widget, qtbot, model_file)
    widget.choose_layers(["raw"])
    _run(widget, qtbot)
    ids = [p["cell_id"] for p in layer.metadata["deparray"]["predictions"]]
    assert ids == ["raw#0000", "raw#0001"]


def test_threshold_relabels_without_rerun(widget, viewer, qtbot, fake_core, model_file):
    bf_layer, _ = _add_stack(viewer)
    _choose_model(widget, qtbot, model_file)
    _run(widget, qtbot)
    calls_before = fake_core.calls

    widget.results_box.set_threshold(0.6)
    assert fake_core.calls == calls_before  # no rerun
    assert widget.results.threshold == pytest.approx(0.6)
    labels = [p["label"] for p in bf_layer.metadata["deparray"]["predictions"]]
    assert labels == ["CTC", "WBC", "WBC", "WBC", "CTC"]
    assert [r["call"] for r in widget.table.visible_rows()] == labels
    assert "CTC 2 · WBC 3" in widget.results_box.counts_label.text()
    assert bf_layer.metadata["deparray"]["predictions_threshold"] == pytest.approx(0.6)

    widget.results_box.reset_threshold()
    assert widget.results.threshold == pytest.approx(0.5)
    assert [r["call"] for r in widget.table.visible_rows()] == ["CTC", "WBC", "CTC", "WBC", "CTC"]


def test_slider_defaults_to_the_model_threshold(widget, viewer, qtbot, fake_core, model_file):
    fake_core.threshold = 0.8
    _add_stack(viewer)
    _choose_model(widget, qtbot, model_file)
    _run(widget, qtbot)
    assert widget.results_box.threshold_slider.value() == pytest.approx(0.8)
    assert [r["call"] for r in widget.table.visible_rows()].count("CTC") == 1  # only 0.93


def test_review_queue_orders_by_uncertainty(widget, viewer, qtbot, fake_core, model_file):
    _add_stack(viewer)
    _choose_model(widget, qtbot, model_file)
    _run(widget, qtbot)
    widget.results_box.review_checkbox.setChecked(True)
    ids = [r["cell id"] for r in widget.table.visible_rows()]
    # |p - 0.5|: 0.43, 0.38, 0.05, 0.02, 0.20 -> 48, 55, 70, 12, 93
    assert ids == ["cell0003", "cell0002", "cell0004", "cell0001", "cell0000"]
    assert widget.table.order() == widget.results.uncertainty_order()
    # moving the threshold re-sorts the queue at once
    widget.results_box.set_threshold(0.9)
    assert widget.table.visible_rows()[0]["cell id"] == "cell0000"
    widget.results_box.review_checkbox.setChecked(False)
    assert widget.table.order() == [0, 1, 2, 3, 4]


def test_row_click_moves_slider_and_caption_follows(widget, viewer, qtbot, fake_core, model_file):
    bf_layer, dapi_layer = _add_stack(viewer)
    _choose_model(widget, qtbot, model_file)
    _run(widget, qtbot)
    widget.table.setCurrentCell(2, 1)  # cell0002, p = 0.55
    assert viewer.layers.selection.active is bf_layer
    assert viewer.dims.current_step[0] == 2
    overlay = _text_overlay(viewer)
    assert overlay.visible and "cell0002 (3 of 5" in overlay.text
    assert "called CTC 0.55" in overlay.text and "keys: c = CTC" in overlay.text
    # moving the slider by hand updates the caption
    viewer.dims.set_current_step(0, 1)
    assert "cell0001" in overlay.text and "called WBC 0.12" in overlay.text
    # the DAPI layer of the same cells shows the BF call
    viewer.layers.selection.active = dapi_layer
    assert "called WBC 0.12" in overlay.text
    # with a layer that holds no cells, the caption is hidden (the keys do nothing there)
    viewer.layers.selection.active = viewer.add_points(np.zeros((1, 3)))
    assert not overlay.visible


def test_annotation_column_writes_every_channel_and_notifies(
    widget, viewer, qtbot, fake_core, model_file
):
    bf_layer, dapi_layer = _add_stack(viewer, labels=["CTC", None, None, None, None])
    _choose_model(widget, qtbot, model_file)
    _run(widget, qtbot)
    assert widget.table.visible_rows()[0]["annotation"] == "CTC"  # existing labels are shown

    seen = []
    session_for(viewer).events.annotation.connect(lambda e: seen.append((e.cell_id, e.label)))
    widget.table.item(1, COL_ANNOTATION).setText("WBC")  # what the combo editor does
    assert seen == [("cell0001", "WBC")]
    for layer in (bf_layer, dapi_layer):
        assert layer.metadata["deparray"]["labels"][1] == "WBC"

    # keyboard review: select a row and press C; Delete clears
    widget.table.setCurrentCell(3, 0)
    widget.table.setFocus()
    qtbot.keyClick(widget.table, Qt.Key.Key_C)
    assert bf_layer.metadata["deparray"]["labels"][3] == "CTC"
    assert dapi_layer.metadata["deparray"]["labels"][3] == "CTC"
    qtbot.keyClick(widget.table, Qt.Key.Key_Delete)
    assert bf_layer.metadata["deparray"]["labels"][3] is None
    assert seen[-2:] == [("cell0003", "CTC"), ("cell0003", None)]
    assert "annotated 2 of 5" in widget.results_box.counts_label.text()
    assert widget.table.visible_rows()[1]["annotation"] == "WBC"


def test_keys_in_the_viewer_update_the_table(widget, viewer, qtbot, fake_core, model_file):
    bf_layer, _ = _add_stack(viewer)
    _choose_model(widget, qtbot, model_file)
    _run(widget, qtbot)
    viewer.layers.selection.active = bf_layer
    viewer.dims.set_current_step(0, 4)
    session_for(viewer).annotate_current("WBC")  # the w key
    assert widget.table.visible_rows()[4]["annotation"] == "WBC"
    assert "annotated WBC" in _caption(viewer)


def test_annotation_editor_is_a_combo(widget, viewer, qtbot, fake_core, model_file):
    _add_stack(viewer)
    _choose_model(widget, qtbot, model_file)
    _run(widget, qtbot)
    delegate = widget.table.itemDelegateForColumn(COL_ANNOTATION)
    index = widget.table.model().index(0, COL_ANNOTATION)
    editor = delegate.createEditor(widget.table.viewport(), None, index)
    assert [editor.itemText(i) for i in range(editor.count())] == ["", "CTC", "WBC"]
    editor.setCurrentText("CTC")
    delegate.setModelData(editor, widget.table.model(), index)
    assert widget.results.rows[widget.table.order()[0]].annotation == "CTC"


def test_csv_matches_the_table(widget, viewer, qtbot, fake_core, model_file, tmp_path):
    _add_stack(viewer)
    _choose_model(widget, qtbot, model_file)
    _run(widget, qtbot)
    session_for(viewer).set_label("cell0002", "WBC")
    widget.results_box.set_threshold(0.52)
    widget.results_box.review_checkbox.setChecked(True)
    out = tmp_path / "calls.csv"
    assert widget.results_box.export_csv(out)
    with out.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == [
            "cell_id", "path", "p_ctc", "label", "threshold", "calibration", "annotation"
        ]  # fmt: skip
        rows = list(reader)
    table = widget.table.visible_rows()
    assert [r["cell_id"] for r in rows] == [t["cell id"] for t in table]  # same order
    for row, shown in zip(rows, table, strict=True):
        assert row["label"] == shown["call"]
        assert row["annotation"] == shown["annotation"]
        assert float(row["p_ctc"]) == pytest.approx(float(shown["P(CTC)"]), abs=5e-4)
        assert row["path"] == f"/export/{row['cell_id']}.tif"
        assert row["threshold"] == "0.520000"
        assert row["calibration"] == "training instrument"  # no shift warning on these cells
    assert {r["cell_id"]: r["annotation"] for r in rows}["cell0002"] == "WBC"
    # Export CSV suggests the classified export's folder and name
    assert str(widget.results_box.suggested_csv_path()) == "/export/export_ctc_calls.csv"


def test_csv_write_failure_keeps_old_file(
    widget, viewer, qtbot, fake_core, model_file, errors, tmp_path
):
    _add_stack(viewer)
    _choose_model(widget, qtbot, model_file)
    _run(widget, qtbot)
    missing_folder = tmp_path / "no" / "such" / "calls.csv"
    assert widget.results_box.export_csv(missing_folder) is False
    assert str(missing_folder) in errors[-1]


def test_cancel_keeps_partial_results_out(widget, viewer, qtbot, fake_core, model_file):
    bf_layer, _ = _add_stack(viewer, values=[float(v) for v in range(10)])
    _choose_model(widget, qtbot, model_file)
    widget.cells.batch_spin.setValue(2)  # five batches
    fake_core.release.clear()  # hold the first batch until we cancel
    worker = widget.run()
    assert worker is not None
    assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    assert widget.run() is None  # a second run is refused while one runs
    assert fake_core.first_chunk_done.wait(10)
    qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)
    fake_core.release.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=WAIT_MS)

    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert "predictions" not in bf_layer.metadata["deparray"]
    assert widget.results is None and widget.table.rowCount() == 0
    assert widget.last_outcome.cancelled
    assert fake_core.images_seen < 10
    assert "Cancelled" in widget.status_label.text()
    # and the widget still works
    _run(widget, qtbot)
    assert len(bf_layer.metadata["deparray"]["predictions"]) == 10


def test_progress_reaches_the_widget_and_activity_dock(
    widget, viewer, qtbot, fake_core, model_file
):
    _add_stack(viewer, values=[float(v) for v in range(7)])
    _choose_model(widget, qtbot, model_file)
    widget.cells.batch_spin.setValue(3)
    seen = []
    fake_core.release.clear()  # hold the first batch until we listen
    worker = widget.run()
    worker.progress.connect(lambda done, total: seen.append((done, total)))
    fake_core.release.set()
    activity = widget.run_owner.activity  # napari's activity dock
    assert activity is not None and activity.total == 7
    assert widget.progress_bar.maximum() == 7
    qtbot.waitUntil(lambda: not widget.is_running, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: bool(seen) and seen[-1][0] == 7, timeout=5000)  # the last one
    assert seen[-1][1] == 7 and all(done <= 7 for done, _ in seen)
    assert widget.run_owner.activity is None  # closed at the end


def test_bad_model_file_is_caught_when_chosen(widget, viewer, qtbot, errors, tmp_path, monkeypatch):
    """Real core loader: a foreign file is reported as soon as it is chosen, in words."""
    _add_stack(viewer)
    bad = tmp_path / "holiday-photo.pt"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not a model")
    _choose_model(widget, qtbot, bad)
    problem = widget.model_box.problem
    assert problem is not None and str(bad) in problem
    assert not re.search(r"\b[A-Z]\w*(Error|Exception)\b", problem)  # no exception names
    assert str(bad) in widget.model_box.info.text()
    assert widget.run() is None  # refused before any run, with the same words
    assert errors[-1] == problem
    assert widget.run_button.isEnabled() and widget.results is None

    # the same widget then runs fine with a usable model
    core = FakeCore()
    _patch_core(monkeypatch, core)
    _choose_model(widget, qtbot, tmp_path / "good.pt")
    (tmp_path / "good.pt").write_bytes(b"read by the patched loader only")
    _choose_model(widget, qtbot, tmp_path / "good.pt")
    _run(widget, qtbot)
    assert widget.results is not None and len(widget.results) == 5


def test_missing_model_and_classifier_errors(
    widget, viewer, qtbot, errors, fake_core, model_file, monkeypatch, tmp_path
):
    _add_stack(viewer)
    assert widget.run() is None
    # no model yet: the widget guides (issue 22), it does not fail in red
    assert "Choose a model file" in widget.status_label.text()
    assert widget.guide.isVisibleTo(widget) and not errors
    _choose_model(widget, qtbot, tmp_path / "gone.pt")
    assert "does not exist" in widget.model_box.info.text()
    assert widget.run() is None
    assert "gone.pt" in errors[-1] and "does not exist" in errors[-1]

    def too_small(*args, **kwargs):
        raise ValueError("image 0 is 1x1 pixels, too small")

    _choose_model(widget, qtbot, model_file)
    monkeypatch.setattr("napari_deparray_ctc.core.inference.classify.classify", too_small)
    _run(widget, qtbot)
    assert "could not be classified" in errors[-1] and "too small" in errors[-1]
    assert widget.run_button.isEnabled()


def test_model_path_is_remembered_across_sessions(viewer, qtbot, fake_core, model_file):
    first = ClassifyWidget(viewer)
    viewer.window.add_dock_widget(first, name="first")
    _choose_model(first, qtbot, model_file)
    assert last_model_path() == str(model_file)
    second = ClassifyWidget(viewer)
    viewer.window.add_dock_widget(second, name="second")
    assert second.model_path == str(model_file)


def test_model_card_is_shown_before_a_run(widget, viewer, qtbot, fake_core, model_file):
    fake_core.threshold = 0.37
    _choose_model(widget, qtbot, model_file)
    text = widget.model_box.info.text()
    assert "threshold" in text and "0.500" not in text


# ============================================================================ real end to end


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A ResNet18 trained for one epoch on 16 synthetic cells at 32 px (a few seconds)."""
    pytest.importorskip("torch")
    from napari_deparray_ctc.core.synth import synth_cells
    from napari_deparray_ctc.core.training import TrainingSet
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny-model") / "tiny.pt"
    cells = synth_cells(16, ctc_fraction=0.5, seed=3, image_size=32)
    data = TrainingSet(
        bf=[c.channels["BF"] for c in cells],
        labels=[c.label for c in cells],
        dapi=[c.channels["DAPI"] for c in cells],
        cell_ids=[c.cell_id for c in cells],
    )
    config = TrainConfig(
        arch="resnet18",
        epochs=1,
        image_size=32,
        batch_size=8,
        seed=0,
        out=str(out),
        num_threads=1,
        patience=1,
    )
    result = train(config, data=data)
    assert out.is_file()
    return result.out_path or str(out)


@pytest.fixture(scope="module")
def synthetic_export(tmp_path_factory):
    from napari_deparray_ctc.core.synth import write_export

    folder = tmp_path_factory.mktemp("export") / "synthetic"
    write_export(folder, n_cells=12, ctc_fraction=0.5, seed=7, image_size=32)
    return folder


@pytest.mark.slow
def test_real_end_to_end_matches_core_and_cli(
    widget, viewer, qtbot, tiny_model, synthetic_export, tmp_path, errors
):
    from napari_deparray_ctc.cli import main as cli_main
    from napari_deparray_ctc.core.inference.classify import classify
    from napari_deparray_ctc.core.model.loaded import load_model

    viewer.open(str(synthetic_export), plugin="napari-deparray-ctc")
    bf_layer = next(ly for ly in viewer.layers if ly.metadata["deparray"]["channel"] == "BF")
    assert bf_layer.data.shape[0] == 12

    _choose_model(widget, qtbot, tiny_model)
    _run(widget, qtbot)
    assert not errors, errors
    meta = bf_layer.metadata["deparray"]
    predictions = meta["predictions"]
    assert [p["cell_id"] for p in predictions] == meta["cell_ids"]

    model = load_model(tiny_model, device="cpu")
    expected = classify(list(bf_layer.data), model, cell_ids=meta["cell_ids"])
    np.testing.assert_allclose([p["p_ctc"] for p in predictions], expected.p_ctc, atol=1e-5)
    assert [p["label"] for p in predictions] == expected.labels
    assert widget.results.model_threshold == pytest.approx(model.threshold)
    assert "resnet18" in widget.model_box.info.text()

    # the CSV has the CLI's columns (plus annotation) and the same numbers
    ours = tmp_path / "widget.csv"
    cli_csv = tmp_path / "cli.csv"
    assert widget.results_box.export_csv(ours)
    assert (
        cli_main(["classify", str(synthetic_export), "--model", tiny_model, "--out", str(cli_csv)])
        == 0
    )
    with ours.open(newline="") as a, cli_csv.open(newline="") as b:
        widget_rows = list(csv.DictReader(a))
        cli_reader = csv.DictReader(b)
        cli_rows = list(cli_reader)
    assert list(widget_rows[0])[: len(cli_reader.fieldnames)] == cli_reader.fieldnames
    assert list(widget_rows[0])[-1] == "annotation"
    by_id = {r["cell_id"]: r for r in cli_rows}
    assert set(by_id) == {r["cell_id"] for r in widget_rows}
    for row in widget_rows:
        cli_row = by_id[row["cell_id"]]
        assert float(row["p_ctc"]) == pytest.approx(float(cli_row["p_ctc"]), abs=1e-4)
        assert row["label"] == cli_row["label"]
        assert row["path"] == cli_row["path"]


@pytest.mark.slow
def test_real_model_on_plain_2d_layers(widget, viewer, qtbot, tiny_model, errors):
    from napari_deparray_ctc.core.synth import synth_cells

    cells = synth_cells(3, ctc_fraction=0.34, seed=11, image_size=40)
    for cell in cells:
        viewer.add_image(cell.channels["BF"], name=f"png {cell.cell_id}")  # no metadata
    _choose_model(widget, qtbot, tiny_model)
    widget.choose_layers([f"png {c.cell_id}" for c in cells])
    _run(widget, qtbot)
    assert not errors, errors
    for cell in cells:
        (prediction,) = viewer.layers[f"png {cell.cell_id}"].metadata["deparray"]["predictions"]
        assert 0.0 <= prediction["p_ctc"] <= 1.0
        assert prediction["label"] in ("CTC", "WBC")


# ============================================================================ GL / triton crash guard


@pytest.mark.slow
def test_triton_is_blocked_only_next_to_a_gl_llvm():
    """With Mesa's libLLVM loaded, importing triton would segfault: it must be kept out."""
    code = textwrap.dedent(
        """
        import importlib.util, sys
        from napari_deparray_ctc.core import gl_guard
        have_triton = importlib.util.find_spec("triton") is not None
        gl_guard.mapped_llvm_library = lambda: None
        assert gl_guard.avoid_gl_llvm_clash() is False and "triton" not in sys.modules
        gl_guard.mapped_llvm_library = lambda: "/usr/lib/x86_64-linux-gnu/libLLVM-15.so.1"
        assert gl_guard.avoid_gl_llvm_clash() is have_triton
        import torchvision  # imports torch._dynamo, which looks for triton
        from torch.utils._triton import has_triton_package
        assert not has_triton_package()
        print("guard ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "guard ok" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="needs xvfb-run (Xvfb)")
def test_first_run_in_a_real_window_does_not_crash(tiny_model, tmp_path):
    """A shown napari window on Mesa (llvmpipe) + a cold torch import used to segfault."""
    script = tmp_path / "run_in_window.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            import numpy as np
            import napari
            from qtpy.QtCore import QEventLoop, QTimer
            from napari_deparray_ctc.napari.widgets.classify.widget import ClassifyWidget
            assert "torch" not in sys.modules
            viewer = napari.Viewer(show=True)
            stack = np.random.default_rng(0).integers(0, 4000, (6, 32, 32)).astype("uint16")
            viewer.add_image(stack, name="s :: BF", metadata={{"deparray": {{
                "channel": "BF", "cell_ids": [f"c{{i}}" for i in range(6)]}}}})
            widget = ClassifyWidget(viewer)
            viewer.window.add_dock_widget(widget)
            widget.set_model_path({str(tiny_model)!r})
            assert widget.run() is not None
            loop = QEventLoop()
            timer = QTimer()
            timer.timeout.connect(lambda: None if widget.is_running else loop.quit())
            timer.start(20)
            loop.exec_()
            print("classified", len(widget.results or []), widget.status_label.text())
            viewer.close()
            """
        )
    )
    env = {**os.environ, CONFIG_DIR_ENV: str(tmp_path / "settings")}
    env.pop("QT_QPA_PLATFORM", None)  # a real (virtual) X display, with GL
    result = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert "classified 6" in result.stdout


def test_every_control_explains_itself(widget):
    controls = [
        widget.model_box.edit,
        widget.model_box.browse_button,
        widget.cells.target_combo,
        widget.cells.batch_spin,
        widget.run_button,
        widget.cancel_button,
        widget.results_box.threshold_slider,
        widget.results_box.reset_threshold_button,
        widget.results_box.review_checkbox,
        widget.results_box.export_button,
        widget.table,
    ]
    for control in controls:
        assert control.toolTip().strip(), control


@pytest.mark.slow
def test_suggest_next_cells_fills_the_table_top_and_the_gallery(
    widget, viewer, qtbot, tiny_model, synthetic_export, errors
):
    viewer.open(str(synthetic_export), plugin="napari-deparray-ctc")
    _dock, gallery = viewer.window.add_plugin_dock_widget("napari-deparray-ctc", "Cell gallery")
    _choose_model(widget, qtbot, tiny_model)
    _run(widget, qtbot)
    bf = next(ly for ly in viewer.layers if ly.metadata["deparray"]["channel"] == "BF")
    meta = bf.metadata["deparray"]
    from napari_deparray_ctc.napari.cells import set_cell_label

    for cell_id in meta["cell_ids"][::2]:  # half the cells are not annotated yet
        set_cell_label(list(viewer.layers), cell_id, None)
    annotated = {c for c, label in zip(meta["cell_ids"], meta["labels"], strict=True) if label}
    widget.review_tools.suggest_spin.setValue(4)
    worker = widget.review_tools.suggest()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.review_tools._suggesting is None, timeout=WAIT_MS)
    suggested = widget.review_tools.suggested
    assert not errors, errors
    assert 1 <= len(suggested) <= 4 and not set(suggested) & annotated
    top = [r["cell id"] for r in widget.table.visible_rows()[: len(suggested)]]
    assert top == suggested
    assert [
        gallery.tiles.item(i).text().split("\n")[0] for i in range(gallery.tiles.count())
    ] == suggested


@pytest.mark.slow
def test_saliency_overlay_follows_the_current_cell(
    widget, viewer, qtbot, tiny_model, synthetic_export, errors
):
    from napari_deparray_ctc.napari.widgets.classify.review_tools import SALIENCY_LAYER

    viewer.open(str(synthetic_export), plugin="napari-deparray-ctc")
    bf = next(ly for ly in viewer.layers if ly.metadata["deparray"]["channel"] == "BF")
    _choose_model(widget, qtbot, tiny_model)
    viewer.layers.selection.active = bf
    viewer.dims.set_current_step(0, 2)
    widget.review_tools.saliency_check.setChecked(True)
    qtbot.waitUntil(lambda: SALIENCY_LAYER in viewer.layers, timeout=WAIT_MS)
    overlay = viewer.layers[SALIENCY_LAYER]
    assert overlay.metadata["saliency_of"] == bf.metadata["deparray"]["cell_ids"][2]
    assert overlay.data.shape == bf.data.shape[1:] and float(overlay.data.max()) == pytest.approx(
        1.0
    )
    assert viewer.layers.selection.active is bf  # the cell layer stays selected (keys work)
    viewer.dims.set_current_step(0, 5)
    target = bf.metadata["deparray"]["cell_ids"][5]
    qtbot.waitUntil(lambda: overlay.metadata.get("saliency_of") == target, timeout=WAIT_MS)
    widget.review_tools.saliency_check.setChecked(False)
    assert SALIENCY_LAYER not in viewer.layers
    assert not errors, errors


def test_a_shift_warning_is_notified_as_a_warning_and_marks_the_calls(
    widget, viewer, qtbot, fake_core, model_file, monkeypatch, tmp_path
):
    note = (
        "These 5 cells look unlike the 80 cells this model was trained on: … calibrate the "
        "model for this instrument from a few of its labelled cells ('Calibrate to this "
        "instrument', in this dock)"
    )
    monkeypatch.setattr("napari_deparray_ctc.napari.workers.shift_note", lambda *a, **k: note)
    told = []
    monkeypatch.setattr(
        "napari_deparray_ctc.napari.widgets.classify.widget.notify",
        lambda kind, message: told.append((kind, message)),
    )
    _add_stack(viewer)
    _choose_model(widget, qtbot, model_file)
    _run(widget, qtbot)
    assert ("warning", note) in told  # as the command line prints it: a warning
    assert widget.results.calibration_warning == note
    out = tmp_path / "calls.csv"
    assert widget.results_box.export_csv(out)
    with out.open(newline="") as handle:
        assert {r["calibration"] for r in csv.DictReader(handle)} == {
            "NOT CALIBRATED for this instrument"
        }
