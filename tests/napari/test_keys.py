"""Annotating cells in napari: keys c / w / u, metadata across channel layers, autosave, reload.

The keys forward to the viewer's session (``napari/session.py``), which every widget listens to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_deparray_ctc.core.annotations.sidecars import SIDECAR_NAME, load_annotations
from napari_deparray_ctc.core.synth import write_export
from napari_deparray_ctc.napari.cells import current_cell_index, deparray_meta
from napari_deparray_ctc.napari.session import (
    annotations_path_for_layer,
    install_annotation_keys,
    session_for,
)

PLUGIN = "napari-deparray-ctc"


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """Eight labelled synthetic cells, one folder per class."""
    return write_export(
        tmp_path / "export", 8, ctc_fraction=0.5, seed=3, layout="classdirs", image_size=32
    )


def _press(viewer, key: str) -> None:
    handler = viewer.window._qt_viewer._key_map_handler
    assert handler.press_key(key), f"key {key!r} is not bound"
    handler.release_key(key)


def _labels(layer) -> list:
    return list(deparray_meta(layer)["labels"])


def _by_channel(layers) -> dict:
    return {deparray_meta(layer)["channel"]: layer for layer in layers}


def test_keys_label_the_current_cell_in_every_channel_layer(make_napari_viewer, export) -> None:
    viewer = make_napari_viewer()
    layers = _by_channel(viewer.open(str(export), plugin=PLUGIN))
    controller = install_annotation_keys(viewer)
    bf, dapi = layers["BF"], layers["DAPI"]
    original = _labels(bf)
    ids = deparray_meta(bf)["cell_ids"]

    viewer.layers.selection.active = bf
    viewer.dims.set_current_step(0, 2)
    assert current_cell_index(viewer, bf) == 2
    target = "WBC" if original[2] == "CTC" else "CTC"
    _press(viewer, target[0].lower())  # "c" or "w"
    for layer in layers.values():  # BF, DAPI, PE, APC stay consistent
        assert _labels(layer)[2] == target
        assert _labels(layer)[:2] == original[:2] and _labels(layer)[3:] == original[3:]
    assert ids[2] in controller.last_message and "saved" in controller.last_message

    # the same key works with the DAPI layer selected (c on an image layer is not auto-contrast)
    viewer.layers.selection.active = dapi
    viewer.dims.set_current_step(0, 5)
    _press(viewer, "u")
    assert _labels(bf)[5] is None and _labels(dapi)[5] is None

    sidecar = export / SIDECAR_NAME
    assert annotations_path_for_layer(bf) == sidecar
    assert load_annotations(sidecar) == {ids[2]: target, ids[5]: None}


def test_key_on_a_2d_single_cell_layer(make_napari_viewer, tmp_path: Path) -> None:
    export = write_export(tmp_path / "one", 1, ctc_fraction=0.0, seed=1, image_size=32)
    cell_file = next(export.glob("*.tif"))
    viewer = make_napari_viewer()
    layers = _by_channel(viewer.open(str(cell_file), plugin=PLUGIN))
    install_annotation_keys(viewer)
    bf = layers["BF"]
    assert np.ndim(bf.data) == 2
    viewer.layers.selection.active = bf
    _press(viewer, "c")
    assert _labels(bf) == ["CTC"] and _labels(layers["DAPI"]) == ["CTC"]
    sidecar = cell_file.with_name(cell_file.name + ".annotations.csv")
    assert load_annotations(sidecar) == {deparray_meta(bf)["cell_ids"][0]: "CTC"}


def test_plain_layer_gets_a_message_not_a_label(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    controller = install_annotation_keys(viewer)
    plain = viewer.add_points(np.zeros((1, 2)))  # not a cell layer
    viewer.layers.selection.active = plain
    assert controller.annotate_current("CTC") is None
    assert "not a DEPArray cell layer" in controller.last_message


def test_autosave_survives_a_crash_and_reloads(make_napari_viewer, export) -> None:
    """Annotate, drop the viewer without any save, reopen: every annotation is back."""
    first = make_napari_viewer()
    layers = _by_channel(first.open(str(export), plugin=PLUGIN))
    install_annotation_keys(first)
    bf = layers["BF"]
    ids = list(deparray_meta(bf)["cell_ids"])
    before = _labels(bf)
    first.layers.selection.active = bf
    expected = dict(zip(ids, before, strict=True))
    for index, key in ((0, "w"), (1, "c"), (4, "u"), (7, "c")):
        first.dims.set_current_step(0, index)
        _press(first, key)
        expected[ids[index]] = {"c": "CTC", "w": "WBC", "u": None}[key]
    assert _labels(bf) == [expected[i] for i in ids]
    # "crash": the viewer goes away; nobody calls a save function
    first.close()

    second = make_napari_viewer()
    reopened = _by_channel(second.open(str(export), plugin=PLUGIN))
    for layer in reopened.values():
        meta = deparray_meta(layer)
        assert dict(zip(meta["cell_ids"], meta["labels"], strict=True)) == expected
    # the labels that came from the class folders are otherwise untouched
    assert _labels(reopened["BF"])[2] == before[2]


def test_classify_table_edits_are_autosaved(make_napari_viewer, export) -> None:
    viewer = make_napari_viewer()
    layers = _by_channel(viewer.open(str(export), plugin=PLUGIN))
    _dock, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify cells")
    cell = deparray_meta(layers["BF"])["cell_ids"][3]
    heard = []
    session_for(viewer).events.annotation.connect(lambda e: heard.append((e.cell_id, e.label)))
    classify.table.annotationEdited.emit(cell, None)  # what an edit of the column emits
    assert heard == [(cell, None)]
    assert _labels(layers["DAPI"])[3] is None
    assert load_annotations(export / SIDECAR_NAME) == {cell: None}


def test_advance_moves_to_the_next_cell(make_napari_viewer, export) -> None:
    viewer = make_napari_viewer()
    layers = _by_channel(viewer.open(str(export), plugin=PLUGIN))
    controller = install_annotation_keys(viewer)
    controller.advance = True
    viewer.layers.selection.active = layers["BF"]
    viewer.dims.set_current_step(0, 0)
    _press(viewer, "c")
    _press(viewer, "w")
    assert _labels(layers["BF"])[:2] == ["CTC", "WBC"]
    assert current_cell_index(viewer, layers["BF"]) == 2


def test_a_failed_save_keeps_the_label_and_says_why(make_napari_viewer, export, tmp_path) -> None:
    viewer = make_napari_viewer()
    layers = _by_channel(viewer.open(str(export), plugin=PLUGIN))
    unwritable = tmp_path / "missing-folder" / "notes.csv"
    controller = install_annotation_keys(viewer, sidecar_override=unwritable)
    viewer.layers.selection.active = layers["BF"]
    viewer.dims.set_current_step(0, 1)
    _press(viewer, "u")
    assert _labels(layers["BF"])[1] is None
    assert "NOT saved" in controller.last_message and str(unwritable) in controller.last_message
    assert not unwritable.exists()


def test_close_removes_the_key_bindings(make_napari_viewer, export) -> None:
    viewer = make_napari_viewer()
    layers = _by_channel(viewer.open(str(export), plugin=PLUGIN))
    session = install_annotation_keys(viewer)
    keys = session.keys
    keys.close()
    viewer.layers.selection.active = layers["BF"]
    before = _labels(layers["BF"])
    _press(viewer, "c")  # napari's own "auto-contrast once" again
    assert _labels(layers["BF"]) == before
    assert install_annotation_keys(viewer) is session and session.keys is not keys


def test_several_files_opened_at_once_share_the_folder_sidecar(make_napari_viewer, tmp_path):
    export = write_export(tmp_path / "flat", 4, ctc_fraction=0.5, seed=2, image_size=32)
    files = sorted(str(p) for p in export.glob("*.tif"))[:3]
    first = make_napari_viewer()
    layers = _by_channel(first.open(files, stack=True, plugin=PLUGIN))
    bf = layers["BF"]
    assert deparray_meta(bf)["annotations_path"] == str(export / SIDECAR_NAME)
    install_annotation_keys(first)
    first.layers.selection.active = bf
    first.dims.set_current_step(0, 1)
    target = "WBC" if _labels(bf)[1] == "CTC" else "CTC"
    _press(first, target[0].lower())
    cell = deparray_meta(bf)["cell_ids"][1]
    first.close()

    second = make_napari_viewer()
    reopened = _by_channel(second.open(str(export), plugin=PLUGIN))  # now the whole folder
    meta = deparray_meta(reopened["BF"])
    assert meta["labels"][meta["cell_ids"].index(cell)] == target


def test_keys_on_suggested_cells_bring_the_next_one_to_confirm(make_napari_viewer, export):
    viewer = make_napari_viewer()
    layers = _by_channel(viewer.open(str(export), plugin=PLUGIN))
    install_annotation_keys(viewer)
    session = session_for(viewer)
    ids = list(deparray_meta(layers["BF"])["cell_ids"])
    for cell_id in (ids[5], ids[2], ids[7]):
        session.set_label(cell_id, None)
    viewer.layers.selection.active = layers["BF"]
    session.suggest([ids[5], ids[1], ids[2], ids[7]])  # ids[1] is labelled already: skipped
    assert current_cell_index(viewer, layers["BF"]) == 5
    _press(viewer, "c")
    assert current_cell_index(viewer, layers["BF"]) == 2
    _press(viewer, "w")
    assert current_cell_index(viewer, layers["BF"]) == 7
    _press(viewer, "c")  # the last one: nothing left to bring, the cell stays on screen
    assert current_cell_index(viewer, layers["BF"]) == 7
    assert [_labels(layers["BF"])[i] for i in (5, 2, 7)] == ["CTC", "WBC", "CTC"]
    _press(viewer, "u")  # clearing a label does not move on
    assert current_cell_index(viewer, layers["BF"]) == 7
