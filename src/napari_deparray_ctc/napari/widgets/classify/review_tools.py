"""The "Review" box of "Classify cells": suggest the next cells to label, show saliency.

* **Suggest next cells** asks core (``core.suggest``) for the cells a person should label
  next, uncertain and unlike each other, among those not yet annotated; they go to the top of
  the table and fill the gallery.
* **Show saliency** overlays, on the cell on screen, which bright-field pixels made the call
  (``core.explain``, integrated gradients), as a translucent heat map layer.

Both run the network in a background thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.qt.threading import thread_worker
from qtpy.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_deparray_ctc.core.constants import is_class_label
from napari_deparray_ctc.napari.cells import cell_image, deparray_meta, is_stack
from napari_deparray_ctc.napari.widgets.common import notify
from napari_deparray_ctc.napari.workers import LayerCells, saliency_job, suggest_job

__all__ = ["SALIENCY_LAYER", "ReviewTools"]

#: name of the saliency overlay layer
SALIENCY_LAYER = "saliency (current cell)"


class ReviewTools(QWidget):
    """Suggest-next-cells and saliency controls for one classify widget."""

    def __init__(self, widget: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.widget = widget
        self.session = widget.session
        self.viewer = widget.viewer
        self.suggested: list[str] = []
        self._suggesting: Any = None
        self._explaining: Any = None
        self._pending: tuple | None = None
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.suggest_button = QPushButton("Suggest next cells")
        self.suggest_button.setToolTip(
            "The cells worth labelling next: those the model is least sure of, picked so that "
            "they are unlike each other (not near-duplicates), among the cells not yet "
            "annotated. They go to the top of the table and fill the gallery."
        )
        self.suggest_spin = QSpinBox()
        self.suggest_spin.setRange(1, 500)
        self.suggest_spin.setValue(20)
        self.suggest_spin.setToolTip("How many cells to suggest")
        row.addWidget(self.suggest_button, 1)
        row.addWidget(self.suggest_spin)
        layout.addLayout(row)
        self.saliency_check = QCheckBox("Show saliency on the current cell")
        self.saliency_check.setToolTip(
            "Overlay a heat map of the bright-field pixels that made the model's call "
            "(integrated gradients), on the cell on screen; it follows the slider"
        )
        layout.addWidget(self.saliency_check)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.suggest_button.clicked.connect(self.suggest)
        self.saliency_check.toggled.connect(self._on_saliency_toggled)
        self.viewer.dims.events.current_step.connect(self._refresh_saliency)
        self.viewer.layers.selection.events.active.connect(self._refresh_saliency)

    # -- suggestions ------------------------------------------------------------------

    def suggest(self) -> Any | None:
        """Start the suggestion in the background (``None``: refused, with why)."""
        names = self.widget.target_combo.currentData()
        path = self.widget.model_box.path
        if not names or not path or self.widget.model_box.problem:
            notify("error", "Suggest next cells: choose a usable model and the cells first.")
            return None
        layer = self.viewer.layers[names[0]]
        meta = deparray_meta(layer) or {}
        ids = [str(c) for c in meta.get("cell_ids") or []]
        labels = meta.get("labels") or []
        exclude = [c for c, label in zip(ids, labels, strict=False) if is_class_label(label)]
        cells = LayerCells(layer.name, layer.data, False, list(range(len(ids))), ids)
        worker = thread_worker(suggest_job, start_thread=False)(
            path, cells, exclude, int(self.suggest_spin.value())
        )
        worker.returned.connect(self._on_suggested)
        worker.errored.connect(lambda exc: self._fail(f"Suggesting cells failed: {exc}"))
        worker.finished.connect(lambda: setattr(self, "_suggesting", None))
        self.suggest_button.setEnabled(False)
        worker.finished.connect(lambda: self.suggest_button.setEnabled(True))
        self.status.setText("Looking for the most useful cells to label…")
        self._suggesting = worker
        worker.start()
        return worker

    def _on_suggested(self, ids: list[str]) -> None:
        self.suggested = list(ids)
        if not ids:
            self.status.setText("Every cell is annotated already: nothing to suggest.")
            return
        self.status.setText(
            f"{len(ids)} cells to label next (uncertain and diverse), at the top of the table: "
            + ", ".join(ids[:6])
            + (" …" if len(ids) > 6 else "")
        )
        self.widget.table.show_first(ids)
        gallery = self.session.widget("gallery")
        if gallery is not None:
            gallery.show_cells(ids)
        self.session.show_cell(ids[0])

    # -- saliency ---------------------------------------------------------------------

    def _on_saliency_toggled(self, on: bool) -> None:
        if on:
            self._refresh_saliency()
        elif SALIENCY_LAYER in self.viewer.layers:
            self.viewer.layers.remove(SALIENCY_LAYER)

    def _refresh_saliency(self, *_: Any) -> None:
        if not self.saliency_check.isChecked():
            return
        current = self.session.current()
        path = self.widget.model_box.path
        if current is None or not path or self.widget.model_box.problem:
            return
        layer, index, cell_id = current
        if (deparray_meta(layer) or {}).get("channel") != "BF":
            bf = self.session.layer_of(cell_id)
            if bf is None:
                return
            layer, index = bf, list(deparray_meta(bf)["cell_ids"]).index(cell_id)
        request = (layer, index, cell_id)
        if self._explaining is not None:  # one at a time: the latest request waits
            self._pending = request
            return
        image = np.asarray(cell_image(layer, index))
        worker = thread_worker(saliency_job, start_thread=False)(path, [image])
        worker.returned.connect(lambda maps, r=request: self._show_saliency(r, maps[0]))
        worker.errored.connect(lambda exc: self._fail(f"Saliency failed: {exc}"))
        worker.finished.connect(self._on_explained)
        self._explaining = worker
        worker.start()

    def _on_explained(self) -> None:
        self._explaining = None
        if self._pending is not None:
            self._pending = None
            self._refresh_saliency()

    def _show_saliency(self, request: tuple, saliency: np.ndarray) -> None:
        layer, _index, cell_id = request
        if not self.saliency_check.isChecked():
            return
        shown = saliency / max(float(saliency.max()), 1e-12)
        scale = tuple(layer.scale[-2:]) if is_stack(layer) else tuple(layer.scale)
        if SALIENCY_LAYER in self.viewer.layers:
            overlay = self.viewer.layers[SALIENCY_LAYER]
            overlay.data = shown
            overlay.scale = scale
        else:
            overlay = self.viewer.add_image(
                shown,
                name=SALIENCY_LAYER,
                colormap="inferno",
                blending="additive",
                opacity=0.6,
                contrast_limits=(0.0, 1.0),
                scale=scale,
            )
            self.viewer.layers.selection.active = layer  # keep the cell layer selected
        overlay.metadata["saliency_of"] = cell_id

    def _fail(self, message: str) -> None:
        self.status.setText(message)
        notify("error", message)
