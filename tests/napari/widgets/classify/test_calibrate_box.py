"""'Calibrate to this instrument' in Classify cells: refuses in words, calibrates from the
confirmed cells, saves a site model beside the original, and re-classifies with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_deparray_ctc.core.annotations.cell_table import read_cell_table
from napari_deparray_ctc.napari.session import session_for
from napari_deparray_ctc.napari.widgets.classify.calibrate_box import NOT_CALIBRATED
from napari_deparray_ctc.napari.widgets.classify.widget import ClassifyWidget

WAIT_MS = 120_000


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from napari_deparray_ctc.core.model.loaded import save_model
    from napari_deparray_ctc.core.model.network import build_network

    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(
        path, build_network("resnet18"), {"arch": "resnet18", "threshold": 0.5, "image_size": 32}
    )
    return path


def _add_export(viewer, labels):
    rng = np.random.default_rng(0)
    n = len(labels)
    ids = [f"cell{i:04d}" for i in range(n)]
    bf = rng.normal(100, 10, (n, 24, 24)).astype(np.float32)
    for i, label in enumerate(labels):  # CTCs a little larger and darker: something to learn
        if label == "CTC":
            bf[i, 4:20, 4:20] -= 30
    meta = {
        "channel": "BF",
        "cell_ids": ids,
        "paths": [None] * n,
        "labels": list(labels),
        "groups": [None] * n,
        "pixel_size_um": None,
        "original_shapes": [[24, 24]] * n,
    }
    return viewer.add_image(bf, name="site-b :: BF", metadata={"deparray": meta})


@pytest.fixture
def widget(make_napari_viewer, qtbot, tiny_model, monkeypatch, tmp_path):
    monkeypatch.setenv("DEPARRAY_CTC_CONFIG_DIR", str(tmp_path / "settings"))
    viewer = make_napari_viewer()
    widget = ClassifyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Classify cells")
    widget.set_model_path(tiny_model)
    qtbot.waitUntil(lambda: not widget.model_box.is_checking, timeout=WAIT_MS)
    return widget


def test_too_few_confirmed_cells_are_refused_with_the_counts(widget, qtbot):
    _add_export(widget.viewer, ["CTC", "CTC", "WBC"] + [None] * 9)
    box = widget.calibrate_box
    assert box.calibrate() is None
    assert "at least 5 CTC and 5 WBC" in box.status.text()
    assert "2 CTC and 1 WBC" in box.status.text()


def test_calibrates_saves_beside_the_original_and_reclassifies(widget, qtbot, tiny_model):
    labels = ["CTC"] * 6 + ["WBC"] * 8 + [None] * 16
    _add_export(widget.viewer, labels)
    before = tiny_model.read_bytes()
    session = session_for(widget.viewer)
    assert widget.calibrate_box.calibrate() is not None
    qtbot.waitUntil(lambda: not session.calibrate.is_running, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: widget.results is not None and not widget.is_running, timeout=WAIT_MS)
    site = session.model.path
    assert site != str(tiny_model) and ".site-site-b" in site
    assert tiny_model.read_bytes() == before  # the original is never touched
    assert widget.results.model_path == site  # re-called with the site model
    qtbot.waitUntil(lambda: session.model.metadata is not None, timeout=WAIT_MS)
    profile = session.model.metadata["site_profile"]
    assert profile["n_labelled"] == {"CTC": 6, "WBC": 8}
    assert "site model" in widget.calibrate_box.status.text()

    # calibrating again (more cells confirmed) starts from the original, not from the site
    # model: no chained "tiny.site-site-b.site-site-b.pt", and never over the first site model
    first = Path(site).read_bytes()
    session.set_label("cell0014", "WBC")
    assert widget.calibrate_box.calibrate() is not None
    qtbot.waitUntil(lambda: not session.calibrate.is_running, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: session.model.path != site, timeout=WAIT_MS)
    second = session.model.path
    assert ".site-site-b" in second and ".site-site-b.site-" not in second
    assert Path(site).read_bytes() == first and tiny_model.read_bytes() == before
    assert "starting again from tiny.pt" in widget.calibrate_box.status.text()
    qtbot.waitUntil(lambda: session.model.metadata is not None, timeout=WAIT_MS)
    again = session.model.metadata["site_profile"]
    assert again["source_model"]["file"] == "tiny.pt"
    assert again["n_labelled"] == {"CTC": 6, "WBC": 9}


def test_calls_on_a_shifted_export_are_marked_not_calibrated(widget, qtbot, tmp_path):
    _add_export(widget.viewer, [None] * 10)
    qtbot.waitUntil(lambda: not widget.model_box.is_checking, timeout=WAIT_MS)
    widget.run()
    qtbot.waitUntil(lambda: widget.results is not None and not widget.is_running, timeout=WAIT_MS)
    widget.results.calibration_warning = "These cells look unlike the training cells."
    session_for(widget.viewer).results_changed()
    assert NOT_CALIBRATED in widget.calibrate_box.note.text()
    widget.results_box.update_counts()
    assert "NOT CALIBRATED" in widget.results_box.counts_label.text()
    # the per-sample counts say it too, as classify --summary writes them
    assert {row["calibration"] for row in widget.results.sample_counts()} == {
        "NOT CALIBRATED for this instrument"
    }
    # and so does every call of the exported cell table
    out = tmp_path / "calls.csv"
    assert widget.results_box.export_csv(out)
    assert {row["calibration"] for row in read_cell_table(out)} == {
        "NOT CALIBRATED for this instrument"
    }


def test_a_remembered_site_model_says_what_it_is_calibrated_for_before_any_run(
    widget, qtbot, tiny_model, tmp_path
):
    from napari_deparray_ctc.core.model.loaded import load_model, save_model

    model = load_model(tiny_model, "cpu")
    site = tmp_path / "tiny.site-ward3.pt"
    profile = {
        "version": 1,
        "created": "2026-12-07T03:00:00+0000",
        "data_name": "ward3",
        "n_cells": 60,
        "n_labelled": {"CTC": 7, "WBC": 13},
        "source_model": {"file": "tiny.pt"},
    }
    save_model(site, model.network, {**model.metadata, "site_profile": profile})
    box = widget.calibrate_box
    assert "need a model calibrated" in box.note.text()
    widget.set_model_path(site)  # as a new window does with the remembered model
    qtbot.waitUntil(lambda: "ward3" in box.note.text(), timeout=WAIT_MS)
    assert "7 CTC + 13 WBC" in box.note.text()
    widget.set_model_path(tiny_model)  # back to a model of no site: the note says so too
    qtbot.waitUntil(lambda: "need a model calibrated" in box.note.text(), timeout=WAIT_MS)
