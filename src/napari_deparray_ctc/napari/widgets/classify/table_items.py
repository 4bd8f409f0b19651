"""The results table's pieces: its columns, keys and colours, items that sort by number, and
the annotation column's editor (used by ``table.py``)."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QStyledItemDelegate, QTableWidgetItem

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
