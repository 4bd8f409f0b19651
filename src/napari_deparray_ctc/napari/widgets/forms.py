"""Form fields built in one call: a field with its range, value and tooltip set together."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

__all__ = ["add_rows", "check_box", "file_row", "line_edit", "spin_box"]


def spin_box(minimum: int, maximum: int, value: int, tooltip: str, suffix: str = "") -> QSpinBox:
    """A whole-number field from ``minimum`` to ``maximum`` showing ``value``."""
    box = QSpinBox()
    box.setRange(minimum, maximum)
    box.setValue(value)
    box.setSuffix(suffix)
    box.setToolTip(tooltip)
    return box


def check_box(text: str, tooltip: str, checked: bool = False) -> QCheckBox:
    """A check box labelled ``text``."""
    box = QCheckBox(text)
    box.setChecked(checked)
    box.setToolTip(tooltip)
    return box


def line_edit(placeholder: str, tooltip: str) -> QLineEdit:
    """A one-line text field that shows ``placeholder`` while empty."""
    edit = QLineEdit()
    edit.setPlaceholderText(placeholder)
    edit.setToolTip(tooltip)
    return edit


def file_row(edit: QLineEdit, browse_tooltip: str, on_browse: Callable[[], None]) -> QHBoxLayout:
    """``edit`` with a narrow "…" button beside it that calls ``on_browse``."""
    browse = QPushButton("…")
    browse.setMaximumWidth(30)
    browse.setToolTip(browse_tooltip)
    browse.clicked.connect(on_browse)
    row = QHBoxLayout()
    row.addWidget(edit)
    row.addWidget(browse)
    return row


def add_rows(form: QFormLayout, *rows: tuple[str, QWidget | QLayout] | QWidget) -> None:
    """Add ``rows`` to ``form``: a ``(label, field)`` pair, or a widget on a row of its own."""
    for row in rows:
        if isinstance(row, tuple):
            form.addRow(*row)
        else:
            form.addRow(row)
