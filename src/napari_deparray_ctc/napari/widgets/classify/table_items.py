"""The results table's pieces: its columns, keys and colours, items that sort by number, one
row's items, and the annotation column's editor (used by ``table.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QStyledItemDelegate, QTableWidget, QTableWidgetItem

__all__ = [
    "ANNOTATION_CHOICES",
    "CALL_COLOURS",
    "COLUMNS",
    "LAYER_COLUMN_MAX",
    "MIN_VISIBLE_ROWS",
    "REVIEW_KEYS",
    "ROW_ROLE",
    "SORT_ROLE",
    "AnnotationDelegate",
    "SortableItem",
    "fit_columns",
    "row_items",
]

#: visible columns
COLUMNS = ("cell id", "layer", "P(CTC)", "call", "annotation")
COL_ID, COL_LAYER, COL_P, COL_CALL, COL_ANNOTATION, COL_UNCERTAINTY, COL_ORDER = range(7)
#: item data role holding the result row index (column 0) or a numeric sort key
ROW_ROLE = Qt.ItemDataRole.UserRole
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
ANNOTATION_CHOICES = ("", "CTC", "WBC")
REVIEW_KEYS: dict[int, str | None] = {
    int(Qt.Key.Key_C): "CTC",
    int(Qt.Key.Key_W): "WBC",
    int(Qt.Key.Key_Delete): None,
    int(Qt.Key.Key_Backspace): None,
}
CALL_COLOURS = {"CTC": "#ff6b6b", "WBC": "#7fb3ff"}
#: rows the table always has room for, even with other docks in its column (with all three
#: docks on the right of a 1366×768 screen, more would push the window past the screen)
MIN_VISIBLE_ROWS = 6
#: the widest the layer column starts (its tooltip and the cell id's name the rest)
LAYER_COLUMN_MAX = 110


class SortableItem(QTableWidgetItem):
    """Table item that sorts by a numeric key (``SORT_ROLE``) instead of its text."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if mine is None or theirs is None:
            return super().__lt__(other)
        return float(mine) < float(theirs)


class AnnotationDelegate(QStyledItemDelegate):
    """Edits the annotation column with a combo box: blank / CTC / WBC."""

    def createEditor(self, parent, option, index):
        combo = QComboBox(parent)
        combo.addItems(list(ANNOTATION_CHOICES))
        combo.activated.connect(lambda _i, c=combo: self._commit(c))
        return combo

    def _commit(self, editor: QComboBox) -> None:
        self.commitData.emit(editor)
        self.closeEditor.emit(editor)

    def setEditorData(self, editor, index):
        editor.setCurrentText(index.data() or "")

    def setModelData(self, editor, model, index):
        model.setData(index, editor.currentText())


def row_items(index: int, row: Any) -> list[QTableWidgetItem]:
    """The items of result row ``index`` (a ``ResultRow``), one per column; only the
    annotation is editable. The call and the uncertainty are filled in by the table."""
    id_item = QTableWidgetItem(row.cell_id)
    id_item.setData(ROW_ROLE, index)
    id_item.setToolTip(f"{row.layer} [{row.index}]" + (f"\n{row.path}" if row.path else ""))
    layer_item = QTableWidgetItem(row.layer.split(" :: ")[0])
    layer_item.setToolTip(row.layer)
    p_item = SortableItem(f"{row.p_ctc:.3f}")
    p_item.setData(SORT_ROLE, float(row.p_ctc))
    p_item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    annotation_item = QTableWidgetItem(row.annotation or "")
    annotation_item.setToolTip("Double-click, or press C / W / Del")
    order_item = SortableItem(str(index))
    order_item.setData(SORT_ROLE, index)
    items = [id_item, layer_item, p_item, QTableWidgetItem(), annotation_item, SortableItem()]
    items.append(order_item)
    fixed = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
    for column, item in enumerate(items):
        editable = column == COL_ANNOTATION
        item.setFlags(fixed | Qt.ItemFlag.ItemIsEditable if editable else fixed)
    return items


def fit_columns(table: QTableWidget, cell_ids: Sequence[str], layers: Sequence[str]) -> None:
    """Size ``table``'s columns to their texts (once per fill); one export: no layer column."""
    fm = table.fontMetrics()
    header_fm = table.horizontalHeader().fontMetrics()
    pad, sort_arrow = 14, 14

    def width(column: int, texts: Sequence[str]) -> int:
        title = table.horizontalHeaderItem(column)
        head = header_fm.horizontalAdvance(title.text() if title else "") + sort_arrow
        sample = texts if len(texts) <= 2000 else [max(texts, key=len)]
        return max([head, *(fm.horizontalAdvance(t) for t in sample)]) + pad

    table.setColumnWidth(COL_ID, width(COL_ID, list(cell_ids)))
    table.setColumnWidth(COL_P, width(COL_P, ["0.000"]))
    table.setColumnWidth(COL_CALL, width(COL_CALL, ["CTC", "WBC"]))
    names = sorted({str(layer).split(" :: ")[0] for layer in layers})
    table.setColumnHidden(COL_LAYER, len(names) <= 1)
    table.setColumnWidth(COL_LAYER, min(width(COL_LAYER, names), LAYER_COLUMN_MAX))
