"""The "Training" settings of "Train classifier", built from TrainConfig's fields.

Each control takes its default, range, step and tooltip from
:func:`~napari_deparray_ctc.napari.widgets.train.inputs.field_spec` (the metadata beside the
default in ``core.train.TrainConfig``), so nothing is restated here.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_deparray_ctc.core.constants import AUGMENT_FAMILIES, MODEL_FILE_FILTER
from napari_deparray_ctc.napari.widgets.forms import add_rows, check_box, file_row, line_edit
from napari_deparray_ctc.napari.widgets.train.inputs import field_spec

__all__ = ["DEFAULT_MODEL_NAME", "SettingsBox", "validation_fraction_tip", "validation_text"]

#: default model file name, beside the export
DEFAULT_MODEL_NAME = "deparray_ctc_model.pt"

_TIPS = {
    "arch": "Network: resnet18 is the fastest on a CPU; larger ones need more cells",
    "epochs": "Most passes over the training cells; training stops earlier when validation "
    "stops improving",
    "image_size": "Cells are resized to this many pixels a side before the network sees them",
    "augment": "Random changes applied to the training images so the model holds up on "
    "other instruments",
    "dapi_strategy": "How the DAPI images help training (the model always classifies from BF only)",
    "val_fraction": "Share of the annotated cells (whole samples when known) held out to pick the "
    "best epoch and the threshold",
    "seed": "Random seed: the same seed and cells give the same model",
}
_AUGMENT_TIPS = {
    "geometric": "flips, 90° rotations, small shifts, scaling and rotation",
    "photometric": "brightness, contrast, gamma and illumination gradients",
    "noise": "camera noise and blur",
}


_DAPI_TIPS = {
    "none": "bright-field images only",
    "substitute": "each cell's DAPI image is an extra training image with the cell's label "
    "(the paper's method)",
    "blend": "extra training images that mix mostly BF with some DAPI, showing where the "
    "nucleus is",
    "aux_nucleus": "the network also learns to draw the DAPI image from the BF image (during "
    "training only)",
}


def validation_text(folds: int) -> str:
    """How training validates, as the widget runs it (``TrainConfig.folds`` networks)."""
    if folds > 1:
        return (
            f"Cross-fitting, up to {folds} folds (at most one per sample): every annotated "
            "cell is scored by a network that did not see it"
        )
    return "One split: a share of the annotated cells (whole samples when known) is held out."


def validation_fraction_tip(folds: int) -> str:
    """The validation fraction's tooltip: when it counts, and whether it counts now."""
    when = (
        f"Not used now: training cross-fits up to {folds} folds (no more than the samples, "
        "or the cells of the rarer class), so every annotated cell is validated by a network "
        "that did not see it. "
        if folds > 1
        else ""
    )
    return (
        when + "With one fold only, the share of the annotated cells (whole samples when known) "
        "held out to pick the best epoch and the threshold."
    )


def _tip(name: str) -> str:
    spec = field_spec(name)
    return spec.help or _TIPS.get(name, "")


def _spin(name: str, double: bool = False):
    spec = field_spec(name)
    box = QDoubleSpinBox() if double else QSpinBox()
    if double:
        box.setDecimals(2)
        box.setRange(float(spec.minimum or 0.0), float(spec.maximum or 1.0))
        box.setSingleStep(float(spec.step or 0.05))
    else:
        box.setRange(int(spec.minimum or 0), int(spec.maximum or 2**31 - 1))
        box.setSingleStep(int(spec.step or 1))
    box.setValue(spec.default)
    box.setToolTip(_tip(name))
    return box


def _combo(name: str) -> QComboBox:
    spec = field_spec(name)
    box = QComboBox()
    box.addItems(list(spec.choices or ()))
    box.setCurrentText(spec.default)
    box.setToolTip(_tip(name))
    return box


