"""The "Train classifier" dock widget: builds the UI, wires it, forwards to the session.

How to use it is in README.md ("Train on your own cells"). The cells and their pairing are in
``cells_box.py``, the settings in ``settings_box.py``; the run itself (checks, training set,
worker, model-file policy) is owned by the session's ``TrainRun`` (``napari/train_run.py``),
which this widget follows.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_deparray_ctc.napari.follow import Follows
from napari_deparray_ctc.napari.session import annotations_path_for_layer, session_for
from napari_deparray_ctc.napari.widgets.common import notify, scrollable_body, section
from napari_deparray_ctc.napari.widgets.train.cells_box import CHOOSE_DAPI, NO_DAPI, CellsBox
from napari_deparray_ctc.napari.widgets.train.inputs import TrainInputs
from napari_deparray_ctc.napari.widgets.train.loss_plot import LossPlot
from napari_deparray_ctc.napari.widgets.train.settings_box import DEFAULT_MODEL_NAME, SettingsBox
from napari_deparray_ctc.napari.widgets.train.texts import format_seconds, metrics_html

__all__ = ["CHOOSE_DAPI", "NO_DAPI", "TrainWidget", "format_seconds", "metrics_html"]


class TrainWidget(QWidget):
    """Dock widget that trains a CTC / WBC classifier on annotated BF (+ DAPI) layers."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.run = self.session.train
        self.last_message = ""
        self._build_ui()
        self._followed = Follows(
            (self.run.events.started, self._on_started),
            (self.run.events.stage, self._on_stage),
            (self.run.events.progress, self._on_progress),
            (self.run.events.finished, self._on_finished),
        )
        self._add_callbacks()
        self.cells.refresh()
        # torch is not imported here: docking only builds Qt. A worker that needs torch
        # imports it (the model check, training); mapping torch's libraries while the window
        # redraws around the new dock froze it for 0.2-0.6 s (benchmarks/bench_ui_stalls.py)
        self._set_running(self.run.is_running)

    # -- building -----------------------------------------------------------------------

    def _build_ui(self) -> None:
        layout = scrollable_body(self)
        self.cells = CellsBox(self.viewer, self.session)
        layout.addWidget(section("Cells", self.cells))
        self.settings = SettingsBox()
        layout.addWidget(section("Training", self.settings))
        buttons = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.train_button.setToolTip("Check the annotated cells and train (in the background)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current batch, keeping the best model so far")
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.stop_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("idle")
        layout.addWidget(self.progress)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status_label)
        results = QWidget()
        box = QVBoxLayout(results)
        self.plot = LossPlot()
        box.addWidget(self.plot)
        self.metrics_label = QLabel()
        self.metrics_label.setWordWrap(True)
        self.metrics_label.setTextFormat(Qt.TextFormat.RichText)
        box.addWidget(self.metrics_label)
        self.use_button = QPushButton("Use this model")
        self.use_button.setToolTip("Load the trained model into 'Classify cells'")
        self.use_button.setEnabled(False)
        box.addWidget(self.use_button)
        layout.addWidget(section("Progress and results", results))
        layout.addStretch(1)

    def _add_callbacks(self) -> None:
        self.train_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.use_button.clicked.connect(self.use_model)
        self.cells.bf_combo.currentTextChanged.connect(self._suggest_model_file)
        self.settings.dapi_strategy_combo.currentTextChanged.connect(self.cells.update_summary)

    def _suggest_model_file(self, name: str) -> None:
        bf = self.cells.layer(name)
        if bf is not None and not self.settings.out_edit.text().strip():
            sidecar = annotations_path_for_layer(bf)
            if sidecar is not None:
                self.settings.out_edit.setText(str(sidecar.parent / DEFAULT_MODEL_NAME))

    # -- inputs ---------------------------------------------------------------------------

    def choose_layers(self, bf: str, dapi: str | None = None) -> None:
        """Choose the BF layer and (optionally) the DAPI layer by name."""
        self.cells.choose(bf, dapi)

    def inputs(self) -> TrainInputs:
        """The current settings."""
        dapi = self.cells.dapi_combo.currentText()
        s = self.settings
        return TrainInputs(
            bf_layer=self.cells.bf_combo.currentText() or None,
            dapi_layer=None if dapi in (NO_DAPI, CHOOSE_DAPI, "") else dapi,
            arch=s.arch_combo.currentText(),
            epochs=s.epochs_spin.value(),
            image_size=s.size_spin.value(),
            augment=s.augment,
            dapi_strategy=s.dapi_strategy_combo.currentText(),
            val_fraction=round(s.val_spin.value(), 4),
            seed=s.seed_spin.value(),
            morphology=s.morphology_check.isChecked(),
            out=s.out_edit.text().strip(),
            overwrite_if_worse=s.overwrite_check.isChecked(),
        )

    def prepare(self) -> tuple[TrainInputs, Any]:
        """Check everything before training and build the training set (ValueError: why not)."""
        inputs = self.inputs()
        if self.settings.start_from_check.isChecked():
            inputs = self.run.starting_point(inputs)
        return inputs, self.run.prepare(inputs, self.cells.pairing())

    # -- running: forwarded to the session's TrainRun --------------------------------------

    @property
    def is_running(self) -> bool:
        """``True`` while a training runs."""
        return self.run.is_running

    @property
    def last_outcome(self) -> Any:
        """What the last training returned (``None`` before, or when it was refused)."""
        return self.run.last_outcome

    def start(self, *_: Any) -> Any | None:
        """Check the inputs and start training in the background (``None``: refused, with why)."""
        try:
            pairing = self.cells.pairing()
        except ValueError as exc:
            self._fail(str(exc))
            return None
        return self.run.start(
            self.inputs(), pairing, start_from_model=self.settings.start_from_check.isChecked()
        )

    def stop(self) -> None:
        """Ask the training to stop after the current batch (the best model is kept)."""
        if self.run.is_running:
            self.run.stop()
            self.stop_button.setEnabled(False)
            self._set_status("Stopping after the current batch…")

    def _set_running(self, running: bool) -> None:
        self.train_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        for widget in (self.cells.bf_combo, self.cells.dapi_combo, *self.settings.controls()):
            widget.setEnabled(not running)

    # -- following the run ------------------------------------------------------------------

    def _on_started(self, event: Any) -> None:
        self.plot.clear()
        self.plot.set_epochs(event.inputs.epochs)
        self.metrics_label.setText("")
        self.use_button.setEnabled(False)
        self._set_status(f"Training {event.inputs.arch} on {event.n_cells} annotated cells…")
        self._set_running(True)

    def _on_stage(self, event: Any) -> None:
        self._set_status(f"{event.text.capitalize()}…")

    def _on_progress(self, event: Any) -> None:
        p = event.report
        self.progress.setRange(0, event.total)
        self.progress.setValue(event.done)
        loss = "" if p.train_loss is None else f", loss {p.train_loss:.3f}"
        best = "" if p.best_f1 is None else f", best F1 {p.best_f1:.3f}"
        fold = f"fold {p.fold}/{p.folds}, " if (p.folds or 1) > 1 else ""
        self.progress.setFormat(
            f"{fold}epoch {p.epoch}/{p.epochs}{loss}{best} - ETA {format_seconds(event.eta_s)}"
        )
        if p.phase == "epoch_end":
            self.plot.add_point(p.epoch, p.train_loss, p.val_loss, p.val_f1)

    def _on_finished(self, event: Any) -> None:
        self._set_running(False)
        if event.error:
            self.progress.setFormat("refused" if event.outcome is not None else "failed")
            self._fail(event.message)
            return
        result = event.outcome.result
        self.metrics_label.setText(metrics_html(result.metrics))
        self.plot.clear()
        for record in result.history:
            self.plot.add_point(
                record.get("epoch", 0),
                record.get("train_loss"),
                record.get("val_loss"),
                record.get("val_f1"),
            )
        self.use_button.setEnabled(event.outcome.model_path is not None)
        self.progress.setFormat("stopped" if result.cancelled else "done")
        self.progress.setValue(self.progress.maximum())
        self._set_status(event.message)
        if event.notify:
            notify("info", event.message)  # worth a pop-up: not what was asked for
        else:
            self.viewer.status = event.message

    def _fail(self, message: str) -> None:
        self._set_status(message, error=True)
        notify("error", message)

    def _set_status(self, message: str, error: bool = False) -> None:
        self.last_message = message
        self.status_label.setText(
            f"<span style='color:#e57373'>{message}</span>" if error else message
        )

    # -- after training -------------------------------------------------------------------

    def use_model(self) -> Any | None:
        """Hand the trained model to "Classify cells" (docking it when needed)."""
        outcome = self.run.last_outcome
        if outcome is None or outcome.model_path is None:
            self._fail("No trained model yet: train first.")
            return None
        self.session.model_path = str(outcome.model_path)
        _dock, widget = self.viewer.window.add_plugin_dock_widget(
            "napari-deparray-ctc", "Classify cells"
        )
        self._set_status(f"'Classify cells' now uses {outcome.model_path}.")
        return widget

    def closeEvent(self, event: Any) -> None:
        """Stop following the session when the dock closes (a running training goes on and
        keeps its model; closing the window stops it as Stop does)."""
        self._followed.close()
        self.cells.close_box()
        super().closeEvent(event)
