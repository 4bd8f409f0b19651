"""Pieces every dock widget uses: a scrollable body, collapsible sections, notifications."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget
from superqt import QCollapsible

__all__ = ["notify", "scrollable_body", "section"]


def notify(kind: str, message: str) -> None:
    """A napari notification: ``kind`` is ``"info"``, ``"warning"`` or ``"error"``."""
    from napari.utils import notifications

    {
        "info": notifications.show_info,
        "warning": notifications.show_warning,
        "error": notifications.show_error,
    }[kind](message)


def scrollable_body(widget: QWidget) -> QVBoxLayout:
    """Give ``widget`` a vertical scroll area and return the layout to fill.

    A dock never asks for more height than the screen has: on a 1366×768 laptop the sections
    scroll instead of pushing the window past the screen.
    """
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    body = QWidget()
    body.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
    scroll.setWidget(body)
    outer.addWidget(scroll)
    widget.scroll_area = scroll  # type: ignore[attr-defined]
    layout = QVBoxLayout(body)
    layout.setContentsMargins(6, 6, 6, 6)
    return layout


def section(title: str, content: QWidget, expanded: bool = True, tooltip: str = "") -> Any:
    """A collapsible section holding ``content``."""
    box = QCollapsible(title)
    box.addWidget(content)
    if tooltip:
        box.setToolTip(tooltip)
    if expanded:
        box.expand(animate=False)
    else:
        box.collapse(animate=False)
    return box
