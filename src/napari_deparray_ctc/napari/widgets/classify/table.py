"""The results table of "Classify cells": sortable, review order, editable annotation column.

A view of :class:`~napari_deparray_ctc.napari.results.ClassificationResults`; it holds no state
of its own beyond the Qt items. It emits ``rowActivated(result_row)`` when the user picks a
row (click or keyboard) and ``annotationEdited(cell_id, label)`` when the annotation column is
edited or the C / W / Delete keys are pressed on a row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from qtpy.QtCore import QEvent, QSize, Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
)

from napari_deparray_ctc.core.constants import is_class_label
from napari_deparray_ctc.napari.widgets.classify.table_items import (
    CALL_COLOURS,
    COL_ANNOTATION,
    COL_CALL,
    COL_ID,
    COL_LAYER,
    COL_ORDER,
    COL_P,
    COL_UNCERTAINTY,
    COLUMNS,
    MIN_VISIBLE_ROWS,
    REVIEW_KEYS,
    ROW_ROLE,
    SORT_ROLE,
    AnnotationDelegate,
    fit_columns,
    row_items,
)
from napari_deparray_ctc.napari.widgets.common import ROOM_HEIGHT

__all__ = ["COLUMNS", "ResultsTable"]


class ResultsTable(QTableWidget):
    """One row per classified cell; see the module docstring for its signals."""

    rowActivated = Signal(int)
    annotationEdited = Signal(str, object)

    def __init__(self, parent: Any = None) -> None:
        super().__init__(0, 7, parent)
        self.results: Any = None
        self._updating = False
        self._call_items: list[QTableWidgetItem] = []
        self._annotation_items: list[QTableWidgetItem] = []
        self._uncertainty_items: list[QTableWidgetItem] = []
        self._uncertainty_stale = True
        self.setHorizontalHeaderLabels([*COLUMNS, "|p - threshold|", "#"])
        self.setColumnHidden(COL_UNCERTAINTY, True)
        self.setColumnHidden(COL_ORDER, True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.SelectedClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        self.setItemDelegateForColumn(COL_ANNOTATION, AnnotationDelegate(self))
        self.verticalHeader().setVisible(False)
        # compact rows: a dock on a laptop shows about a dozen of them
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.horizontalHeader()
        header.setStretchLastSection(True)  # the annotation column takes what is left
        header.setMinimumSectionSize(24)
        for column in (COL_ID, COL_LAYER, COL_P, COL_CALL):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
        fit_columns(self, ["cell0000"], ["export"])
        self.setColumnHidden(COL_LAYER, True)  # shown when a run holds several exports
        self.setSortingEnabled(True)
        self.setMinimumHeight(self.height_for_rows(MIN_VISIBLE_ROWS))
        self.setToolTip(
            "Click a row to show the cell. Annotate: double-click the annotation column, or "
            "press C (CTC), W (WBC), Del (clear) on a row. Click a header to sort."
        )
        self.currentCellChanged.connect(self._on_current_changed)
        self.cellClicked.connect(lambda r, _c: self._activate(r))
        self.itemChanged.connect(self._on_item_changed)
        self.installEventFilter(self)

    # -- filling ----------------------------------------------------------------------

    def populate(self, results: Any, review: bool) -> None:
        """Show ``results`` (ordered for review, or as classified)."""
        self.results = results
        self._updating = True
        self.blockSignals(True)  # itemChanged would fire once per item: thousands of calls
        # columns are sized once per fill, from the texts (a column sized to its contents
        # measures every row again after each setItem: O(rows^2), 1 s for 500 cells)
        fit_columns(
            self, [row.cell_id for row in results.rows], [row.layer for row in results.rows]
        )
        self.setUpdatesEnabled(False)
        try:
            self.setSortingEnabled(False)
            self.clearContents()
            self.setRowCount(len(results))
            self._call_items, self._annotation_items, self._uncertainty_items = [], [], []
            for i, row in enumerate(results.rows):
                items = row_items(i, row)
                for column, item in enumerate(items):
                    self.setItem(i, column, item)
                self._call_items.append(items[COL_CALL])
                self._annotation_items.append(items[COL_ANNOTATION])
                self._uncertainty_items.append(items[COL_UNCERTAINTY])
            self.set_calls(range(len(results)))
            self._set_uncertainties()
            self.setSortingEnabled(True)
            self.sortItems(COL_UNCERTAINTY if review else COL_ORDER, Qt.SortOrder.AscendingOrder)
        finally:
            self.setUpdatesEnabled(True)
            self.blockSignals(False)
            self._updating = False

    def sizeHint(self) -> QSize:
        """As tall as the dock has room for (``ROOM_HEIGHT``, set by the dock), and at least
        :data:`MIN_VISIBLE_ROWS` rows (Qt's default is 192 px, whatever the screen)."""
        hint = super().sizeHint()
        room = int(self.property(ROOM_HEIGHT) or 0)
        return QSize(hint.width(), max(self.height_for_rows(MIN_VISIBLE_ROWS), room))

    def height_for_rows(self, rows: int) -> int:
        """Pixels the table needs to show ``rows`` rows under its header."""
        header = self.horizontalHeader().sizeHint().height()
        row = self.verticalHeader().defaultSectionSize()
        return header + rows * row + 2 * self.frameWidth() + 2

    @contextlib.contextmanager
    def _quiet_edit(self, sorting_after: bool | None = True) -> Iterator[None]:
        """Edit items without signals, resorting or reacting to our own changes; sorting is
        then switched on (``sorting_after``), or left as it was (``None``)."""
        updating, sorting = self._updating, self.isSortingEnabled()
        self._updating = True
        blocked = self.blockSignals(True)
        self.setSortingEnabled(False)
        try:
            yield
        finally:
            self.setSortingEnabled(sorting if sorting_after is None else sorting_after)
            self.blockSignals(blocked)
            self._updating = updating

    def set_calls(self, rows: Sequence[int] | range) -> None:
        """Refresh the call column of ``rows`` (after a threshold change)."""
        with self._quiet_edit(sorting_after=None):
            for i in rows:
                call = self.results.call(i)
                item = self._call_items[i]
                item.setText(call)
                item.setForeground(QColor(CALL_COLOURS[call]))
        self._uncertainty_stale = True

    def _set_uncertainties(self) -> None:
        blocked = self.blockSignals(True)
        for i, item in enumerate(self._uncertainty_items):
            u = self.results.uncertainty(i)
            item.setData(SORT_ROLE, u)
            item.setText(f"{u:.4f}")
        self.blockSignals(blocked)
        self._uncertainty_stale = False

    def set_annotations(self, rows: Sequence[int] | None = None) -> None:
        """Refresh the annotation column (all rows, or ``rows``) from the results."""
        if self.results is None:
            return
        with self._quiet_edit():
            for i in range(len(self.results)) if rows is None else rows:
                self._annotation_items[i].setText(self.results.rows[i].annotation or "")

    def order_for_review(self, review: bool) -> None:
        """Most doubtful first (``|P(CTC) - threshold|``), or back to the run's order."""
        if self.results is None:
            return
        self._updating = True
        try:
            if not review:  # the run's order again (suggestions may have moved rows)
                self._set_order({})
            if review and self._uncertainty_stale:
                with self._quiet_edit():
                    self._set_uncertainties()
            self.sortItems(COL_UNCERTAINTY if review else COL_ORDER, Qt.SortOrder.AscendingOrder)
            if review and self.rowCount():
                self.selectRow(0)
        finally:
            self._updating = False
        if review and self.rowCount():
            self._activate(0)

    def show_first(self, cell_ids: Sequence[str]) -> None:
        """Put these cells at the top, in this order (e.g. the suggested ones), the rest after."""
        if self.results is None:
            return
        rank: dict[int, int] = {}
        for position, cell_id in enumerate(cell_ids):
            for row in self.results.indices_of(cell_id):
                rank.setdefault(row, position - len(cell_ids))
        with self._quiet_edit():
            self._set_order(rank)
            self.setSortingEnabled(True)
            self.sortItems(COL_ORDER, Qt.SortOrder.AscendingOrder)

    def _set_order(self, rank: dict[int, int]) -> None:
        """The run order's sort keys: a result row's ``rank``, else its own index."""
        with self._quiet_edit():
            for table_row in range(self.rowCount()):
                row = self.result_row_at(table_row)
                self.item(table_row, COL_ORDER).setData(SORT_ROLE, rank.get(row, row))

    # -- reading ----------------------------------------------------------------------

    def order(self) -> list[int]:
        """Result row indices in the table's current (sorted) order."""
        return [
            int(self.item(r, COL_ID).data(ROW_ROLE))
            for r in range(self.rowCount())
            if self.item(r, COL_ID) is not None
        ]

    def visible_rows(self) -> list[dict[str, str]]:
        """The table content, top to bottom (column name -> text)."""
        return [
            {
                name: (self.item(r, c).text() if self.item(r, c) else "")
                for c, name in enumerate(COLUMNS)
            }
            for r in range(self.rowCount())
        ]

    def result_row_at(self, table_row: int) -> int | None:
        """The result row shown at ``table_row``."""
        item = self.item(table_row, COL_ID)
        return None if item is None else int(item.data(ROW_ROLE))

    def select_result_row(self, result_row: int) -> None:
        """Select (without emitting ``rowActivated``) the table row of a result row."""
        if self.results is None or not 0 <= result_row < len(self._call_items):
            return
        self._updating = True
        try:
            table_row = self.row(self._call_items[result_row])
            self.selectRow(table_row)
            self.scrollToItem(self.item(table_row, COL_ID))
        finally:
            self._updating = False

    # -- user actions -----------------------------------------------------------------

    def _activate(self, table_row: int) -> None:
        row = self.result_row_at(table_row)
        if row is not None and not self._updating:
            self.rowActivated.emit(row)

    def _on_current_changed(self, row: int, *_: int) -> None:
        if row >= 0:
            self._activate(row)

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if self._updating or item.column() != COL_ANNOTATION or self.results is None:
            return
        row = self.result_row_at(item.row())
        text = item.text().strip().upper()
        self.annotationEdited.emit(
            self.results.rows[row].cell_id, text if is_class_label(text) else None
        )

    def eventFilter(self, watched: Any, event: Any) -> bool:
        """Review keys on a row: C = CTC, W = WBC, Delete/Backspace = blank."""
        if (
            watched is self
            and event.type() == QEvent.Type.KeyPress
            and int(event.key()) in REVIEW_KEYS
            and not (event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier)
            and self.state() != QAbstractItemView.State.EditingState
        ):
            row = self.result_row_at(self.currentRow())
            if row is not None and self.results is not None:
                self.annotationEdited.emit(
                    self.results.rows[row].cell_id, REVIEW_KEYS[int(event.key())]
                )
            return True
        return super().eventFilter(watched, event)
