"""The "Model" box of "Classify cells": choose a model file, check it at once, show its card.

Choosing a file (Browse, typing, or "Use this model" in the training widget) sets the
session's model choice (``napari/model_choice.py``), which reads the file once in a background
worker (torch loads there, never on the UI thread); the box follows it and shows what the
model is, or why the file cannot be used, in words, before any run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
from napari_deparray_ctc.napari.follow import Follows

__all__ = ["ModelBox", "describe_metadata"]


def describe_metadata(meta: dict) -> str:
    """A short model card for the widget: architecture, training data, validation, threshold."""
    from napari_deparray_ctc.core.model.card import model_summary_lines

    return "<br>".join(model_summary_lines(meta))


class ModelBox(QWidget):
    """Line edit + Browse + the model's card. ``checked(metadata or None)`` after each check."""

    checked = Signal(object)

    def __init__(self, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.choice = session.model
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
        self._followed = Follows(
            (self.choice.events.path, self._on_choice_path),
            (self.choice.events.checked, self._on_checked),
        )
        if self.choice.path:
            self.edit.setText(self.choice.path)
            self._show(self.choice.metadata, self.choice.problem, self.choice.is_checking)

    @property
    def path(self) -> str:
        """The chosen file (may be empty)."""
        return self.edit.text().strip()

    @property
    def metadata(self) -> dict | None:
        """The chosen model's metadata once checked (``None`` before, or when unusable)."""
        return self.choice.metadata if self.choice.path == self.path else None

    @property
    def problem(self) -> str | None:
        """Why the chosen file cannot be used, in words (``None`` when it can)."""
        return self.choice.problem if self.choice.path == self.path else None

    @property
    def is_checking(self) -> bool:
        """Whether the chosen file is still being read."""
        return self.choice.is_checking

    def set_path(self, path: str | os.PathLike) -> None:
        """Use ``path`` (remembered across sessions once it checks), checked in the background."""
        text = os.fspath(path) if path else ""
        if self.edit.text().strip() != text:
            self.edit.setText(text)
        if text and not self.choice.is_checking:
            self.info.setText(f"Reading {Path(text).name}…")
        self.choice.set_path(text)

    def _on_choice_path(self, event: Any) -> None:
        if event.path != self.path:
            self.edit.setText(event.path)

    def _browse(self) -> None:
        start = str(Path(self.path).expanduser().parent) if self.path else ""
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model file", start, MODEL_FILE_FILTER)
        if path:
            self.set_path(path)

    def _on_checked(self, event: Any) -> None:
        if event.path != self.path:  # another file was chosen meanwhile
            return
        self._show(event.metadata, event.problem, checking=False)
        self.checked.emit(event.metadata)

    def _show(self, metadata: dict | None, problem: str | None, checking: bool) -> None:
        if checking:
            self.info.setText(f"Reading {Path(self.path).name}…")
        elif problem:
            self.info.setText(f"<span style='color:#e57373'>{problem}</span>")
        elif metadata is not None:
            self.info.setText(describe_metadata(metadata))
        else:
            self.info.setText("No model chosen yet.")

    def close_box(self) -> None:
        """Stop following the session's model choice (the dock is closing)."""
        self._followed.close()

    def set_enabled(self, enabled: bool) -> None:
        """Lock the choice while a run uses it."""
        self.edit.setEnabled(enabled)
        self.browse_button.setEnabled(enabled)
