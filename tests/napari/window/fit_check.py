"""Find what a dock cuts off: buttons, check boxes and labels that do not fit their room.

Used inside the real-window test scripts (a subprocess under Xvfb): ``cut_widgets(dock)``
walks every visible QAbstractButton (push buttons, check boxes...) and QLabel of a dock and
returns one line per widget that is cut:

* **sideways**: its right edge lies beyond the visible part of the dock (the scroll area's
  viewport, or the dock itself), so the user cannot see its end and cannot scroll to it;
* **button or check box**: narrower than its text (plus its indicator or padding);
* **one-line label**: narrower than its text, unless it is elided ("…") and its tooltip holds
  the whole text;
* **wrapped label**: narrower than its longest word, or less tall than its wrapped text needs.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QPoint
from qtpy.QtGui import QTextDocument
from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractScrollArea,
    QCheckBox,
    QLabel,
    QPushButton,
    QRadioButton,
    QStyle,
    QToolButton,
    QWidget,
)

__all__ = ["cut_widgets"]

_SLACK = 1  # pixels of rounding


def _plain(label: QLabel) -> str:
    text = label.text()
    if label.textFormat() != 0 and ("<" in text and ">" in text):  # not Qt.PlainText
        doc = QTextDocument()
        doc.setHtml(text)
        text = doc.toPlainText()
    return text.replace("\u200b", "")


def _name(widget: QWidget) -> str:
    text = ""
    if isinstance(widget, QAbstractButton):
        text = widget.text()
    elif isinstance(widget, QLabel):
        text = _plain(widget)
    kind = type(widget).__name__
    return f"{kind} {text[:60]!r}" + (f" ({widget.objectName()})" if widget.objectName() else "")


def _visible_right(widget: QWidget, dock: QWidget) -> int:
    """The right edge (global x) of the part of the dock ``widget`` can be seen in."""
    right = dock.mapToGlobal(QPoint(dock.width(), 0)).x()
    parent = widget.parentWidget()
    while parent is not None and parent is not dock.parentWidget():
        if isinstance(parent, QAbstractScrollArea):
            viewport = parent.viewport()
            right = min(right, viewport.mapToGlobal(QPoint(viewport.width(), 0)).x())
        right = min(right, parent.mapToGlobal(QPoint(parent.width(), 0)).x())
        parent = parent.parentWidget()
    return right


def _shown(widget: QWidget, dock: QWidget) -> bool:
    if not widget.isVisibleTo(dock) or widget.width() <= 0 or widget.height() <= 0:
        return False
    parent = widget.parentWidget()
    while parent is not None and parent is not dock:
        if parent.height() <= 0:  # inside a collapsed section
            return False
        parent = parent.parentWidget()
    return True


def _button_need(button: QAbstractButton) -> int:
    fm = button.fontMetrics()
    need = fm.horizontalAdvance(button.text().replace("&", ""))
    style = button.style()
    if isinstance(button, QCheckBox):
        need += style.pixelMetric(QStyle.PixelMetric.PM_IndicatorWidth, None, button)
        need += style.pixelMetric(QStyle.PixelMetric.PM_CheckBoxLabelSpacing, None, button)
    elif isinstance(button, QRadioButton):
        need += style.pixelMetric(QStyle.PixelMetric.PM_ExclusiveIndicatorWidth, None, button)
        need += style.pixelMetric(QStyle.PixelMetric.PM_RadioButtonLabelSpacing, None, button)
    elif isinstance(button, QPushButton | QToolButton):
        need += 4
    if not button.icon().isNull():
        need += button.iconSize().width() + 4
    return need


def cut_widgets(dock: QWidget, within: Any = None) -> list[str]:
    """What ``dock`` cuts off (one line per widget, empty when everything fits)."""
    problems = []
    for widget in dock.findChildren(QWidget):
        if not isinstance(widget, QAbstractButton | QLabel) or not _shown(widget, dock):
            continue
        if widget.objectName().startswith("qt_") or type(widget).__module__.startswith("napari."):
            continue  # Qt's and napari's own (the dock's title bar)
        if isinstance(widget, QLabel) and not _plain(widget).strip() and widget.pixmap() is None:
            continue
        right = widget.mapToGlobal(QPoint(widget.width(), 0)).x()
        limit = _visible_right(widget, dock)
        if right > limit + _SLACK:
            problems.append(f"{_name(widget)}: {right - limit} px beyond the dock's right edge")
            continue
        if isinstance(widget, QAbstractButton):
            if widget.text() and widget.width() + _SLACK < _button_need(widget):
                problems.append(
                    f"{_name(widget)}: {widget.width()} px wide, its text needs "
                    f"{_button_need(widget)}"
                )
            continue
        text = _plain(widget)
        if widget.wordWrap():
            needed = widget.heightForWidth(widget.width())
            if needed > widget.height() + _SLACK:
                problems.append(
                    f"{_name(widget)}: {widget.height()} px tall, its wrapped text needs {needed}"
                )
            longest = widget.minimumSizeHint().width()  # its longest unbreakable piece
            if longest > widget.width() + _SLACK:
                problems.append(
                    f"{_name(widget)}: a word needs {longest} px, it has {widget.width()}"
                )
        else:
            lines = text.splitlines() or [""]
            need = max(widget.fontMetrics().horizontalAdvance(line) for line in lines)
            room = widget.contentsRect().width() - 2 * widget.margin() - 2 * max(widget.indent(), 0)
            if need > room + _SLACK:
                elided = "…" in text and widget.toolTip().strip()
                if not elided:
                    problems.append(f"{_name(widget)}: {room} px for a text of {need} px")
    return problems
