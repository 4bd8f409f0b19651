"""The gallery's tiles as Qt items: the mosaic list, one item per cell, and its keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtGui import QColor, QCursor, QIcon, QImage, QPixmap
from qtpy.QtWidgets import QAbstractItemView, QListView, QListWidget, QListWidgetItem

from napari_deparray_ctc.napari.cells import layer_channel

__all__ = [
    "ID_ROLE",
    "KEYS",
    "annotation_key",
    "item_under_cursor",
    "mosaic",
    "show_annotation",
    "tile_item",
]

#: the annotation keys of a tile under the cursor
KEYS = {int(Qt.Key.Key_C): "CTC", int(Qt.Key.Key_W): "WBC", int(Qt.Key.Key_U): None}
#: item data role holding the cell id
ID_ROLE = Qt.ItemDataRole.UserRole
_BACKGROUND = {"CTC": QColor(120, 40, 40), "WBC": QColor(40, 60, 110), None: QColor(0, 0, 0, 0)}


def mosaic(event_filter: QObject) -> QListWidget:
    """The list that shows the tiles as a wrapping mosaic (keys go to ``event_filter``)."""
    tiles = QListWidget()
    tiles.setViewMode(QListView.ViewMode.IconMode)
    tiles.setResizeMode(QListView.ResizeMode.Adjust)
    tiles.setMovement(QListView.Movement.Static)
    tiles.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    tiles.setWordWrap(True)
    tiles.setSpacing(4)
    tiles.setMouseTracking(True)
    tiles.setMinimumHeight(200)
    tiles.installEventFilter(event_filter)
    return tiles


def tile_item(rgb: Any, cell: Any, layers: Sequence[Any]) -> QListWidgetItem:
    """One cell's tile: its picture, its caption, its annotation's background colour."""
    height, width, _ = rgb.shape
    image = QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
    item = QListWidgetItem(QIcon(QPixmap.fromImage(image)), cell.caption)
    item.setData(ID_ROLE, cell.cell_id)
    show_annotation(item, cell)
    channels = ", ".join(layer_channel(layer) or "?" for layer in layers)
    item.setToolTip(f"{cell.caption}\nchannels: {channels}")
    return item


def show_annotation(item: QListWidgetItem, cell: Any) -> None:
    """The tile's caption and background after its cell's annotation changed."""
    item.setText(cell.caption)
    item.setBackground(_BACKGROUND[cell.annotation])


def item_under_cursor(tiles: QListWidget) -> QListWidgetItem | None:
    """The tile under the mouse, else the selected tile."""
    item = tiles.itemAt(tiles.viewport().mapFromGlobal(QCursor.pos()))
    return item or tiles.currentItem()


def annotation_key(tiles: QListWidget, watched: Any, event: Any) -> tuple[str, str | None] | None:
    """``(cell id, label)`` when ``event`` is c / w / u pressed on the mosaic over a tile."""
    if watched is not tiles or event.type() != QEvent.Type.KeyPress:
        return None
    if int(event.key()) not in KEYS:
        return None
    item = item_under_cursor(tiles)
    return None if item is None else (item.data(ID_ROLE), KEYS[int(event.key())])
