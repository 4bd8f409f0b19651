"""Pieces every dock widget uses: a scrollable body, collapsible sections, notifications.

Docks are narrow (napari gives a plugin dock about 340 px on a 1366×768 laptop), so the
body scrolls vertically only and everything in it fits its width:

* :func:`scrollable_body` fits what it holds to the dock's width when it is shown (combo boxes
  no wider than a few words, form labels above their field when a row does not fit);
* :func:`section` folds a part of the dock away (its content is hidden, never clipped).

Labels that name files are in :mod:`.labels`, form fields in :mod:`.forms`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from qtpy.QtCore import QEvent, QPoint, QSize, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QApplication,
    QComboBox,
    QFormLayout,
    QFrame,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

__all__ = [
    "DOCK_WIDTH",
    "KEEP_ROOM",
    "ROOM_HEIGHT",
    "Section",
    "fit_width",
    "notify",
    "scrollable_body",
    "section",
]

#: the width a dock asks for (napari's own layer controls are about as wide)
DOCK_WIDTH = 340
#: characters a combo box shows before it needs more room (its tooltip shows the rest)
COMBO_CHARS = 12
#: a widget with this property set to True keeps its minimum height on screen: the dock it is
#: in never gets shorter than that (e.g. when another dock joins it in the same column)
KEEP_ROOM = "deparray_keep_room"
#: the dock's title bar and margins around such a widget
_ROOM_MARGIN = 40
#: the height the dock has for such a widget (set by the dock on every resize: its height
#: less :data:`ROOM_ABOVE`); the widget may make it its preferred height
ROOM_HEIGHT = "deparray_room_height"
#: what stays visible above such a widget (e.g. the threshold and the counts over the table)
ROOM_ABOVE = 150
#: when a scroll is applied again while a dock's layout settles (milliseconds)
SETTLE_MS = (0, 150, 500)


def notify(kind: str, message: str) -> None:
    """A napari notification: ``kind`` is ``"info"``, ``"warning"`` or ``"error"``.

    napari shows the first line of a notification elided; double-clicking it (or its chevron)
    shows all of it. Put what matters (the file name) first, the full path after it.
    """
    from napari.utils import notifications

    {
        "info": notifications.show_info,
        "warning": notifications.show_warning,
        "error": notifications.show_error,
    }[kind](message)


def _fit_combo(combo: QComboBox) -> None:
    if combo.property("_deparray_fitted"):
        return
    combo.setProperty("_deparray_fitted", True)
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    if combo.minimumContentsLength() == 0 or combo.minimumContentsLength() > COMBO_CHARS:
        combo.setMinimumContentsLength(COMBO_CHARS)
    combo.setSizePolicy(QSizePolicy.Policy.Expanding, combo.sizePolicy().verticalPolicy())
    # QComboBox caches its minimum size hint until its style changes: let it measure again
    QApplication.sendEvent(combo, QEvent(QEvent.Type.StyleChange))
    combo.updateGeometry()
    base = combo.toolTip()

    def show_choice(text: str, combo: QComboBox = combo, base: str = base) -> None:
        # a long choice is clipped in a narrow dock: the tooltip names it in full
        combo.setToolTip(f"{text}\n\n{base}" if text and base else text or base)

    combo.currentTextChanged.connect(show_choice)
    show_choice(combo.currentText())


def fit_width(root: QWidget) -> None:
    """Fit everything under ``root`` to a narrow dock (idempotent).

    Combo boxes ask for :data:`COMBO_CHARS` characters instead of their longest item (their
    tooltip names the current choice), and form rows put the label above the field when the
    two do not fit side by side.
    """
    combos = root.findChildren(QComboBox)
    if isinstance(root, QComboBox):
        combos.append(root)
    for combo in combos:
        if combo.isEditable() or not combo.objectName().startswith("qt_"):
            _fit_combo(combo)
    for widget in [root, *root.findChildren(QWidget)]:
        layout = widget.layout()
        if isinstance(layout, QFormLayout):
            layout.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
            layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)


class _DockScrollArea(QScrollArea):
    """Scrolls vertically; fits its body to the dock's width whenever it is shown."""

    def showEvent(self, event: Any) -> None:
        body = self.widget()
        if body is not None:
            fit_width(body)
        super().showEvent(event)

    def resizeEvent(self, event: Any) -> None:
        body = self.widget()
        if body is not None:  # what was added since it was shown
            fit_width(body)
        kept = self._kept()
        in_view = [w for w in kept if self._in_view(w, event.oldSize().height())]
        super().resizeEvent(event)
        room = max(0, self.viewport().height() - ROOM_ABOVE)
        for widget in kept:  # as tall as the dock allows (its minimum at least)
            if widget.property(ROOM_HEIGHT) != room:
                widget.setProperty(ROOM_HEIGHT, room)
                widget.updateGeometry()
        if in_view:  # e.g. the results table, when another dock makes this one shorter
            self.keep_in_view(in_view)

    def keep_in_view(self, widgets: list[QWidget], seconds: float = 1.0) -> None:
        """Scroll so that ``widgets`` are whole on screen, now and while the layout settles
        (for ``seconds``: texts and sizes set after a resize move things a few times)."""
        bar = self.verticalScrollBar()
        until = time.monotonic() + seconds

        def show(*_: Any) -> None:
            if time.monotonic() > until:
                with contextlib.suppress(TypeError, RuntimeError):
                    bar.rangeChanged.disconnect(show)
                return
            with contextlib.suppress(RuntimeError):  # deleted meanwhile
                for widget in widgets:
                    self.ensureWidgetVisible(widget, 0, 0)

        bar.rangeChanged.connect(show)
        show()
        for delay_ms in SETTLE_MS:  # layouts that settle without changing the range
            QTimer.singleShot(delay_ms, show)

    def _kept(self) -> list[QWidget]:
        body = self.widget()
        found = body.findChildren(QWidget) if body is not None else []
        return [w for w in found if w.property(KEEP_ROOM) and w.isVisibleTo(body)]

    def _in_view(self, widget: QWidget, height: int) -> bool:
        body = self.widget()
        top = widget.mapTo(body, QPoint(0, 0)).y() - self.verticalScrollBar().value()
        return height > 0 and top >= 0 and top + widget.height() <= height

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        return QSize(DOCK_WIDTH, hint.height())

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        kept = [w.minimumHeight() for w in self._kept()]
        if kept:
            hint.setHeight(max(hint.height(), max(kept) + _ROOM_MARGIN))
        return hint


