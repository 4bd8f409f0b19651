"""The "Results" box of "Classify cells": threshold, counts, review queue, table, CSV export.

It shows the session's :class:`~napari_deparray_ctc.napari.results.ClassificationResults`:
moving the threshold relabels every cell at once (no rerun) and tells the session, so the
caption and the gallery follow; annotations come and go through the session too.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from qtpy.QtCore import QPoint, Qt, QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from napari_deparray_ctc.core.inference.counts import NOT_CALIBRATED
from napari_deparray_ctc.napari.widgets.classify.table import ResultsTable
from napari_deparray_ctc.napari.widgets.common import KEEP_ROOM, SETTLE_MS, notify
from napari_deparray_ctc.napari.widgets.forms import check_box
from napari_deparray_ctc.napari.widgets.labels import path_label, set_path_label, wrap_anywhere

__all__ = ["ResultsBox"]

REVEAL_DELAY_MS = 50
#: seconds during which the results are kept at the top while the dock lays itself out
REVEAL_FOR_S = 1.0
EXPORT_TIP = (
    "Write the table (in its current order) to a CSV file: cell_id, path, p_ctc, label, "
    "threshold, annotation; the file is replaced whole or not at all. It is suggested beside "
    "the export."
)


class ResultsBox(QWidget):
    """Threshold slider, counts, review queue, the table and Export CSV."""

    def __init__(
        self, session: Any, on_threshold: Callable[[Any], None], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.session = session
        self._on_threshold = on_threshold
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Threshold: cells at or above it are called CTC")
        title.setWordWrap(True)
        box.addWidget(title)
        row = QHBoxLayout()
        self.threshold_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0.0, 1.0)
        self.threshold_slider.setDecimals(3)
        self.threshold_slider.setValue(0.5)
        self.threshold_slider.setToolTip(
            "Cells with P(CTC) at or above the threshold are called CTC; moving it relabels "
            "every cell at once, without a rerun"
        )
        self.reset_threshold_button = QPushButton("Model's")
        self.reset_threshold_button.setSizePolicy(
            QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed
        )
        self.reset_threshold_button.setToolTip("Back to the threshold stored in the model file")
        row.addWidget(self.threshold_slider, 1)
        row.addWidget(self.reset_threshold_button)
        box.addLayout(row)
        self.counts_label = QLabel("")
        self.counts_label.setWordWrap(True)
        box.addWidget(self.counts_label)
        self.samples_label = QLabel("")
        self.samples_label.setWordWrap(True)
        self.samples_label.setToolTip(
            "Per sample (patient): cells, cells called CTC at the threshold, the expected number "
            "of CTCs (sum of calibrated P(CTC)) and a 95 % interval for the true number, from "
            "the probabilities and the model's validation error rates"
        )
        box.addWidget(self.samples_label)
        self.review_checkbox = check_box(
            "Review queue: most doubtful first",
            "Order the table by |P(CTC) - threshold|, so the cells nearest the threshold come "
            "first. Keys in the table: C = CTC, W = WBC, Del = clear.",
        )
        box.addWidget(self.review_checkbox)
        self.table = ResultsTable()
        self.table.setProperty(KEEP_ROOM, True)  # the dock keeps room for it (common.py)
        box.addWidget(self.table, 1)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip(EXPORT_TIP)
        box.addWidget(self.export_button)
        self.export_label = path_label("Exported to")
        self.export_label.setObjectName("export_path")
        box.addWidget(self.export_label)
        self.threshold_slider.valueChanged.connect(self._threshold_moved)
        self.reset_threshold_button.clicked.connect(self.reset_threshold)
        self.review_checkbox.toggled.connect(self.table.order_for_review)
        self.export_button.clicked.connect(self._export_dialog)
        self.table.annotationEdited.connect(
            lambda cell_id, label: session.set_label(cell_id, label)
        )
        session.events.annotation.connect(self._on_annotation)
        self.setEnabled(False)

    @property
    def results(self) -> Any:
        """The session's results."""
        return self.session.results

    def show_results(self, results: Any) -> None:
        """Fill the table with a new run, the slider at its threshold."""
        first = not self.isEnabled()
        self.table.populate(results, self.review_checkbox.isChecked())
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(results.threshold)
        self.threshold_slider.blockSignals(False)
        self.setEnabled(True)
        self.update_counts()
        self.export_button.setToolTip(
            f"{EXPORT_TIP}\n\nSuggested file: {self.suggested_csv_path()}"
        )
        if first:  # once the texts set after this (the run's status) are laid out
            QTimer.singleShot(REVEAL_DELAY_MS, self.reveal)

    def reveal(self) -> None:
        """Scroll the dock so that the results start at its top (after the first run).

        The dock lays its texts out over a few event-loop turns after a run (the status line,
        the counts), so the scroll is applied again while its range still changes, for
        :data:`REVEAL_FOR_S`.
        """
        scroll = self.parentWidget()
        while scroll is not None and not isinstance(scroll, QScrollArea):
            scroll = scroll.parentWidget()
        if scroll is None or scroll.widget() is None:
            return
        bar = scroll.verticalScrollBar()
        until = time.monotonic() + REVEAL_FOR_S

        def apply(*_: Any) -> None:
            if time.monotonic() > until:
                with contextlib.suppress(TypeError, RuntimeError):
                    bar.rangeChanged.disconnect(apply)
                return
            with contextlib.suppress(RuntimeError):  # the dock was closed meanwhile
                section = self.parentWidget().parentWidget() or self  # the "Results" section
                bar.setValue(section.mapTo(scroll.widget(), QPoint(0, 0)).y())
                scroll.ensureWidgetVisible(self.table, 0, 0)  # a short dock: the table first

        bar.rangeChanged.connect(apply)
        apply()
        for delay_ms in SETTLE_MS:  # layouts that settle without changing the range
            QTimer.singleShot(delay_ms, apply)

    def set_threshold(self, threshold: float) -> None:
        """Move the threshold slider (relabels at once, no rerun)."""
        self.threshold_slider.setValue(float(threshold))

    def reset_threshold(self) -> None:
        """Back to the threshold stored in the model file."""
        if self.results is not None:
            self.set_threshold(self.results.model_threshold)

    def _threshold_moved(self, value: float) -> None:
        results = self.results
        if results is None:
            return
        changed = results.set_threshold(min(1.0, max(0.0, float(value))))
        self.table.set_calls(changed)
        if self.review_checkbox.isChecked():
            self.table.order_for_review(True)
        self._on_threshold(results)
        self.update_counts()
        self.session.results_changed()

    def update_counts(self) -> None:
        """The calls and annotations, counted."""
        results = self.results
        if results is None:
            self.counts_label.setText("")
            return
        self.update_samples()
        counts, annotated = results.counts(), results.annotation_counts()
        # calls on cells unlike the training cells rest on another instrument's calibration
        mark = f"{NOT_CALIBRATED} · " if results.calibration_warning else ""
        self.counts_label.setText(
            f"{mark}CTC {counts['CTC']} · WBC {counts['WBC']} at threshold {results.threshold:.3f} "
            f"(model: {results.model_threshold:.3f}) · annotated "
            f"{annotated['CTC'] + annotated['WBC']} of {len(results)}"
        )

    def update_samples(self) -> None:
        """The per-sample counts (``core.counts``), as ``classify --summary`` writes them."""
        results = self.results
        if results is None:
            self.samples_label.setText("")
            return
        default = results.layers[0].split(" :: ")[0] if results.layers else "all cells"
        try:
            rows = results.sample_counts(default)
        except (ValueError, KeyError) as exc:
            self.samples_label.setText(f"Per-sample counts unavailable: {exc}")
            return
        lines = [
            f"<b>{escape(wrap_anywhere(row['sample']))}</b>: {row['n_cells']} cells, {row['n_called_ctc']} called CTC; "
            f"expected {row['expected_ctc']:.1f} CTC (95 %: {row['ctc_low']}–{row['ctc_high']})"
            for row in rows[:12]
        ]
        if len(rows) > 12:
            lines.append(f"… and {len(rows) - 12} more samples (Export CSV, or classify --summary)")
        if results.calibration_warning:
            lines.insert(
                0,
                f"<b>{NOT_CALIBRATED}</b>: counts and intervals below may be far off.",
            )
        self.samples_label.setText("<br>".join(lines))

    def _on_annotation(self, event: Any) -> None:
        if self.results is not None and self.table.results is self.results:
            self.table.set_annotations(self.results.indices_of(event.cell_id))
            self.update_counts()

    # -- export ---------------------------------------------------------------------------

    def export_csv(self, path: str | os.PathLike) -> bool:
        """Write the table (its current order) to a CSV file, atomically; ``False`` on failure."""
        if self.results is None:
            notify("error", "Nothing to export yet: run the classifier first.")
            return False
        try:
            self.results.to_csv(path, order=self.table.order())
        except OSError as exc:
            notify(
                "error",
                f"{os.fspath(path)}: could not write the CSV ({exc.strerror or 'write failed'})",
            )
            return False
        full = Path(os.path.abspath(os.fspath(path)))
        set_path_label(self.export_label, full)
        # napari shows a notification's first line elided: the file name first, then where
        notify("info", f"Exported {len(self.results)} cells to {full.name}\nin {full.parent}")
        return True

    def suggested_csv_path(self) -> Path:
        """``<export folder>/<export name>_ctc_calls.csv`` for the classified export."""
        results = self.results
        paths = [row.path for row in results.rows if row.path] if results is not None else []
        name = (
            results.layers[0].split(" :: ")[0]
            if results is not None and results.layers
            else "cells"
        )
        if paths:
            folder = Path(os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]))
        else:
            folder = Path.home()
        return folder / f"{name}_ctc_calls.csv"

    def _export_dialog(self) -> None:
        if self.results is None:
            return
        start = str(self.suggested_csv_path())
        path, _ = QFileDialog.getSaveFileName(self, "Export calls as CSV", start, "CSV (*.csv)")
        if path:
            self.export_csv(path if path.lower().endswith(".csv") else path + ".csv")
