"""The "Cells" box of "Train classifier": BF and DAPI layers, their pairing, the counts, keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QWidget,
)

from napari_deparray_ctc.napari.cells import (
    CellPairing,
    find_partner_layers,
    layer_channel,
    pair_channel_layers,
)
from napari_deparray_ctc.napari.follow import Follows
from napari_deparray_ctc.napari.layer_info import LayerInfo
from napari_deparray_ctc.napari.widgets.forms import check_box, file_row, line_edit

__all__ = ["CHOOSE_DAPI", "NO_DAPI", "CellsBox"]

#: label of the "no DAPI layer" choice
NO_DAPI = "(no DAPI)"
#: label shown when several DAPI layers match and the user has to choose
CHOOSE_DAPI = "(choose the DAPI layer)"


class CellsBox(QWidget):
    """Which cells train the model; keeps the counts up to date through the session."""

    def __init__(self, viewer: Any, session: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.dapi_ambiguous = False
        self._updating = False
        form = QFormLayout(self)
        self.bf_combo = QComboBox()
        self.bf_combo.setToolTip("The BF layer whose annotated cells train the model")
        self.dapi_combo = QComboBox()
        self.dapi_combo.setToolTip(
            "The DAPI layer paired with the BF layer by cell id (used in training only)"
        )
        self.pairing_label = QLabel()
        self.pairing_label.setWordWrap(True)
        self.counts_label = QLabel()
        self.counts_label.setWordWrap(True)
        form.addRow("BF layer", self.bf_combo)
        form.addRow("DAPI layer", self.dapi_combo)
        form.addRow(self.pairing_label)
        form.addRow(self.counts_label)
        keys = QLabel(
            "Annotate the cell on screen in a selected BF or DAPI layer: <b>c</b> = CTC, "
            "<b>w</b> = WBC, <b>u</b> = clear. Saved at once, after every change."
        )
        keys.setWordWrap(True)
        form.addRow(keys)
        self.advance_check = check_box(
            "Go to the next cell after c / w / u",
            "Move the slider to the next cell after each annotation",
        )
        form.addRow(self.advance_check)
        self.annotations_edit = line_edit(
            "beside the export (automatic)",
            "Annotations are saved here; empty = the export's own file "
            "(deparray_annotations.csv in the folder, or <file>.annotations.csv)",
        )
        form.addRow(
            "Annotations file",
            file_row(
                self.annotations_edit, "Choose the annotations file", self._browse_annotations
            ),
        )
        self.bf_combo.currentTextChanged.connect(self._on_bf_changed)
        self.dapi_combo.currentTextChanged.connect(self._on_dapi_changed)
        self.advance_check.toggled.connect(lambda on: setattr(session, "advance", bool(on)))
        self.annotations_edit.editingFinished.connect(self._on_annotations_file_edited)
        events = viewer.layers.events
        self._followed = Follows(
            (session.events.annotation, self.update_summary),
            *((event, self.refresh) for event in (events.inserted, events.removed, events.moved)),
        )

    def close_box(self) -> None:
        """Stop following the session and the viewer's layers (the dock is closing)."""
        self._followed.close()

    def layer(self, name: str | None) -> Any | None:
        """The layer called ``name`` (``None`` for the placeholders or a vanished layer)."""
        if not name or name in (NO_DAPI, CHOOSE_DAPI):
            return None
        try:
            return self.viewer.layers[name]
        except KeyError:
            return None

    def refresh(self, *_: Any) -> None:
        """Refill the BF choice (layers whose channel is BF), keeping the current choice."""
        current = self.bf_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if layer_channel(layer) == "BF"]
        self._updating = True
        try:
            self.bf_combo.clear()
            self.bf_combo.addItems(names)
            if current in names:
                self.bf_combo.setCurrentText(current)
        finally:
            self._updating = False
        self._on_bf_changed(self.bf_combo.currentText(), keep_dapi=True)

    def choose(self, bf: str, dapi: str | None = None) -> None:
        """Choose the BF layer and (optionally) the DAPI layer by name (``None``: no DAPI)."""
        self.bf_combo.setCurrentText(bf)
        self.dapi_combo.setCurrentText(dapi if dapi is not None else NO_DAPI)
        self.dapi_ambiguous = False
        self.update_summary()

    def _on_bf_changed(self, name: str, keep_dapi: bool = False) -> None:
        if self._updating:
            return
        bf = self.layer(name)
        previous = self.dapi_combo.currentText()
        dapi_layers = [layer for layer in self.viewer.layers if layer_channel(layer) == "DAPI"]
        partners = find_partner_layers(list(self.viewer.layers), bf, "DAPI") if bf else []
        others = [layer for layer in dapi_layers if layer not in partners]
        self._updating = True
        try:
            self.dapi_combo.clear()
            if len(partners) > 1:
                self.dapi_combo.addItem(CHOOSE_DAPI)
            self.dapi_combo.addItem(NO_DAPI)
            self.dapi_combo.addItems([layer.name for layer in partners + others])
            names = [self.dapi_combo.itemText(i) for i in range(self.dapi_combo.count())]
            self.dapi_ambiguous = False
            if keep_dapi and previous in names and previous != CHOOSE_DAPI:
                self.dapi_combo.setCurrentText(previous)
            elif len(partners) == 1:
                self.dapi_combo.setCurrentText(partners[0].name)
            elif len(partners) > 1:
                self.dapi_combo.setCurrentText(CHOOSE_DAPI)
                self.dapi_ambiguous = True
            else:
                self.dapi_combo.setCurrentText(NO_DAPI)
        finally:
            self._updating = False
        self.update_summary()

    def _on_dapi_changed(self, name: str) -> None:
        if not self._updating:
            self.dapi_ambiguous = name == CHOOSE_DAPI
            self.update_summary()

    def pairing(self) -> CellPairing:
        """The chosen BF layer's cells paired with the chosen DAPI layer's (by cell id).

        Raises
        ------
        ValueError
            No BF layer, an ambiguous DAPI choice, or layers that cannot be paired.
        """
        bf = self.layer(self.bf_combo.currentText())
        if bf is None:
            raise ValueError(
                "No BF layer: open an export with the DEPArray reader (its BF layer is used)."
            )
        if self.dapi_ambiguous:
            raise ValueError(
                f"Several DAPI layers share cell ids with {bf.name!r}: choose the DAPI layer."
            )
        return pair_channel_layers(bf, self.layer(self.dapi_combo.currentText()))

    def update_summary(self, *_: Any) -> None:
        """Show the pairing and the class counts of the chosen BF layer."""
        try:
            pairing = self.pairing()
        except ValueError as exc:
            self.pairing_label.setText(f"<span style='color:#e57373'>{exc}</span>")
            self.counts_label.setText("")
            return
        n = len(pairing.cell_ids)
        if pairing.dapi_layer is None:
            self.pairing_label.setText(f"{n} BF cells; no DAPI layer (DAPI strategy 'none').")
        else:
            self.pairing_label.setText(
                f"{pairing.n_paired} of {n} BF cells paired with DAPI by cell id."
            )
        labels = LayerInfo.of(pairing.bf_layer).labels
        n_ctc = sum(v == "CTC" for v in labels)
        n_wbc = sum(v == "WBC" for v in labels)
        self.counts_label.setText(
            f"Annotated: <b>{n_ctc} CTC</b>, <b>{n_wbc} WBC</b>, {len(labels) - n_ctc - n_wbc} unlabelled."
        )

    def _browse_annotations(self) -> None:
        start = self.annotations_edit.text().strip() or "annotations.csv"
        path, _ = QFileDialog.getSaveFileName(
            self, "Annotations file", start, "CSV files (*.csv);;All files (*)"
        )
        if path:
            self.annotations_edit.setText(path)
            self._on_annotations_file_edited()

    def _on_annotations_file_edited(self) -> None:
        text = self.annotations_edit.text().strip()
        self.session.sidecar_override = Path(text).expanduser() if text else None