class SettingsBox(QWidget):
    """The training settings, the model file and the replacement rule."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        self.arch_combo = _combo("arch")
        self.epochs_spin = _spin("epochs")
        self.size_spin = _spin("image_size")
        self.size_spin.setSuffix(" px")
        defaults = field_spec("augment").default
        self.augment_checks: dict[str, QCheckBox] = {}
        augment_row = QVBoxLayout()  # under each other: three side by side overflow a dock
        augment_row.setSpacing(2)
        for family in AUGMENT_FAMILIES:
            check = QCheckBox(family)
            check.setChecked(family in defaults)
            check.setToolTip(f"{family}: {_AUGMENT_TIPS.get(family, '')}")
            self.augment_checks[family] = check
            augment_row.addWidget(check)
        self.dapi_strategy_combo = _combo("dapi_strategy")
        for i in range(self.dapi_strategy_combo.count()):
            strategy = self.dapi_strategy_combo.itemText(i)
            self.dapi_strategy_combo.setItemData(
                i, f"{strategy}: {_DAPI_TIPS.get(strategy, '')}", Qt.ItemDataRole.ToolTipRole
            )
        self.dapi_strategy_combo.setToolTip(
            _tip("dapi_strategy") + ". " + "; ".join(f"{k}: {v}" for k, v in _DAPI_TIPS.items())
        )
        self.val_spin = _spin("val_fraction", double=True)
        # what runs: TrainConfig.folds networks (cross-fitting); val_fraction only counts with
        # one fold, which the widget does not offer, so the field is kept but not shown
        self.folds = int(field_spec("folds").default)
        self.val_spin.setToolTip(validation_fraction_tip(self.folds))
        self.val_spin.setParent(self)
        self.val_spin.hide()
        self.validation_label = QLabel(f"<b>Validation</b>: {validation_text(self.folds)}")
        self.validation_label.setWordWrap(True)
        self.validation_label.setObjectName("validation_label")
        self.validation_label.setToolTip(
            f"{_tip('folds')}\n\nThe widget trains up to {self.folds} folds (TrainConfig's "
            "default): no more than the samples (patients) the cells come from, or the cells "
            "of the rarer class."
        )
        self.seed_spin = _spin("seed")
        self.morphology_check = check_box(
            "Add cell-shape features", _tip("morphology"), bool(field_spec("morphology").default)
        )
        self.start_from_check = check_box(
            "Start from the current model",
            "Fine-tune the model chosen in 'Classify cells' on these cells (adapts a model to "
            "your hospital's cells) instead of starting from scratch",
        )
        self.out_edit = line_edit(
            DEFAULT_MODEL_NAME,
            "The model file to write (.pt). It is written as <name>.in-progress.pt while "
            "training and renamed when done.",
        )
        out_row = file_row(self.out_edit, "Choose the model file", self._browse_out)
        self.overwrite_check = check_box(
            "Overwrite even if worse",
            "Replace the existing model file even when it scored better on a validation set "
            "large enough to compare",
        )
        add_rows(
            form,
            ("Architecture", self.arch_combo),
            ("Epochs", self.epochs_spin),
            ("Image size", self.size_spin),
            ("Augmentation", augment_row),
            ("DAPI strategy", self.dapi_strategy_combo),
            # a row of its own: a wrapped label in a form's field column gets too little height
            self.validation_label,
            ("Seed", self.seed_spin),
            self.morphology_check,
            self.start_from_check,
            ("Model file", out_row),
            self.overwrite_check,
        )
        for widget in (
            self.arch_combo,
            self.epochs_spin,
            self.size_spin,
            self.dapi_strategy_combo,
            self.seed_spin,
        ):
            form.labelForField(widget).setToolTip(widget.toolTip())
        form.labelForField(out_row).setToolTip(self.out_edit.toolTip())

    @property
    def augment(self) -> tuple[str, ...]:
        """The ticked augmentation families."""
        return tuple(f for f, check in self.augment_checks.items() if check.isChecked())

    def controls(self) -> list[QWidget]:
        """Every input (disabled while training)."""
        return [
            self.arch_combo,
            self.epochs_spin,
            self.size_spin,
            self.dapi_strategy_combo,
            self.val_spin,
            self.seed_spin,
            self.morphology_check,
            self.start_from_check,
            self.out_edit,
            self.overwrite_check,
            *self.augment_checks.values(),
        ]

    def _browse_out(self) -> None:
        start = self.out_edit.text().strip() or DEFAULT_MODEL_NAME
        path, _ = QFileDialog.getSaveFileName(self, "Model file", start, MODEL_FILE_FILTER)
        if path:
            self.out_edit.setText(path)
