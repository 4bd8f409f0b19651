"""The "Classify cells" dock widget: builds the UI, wires it, forwards to the session/worker.

How to use it is in README.md ("Classify your cells"). The work happens elsewhere: the model
box checks files (``model_box.py``), the table shows results (``table.py``), the worker
classifies off the UI thread (``napari/workers.py``), and the viewer's session holds the
results and the annotations that every widget shares (``napari/session.py``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from napari_deparray_ctc.core.constants import background_threads, is_class_label
from napari_deparray_ctc.napari.cells import cell_count, deparray_meta, ensure_deparray_metadata
from napari_deparray_ctc.napari.results import CellResult, ClassificationResults
from napari_deparray_ctc.napari.session import session_for
from napari_deparray_ctc.napari.widgets.classify.inputs import (
    ClassifyInputs,
    classify_targets,
    exports_without_bf,
)
from napari_deparray_ctc.napari.widgets.classify.model_box import ModelBox
from napari_deparray_ctc.napari.widgets.classify.results_box import ResultsBox
from napari_deparray_ctc.napari.widgets.classify.review_tools import ReviewTools
from napari_deparray_ctc.napari.widgets.common import notify, scrollable_body, section
from napari_deparray_ctc.napari.workers import ClassifyJob, ClassifyWorker, LayerCells

__all__ = ["ClassifyWidget"]

LOG = logging.getLogger(__name__)
BF_ONLY_NOTE = (
    "Only the bright-field (BF) channel is classified; fluorescence layers (DAPI, PE, APC...) "
    "are not used. Plain 2-D image layers from other readers count as one BF cell each."
)


def _is_image_layer(layer: Any) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image)


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
        self.device: str | None = None  # torch device for the next run (None: automatic)
        self.last_outcome: Any = None
        self._worker: ClassifyWorker | None = None
        self._job_layers: dict[str, Any] = {}
        self._activity: Any = None
        self._build_ui()
        self._add_callbacks()
        self.session.register_widget("classify", self)
        self.refresh_targets()
        remembered = self.session.model_path or _remembered_model()
        if remembered:
            self.model_box.set_path(remembered)
        self._set_running(False)

    # -- building -----------------------------------------------------------------------

    def _build_ui(self) -> None:
        layout = scrollable_body(self)
        note = QLabel(BF_ONLY_NOTE)
        note.setWordWrap(True)
        note.setObjectName("bf_only_note")
        layout.addWidget(note)
        self.model_box = ModelBox(self.session)
        layout.addWidget(section("Model", self.model_box))

        cells = QWidget()
        form = QFormLayout(cells)
        self.target_combo = QComboBox()
        self.target_combo.setToolTip(
            "Which cells to classify: one export (its BF layer), or the plain image layers "
            "opened with other readers. Only these cells are classified."
        )
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 4096)
        self.batch_spin.setValue(ClassifyInputs().batch_size)
        self.batch_spin.setToolTip("Cells per forward pass: larger is faster, uses more memory")
        self.adapt_check = QCheckBox("Adapt to this export")
        self.adapt_check.setToolTip(
            "Re-estimate the network's normalisation (BatchNorm) statistics on these cells "
            "before classifying them: absorbs another instrument's contrast and noise without "
            "labels. Best on exports of a few hundred cells or more."
        )
        form.addRow("Cells", self.target_combo)
        form.addRow("Batch size", self.batch_spin)
        form.addRow(self.adapt_check)
        layout.addWidget(section("Cells", cells))

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

        self.results_box = ResultsBox(self.session, self._store_predictions)
        layout.addWidget(section("Results", self.results_box), 1)
        # what tests and scripts reach directly
        box = self.results_box
        self.table, self.threshold_slider, self.counts_label = (
            box.table,
            box.threshold_slider,
            box.counts_label,
        )
        self.review_checkbox, self.export_button = box.review_checkbox, box.export_button
        self.reset_threshold_button = box.reset_threshold_button
        self.set_threshold, self.reset_threshold = box.set_threshold, box.reset_threshold
        self.export_csv, self.suggested_csv_path = box.export_csv, box.suggested_csv_path
        self.review_tools = ReviewTools(self)
        layout.addWidget(section("Review", self.review_tools))

    def _add_callbacks(self) -> None:
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.refresh_targets)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.table.rowActivated.connect(self.show_cell)
        self.session.events.shown.connect(self._on_shown)

    @property
    def model_path(self) -> str:
        """The model file chosen (may be empty)."""
        return self.model_box.path

    def set_model_path(self, path: str | os.PathLike) -> None:
        """Use this model file (checked at once, remembered across sessions)."""
        self.model_box.set_path(path)

    # -- the cells ------------------------------------------------------------------------

    def refresh_targets(self, *_: Any) -> None:
        """Refill the "Cells" list, keeping the choice (a new export becomes the choice)."""
        previous = self.target_combo.currentData()
        old = {self.target_combo.itemData(i) for i in range(self.target_combo.count())}
        targets = classify_targets([ly for ly in self.viewer.layers if _is_image_layer(ly)])
        self.target_combo.clear()
        for target in targets:
            self.target_combo.addItem(target.label, target.layer_names)
        new = [t.layer_names for t in targets if t.layer_names not in old]
        wanted = new[0] if new and old else previous
        index = self.target_combo.findData(wanted) if wanted is not None else -1
        self.target_combo.setCurrentIndex(max(index, 0) if targets else -1)
        lacking = None if targets else exports_without_bf(self.viewer.layers)
        if lacking and hasattr(self, "status_label"):
            self.status_label.setText(lacking)

    def choose_layers(self, names: Any) -> None:
        """Classify these layers next (one export's BF layer, or plain layers)."""
        names = tuple(names)
        index = self.target_combo.findData(names)
        if index < 0:
            self.target_combo.addItem(", ".join(names), names)
            index = self.target_combo.count() - 1
        self.target_combo.setCurrentIndex(index)

    def inputs(self) -> ClassifyInputs:
        """The inputs the next run would use."""
        names = self.target_combo.currentData()
        return ClassifyInputs(
            model_path=self.model_box.path,
            layer_names=tuple(names) if names else None,
            batch_size=int(self.batch_spin.value()),
            device=self.device,
        )

    # -- running --------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """Whether a classification is in progress."""
        return self._worker is not None

    def run(self) -> ClassifyWorker | None:
        """Classify the chosen cells in a background worker (``None``: refused, with why)."""
        if self.is_running:
            return None
        inputs = self.inputs()
        error = inputs.validation_error([layer.name for layer in self.viewer.layers])
        if inputs.layer_names is None and (lacking := exports_without_bf(self.viewer.layers)):
            error = lacking  # an export opened without BF: say so, not "open an export"
        if error is None and self.model_box.problem:
            error = self.model_box.problem
        if error is not None:
            self._fail(error)
            return None
        layers = [self.viewer.layers[name] for name in inputs.layer_names]
        job = ClassifyJob(
            str(Path(inputs.model_path).expanduser()),
            [],
            batch_size=inputs.batch_size,
            device=inputs.device,
            num_threads=background_threads(),
        )
        sizes = {(deparray_meta(layer) or {}).get("pixel_size_um") for layer in layers}
        if len(sizes) == 1 and None not in sizes:
            job.options["pixel_size"] = float(sizes.pop())  # physical-scale input, when known
        if self.adapt_check.isChecked():
            job.options["adapt"] = True
        for layer in layers:
            meta = ensure_deparray_metadata(layer, "BF")
            n = cell_count(layer)
            job.layers.append(
                LayerCells(
                    layer.name,
                    layer.data,
                    bool(getattr(layer, "rgb", False)),
                    list(range(n)),
                    [str(c) for c in meta["cell_ids"]],
                )
            )
        self._job_layers = {layer.name: layer for layer in layers}
        worker = ClassifyWorker(job)
        worker.stage.connect(self._on_stage)
        worker.progress.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.progress_bar.setRange(0, job.n_cells)
        self.progress_bar.setValue(0)
        self.status_label.setText(f"Classifying {job.n_cells} cells…")
        self._set_running(True)
        self._open_activity(job.n_cells)
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop the running classification after the current batch; nothing is stored."""
        if self._worker is not None:
            self._worker.stop()
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Cancelling…")

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.model_box.set_enabled(not running)
        self.target_combo.setEnabled(not running)
        self.progress_bar.setVisible(running)

    def _fail(self, message: str) -> None:
        self.status_label.setText(message)
        notify("error", message)

    def _open_activity(self, total: int) -> None:
        from napari.utils import progress

        self._activity = progress(total=total, desc="Classifying cells")

    def _close_activity(self) -> None:
        if self._activity is not None:
            self._activity.close()
            self._activity = None

    def _on_stage(self, text: str) -> None:
        self.status_label.setText(f"{text.capitalize()}…")
        if self._activity is not None:
            self._activity.set_description(f"Classifying cells: {text}")

    def _on_progress(self, done: int, total: int) -> None:
        self.progress_bar.setValue(int(done))
        if self._activity is not None and done > self._activity.n:
            self._activity.update(done - self._activity.n)

    def _on_errored(self, exc: BaseException) -> None:
        LOG.error("classification failed", exc_info=exc)
        self._fail(
            "Classification stopped because of an unexpected problem; the details are in napari's console log."
        )

    def _on_finished(self) -> None:
        self._worker = None
        self._close_activity()
        self._set_running(False)

    def _on_returned(self, outcome: Any) -> None:
        self.last_outcome = outcome
        if outcome.error is not None:
            self._fail(outcome.error)
            return
        total = sum(cell_count(layer) for layer in self._job_layers.values())
        if outcome.cancelled:
            self.status_label.setText(
                f"Cancelled after {outcome.done} of {total} cells: nothing was stored"
                + ("; the table still shows the previous run." if self.results is not None else ".")
            )
            return
        self._accept(outcome)

    def _accept(self, outcome: Any) -> None:
        rows, p = [], iter(outcome.p_ctc)
        for name, layer in self._job_layers.items():
            meta = deparray_meta(layer)
            labels, paths = meta.get("labels") or [], meta.get("paths") or []
            groups = meta.get("groups") or []
            for index, cell_id in enumerate(meta["cell_ids"]):
                label = labels[index] if index < len(labels) else None
                rows.append(
                    CellResult(
                        str(cell_id),
                        name,
                        index,
                        float(next(p)),
                        paths[index] if index < len(paths) else None,
                        label if is_class_label(label) else None,
                        groups[index] if index < len(groups) else None,
                    )
                )
        threshold = float(outcome.model_threshold)
        results = ClassificationResults(
            rows, threshold, threshold, self.model_box.path, outcome.model_metadata
        )
        self._store_predictions(results)
        self.session.results = results
        self.results_box.show_results(results)
        text = f"Classified {len(rows)} cells in {outcome.seconds:.1f} s."
        for note in outcome.notes:
            text += f" {note}"
            notify("info", note)
        self.status_label.setText(text)

    @property
    def results(self) -> ClassificationResults | None:
        """The last complete run of this viewer (``None`` before the first)."""
        return self.session.results

    # -- results --------------------------------------------------------------------------

    def _store_predictions(self, results: ClassificationResults) -> None:
        """``metadata["deparray"]["predictions"]`` of every classified layer."""
        for name, layer in self._job_layers.items():
            predictions = results.predictions_for_layer(name, cell_count(layer))
            meta = deparray_meta(layer)
            if meta is not None and predictions is not None:
                meta["predictions"] = predictions
                meta["predictions_threshold"] = results.threshold
                meta["predictions_model"] = results.model_path

    def show_cell(self, result_row: int) -> None:
        """Bring a classified cell on screen (its layer selected, the slider on it)."""
        row = self.results.rows[result_row]
        layer = self._job_layers.get(row.layer)
        if layer is None or layer not in self.viewer.layers:
            self.status_label.setText(f"layer {row.layer!r} is no longer in the viewer")
            return
        self.session.show(layer, row.index)

    def _on_shown(self, event: Any) -> None:
        results = self.results
        if results is not None and event.layer is not None:
            row = results.index_at(event.layer.name, event.index)
            if row is None and event.cell_id is not None:
                rows = results.indices_of(event.cell_id)
                row = rows[0] if rows else None
            if row is not None:
                self.table.select_result_row(row)


def _remembered_model() -> str:
    from napari_deparray_ctc.napari.widgets.classify.inputs import last_model_path

    return last_model_path()
