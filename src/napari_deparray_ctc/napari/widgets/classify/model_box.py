"""The "Model" box of "Classify cells": choose a model file, check it at once, show its card.

Choosing a file (Browse, typing, or "Use this model" in the training widget) sets the
session's model path; the file is then read in a background thread (torch loads there, never
on the UI thread) and the box shows what the model is, or why the file cannot be used, in
words, before any run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from napari.qt.threading import thread_worker
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_deparray_ctc.core.constants import MODEL_FILE_FILTER
from napari_deparray_ctc.napari.widgets.classify.inputs import remember_model_path

__all__ = ["ModelBox", "describe_metadata"]


def describe_metadata(meta: dict) -> str:
    """A short model card for the widget: architecture, training data, validation, threshold."""
    from napari_deparray_ctc.core.model.card import model_summary_lines

    return "<br>".join(model_summary_lines(meta))


def _check_model(path: str) -> tuple[dict | None, str | None]:
    """Read a model file (worker thread): ``(metadata, None)`` or ``(None, reason)``."""
    from napari_deparray_ctc.core.errors import DeparrayError
    from napari_deparray_ctc.core.gl_guard import avoid_gl_llvm_clash
    from napari_deparray_ctc.core.runtime import preload_torch_libraries

    avoid_gl_llvm_clash()
    preload_torch_libraries()
    from napari_deparray_ctc.core.model.loaded import load_model

    try:
        return dict(load_model(path, device="cpu").metadata), None
    except DeparrayError as exc:
        return None, str(exc)


class ModelBox(QWidget):
    """Line edit + Browse + the model's card. ``checked(metadata or None)`` after each check."""

    checked = Signal(object)

    def __init__(self, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.metadata: dict | None = None
        self.problem: str | None = None
        self._checking: Any = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("model file (.pt) written by 'Train classifier'")
        self.edit.setToolTip(
            "The model file (.pt) written by 'Train classifier' or 'deparray-ctc train'. It "
            "is checked as soon as it is chosen; nothing in it is executed."
        )
        self.browse_button = QPushButton("Browse…")
        self.browse_button.setToolTip("Choose a model file")
        row.addWidget(self.edit, 1)
        row.addWidget(self.browse_button)
        layout.addLayout(row)
        self.info = QLabel("No model chosen yet.")
        self.info.setWordWrap(True)
        layout.addWidget(self.info)
        self.edit.editingFinished.connect(lambda: self.set_path(self.edit.text().strip()))
        self.browse_button.clicked.connect(self._browse)
        session.events.model_path.connect(self._on_session_path)

    @property
    def path(self) -> str:
        """The chosen file (may be empty)."""
        return self.edit.text().strip()

    @property
    def is_checking(self) -> bool:
        """Whether the chosen file is still being read."""
        return self._checking is not None

    def set_path(self, path: str | os.PathLike) -> None:
        """Use ``path`` (remembered across sessions), and check it in the background."""
        text = os.fspath(path) if path else ""
        if self.edit.text().strip() != text:
            self.edit.setText(text)
        self.session.model_path = text
        self._check()

    def _on_session_path(self, event: Any) -> None:
        if event.path != self.path:
            self.edit.setText(event.path)
            self._check()

    def _browse(self) -> None:
        start = str(Path(self.path).expanduser().parent) if self.path else ""
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model file", start, MODEL_FILE_FILTER)
        if path:
            self.set_path(path)

    def _check(self) -> None:
        self.metadata, self.problem = None, None
        path = self.path
        if not path:
            self.info.setText("No model chosen yet.")
            return
        expanded = Path(path).expanduser()
        if not expanded.is_file():
            self.problem = f"{path}: " + (
                "is not a file" if expanded.exists() else "model file does not exist"
            )
            self._show_problem()
            return
        self.info.setText(f"Reading {expanded.name}…")
        worker = thread_worker(_check_model, start_thread=False)(str(expanded))
        worker.returned.connect(lambda result, p=path: self._on_checked(p, *result))
        worker.finished.connect(self._on_check_finished)
        self._checking = worker
        worker.start()

    def _on_check_finished(self) -> None:
        self._checking = None

    def _on_checked(self, path: str, metadata: dict | None, problem: str | None) -> None:
        if path != self.path:  # another file was chosen meanwhile
            return
        self.metadata, self.problem = metadata, problem
        if metadata is None:
            self._show_problem()
        else:
            remember_model_path(str(Path(path).expanduser()))
            self.info.setText(describe_metadata(metadata))
        self.checked.emit(metadata)

    def _show_problem(self) -> None:
        self.info.setText(f"<span style='color:#e57373'>{self.problem}</span>")
        self.checked.emit(None)

    def set_enabled(self, enabled: bool) -> None:
        """Lock the choice while a run uses it."""
        self.edit.setEnabled(enabled)
        self.browse_button.setEnabled(enabled)
