"""The "Cell gallery" dock widget: a mosaic of many cells, channels side by side.

Each tile is one cell (BF, DAPI, PE, APC... side by side) with its call and annotation under
it. Sort by P(CTC), by doubt (the review queue) or by annotation; click a tile to bring the
cell on screen everywhere (slider, table); hover a tile and press c / w / u to annotate it.
Tiles are drawn a page at a time, so a large export stays quick.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QSize
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_deparray_ctc.napari.cells import layer_channel
from napari_deparray_ctc.napari.follow import Follows
from napari_deparray_ctc.napari.gallery import (
    SORT_KEYS,
    channel_layers,
    gallery_cells,
    legend_text,
    ordered_cells,
    page_text,
    tile_image,
)
from napari_deparray_ctc.napari.session import session_for
from napari_deparray_ctc.napari.widgets.forms import add_rows, check_box, spin_box
from napari_deparray_ctc.napari.widgets.gallery import tiles as tile_view

__all__ = ["GalleryWidget"]


class GalleryWidget(QWidget):
    """Dock widget showing an export's cells as a sortable, clickable mosaic."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.page = 0
        self.order: list[Any] = []
        self.only_ids: list[str] | None = None
        self._items: dict[str, QListWidgetItem] = {}
        self.saliency: dict[tuple[str, str], Any] = {}  # (model file, cell id) -> map
        self._explaining: Any = None
        self._build_ui()
        self._add_callbacks()
        self.refresh_exports()

    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.export_combo = QComboBox()
        self.export_combo.setToolTip("The export whose cells are shown (its BF layer)")
        self.sort_combo = QComboBox()
        self.sort_combo.addItems(list(SORT_KEYS))
        self.sort_combo.setToolTip(
            "P(CTC): the likeliest CTCs first; doubt: the cells nearest the threshold first "
            "(the review queue); annotation: CTC, then WBC, then not annotated"
        )
        self.tile_spin = spin_box(24, 160, 56, "Size of each channel's picture in a tile", " px")
        self.saliency_check = check_box(
            "Show saliency",
            "Add to each tile a heat map of the bright-field pixels that made the model's call "
            "(integrated gradients, with the model chosen in 'Classify cells')",
        )
        add_rows(
            form,
            ("Export", self.export_combo),
            ("Sort by", self.sort_combo),
            ("Tile size", self.tile_spin),
            self.saliency_check,
        )
        layout.addLayout(form)
        hint = QLabel(
            "Click a tile to show the cell; hover a tile and press c = CTC, w = WBC, u = clear."
        )
        hint.setWordWrap(True)
        layout.addWidget(hint)
        # shown only while the gallery lists suggested cells alone (``show_cells``)
        self.show_all_button = QPushButton("Show all cells")
        self.show_all_button.setToolTip(
            "The gallery shows only the suggested cells; show every cell of the export again, "
            "in the chosen order"
        )
        self.show_all_button.setVisible(False)
        layout.addWidget(self.show_all_button)
        self.tiles = tile_view.mosaic(event_filter=self)
        layout.addWidget(self.tiles, 1)
        row = QHBoxLayout()
        self.previous_button = QPushButton("◀ Previous")
        self.next_button = QPushButton("Next ▶")
        self.page_label = QLabel("")
        self.page_size_spin = spin_box(12, 500, 60, "Cells per page")
        row.addWidget(self.previous_button)
        row.addWidget(self.page_label, 1)
        row.addWidget(self.page_size_spin)
        row.addWidget(self.next_button)
        layout.addLayout(row)

    def _add_callbacks(self) -> None:
        events, session = self.viewer.layers.events, self.session.events
        self._followed = Follows(
            (events.inserted, self.refresh_exports),
            (events.removed, self.refresh_exports),
            (session.annotation, self._on_annotation),
            (session.results, self._on_results),
            (session.shown, self._on_shown),
            (session.suggested, self._on_suggested),
        )
        # choosing another export or order shows every cell again (not only the suggested ones)
        self.export_combo.currentTextChanged.connect(lambda *_: self.show_cells(None))
        self.sort_combo.currentTextChanged.connect(lambda *_: self.show_cells(None))
        self.show_all_button.clicked.connect(lambda: self.show_cells(None))
        self.tile_spin.valueChanged.connect(lambda *_: self.refresh())
        self.page_size_spin.valueChanged.connect(lambda *_: self.refresh(reset_page=True))
        self.previous_button.clicked.connect(lambda: self.go_to_page(self.page - 1))
        self.next_button.clicked.connect(lambda: self.go_to_page(self.page + 1))
        self.tiles.itemClicked.connect(self._on_clicked)
        self.saliency_check.toggled.connect(lambda *_: self._draw_page())

    def _on_results(self, *_: Any) -> None:
        self.refresh()

    def _on_suggested(self, event: Any) -> None:
        self.show_cells(event.cell_ids)

    def closeEvent(self, event: Any) -> None:
        """Stop following the viewer and the session (the dock is closing)."""
        self._followed.close()
        super().closeEvent(event)

    # -- content ---------------------------------------------------------------------------

    def bf_layer(self) -> Any | None:
        """The BF layer of the export shown."""
        name = self.export_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def refresh_exports(self, *_: Any) -> None:
        """Refill the export choice (BF layers), keeping the current one."""
        current = self.export_combo.currentText()
        # newest export first: it is the one just opened
        names = [ly.name for ly in reversed(self.viewer.layers) if layer_channel(ly) == "BF"]
        self.export_combo.blockSignals(True)
        self.export_combo.clear()
        self.export_combo.addItems(names)
        if current in names:
            self.export_combo.setCurrentText(current)
        self.export_combo.blockSignals(False)
        self.refresh(reset_page=current not in names)

    def show_cells(self, cell_ids: list[str] | None) -> None:
        """Show only these cells, in this order (e.g. the suggested ones); ``None``: all, in
        the chosen order (the *Show all cells* button, or choosing an order or an export)."""
        self.only_ids = list(cell_ids) if cell_ids is not None else None
        self.show_all_button.setVisible(self.only_ids is not None)
        self.refresh(reset_page=True)

    def refresh(self, reset_page: bool = False) -> None:
        """Recompute the order and redraw the current page."""
        bf = self.bf_layer()
        self.order = (
            []
            if bf is None
            else ordered_cells(
                gallery_cells(bf, self.session.results),
                self.sort_combo.currentText(),
                self.only_ids,
            )
        )
        if reset_page:
            self.page = 0
        self._draw_page()

    def page_count(self) -> int:
        """Number of pages."""
        size = self.page_size_spin.value()
        return max(1, -(-len(self.order) // size))

    def go_to_page(self, page: int) -> None:
        """Show page ``page`` (0-based, clipped)."""
        self.page = min(max(0, page), self.page_count() - 1)
        self._draw_page()

    def _draw_page(self) -> None:
        self.tiles.clear()
        self._items = {}
        bf = self.bf_layer()
        size = self.tile_spin.value()
        per_page = self.page_size_spin.value()
        shown = self.order[self.page * per_page : (self.page + 1) * per_page]
        layers = channel_layers(list(self.viewer.layers), bf) if bf is not None else []
        model = self.session.model_path
        with_maps = self.saliency_check.isChecked() and bool(model)
        # each panel names its channel in its colour; the legend in words is the tiles' tooltip
        # (a label here would push three stacked docks past a 768 px screen)
        self.tiles.setToolTip(legend_text(layers, saliency=with_maps) if layers else "")
        if layers:
            panels = len(layers) + (1 if with_maps else 0)
            self.tiles.setIconSize(QSize((size + 2) * panels, size))
        missing = []
        for cell in shown:
            saliency = self.saliency.get((model, cell.cell_id)) if with_maps else None
            if with_maps and saliency is None:
                missing.append(cell)
                saliency = np.zeros((4, 4), np.float32)  # drawn once the map is ready
            tile = tile_image(layers, cell.index, size, saliency=saliency)
            item = tile_view.tile_item(tile, cell, layers)
            self.tiles.addItem(item)
            self._items[cell.cell_id] = item
        self.page_label.setText(
            page_text(self.page, self.page_count(), len(self.order), self.only_ids is not None)
        )
        self.previous_button.setEnabled(self.page > 0)
        self.next_button.setEnabled(self.page + 1 < self.page_count())
        if missing and bf is not None:
            self._explain(bf, model, missing)

    def _explain(self, bf: Any, model: str, cells: list[Any]) -> None:
        """Saliency of the page's cells, in the background; the page redraws when done."""
        if self._explaining is not None:
            return
        from napari_deparray_ctc.napari.cells import cell_image
        from napari_deparray_ctc.napari.workers import saliency_job

        images = [np.asarray(cell_image(bf, cell.index)) for cell in cells]
        runs = self.session.runs
        worker = runs.function_worker(saliency_job, model, images)

        def store(maps: list) -> None:
            for cell, saliency in zip(cells, maps, strict=True):
                self.saliency[(model, cell.cell_id)] = saliency

        def failed(exc: BaseException) -> None:
            self.saliency_check.setChecked(False)  # no retry loop on a model that cannot explain
            self.page_label.setText(f"Saliency could not be computed: {exc}")

        self._explaining = worker
        started = runs.start(
            worker,
            "computing the gallery's saliency",
            returned=store,
            errored=failed,
            finished=self._explained,
        )
        if started is None:
            self._explaining = None

    def _explained(self) -> None:
        self._explaining = None
        self._draw_page()

    # -- interaction -----------------------------------------------------------------------

    def _on_clicked(self, item: QListWidgetItem) -> None:
        self.session.show_cell(item.data(tile_view.ID_ROLE))

    def item_under_cursor(self) -> QListWidgetItem | None:
        """The tile under the mouse, else the selected tile."""
        return tile_view.item_under_cursor(self.tiles)

    def annotate(self, cell_id: str, label: str | None) -> None:
        """Annotate a cell (through the session: every layer, the sidecar, every widget)."""
        self.session.set_label(cell_id, label)

    def eventFilter(self, watched: Any, event: Any) -> bool:
        """c / w / u annotate the tile under the cursor."""
        key = tile_view.annotation_key(self.tiles, watched, event)
        if key is not None:
            self.annotate(*key)
            return True
        return super().eventFilter(watched, event)

    def _on_annotation(self, event: Any) -> None:
        item = self._items.get(event.cell_id)
        if item is None:
            return
        for cell in self.order:
            if cell.cell_id == event.cell_id:
                cell.annotation = event.label
                tile_view.show_annotation(item, cell)
                break

    def _on_shown(self, event: Any) -> None:
        item = self._items.get(event.cell_id) if event.cell_id else None
        if item is not None:
            self.tiles.blockSignals(True)
            self.tiles.setCurrentItem(item)
            self.tiles.scrollToItem(item)
            self.tiles.blockSignals(False)