def scrollable_body(widget: QWidget, min_height: int = 0) -> QVBoxLayout:
    """Give ``widget`` a vertical scroll area and return the layout to fill.

    A dock never asks for more height than the screen has: on a 1366×768 laptop the sections
    scroll instead of pushing the window past the screen; it never scrolls sideways either:
    what it holds is fitted to its width (:func:`fit_width`). ``min_height`` keeps the dock
    at least that tall when another dock joins it.
    """
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = _DockScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    body = QWidget()
    body.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
    scroll.setWidget(body)
    outer.addWidget(scroll)
    if min_height:
        widget.setMinimumHeight(min_height)
    widget.scroll_area = scroll  # type: ignore[attr-defined]
    layout = QVBoxLayout(body)
    layout.setContentsMargins(6, 6, 6, 6)
    return layout


class Section(QWidget):
    """A titled section that folds: a toggle button over its content.

    Unlike superqt's ``QCollapsible`` it never caps its content's height (which clipped a
    label whose wrapped text grew after the section opened): folding hides the content.
    """

    toggled = Signal(bool)

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._title = title
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self._button = QPushButton()
        self._button.setCheckable(True)
        self._button.setChecked(True)
        self._button.setStyleSheet("text-align: left; border: none; outline: none;")
        self._button.toggled.connect(self._set_expanded)
        layout.addWidget(self._button)
        self._content = QWidget()
        content_layout = QVBoxLayout(self._content)
        content_layout.setContentsMargins(4, 0, 0, 0)
        layout.addWidget(self._content, 1)
        self._set_expanded(True)

    def toggleButton(self) -> QPushButton:
        """The title button that folds and unfolds the section."""
        return self._button

    def text(self) -> str:
        """The section's title."""
        return self._title

    def content(self) -> QWidget:
        """The widget holding the section's content."""
        return self._content

    def addWidget(self, widget: QWidget, stretch: int = 0) -> None:
        """Add ``widget`` to the content."""
        self._content.layout().addWidget(widget, stretch)

    def isExpanded(self) -> bool:
        """Whether the content is shown."""
        return self._button.isChecked()

    def expand(self, animate: bool = False) -> None:
        """Show the content."""
        self._button.setChecked(True)

    def collapse(self, animate: bool = False) -> None:
        """Hide the content."""
        self._button.setChecked(False)

    def _set_expanded(self, expanded: bool) -> None:
        self._button.setText(("▼ " if expanded else "▶ ") + self._title)
        self._content.setVisible(expanded)
        self.toggled.emit(bool(expanded))


def section(title: str, content: QWidget, expanded: bool = True, tooltip: str = "") -> Section:
    """A folding section holding ``content``."""
    box = Section(title)
    box.addWidget(content, 1)
    if tooltip:
        box.setToolTip(tooltip)
    if expanded:
        box.expand()
    else:
        box.collapse()
    return box
