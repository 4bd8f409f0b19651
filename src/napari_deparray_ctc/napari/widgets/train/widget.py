"""The "Train classifier" dock widget: builds the UI, wires it, forwards to the worker.

How to use it is in README.md ("Train on your own cells"). The cells and their pairing are in
``cells_box.py``, the settings in ``settings_box.py``; training runs in
``napari/workers.py::TrainWorker``, which applies core's model-file policy.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from napari_deparray_ctc.core.runtime import warm_up_torch
from napari_deparray_ctc.napari.cells import cells_for_training
from napari_deparray_ctc.napari.session import annotations_path_for_layer, session_for
from napari_deparray_ctc.napari.widgets.common import notify, scrollable_body, section
from napari_deparray_ctc.napari.widgets.train.cells_box import CHOOSE_DAPI, NO_DAPI, CellsBox
from napari_deparray_ctc.napari.widgets.train.inputs import TrainInputs
from napari_deparray_ctc.napari.widgets.train.loss_plot import LossPlot
from napari_deparray_ctc.napari.widgets.train.settings_box import DEFAULT_MODEL_NAME, SettingsBox
from napari_deparray_ctc.napari.widgets.train.texts import format_seconds, metrics_html
from napari_deparray_ctc.napari.workers import TrainJob, TrainWorker

__all__ = ["CHOOSE_DAPI", "NO_DAPI", "TrainWidget", "format_seconds", "metrics_html"]

LOG = logging.getLogger(__name__)


class TrainWidget(QWidget):
    """Dock widget that trains a CTC / WBC classifier on annotated BF (+ DAPI) layers."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.annotations = self.session  # the c / w / u keys and the autosave
        self.last_outcome: Any = None
        self.last_message = ""
        self._worker: TrainWorker | None = None
        self._activity: Any = None
        self._timing: tuple[float, int] | None = None
        self._build_ui()
        self._add_callbacks()
        self.cells.refresh()
        self._set_running(False)
        self.session.register_widget("train", self)
        self.warmup = warm_up_torch()  # maps torch with the GIL released: no UI stall

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
        from qtpy.QtWidgets import QVBoxLayout

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
        # the widgets tests and the demo reach directly
        for name in (
            "bf_combo",
            "dapi_combo",
            "pairing_label",
            "counts_label",
            "annotations_edit",
            "advance_check",
        ):
            setattr(self, name, getattr(self.cells, name))
        for name in (
            "arch_combo",
            "epochs_spin",
            "size_spin",
            "augment_checks",
            "dapi_strategy_combo",
            "val_spin",
            "seed_spin",
            "out_edit",
            "overwrite_check",
            "start_from_check",
        ):
            setattr(self, name, getattr(self.settings, name))

    def _add_callbacks(self) -> None:
        self.train_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.use_button.clicked.connect(self.use_model)
        self.cells.bf_combo.currentTextChanged.connect(self._suggest_model_file)
        self.settings.dapi_strategy_combo.currentTextChanged.connect(self.cells.update_summary)

    def _suggest_model_file(self, name: str) -> None:
        bf = self.cells.layer(name)
        if bf is not None and not self.out_edit.text().strip():
            sidecar = annotations_path_for_layer(bf)
            if sidecar is not None:
                self.out_edit.setText(str(sidecar.parent / DEFAULT_MODEL_NAME))

    # -- inputs ---------------------------------------------------------------------------

    def choose_layers(self, bf: str, dapi: str | None = None) -> None:
        """Choose the BF layer and (optionally) the DAPI layer by name."""
        self.cells.choose(bf, dapi)

    def pairing(self):
        """The BF/DAPI pairing (raises ValueError with the reason)."""
        return self.cells.pairing()

    def inputs(self) -> TrainInputs:
        """The current settings."""
        dapi = self.dapi_combo.currentText()
        init_from = self.session.model_path if self.start_from_check.isChecked() else None
        return TrainInputs(
            bf_layer=self.bf_combo.currentText() or None,
            dapi_layer=None if dapi in (NO_DAPI, CHOOSE_DAPI, "") else dapi,
            arch=self.arch_combo.currentText(),
            epochs=self.epochs_spin.value(),
            image_size=self.size_spin.value(),
            augment=self.settings.augment,
            dapi_strategy=self.dapi_strategy_combo.currentText(),
            val_fraction=round(self.val_spin.value(), 4),
            seed=self.seed_spin.value(),
            out=self.out_edit.text().strip(),
            overwrite_if_worse=self.overwrite_check.isChecked(),
            init_from=init_from or None,
        )

    def prepare(self) -> tuple[TrainInputs, Any]:
        """Check everything before training and build the training set (ValueError: why not)."""
        from napari_deparray_ctc.core.errors import TrainingDataError
        from napari_deparray_ctc.core.training import check_training_set, training_set_from_cells
        from napari_deparray_ctc.core.training.train import config_field_defaults

        inputs = self.inputs()
        if self.start_from_check.isChecked():
            inputs = self._starting_from(inputs)
        pairing = self.pairing()
        error = inputs.validation_error()
        if error:
            raise ValueError(error)
        if inputs.dapi_strategy != "none" and pairing.n_paired == 0:
            raise ValueError(
                f"DAPI strategy {inputs.dapi_strategy!r} needs DAPI images, but no cell of "
                f"{pairing.bf_layer.name!r} has a DAPI partner; choose the DAPI layer or set the "
                "strategy to 'none'."
            )
        cells, n_unlabelled = cells_for_training(pairing)
        n_ctc = sum(c.label == "CTC" for c in cells)
        counts = f"({n_ctc} CTC, {len(cells) - n_ctc} WBC, {n_unlabelled} unlabelled)"
        if not cells:
            raise ValueError(
                f"No annotated cell in {pairing.bf_layer.name!r} {counts}: annotate cells with "
                "c (CTC) and w (WBC) first."
            )
        if inputs.dapi_strategy != "none" and not any("DAPI" in c.channels for c in cells):
            raise ValueError(
                f"DAPI strategy {inputs.dapi_strategy!r}: none of the annotated cells has a DAPI "
                "image; choose the DAPI layer or set the strategy to 'none'."
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                data = training_set_from_cells(cells)
                check_training_set(data, min_per_class=config_field_defaults()["min_per_class"])
        except TrainingDataError as exc:
            raise ValueError(
                f"Cannot train on {pairing.bf_layer.name!r} {counts}: {exc.reason}. Annotate more "
                "cells with c (CTC) and w (WBC)."
            ) from None
        return inputs, data

    def _starting_from(self, inputs: TrainInputs) -> TrainInputs:
        """Fine-tuning takes the network and input size of the model it starts from."""
        import dataclasses

        classify = self.session.widget("classify")
        box = getattr(classify, "model_box", None)
        if not self.session.model_path or box is None or box.path != self.session.model_path:
            raise ValueError(
                "'Start from the current model': choose a model in 'Classify cells' first."
            )
        if box.metadata is None:
            raise ValueError(
                box.problem or "'Start from the current model': it is still being read."
            )
        size = box.metadata.get("image_size") or inputs.image_size
        return dataclasses.replace(
            inputs, arch=box.metadata.get("arch", inputs.arch), image_size=int(size)
        )

    # -- running --------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """``True`` while a training runs."""
        return self._worker is not None

    def start(self, *_: Any) -> TrainWorker | None:
        """Check the inputs and start training in the background (``None``: refused, with why)."""
        if self.is_running:
            return None
        try:
            inputs, data = self.prepare()
        except ValueError as exc:
            self._fail(str(exc))
            return None
        out = Path(inputs.out).expanduser()
        worker = TrainWorker(TrainJob(inputs.to_config(), data, out, inputs.overwrite_if_worse))
        worker.stage.connect(lambda text: self._set_status(f"{text.capitalize()}…"))
        worker.progress.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.plot.clear()
        self.plot.set_epochs(inputs.epochs)
        self.metrics_label.setText("")
        self.use_button.setEnabled(False)
        self.last_outcome = None
        self._timing = None
        self._set_status(f"Training {inputs.arch} on {len(data)} annotated cells…")
        self._set_running(True)
        from napari.utils import progress

        self._activity = progress(total=0, desc="Training classifier: starting")
        worker.start()
        return worker

    def stop(self) -> None:
        """Ask the training to stop after the current batch (the best model is kept)."""
        if self._worker is not None:
            self._worker.stop()
            self.stop_button.setEnabled(False)
            self._set_status("Stopping after the current batch…")

    def _set_running(self, running: bool) -> None:
        self.train_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        for widget in (self.bf_combo, self.dapi_combo, *self.settings.controls()):
            widget.setEnabled(not running)

    def _eta(self, done: int, total: int) -> float | None:
        """Remaining seconds from the pace since the first batch (set-up time excluded)."""
        now = time.perf_counter()
        if self._timing is None:
            self._timing = (now, done)
            return None
        start, first = self._timing
        if done <= first:
            return None
        return (now - start) / (done - first) * (total - done)

    def _on_progress(self, p: Any) -> None:
        batches = max(1, p.batches)
        total = max(1, p.epochs * batches)
        done = total if p.phase == "done" else min(total, (p.epoch - 1) * batches + p.batch)
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        eta = self._eta(done, total)
        loss = "" if p.train_loss is None else f", loss {p.train_loss:.3f}"
        best = "" if p.best_f1 is None else f", best F1 {p.best_f1:.3f}"
        self.progress.setFormat(
            f"epoch {p.epoch}/{p.epochs}{loss}{best} - ETA {format_seconds(eta)}"
        )
        if p.phase == "epoch_end":
            self.plot.add_point(p.epoch, p.train_loss, p.val_loss, p.val_f1)
        bar = self._activity
        if bar is not None:
            with contextlib.suppress(Exception):  # the activity dock only mirrors the widget
                bar.total = total
                bar.set_description(
                    f"Training classifier: epoch {p.epoch}/{p.epochs}, ETA {format_seconds(eta)}"
                )
                if done > bar.n:
                    bar.update(done - bar.n)

    def _on_returned(self, outcome: Any) -> None:
        if outcome.error is not None:
            self.progress.setFormat("refused")
            self._fail(outcome.error)
            return
        self.last_outcome = outcome
        result = outcome.result
        self.metrics_label.setText(metrics_html(result.metrics))
        self.plot.clear()
        for record in result.history:
            self.plot.add_point(
                record.get("epoch", 0),
                record.get("train_loss"),
                record.get("val_loss"),
                record.get("val_f1"),
            )
        self.use_button.setEnabled(outcome.model_path is not None)
        self.progress.setFormat("stopped" if result.cancelled else "done")
        self.progress.setValue(self.progress.maximum())
        self._set_status(outcome.message)
        kept = outcome.destination is not None and outcome.destination.kept_previous
        if result.cancelled or kept or getattr(result, "warning", None):
            notify("info", outcome.message)  # worth a pop-up: not what was asked for
        else:
            self.viewer.status = outcome.message

    def _on_errored(self, exc: BaseException) -> None:
        LOG.error("training failed", exc_info=exc)
        self.progress.setFormat("failed")
        self._fail(f"Training failed: {' '.join(str(exc).split()) or 'an unexpected problem'}.")

    def _on_finished(self) -> None:
        self._worker = None
        if self._activity is not None:
            with contextlib.suppress(Exception):
                self._activity.close()
            self._activity = None
        self._set_running(False)

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
        outcome = self.last_outcome
        if outcome is None or outcome.model_path is None:
            self._fail("No trained model yet: train first.")
            return None
        self.session.model_path = str(outcome.model_path)
        widget = self.session.widget("classify")
        if widget is None:
            _dock, widget = self.viewer.window.add_plugin_dock_widget(
                "napari-deparray-ctc", "Classify cells"
            )
        self._set_status(f"'Classify cells' now uses {outcome.model_path}.")
        return widget

    def closeEvent(self, event) -> None:
        """Stop a running training when the widget closes."""
        self.stop()
        super().closeEvent(event)
