"""The cell gallery: tiles, order, clicks that move the slider, keys that annotate."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deparray_ctc.napari.gallery import (
    SORT_KEYS,
    GalleryCell,
    channel_layers,
    gallery_cells,
    legend_text,
    sort_cells,
    tile_image,
)
from napari_deparray_ctc.napari.results import CellResult, ClassificationResults
from napari_deparray_ctc.napari.session import session_for


class Layer:
    def __init__(self, name, data, channel, labels=None):
        n = len(data)
        self.name, self.data, self.rgb = name, data, False
        self.metadata = {
            "deparray": {
                "channel": channel,
                "cell_ids": [f"c{i}" for i in range(n)],
                "labels": list(labels or [None] * n),
            }
        }


def test_sort_orders_and_unclassified_last() -> None:
    cells = [
        GalleryCell("a", 0, 0.2, "WBC", None, 0.3),
        GalleryCell("b", 1, 0.9, "CTC", "CTC", 0.4),
        GalleryCell("c", 2, None, None, "WBC", None),
        GalleryCell("d", 3, 0.55, "CTC", None, 0.05),
    ]
    assert [c.cell_id for c in sort_cells(cells, SORT_KEYS[0])] == ["b", "d", "a", "c"]
    assert [c.cell_id for c in sort_cells(cells, SORT_KEYS[1])] == ["d", "a", "b", "c"]
    assert [c.cell_id for c in sort_cells(cells, SORT_KEYS[2])] == ["b", "c", "a", "d"]
    assert [c.cell_id for c in sort_cells(cells, SORT_KEYS[3])] == ["a", "b", "c", "d"]
    assert cells[0].caption == "a\nWBC 0.20 · not annotated"
    assert cells[2].caption == "c\nnot classified · annotated WBC"


def test_suggested_cells_are_listed_alone_in_their_order_and_the_page_line_says_so() -> None:
    from napari_deparray_ctc.napari.gallery import ordered_cells, page_text

    cells = [GalleryCell(c, i, p, None, None, None) for i, (c, p) in enumerate(
        [("a", 0.2), ("b", 0.9), ("c", 0.5)])]  # fmt: skip
    assert [c.cell_id for c in ordered_cells(cells, SORT_KEYS[0])] == ["b", "c", "a"]
    assert [c.cell_id for c in ordered_cells(cells, SORT_KEYS[0], ["c", "gone", "a"])] == [
        "c", "a",
    ]  # fmt: skip
    assert page_text(0, 1, 20, suggested=True) == "page 1 of 1 · 20 suggested cells"
    assert page_text(1, 3, 150, suggested=False) == "page 2 of 3 · 150 cells"
    assert page_text(0, 1, 0, suggested=True) == "no cells: open an export"


def test_tiles_put_channels_side_by_side_in_their_colours() -> None:
    rng = np.random.default_rng(0)
    bf = Layer("e :: BF", rng.random((3, 20, 20)), "BF")
    dapi = Layer("e :: DAPI", rng.random((3, 20, 20)), "DAPI")
    layers = channel_layers([dapi, bf], bf)
    assert layers == [bf, dapi]
    tile = tile_image(layers, 1, size=16, gap=2)
    assert tile.shape == (16, 34, 3) and tile.dtype == np.uint8
    grey, blue = tile[:, :16], tile[:, 18:]
    assert np.array_equal(grey[..., 0], grey[..., 2])  # BF is grey
    assert blue[..., 2].mean() > blue[..., 0].mean()  # DAPI is blue


def test_tiles_name_their_channels_and_the_legend_says_what_they_show() -> None:
    """Issue 22, point 8: each panel names its channel (in its colour); a legend in words."""
    flat = np.full((2, 20, 20), 0.5, np.float32)
    bf, dapi = Layer("e :: BF", flat, "BF"), Layer("e :: DAPI", flat.copy(), "DAPI")
    plain = tile_image([bf, dapi], 0, size=64, labels=False)
    labelled = tile_image([bf, dapi], 0, size=64)
    corner = (slice(0, 12), slice(0, 20))
    assert not np.array_equal(plain[corner], labelled[corner])  # "BF" written top left
    assert np.array_equal(plain[40:, :], labelled[40:, :])  # the cell itself untouched
    dapi_corner = labelled[0:12, 66:90]
    ink = dapi_corner[dapi_corner.max(axis=-1) > 150]
    assert len(ink) and (ink[:, 2] > ink[:, 0]).all()  # DAPI's name in blue
    small = tile_image([bf], 0, size=16)
    assert np.array_equal(small, tile_image([bf], 0, size=16, labels=False))  # too small
    legend = legend_text([bf, dapi], saliency=True)
    assert "BF (grey), DAPI (blue), saliency" in legend
    assert "red background: annotated CTC" in legend


def test_gallery_cells_carry_calls_and_annotations() -> None:
    bf = Layer("e :: BF", np.zeros((3, 8, 8)), "BF", labels=["CTC", None, "WBC"])
    results = ClassificationResults(
        [CellResult("c0", "e :: BF", 0, 0.8), CellResult("c1", "e :: BF", 1, 0.3)], 0.5
    )
    cells = gallery_cells(bf, results)
    assert [(c.call, c.annotation) for c in cells] == [("CTC", "CTC"), ("WBC", None), (None, "WBC")]
    assert cells[1].uncertainty == pytest.approx(0.2)


@pytest.fixture
def viewer_with_export(make_napari_viewer):
    viewer = make_napari_viewer()
    values = [10.0, 90.0, 50.0, 70.0]
    ids = [f"cell{i}" for i in range(4)]
    for channel in ("BF", "DAPI"):
        data = np.stack([np.full((12, 12), v) + np.eye(12) for v in values])
        meta = {"channel": channel, "cell_ids": ids, "labels": [None] * 4, "paths": [None] * 4}
        viewer.add_image(data, name=f"exp :: {channel}", metadata={"deparray": meta})
    return viewer


def test_gallery_widget_click_and_keys(viewer_with_export, qtbot) -> None:
    from qtpy.QtCore import Qt

    from napari_deparray_ctc.napari.widgets.gallery.widget import GalleryWidget

    viewer = viewer_with_export
    _dock, gallery = viewer.window.add_plugin_dock_widget("napari-deparray-ctc", "Cell gallery")
    assert isinstance(gallery, GalleryWidget)
    assert gallery.export_combo.currentText() == "exp :: BF"
    assert gallery.tiles.count() == 4 and "4 cells" in gallery.page_label.text()
    # a tile shows both channels side by side
    icon_size = gallery.tiles.iconSize()
    assert icon_size.width() > 1.9 * icon_size.height()
    # and the dock says, in words, what the panels and colours are (issue 22)
    assert "BF (grey)" in gallery.tiles.toolTip() and "DAPI" in gallery.tiles.toolTip()

    # a click selects the cell everywhere: the slider moves to it
    item = gallery.tiles.item(2)
    gallery.tiles.itemClicked.emit(item)
    assert viewer.dims.current_step[0] == 2
    assert viewer.layers.selection.active.name == "exp :: BF"

    # keys annotate the tile under the cursor (here: the selected one)
    gallery.tiles.setCurrentItem(gallery.tiles.item(3))
    qtbot.keyClick(gallery.tiles, Qt.Key.Key_C)
    assert viewer.layers["exp :: BF"].metadata["deparray"]["labels"][3] == "CTC"
    assert viewer.layers["exp :: DAPI"].metadata["deparray"]["labels"][3] == "CTC"
    assert "annotated CTC" in gallery.tiles.item(3).text()

    # sorting by P(CTC) follows the session's results
    session = session_for(viewer)
    rows = [CellResult(f"cell{i}", "exp :: BF", i, p) for i, p in enumerate([0.1, 0.9, 0.5, 0.7])]
    session.results = ClassificationResults(rows, 0.5)
    gallery.sort_combo.setCurrentText(SORT_KEYS[0])
    assert [gallery.tiles.item(i).text().split("\n")[0] for i in range(4)] == [
        "cell1", "cell3", "cell2", "cell0",
    ]  # fmt: skip
    gallery.sort_combo.setCurrentText(SORT_KEYS[1])
    assert gallery.tiles.item(0).text().startswith("cell2")  # the most doubtful first
    gallery.show_cells(["cell0", "cell2"])
    assert gallery.tiles.count() == 2
    # the gallery says it lists only the suggested cells, and the user can get every cell back
    assert "2 suggested cells" in gallery.page_label.text()
    assert not gallery.show_all_button.isHidden()
    gallery.show_all_button.click()
    assert gallery.tiles.count() == 4 and gallery.show_all_button.isHidden()
    assert gallery.page_label.text().endswith("· 4 cells")
    # choosing an order shows every cell in it, not only the suggested ones
    gallery.show_cells(["cell0", "cell2"])
    gallery.sort_combo.setCurrentText(SORT_KEYS[0])
    assert [gallery.tiles.item(i).text().split("\n")[0] for i in range(4)] == [
        "cell1", "cell3", "cell2", "cell0",
    ]  # fmt: skip


@pytest.mark.slow
def test_gallery_tiles_show_saliency(viewer_with_export, qtbot, tmp_path) -> None:
    from napari_deparray_ctc.core.model.loaded import build_network, save_model
    from napari_deparray_ctc.napari.widgets.gallery.widget import GalleryWidget

    model = tmp_path / "untrained.pt"
    save_model(
        model, build_network("resnet18"), {"arch": "resnet18", "threshold": 0.5, "image_size": 32}
    )
    viewer = viewer_with_export
    session_for(viewer).model_path = str(model)
    gallery = GalleryWidget(viewer)
    viewer.window.add_dock_widget(gallery)
    width_before = gallery.tiles.iconSize().width()
    gallery.saliency_check.setChecked(True)
    qtbot.waitUntil(
        lambda: len(gallery.saliency) == 4 and gallery._explaining is None, timeout=120_000
    )
    assert gallery.tiles.iconSize().width() > width_before  # a heat-map panel per tile
    for saliency in gallery.saliency.values():
        assert saliency.min() >= 0 and saliency.sum() == pytest.approx(1.0, abs=1e-3)
