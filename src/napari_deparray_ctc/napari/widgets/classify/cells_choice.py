"""The "Cells" box of "Classify cells": which cells to classify, and how.

The list offers each export's BF layer and the plain image layers of other readers; it follows
the viewer's layers, and :func:`~napari_deparray_ctc.napari.widgets.classify.inputs.choose_target`
decides what stays selected when they change (a user's choice never changes by itself; the
plugin's own layers are never offered).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QComboBox, QFormLayout, QWidget

from napari_deparray_ctc.napari.follow import Follows
from napari_deparray_ctc.napari.widgets.classify.inputs import (
    ClassifyInputs,
    choose_target,
    classify_targets,
)
from napari_deparray_ctc.napari.widgets.forms import check_box, spin_box

__all__ = ["CellsChoice"]


def _is_image_layer(layer: Any) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image)


class CellsChoice(QWidget):
    """The cells to classify (an export or the plain layers), the batch size, adaptation.

    Parameters
    ----------
    viewer
        The napari viewer whose layers are offered.
    """

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._user_choice: Any = None  # the entry the user picked, kept while it exists
        form = QFormLayout(self)
        self.target_combo = QComboBox()
        self.target_combo.setToolTip(
            "Which cells to classify: one export (its BF layer), or the plain image layers "
            "opened with other readers. Only these cells are classified."
        )
        self.batch_spin = spin_box(
            1,
            4096,
            ClassifyInputs().batch_size,
            "Cells per forward pass: larger is faster, uses more memory",
        )
        self.adapt_check = check_box(
            "Adapt to this export",
            "Re-estimate the network's normalisation (BatchNorm) statistics on these cells "
            "before classifying them: absorbs another instrument's contrast and noise without "
            "labels. Best on exports of a few hundred cells or more.",
        )
        form.addRow("Cells", self.target_combo)
        form.addRow("Batch size", self.batch_spin)
        form.addRow(self.adapt_check)
        self.target_combo.activated.connect(self._on_user_chose)
        events = viewer.layers.events
        self._followed = Follows(
            *((e, self.refresh) for e in (events.inserted, events.removed, events.moved))
        )
        self.refresh()

    def close_box(self) -> None:
        """Stop following the viewer's layers (the dock is closing)."""
        self._followed.close()

    def refresh(self, *_: Any) -> bool:
        """Refill the list (see :func:`choose_target`); ``False`` when nothing can be
        classified."""
        previous = self.target_combo.currentData()
        offered = {self.target_combo.itemData(i) for i in range(self.target_combo.count())}
        targets = classify_targets([ly for ly in self.viewer.layers if _is_image_layer(ly)])
        self.target_combo.blockSignals(True)
        self.target_combo.clear()
        for target in targets:
            self.target_combo.addItem(target.label, target.layer_names)
        self.target_combo.blockSignals(False)
        wanted = choose_target(targets, previous, offered, self._user_choice)
        if wanted != self._user_choice:
            self._user_choice = None  # the user's choice is gone with its layers
        index = self.target_combo.findData(wanted) if wanted is not None else -1
        self.target_combo.setCurrentIndex(max(index, 0) if targets else -1)
        return bool(targets)

    def _on_user_chose(self, index: int) -> None:
        self._user_choice = self.target_combo.itemData(index)

    def choose(self, names: Any) -> None:
        """Classify these layers next (one export's BF layer, or plain layers)."""
        names = tuple(names)
        index = self.target_combo.findData(names)
        if index < 0:
            self.target_combo.addItem(", ".join(names), names)
            index = self.target_combo.count() - 1
        self.target_combo.setCurrentIndex(index)
        self._user_choice = names

    def layer_names(self) -> tuple[str, ...] | None:
        """The layers the choice names (``None``: none)."""
        names = self.target_combo.currentData()
        return tuple(names) if names else None

    def set_enabled(self, enabled: bool) -> None:
        """Lock the choice while a run uses it."""
        self.target_combo.setEnabled(enabled)
