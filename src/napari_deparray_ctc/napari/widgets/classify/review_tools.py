"""The "Review" box of "Classify cells": suggest the next cells to label, show saliency.

* **Suggest cells to label next** asks core (``core.suggest``) for the cells a person should label
  next, uncertain and unlike each other, among those not yet annotated; they go to the top of
  the table and fill the gallery.
* **Show saliency** overlays, on the cell on screen, which bright-field pixels made the call
  (``core.explain``, integrated gradients), as a translucent heat map layer.

Both run the network in a background worker of the session (``napari/runs.py``), which
ends them when the window closes. The box reads the model from the session's model choice and
the cells from the classify widget's "Cells" choice (a callable it is given): it looks up no
other widget.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_deparray_ctc.napari.cells import cell_image, is_stack
from napari_deparray_ctc.napari.follow import Follows
from napari_deparray_ctc.napari.layer_info import OVERLAY_KEY, LayerInfo
from napari_deparray_ctc.napari.widgets.common import notify
from napari_deparray_ctc.napari.widgets.forms import check_box, spin_box
from napari_deparray_ctc.napari.workers import saliency_job

__all__ = ["SALIENCY_LAYER", "ReviewTools"]

#: name of the saliency overlay layer
SALIENCY_LAYER = "saliency (current cell)"


class ReviewTools(QWidget):
    """Suggest-next-cells and saliency controls of "Classify cells".

    Parameters
    ----------
    session
        The viewer's session (model choice, runs, annotations, the cell on screen).
    model_box
        The classify widget's model box (the file chosen there).
    layer_names
        Returns the layers the classify widget's "Cells" choice names.
    """

    def __init__(
        self,
        session: Any,
        model_box: Any,
        layer_names: Any,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.viewer = session.viewer
        self.model_box = model_box
        self.layer_names = layer_names
        self.suggested: list[str] = []
        self._suggesting: Any = None
        self._explaining: Any = None
        self._pending: tuple | None = None
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.suggest_button = QPushButton("Suggest cells to label next")
        self.suggest_button.setToolTip(
            "The cells worth labelling next: those the model is least sure of, picked so that "
            "they are unlike each other (not near-duplicates), among the cells not yet "
            "annotated. They go to the top of the table and fill the gallery."
        )
        self.suggest_spin = spin_box(1, 500, 20, "How many cells to suggest")
        row.addWidget(self.suggest_button, 1)
        row.addWidget(self.suggest_spin)
        layout.addLayout(row)
        self.saliency_check = check_box(
            "Show saliency on the current cell",
            "Overlay a heat map of the bright-field pixels that made the model's call "
            "(integrated gradients), on the cell on screen; it follows the slider",
        )
        layout.addWidget(self.saliency_check)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.suggest_button.clicked.connect(self.suggest)
        self.saliency_check.toggled.connect(self._on_saliency_toggled)
        self._followed = Follows(
            (self.viewer.dims.events.current_step, self._refresh_saliency),
            (self.viewer.layers.selection.events.active, self._refresh_saliency),
        )

    def close_tools(self) -> None:
        """Stop following the viewer (the dock is closing)."""
        self._followed.close()

    # -- suggestions ------------------------------------------------------------------

    def suggest(self) -> Any | None:
        """Start the suggestion in the background (``None``: refused, with why)."""
        names = self.layer_names()
        path = self.model_box.path
        if not names or not path or self.model_box.problem:
            notify(
                "error", "Suggest cells to label next: choose a usable model and the cells first."
            )
            return None
        self.suggest_button.setEnabled(False)
        self.status.setText("Looking for the most useful cells to label…")
        self._suggesting = self.session.start_suggestion(
            self.viewer.layers[names[0]],
            int(self.suggest_spin.value()),
            "labelling",
            "suggesting cells to label",
            returned=self._on_suggested,
            errored=lambda exc: self._fail(f"Suggesting cells failed: {exc}"),
            finished=self._on_suggest_finished,
        )
        return self._suggesting

    def _on_suggest_finished(self) -> None:
        self._suggesting = None
        self.suggest_button.setEnabled(True)

    def _on_suggested(self, ids: list[str]) -> None:
        self.suggested = list(ids)
        if not ids:
            self.status.setText(
                "Every cell of this export is annotated already. Next: train on them in "
                "'Train classifier', or open another export and suggest cells there."
            )
            return
        self.status.setText(
            f"{len(ids)} cells to label next (uncertain and diverse), at the top of the table: "
            + ", ".join(ids[:6])
            + (" …" if len(ids) > 6 else "")
        )
        self.session.suggest(ids)  # the table and the gallery show them first

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
        path = self.model_box.path
        if current is None or not path or self.model_box.problem:
            return
        layer, index, cell_id = current
        if LayerInfo.of(layer).channel != "BF":
            bf = self.session.layer_of(cell_id)
            if bf is None:
                return
            layer, index = bf, LayerInfo.of(bf).index_of(cell_id) or 0
        request = (layer, index, cell_id)
        if self._explaining is not None:  # one at a time: the latest request waits
            self._pending = request
            return
        image = np.asarray(cell_image(layer, index))
        runs = self.session.runs
        worker = runs.function_worker(saliency_job, path, [image])
        self._explaining = worker
        started = runs.start(
            worker,
            "computing saliency",
            returned=lambda maps, r=request: self._show_saliency(r, maps[0]),
            errored=lambda exc: self._fail(f"Saliency failed: {exc}"),
            finished=self._on_explained,
        )
        if started is None:
            self._explaining = None

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
                metadata={OVERLAY_KEY: "saliency"},  # never offered as cells to classify
            )
            self.viewer.layers.selection.active = layer  # keep the cell layer selected
        overlay.metadata["saliency_of"] = cell_id

    def _fail(self, message: str) -> None:
        self.status.setText(message)
        notify("error", message)
