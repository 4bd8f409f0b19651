"""The "Cells" choice never changes by itself (issue 22): an unrelated image layer or the
plugin's own saliency layer leave it, and the results, as they were."""

from __future__ import annotations

import numpy as np

from napari_deparray_ctc.napari.layer_info import mark_plugin_overlay
from napari_deparray_ctc.napari.widgets.classify.cells_choice import CellsChoice
from napari_deparray_ctc.napari.widgets.classify.inputs import Target, choose_target

EXPORT_A, EXPORT_B, PLAIN = ("a :: BF",), ("b :: BF",), ("photo",)


def _targets(*names):
    return [Target(str(n), n, plain=n == PLAIN) for n in names]


def test_a_user_choice_stays_while_its_layers_exist():
    offered = _targets(EXPORT_A, EXPORT_B)
    assert choose_target(offered, EXPORT_A, {EXPORT_A}, EXPORT_A) == EXPORT_A
    # gone: the newest export is chosen again
    assert choose_target(_targets(EXPORT_B), EXPORT_A, {EXPORT_A, EXPORT_B}, EXPORT_A) == EXPORT_B


def test_plain_layers_never_take_over_an_export():
    offered = _targets(EXPORT_A, PLAIN)
    assert choose_target(offered, EXPORT_A, {EXPORT_A}, None) == EXPORT_A
    assert choose_target(_targets(PLAIN), None, set(), None) == PLAIN  # alone, they are offered


def test_a_newly_opened_export_becomes_the_choice_unless_the_user_chose():
    offered = _targets(EXPORT_B, EXPORT_A)
    assert choose_target(offered, EXPORT_A, {EXPORT_A}, None) == EXPORT_B
    assert choose_target(offered, EXPORT_A, {EXPORT_A}, EXPORT_A) == EXPORT_A


def _meta(n):
    ids = [f"c{i}" for i in range(n)]
    return {"deparray": {"channel": "BF", "cell_ids": ids, "labels": [None] * n}}


def test_saliency_and_other_image_layers_leave_the_choice(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 8, 8)), name="run1 :: BF", metadata=_meta(3))
    choice = CellsChoice(viewer)
    qtbot.addWidget(choice)
    assert choice.layer_names() == ("run1 :: BF",)
    viewer.add_image(np.zeros((8, 8)), name="a photo")  # unrelated
    assert choice.layer_names() == ("run1 :: BF",)
    overlay = viewer.add_image(np.zeros((8, 8)), name="saliency (current cell)")
    mark_plugin_overlay(overlay, "saliency")
    choice.refresh()
    labels = [choice.target_combo.itemText(i) for i in range(choice.target_combo.count())]
    assert choice.layer_names() == ("run1 :: BF",)
    assert not any("saliency" in text for text in labels)
    assert all("saliency" not in name for name in choice.target_combo.itemData(1) or ())
    choice.close_box()
