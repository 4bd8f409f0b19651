"""The "Classify cells" dock widget: builds the UI, wires it, forwards to the session.

How to use it is in README.md ("Classify your cells"). The work happens elsewhere: the
session's model choice checks the file (``napari/model_choice.py``, shown by
``model_box.py``), the session's ``ClassifyRun`` runs the worker and stores the results
(``napari/classify_run.py``), the table shows them (``table.py``). This widget follows them.
"""

from __future__ import annotations

import os
from typing import Any

from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QWidget,
)

from napari_deparray_ctc.napari.classify_run import NO_MODEL_GUIDANCE
from napari_deparray_ctc.napari.follow import Follows
from napari_deparray_ctc.napari.results import ClassificationResults
from napari_deparray_ctc.napari.session import session_for
from napari_deparray_ctc.napari.widgets.classify.calibrate_box import CalibrateBox
from napari_deparray_ctc.napari.widgets.classify.cells_choice import CellsChoice
from napari_deparray_ctc.napari.widgets.classify.inputs import (
    ClassifyInputs,
    exports_without_bf,
    last_model_path,
)
from napari_deparray_ctc.napari.widgets.classify.model_box import ModelBox
from napari_deparray_ctc.napari.widgets.classify.results_box import ResultsBox
from napari_deparray_ctc.napari.widgets.classify.review_tools import ReviewTools
from napari_deparray_ctc.napari.widgets.common import notify, scrollable_body, section

__all__ = ["ClassifyWidget"]

BF_ONLY_NOTE = (
    "Only the bright-field (BF) channel is classified; fluorescence layers (DAPI, PE, APC...) "
    "are not used. Plain 2-D image layers from other readers count as one BF cell each."
)


class ClassifyWidget(QWidget):
    """Dock widget that classifies the bright-field cells of one export as CTC or WBC.

    Parameters
    ----------
    napari_viewer
        The viewer whose layers hold the cells.
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.run_owner = self.session.classify
        self.device: str | None = None  # torch device for the next run (None: automatic)
        self._build_ui()
        self._add_callbacks()
        self.refresh_targets()
        remembered = self.session.model_path or last_model_path()
        if remembered:
            self.model_box.set_path(remembered)
        self._set_running(self.run_owner.is_running)

    # -- building -----------------------------------------------------------------------

    def _build_ui(self) -> None:
        layout = scrollable_body(self)
        note = QLabel(BF_ONLY_NOTE)
        note.setWordWrap(True)
        note.setObjectName("bf_only_note")
        layout.addWidget(note)
        self.model_box = ModelBox(self.session)
        layout.addWidget(section("Model", self.model_box))

        self.cells = CellsChoice(self.viewer)
        layout.addWidget(section("Cells", self.cells))

        row = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Classify the chosen cells (in the background)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current batch; nothing is stored")
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v / %m cells")
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        # the first run without a model: what to do next, one click away (not an error)
        self.guide = QWidget()
        guide_row = QHBoxLayout(self.guide)
        guide_row.setContentsMargins(0, 0, 0, 0)
        self.open_train_button = QPushButton("Open Train classifier")
        self.open_train_button.setToolTip(
            "Dock 'Train classifier': annotate a few cells with c (CTC) and w (WBC), train, "
            "then 'Use this model'"
        )
        self.open_train_button.clicked.connect(self._open_train)
        open_model = QPushButton("Open a model…")
        open_model.setToolTip("Choose a model file (.pt) written by 'Train classifier'")
        open_model.clicked.connect(self.model_box.browse_button.click)
        guide_row.addWidget(self.open_train_button)
        guide_row.addWidget(open_model)
        self.guide.setVisible(False)
        layout.addWidget(self.guide)

        self.results_box = ResultsBox(self.session, self.run_owner.store_predictions)
        layout.addWidget(section("Results", self.results_box), 1)
        self.table = self.results_box.table  # the row a user activates jumps to the cell
        self.review_tools = ReviewTools(self.session, self.model_box, self.cells.layer_names)
        self.calibrate_box = CalibrateBox(self.session, self.cells.layer_names, self.run)
        layout.addWidget(section("Review", self.review_tools))
        layout.addWidget(section("Calibrate to this instrument", self.calibrate_box))

    def _add_callbacks(self) -> None:
        events = self.viewer.layers.events
        run = self.run_owner.events
        self._followed = Follows(
            *((e, self.refresh_targets) for e in (events.inserted, events.removed)),
            (self.session.events.shown, self._on_shown),
            (self.session.events.suggested, self._on_suggested),
            (run.started, self._on_started),
            (run.stage, self._on_stage),
            (run.progress, self._on_progress),
            (run.finished, self._on_finished),
        )
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.table.rowActivated.connect(self.show_cell)

    def closeEvent(self, event: Any) -> None:
        """Stop following the viewer and the session (a running classification goes on and
        its results land in the session)."""
        self._followed.close()
        self.model_box.close_box()
        self.review_tools.close_tools()
        self.calibrate_box.close_box()
        self.cells.close_box()
        super().closeEvent(event)

    @property
    def model_path(self) -> str:
        """The model file chosen (may be empty)."""
        return self.model_box.path

    def set_model_path(self, path: str | os.PathLike) -> None:
        """Use this model file (checked at once, remembered across sessions)."""
        self.model_box.set_path(path)

    # -- the cells ------------------------------------------------------------------------

    def refresh_targets(self, *_: Any) -> None:
        """Refill the "Cells" list; say why when nothing can be classified."""
        if not self.cells.refresh() and (lacking := exports_without_bf(self.viewer.layers)):
            self.status_label.setText(lacking)

    def choose_layers(self, names: Any) -> None:
        """Classify these layers next (one export's BF layer, or plain layers)."""
        self.cells.choose(names)

    def inputs(self) -> ClassifyInputs:
        """The inputs the next run would use."""
        return ClassifyInputs(
            model_path=self.model_box.path,
            layer_names=self.cells.layer_names(),
            batch_size=int(self.cells.batch_spin.value()),
            device=self.device,
        )

    # -- running: forwarded to the session's ClassifyRun -----------------------------------

    @property
    def is_running(self) -> bool:
        """Whether a classification is in progress."""
        return self.run_owner.is_running

    @property
    def last_outcome(self) -> Any:
        """What the last classification returned."""
        return self.run_owner.last_outcome

    @property
    def results(self) -> ClassificationResults | None:
        """The last complete run of this viewer (``None`` before the first)."""
        return self.session.results

    def run(self) -> Any | None:
        """Classify the chosen cells in a background worker (``None``: refused, with why)."""
        return self.run_owner.start(
            self.inputs(),
            adapt=self.cells.adapt_check.isChecked(),
            layers_lacking_bf=exports_without_bf(self.viewer.layers),
        )

    def cancel(self) -> None:
        """Stop the running classification after the current batch; nothing is stored."""
        if self.run_owner.is_running:
            self.run_owner.cancel()
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Cancelling…")

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.model_box.set_enabled(not running)
        self.cells.set_enabled(not running)
        self.progress_bar.setVisible(running)

    def _on_started(self, event: Any) -> None:
        self.progress_bar.setRange(0, event.total)
        self.progress_bar.setValue(0)
        self.status_label.setText(f"Classifying {event.total} cells…")
        self._set_running(True)

    def _on_stage(self, event: Any) -> None:
        if not self.run_owner.is_running:
            return  # a late report of a run that has ended
        self.status_label.setText(f"{event.text.capitalize()}…")

    def _on_progress(self, event: Any) -> None:
        self.progress_bar.setValue(int(event.done))

    def _open_train(self) -> None:
        window = getattr(self.viewer, "window", None)
        if window is not None:
            window.add_plugin_dock_widget("napari-deparray-ctc", "Train classifier")

    def _on_finished(self, event: Any) -> None:
        self._set_running(False)
        self.status_label.setText(event.message)
        first_run = event.message == NO_MODEL_GUIDANCE
        self.guide.setVisible(first_run)
        if first_run:  # guidance, not an error
            notify("info", event.message)
            return
        if event.error:
            notify("error", event.message)
            return
        outcome = event.outcome
        if outcome is not None and not outcome.cancelled and self.results is not None:
            self.results_box.show_results(self.results)
            for note in outcome.notes:  # the shift warning is a warning, as on the CLI
                notify("warning" if note == outcome.shift_warning else "info", note)

    # -- results --------------------------------------------------------------------------

    def show_cell(self, result_row: int) -> None:
        """Bring a classified cell on screen (its layer selected, the slider on it)."""
        row = self.results.rows[result_row]
        layer = self.run_owner.layer_of_row(self.results, result_row)
        if layer is None:
            self.status_label.setText(f"layer {row.layer!r} is no longer in the viewer")
            return
        self.session.show(layer, row.index)

    def _on_suggested(self, event: Any) -> None:
        self.table.show_first(event.cell_ids)

    def _on_shown(self, event: Any) -> None:
        results = self.results
        if results is not None and event.layer is not None:
            row = results.index_at(event.layer.name, event.index)
            if row is None and event.cell_id is not None:
                rows = results.indices_of(event.cell_id)
                row = rows[0] if rows else None
            if row is not None:
                self.table.select_result_row(row)
