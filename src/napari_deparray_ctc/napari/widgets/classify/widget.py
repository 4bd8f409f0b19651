"""The "Classify cells" dock widget: per-cell CTC / WBC calls for bright-field layers.

Open a DEPArray export (or any 2-D image layers), choose a model file, press **Run**.
Every cell of the chosen bright-field layers gets P(CTC); the calls show in a sortable
table, on the canvas ("CTC 0.93" for the cell on screen) and in
``layer.metadata["deparray"]["predictions"]``. A threshold slider relabels the cells at
once, a review queue puts the doubtful cells first, and the table exports to CSV.

Only the BF channel is classified: fluorescence layers are listed but ignored.

The classification itself runs in a :func:`napari.qt.threading.thread_worker` generator
that calls :func:`napari_deparray_ctc.core.classify.classify` chunk by chunk, so progress
reaches the widget's progress bar and napari's activity dock, and **Cancel** (or the
activity dock's cancel) stops it between batches. Expected failures (a foreign model file,
an unreadable layer) come back as a result, never as an exception in the worker, and are
shown with :func:`napari.utils.notifications.show_error`.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QStyledItemDelegate,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from napari_deparray_ctc.napari.cells import (
    cell_count,
    cell_image,
    deparray_meta,
    ensure_deparray_metadata,
    layer_channel,
    set_cell_label,
)
from napari_deparray_ctc.napari.widgets.classify.inputs import (
    MODEL_FILE_FILTER,
    ClassifyInputs,
    last_model_path,
    remember_model_path,
)
from napari_deparray_ctc.napari.widgets.classify.results import CellResult, ClassificationResults

if TYPE_CHECKING:  # pragma: no cover
    import napari

from napari_deparray_ctc.core.gl_guard import avoid_gl_llvm_clash

__all__ = ["COLUMNS", "ClassifyWidget", "avoid_gl_llvm_clash", "inference_threads"]

#: visible table columns
COLUMNS = ("cell id", "P(CTC)", "call", "annotation")
COL_ID, COL_P, COL_CALL, COL_ANNOTATION, COL_UNCERTAINTY, COL_ORDER = range(6)
#: item data role holding the result row index (column 0) or a numeric sort key
_ROW_ROLE = Qt.ItemDataRole.UserRole
_SORT_ROLE = Qt.ItemDataRole.UserRole + 1
_ANNOTATION_CHOICES = ("", "CTC", "WBC")
_FLUORESCENCE_NOTE = (
    "Only the bright-field (BF) channel is classified. Fluorescence layers "
    "(DAPI, FITC, PE, APC, ...) are ignored. Plain 2-D layers from other readers "
    "count as one BF cell each: tick them under 'Choose layers'."
)
_REVIEW_KEYS: dict[int, str | None] = {
    int(Qt.Key.Key_C): "CTC",
    int(Qt.Key.Key_W): "WBC",
    int(Qt.Key.Key_Delete): None,
    int(Qt.Key.Key_Backspace): None,
}
_CALL_COLOURS = {"CTC": "#ff6b6b", "WBC": "#7fb3ff"}


# ============================================================================ worker side


def inference_threads() -> int:
    """Torch intra-op threads for classification: all cores but one, so the UI keeps one."""
    return max(1, (os.cpu_count() or 1) - 1)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Limit torch's intra-op threads while classifying; restore the old value after."""
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _load_model(path: str, device: str | None):
    """Load a model file (indirection so tests can patch the heavy part)."""
    from napari_deparray_ctc.core.model import load_model

    return load_model(path, device=device)


def _describe_model(model: Any) -> str:
    try:
        from napari_deparray_ctc.core.model import describe_model

        return describe_model(model)
    except Exception:  # a stand-in model in tests, or an older core
        return f"threshold {float(model.threshold):.3f}"


def _classify(images, model, **kwargs):
    """Call the core classifier (indirection so tests can patch the heavy part)."""
    from napari_deparray_ctc.core.classify import classify

    return classify(images, model, **kwargs)


def _model_file_error_type() -> type[BaseException]:
    try:
        from napari_deparray_ctc.core.model import ModelFileError
    except ImportError:  # pragma: no cover - core missing
        return ValueError
    return ModelFileError


@dataclass
class _LayerPlan:
    """One layer's cells, as read by the worker (the layer object stays on the UI side)."""

    layer: Any
    name: str
    source: SimpleNamespace  # name/data/metadata/rgb snapshot read by the worker
    cell_ids: list[str]
    paths: list[str | None]
    annotations: list[str | None]

    @property
    def n_cells(self) -> int:
        return len(self.cell_ids)


@dataclass
class _RunPlan:
    """Everything one run needs, prepared on the UI thread."""

    inputs: ClassifyInputs
    layers: list[_LayerPlan]
    cells: list[tuple[int, int]] = field(default_factory=list)  # (layer number, index)
    chunk_size: int = 64
    num_threads: int | None = None

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    @property
    def n_chunks(self) -> int:
        return max(1, math.ceil(self.n_cells / self.chunk_size))


@dataclass
class _Outcome:
    """What the worker returns: probabilities, or why there are none."""

    p_ctc: np.ndarray | None = None
    model_threshold: float | None = None
    model_description: str = ""
    done: int = 0
    cancelled: bool = False
    error: str | None = None
    elapsed_s: float = 0.0


def _classify_job(plan: _RunPlan, should_stop: Callable[[], bool]):
    """Worker generator: load the model, classify chunk by chunk, yield cells done.

    Never raises for expected problems: returns an :class:`_Outcome` with ``error`` set,
    so the UI thread shows one clear notification and stays usable.
    """
    start = time.perf_counter()
    avoid_gl_llvm_clash()
    kwargs = plan.inputs.to_core_kwargs()
    model_path = kwargs.pop("model")
    try:
        model = _load_model(model_path, kwargs.get("device"))
    except _model_file_error_type() as exc:
        return _Outcome(error=str(exc))
    except ImportError as exc:
        return _Outcome(error=f"the classifier could not be imported ({exc})")
    except Exception as exc:
        return _Outcome(
            error=f"{model_path}: could not load the model ({type(exc).__name__}: {exc})"
        )
    channel = (getattr(model, "metadata", None) or {}).get("input_channel", "BF")
    if channel != "BF":
        return _Outcome(
            error=f"{model_path}: the model expects {channel!r} images; this widget classifies BF"
        )

    probabilities: list[float] = []
    with _torch_threads(plan.num_threads):
        for first in range(0, plan.n_cells, plan.chunk_size):
            if should_stop():
                return _Outcome(done=len(probabilities), cancelled=True)
            chunk = plan.cells[first : first + plan.chunk_size]
            ids = [plan.layers[k].cell_ids[i] for k, i in chunk]
            images = (cell_image(plan.layers[k].source, i) for k, i in chunk)
            try:
                predictions = _classify(
                    images, model, cell_ids=ids, should_stop=should_stop, **kwargs
                )
            except Exception as exc:
                names = sorted({plan.layers[k].name for k, _ in chunk})
                return _Outcome(
                    error=(
                        f"could not classify cells {ids[0]}..{ids[-1]} of layer "
                        f"{', '.join(repr(n) for n in names)}: {exc}"
                    )
                )
            p = np.asarray(predictions.p_ctc, dtype=np.float64).reshape(-1)
            probabilities.extend(p.tolist())
            if getattr(predictions, "cancelled", False) or len(p) < len(chunk):
                return _Outcome(done=len(probabilities), cancelled=True)
            yield len(probabilities)
    return _Outcome(
        p_ctc=np.asarray(probabilities, dtype=np.float64),
        model_threshold=float(model.threshold),
        model_description=_describe_model(model),
        done=len(probabilities),
        elapsed_s=time.perf_counter() - start,
    )


# ============================================================================ Qt helpers


class _SortableItem(QTableWidgetItem):
    """Table item that sorts by a numeric key (``_SORT_ROLE``) instead of its text."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.data(_SORT_ROLE), other.data(_SORT_ROLE)
        if mine is None or theirs is None:
            return super().__lt__(other)
        return float(mine) < float(theirs)


class _AnnotationDelegate(QStyledItemDelegate):
    """Edits the annotation column with a combo box: blank / CTC / WBC."""

    def createEditor(self, parent, option, index):
        combo = QComboBox(parent)
        combo.addItems(list(_ANNOTATION_CHOICES))
        combo.activated.connect(lambda _i, c=combo: self._commit(c))
        return combo

    def _commit(self, editor: QComboBox) -> None:
        self.commitData.emit(editor)
        self.closeEditor.emit(editor)

    def setEditorData(self, editor, index):
        editor.setCurrentText(index.data() or "")

    def setModelData(self, editor, model, index):
        model.setData(index, editor.currentText())


def _text_overlay(viewer: Any):
    """The viewer's text overlay (``viewer.canvas.overlays.text`` from napari 0.9 on)."""
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)
    text = getattr(overlays, "text", None)
    return text if text is not None else viewer.text_overlay


def _is_image_layer(layer: Any) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image)


def _is_stack_layer(layer: Any) -> bool:
    """``(N, Y, X)`` stack of cells (the first axis steps through cells)."""
    return np.ndim(layer.data) == 3 and not getattr(layer, "rgb", False)


def _normalise_label(value: Any) -> str | None:
    return value if value in ("CTC", "WBC") else None


# ============================================================================ the widget


class ClassifyWidget(QWidget):
    """Dock widget that classifies bright-field cells as CTC or WBC.

    Parameters
    ----------
    napari_viewer
        The viewer whose layers hold the cells.
    parent
        Optional Qt parent.

    Attributes
    ----------
    results : ClassificationResults or None
        The last complete run (``None`` before the first one).
    annotation_changed : list of callables
        Called as ``callback(cell_id, label)`` after the user annotates a cell in the
        table (``label`` is ``"CTC"``, ``"WBC"`` or ``None``), once the layers' metadata
        has been updated. The training widget hooks its autosave here.
    device : str or None
        Torch device for the next run (``None``: automatic, cuda > mps > cpu).
    annotationChanged : Signal(str, object)
        The same notification as a Qt signal.
    resultsChanged : Signal()
        Emitted when a run completes or the threshold changes the calls.
    """

    annotationChanged = Signal(str, object)
    resultsChanged = Signal()

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.results: ClassificationResults | None = None
        self.annotation_changed: list[Callable[[str, str | None], Any]] = []
        self.last_outcome: _Outcome | None = None
        self._defaults = ClassifyInputs()
        #: torch device for the next run (``None``: cuda > mps > cpu)
        self.device: str | None = self._defaults.device
        self._worker = None
        self._plan: _RunPlan | None = None
        self._stop = threading.Event()
        self._result_layers: dict[str, Any] = {}
        self._updating_table = False
        self._uncertainty_stale = True
        self._overlay_owned = False
        self._call_items: list[QTableWidgetItem] = []
        self._annotation_items: list[QTableWidgetItem] = []
        self._uncertainty_items: list[QTableWidgetItem] = []

        self._build_ui()
        self._connect_viewer()
        self._refresh_layer_list()
        remembered = last_model_path()
        if remembered:
            self.model_edit.setText(remembered)
        self._set_running(False)
        self._show_results_controls(False)
        # the c / w / u keys and autosave of table edits work with only this widget docked
        from napari_deparray_ctc.napari.keys import install_annotation_keys

        self.annotations = install_annotation_keys(napari_viewer, classify_widgets=[self])

    # ------------------------------------------------------------------ UI construction

    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)

        note = QLabel(_FLUORESCENCE_NOTE)
        note.setWordWrap(True)
        note.setObjectName("bf_only_note")
        layout.addWidget(note)

        # model file
        model_box = QGroupBox("Model")
        model_layout = QVBoxLayout(model_box)
        row = QHBoxLayout()
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("model file (.pt) written by 'Train classifier'")
        self.model_edit.editingFinished.connect(self._on_model_edited)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self._browse_model)
        row.addWidget(self.model_edit, 1)
        row.addWidget(self.browse_button)
        model_layout.addLayout(row)
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)
        model_layout.addWidget(self.model_info)
        layout.addWidget(model_box)

        # which cells
        cells_box = QGroupBox("Cells")
        cells_layout = QVBoxLayout(cells_box)
        self.all_bf_radio = QRadioButton("All BF layers")
        self.choose_radio = QRadioButton("Choose layers:")
        self.all_bf_radio.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.all_bf_radio)
        group.addButton(self.choose_radio)
        self.all_bf_radio.toggled.connect(self._on_layer_mode_changed)
        cells_layout.addWidget(self.all_bf_radio)
        cells_layout.addWidget(self.choose_radio)
        self.layer_list = QListWidget()
        self.layer_list.setMaximumHeight(110)
        cells_layout.addWidget(self.layer_list)
        form = QFormLayout()
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 4096)
        self.batch_spin.setValue(self._defaults.batch_size)
        form.addRow("Batch size", self.batch_spin)
        cells_layout.addLayout(form)
        layout.addWidget(cells_box)

        # run
        row = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("%v / %m cells")
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)

        # results
        self.results_box = QGroupBox("Results")
        results_layout = QVBoxLayout(self.results_box)
        row = QHBoxLayout()
        row.addWidget(QLabel("Threshold"))
        self.threshold_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0.0, 1.0)
        self.threshold_slider.setDecimals(3)
        self.threshold_slider.setValue(0.5)
        self.threshold_slider.valueChanged.connect(self._on_threshold_changed)
        row.addWidget(self.threshold_slider, 1)
        self.reset_threshold_button = QPushButton("Model's")
        self.reset_threshold_button.setToolTip("Back to the threshold stored in the model file")
        self.reset_threshold_button.clicked.connect(self.reset_threshold)
        row.addWidget(self.reset_threshold_button)
        results_layout.addLayout(row)
        self.counts_label = QLabel("")
        results_layout.addWidget(self.counts_label)
        row = QHBoxLayout()
        self.review_checkbox = QCheckBox("Review queue (most doubtful first)")
        self.review_checkbox.setToolTip(
            "Order the table by |P(CTC) - threshold|, so the cells nearest the threshold "
            "come first. Keys in the table: C = CTC, W = WBC, Del = clear."
        )
        self.review_checkbox.toggled.connect(self.set_review_queue)
        self.overlay_checkbox = QCheckBox("Call on canvas")
        self.overlay_checkbox.setChecked(True)
        self.overlay_checkbox.toggled.connect(self._update_overlay)
        row.addWidget(self.review_checkbox)
        row.addWidget(self.overlay_checkbox)
        results_layout.addLayout(row)

        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels([*COLUMNS, "|p - threshold|", "#"])
        self.table.setColumnHidden(COL_UNCERTAINTY, True)
        self.table.setColumnHidden(COL_ORDER, True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.SelectedClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        self.table.setItemDelegateForColumn(COL_ANNOTATION, _AnnotationDelegate(self.table))
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(COL_ID, QHeaderView.ResizeMode.Stretch)
        self.table.setSortingEnabled(True)
        self.table.currentCellChanged.connect(self._on_current_cell_changed)
        self.table.cellClicked.connect(lambda r, _c: self._show_table_row(r))
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.installEventFilter(self)  # review keys: C = CTC, W = WBC, Del = clear
        results_layout.addWidget(self.table, 1)

        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(self._export_dialog)
        results_layout.addWidget(self.export_button)
        layout.addWidget(self.results_box, 1)

    def _connect_viewer(self) -> None:
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layers_changed)
        layers.events.removed.connect(self._on_layers_changed)
        layers.events.moved.connect(self._on_layers_changed)
        layers.selection.events.active.connect(self._update_overlay)
        self.viewer.dims.events.current_step.connect(self._update_overlay)

    # ------------------------------------------------------------------ model file

    @property
    def model_path(self) -> str:
        """The model file currently chosen (may be empty)."""
        return self.model_edit.text().strip()

    def set_model_path(self, path: str | os.PathLike) -> None:
        """Use this model file for the next run and remember it across sessions.

        The training widget's "use this model" button calls this with a fresh model.
        """
        text = os.fspath(path)
        self.model_edit.setText(text)
        self._on_model_edited()

    def _on_model_edited(self) -> None:
        path = self.model_path
        if path and Path(path).expanduser().is_file():
            remember_model_path(str(Path(path).expanduser()))
        if self.results is None or self.results.model_path != path:
            self.model_info.setText("")

    def _browse_model(self) -> None:
        start = str(Path(self.model_path).expanduser().parent) if self.model_path else ""
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model file", start, MODEL_FILE_FILTER)
        if path:
            self.set_model_path(path)

    # ------------------------------------------------------------------ layer choice

    def _on_layers_changed(self, event: Any = None) -> None:
        for layer in self.viewer.layers:
            with contextlib.suppress(AttributeError, TypeError):
                layer.events.name.connect(self._on_layer_renamed)
        self._refresh_layer_list()

    def _on_layer_renamed(self, event: Any = None) -> None:
        self._refresh_layer_list()

    def _on_layer_mode_changed(self, *_: Any) -> None:
        self.layer_list.setEnabled(self.choose_radio.isChecked())

    def _refresh_layer_list(self) -> None:
        """List image layers; BF and plain layers are tickable, fluorescence greyed out."""
        checked = set(self.chosen_layer_names())
        self.layer_list.clear()
        for layer in self.viewer.layers:
            if not _is_image_layer(layer):
                continue
            channel = layer_channel(layer)
            item = QListWidgetItem()
            item.setData(Qt.ItemDataRole.UserRole, layer.name)
            if channel in (None, "BF"):
                kind = "BF" if channel == "BF" else "no metadata, used as BF"
                item.setText(f"{layer.name}  ({kind}, {cell_count(layer)} cells)")
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(
                    Qt.CheckState.Checked if layer.name in checked else Qt.CheckState.Unchecked
                )
            else:
                item.setText(f"{layer.name}  ({channel}: ignored, only BF is classified)")
                item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.layer_list.addItem(item)
        self._on_layer_mode_changed()

    def chosen_layer_names(self) -> list[str]:
        """Names ticked in the layer list (used when 'Choose layers' is selected)."""
        names = []
        for row in range(self.layer_list.count()):
            item = self.layer_list.item(row)
            if item.checkState() == Qt.CheckState.Checked:
                names.append(item.data(Qt.ItemDataRole.UserRole))
        return names

    def choose_layers(self, names: Sequence[str] | None) -> None:
        """Classify these layers (``None``: every BF layer, the default)."""
        if names is None:
            self.all_bf_radio.setChecked(True)
            return
        wanted = set(names)
        for row in range(self.layer_list.count()):
            item = self.layer_list.item(row)
            if item.flags() & Qt.ItemFlag.ItemIsUserCheckable:
                name = item.data(Qt.ItemDataRole.UserRole)
                item.setCheckState(
                    Qt.CheckState.Checked if name in wanted else Qt.CheckState.Unchecked
                )
        self.choose_radio.setChecked(True)

    # ------------------------------------------------------------------ inputs and run

    def inputs(self) -> ClassifyInputs:
        """The inputs the next run would use, read from the widget."""
        layer_names = None if self.all_bf_radio.isChecked() else tuple(self.chosen_layer_names())
        threshold = None
        if (
            self.results is not None
            and self.results.model_path == self.model_path
            and not math.isclose(self.results.threshold, self.results.model_threshold)
        ):
            threshold = self.results.threshold  # keep the user's threshold for the same model
        return ClassifyInputs(
            model_path=self.model_path,
            layer_names=layer_names,
            batch_size=int(self.batch_spin.value()),
            threshold=threshold,
            device=self.device,
        )

    @property
    def is_running(self) -> bool:
        """Whether a classification is in progress."""
        return self._worker is not None

    def _target_layers(self, inputs: ClassifyInputs) -> list[Any]:
        """The layers to classify; raises ValueError with a reason for the user."""
        if inputs.layer_names is None:
            layers = [
                layer
                for layer in self.viewer.layers
                if _is_image_layer(layer) and layer_channel(layer) == "BF"
            ]
            if not layers:
                raise ValueError(
                    "No bright-field (BF) layer to classify: open a DEPArray export, or pick "
                    "plain image layers under 'Choose layers'."
                )
        else:
            by_name = {layer.name: layer for layer in self.viewer.layers}
            layers = [by_name[name] for name in inputs.layer_names]
        for layer in layers:
            channel = layer_channel(layer)
            if channel not in (None, "BF"):
                raise ValueError(
                    f"layer {layer.name!r} is {channel}: only bright-field (BF) layers are "
                    "classified"
                )
            ndim = np.ndim(layer.data)
            rgb = bool(getattr(layer, "rgb", False))
            if not (ndim in (2, 3) and not rgb) and not (rgb and ndim == 3):
                raise ValueError(
                    f"layer {layer.name!r}: expected a 2-D cell image or an (N, Y, X) stack "
                    f"of cells, got shape {tuple(np.shape(layer.data))}"
                )
        return layers

    def _make_plan(self, inputs: ClassifyInputs, layers: list[Any]) -> _RunPlan:
        plan = _RunPlan(inputs=inputs, layers=[], chunk_size=inputs.batch_size)
        plan.num_threads = inference_threads()
        for number, layer in enumerate(layers):
            meta = ensure_deparray_metadata(layer, "BF")
            n = cell_count(layer)
            ids = [str(c) for c in meta.get("cell_ids") or []]
            if len(ids) != n:
                raise ValueError(
                    f"layer {layer.name!r}: its metadata lists {len(ids)} cell ids but it "
                    f"holds {n} cells"
                )
            paths = list(meta.get("paths") or [None] * n)
            labels = [_normalise_label(v) for v in (meta.get("labels") or [None] * n)]
            source = SimpleNamespace(
                name=layer.name,
                data=layer.data,
                metadata={},
                rgb=bool(getattr(layer, "rgb", False)),
            )
            plan.layers.append(_LayerPlan(layer, layer.name, source, ids, paths, labels))
            plan.cells.extend((number, i) for i in range(n))
        return plan

    def run(self):
        """Classify the chosen cells in a background worker.

        Returns
        -------
        napari.qt.threading.GeneratorWorker or None
            The started worker, or ``None`` when the inputs are not valid (the reason is
            shown as a notification) or a run is already in progress.
        """
        if self.is_running:
            return None
        inputs = self.inputs()
        error = inputs.validation_error(available_layers=[ly.name for ly in self.viewer.layers])
        if error is None:
            try:
                plan = self._make_plan(inputs, self._target_layers(inputs))
            except ValueError as exc:
                error = str(exc)
        if error is not None:
            self._fail(error)
            return None
        if plan.n_cells == 0:
            self._fail("The chosen layers hold no cell.")
            return None
        remember_model_path(str(Path(inputs.model_path).expanduser()))

        self._plan = plan
        self._stop.clear()
        holder: list[Any] = []

        def should_stop() -> bool:
            return self._stop.is_set() or bool(holder and holder[0].abort_requested)

        worker = thread_worker(
            _classify_job,
            progress={"total": plan.n_chunks, "desc": "Classifying cells"},
            start_thread=False,
        )(plan, should_stop)
        holder.append(worker)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.progress_bar.setRange(0, plan.n_cells)
        self.progress_bar.setValue(0)
        self.status_label.setText(
            f"Classifying {plan.n_cells} cells from {len(plan.layers)} layer(s)…"
        )
        self._set_running(True)
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop the running classification after the current batch; nothing is stored."""
        if self._worker is None:
            return
        self._stop.set()
        self._worker.quit()
        self.cancel_button.setEnabled(False)
        self.status_label.setText("Cancelling…")

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.browse_button.setEnabled(not running)
        self.model_edit.setEnabled(not running)
        self.progress_bar.setVisible(running)

    def _fail(self, message: str) -> None:
        self.status_label.setText(message)
        show_error(message)

    # ------------------------------------------------------------------ worker callbacks

    def _on_progress(self, done: int) -> None:
        self.progress_bar.setValue(int(done))

    def _on_returned(self, outcome: _Outcome) -> None:
        self.last_outcome = outcome
        plan = self._plan
        if outcome.error is not None:
            self._fail(outcome.error)
        elif outcome.cancelled or plan is None:
            self._report_cancelled(outcome.done)
        else:
            self._accept(plan, outcome)

    def _on_aborted(self) -> None:
        done = self.progress_bar.value()
        self.last_outcome = _Outcome(done=done, cancelled=True)
        self._report_cancelled(done)

    def _on_finished(self) -> None:
        self._worker = None
        self._plan = None
        self._set_running(False)

    def _report_cancelled(self, done: int) -> None:
        total = self._plan.n_cells if self._plan is not None else done
        self.status_label.setText(
            f"Cancelled after {done} of {total} cells: nothing was stored"
            + ("; the table still shows the previous run." if self.results is not None else ".")
        )

    def _accept(self, plan: _RunPlan, outcome: _Outcome) -> None:
        p = outcome.p_ctc if outcome.p_ctc is not None else np.empty(0)
        if len(p) != plan.n_cells:
            self._fail(f"the classifier returned {len(p)} probabilities for {plan.n_cells} cells")
            return
        rows = []
        for (number, index), p_ctc in zip(plan.cells, p, strict=True):
            layer_plan = plan.layers[number]
            rows.append(
                CellResult(
                    cell_id=layer_plan.cell_ids[index],
                    layer=layer_plan.name,
                    index=index,
                    p_ctc=float(p_ctc),
                    path=layer_plan.paths[index],
                    annotation=layer_plan.annotations[index],
                )
            )
        model_threshold = float(outcome.model_threshold)
        threshold = plan.inputs.threshold
        self.results = ClassificationResults(
            rows,
            threshold=model_threshold if threshold is None else threshold,
            model_threshold=model_threshold,
            model_path=plan.inputs.model_path,
        )
        self._result_layers = {lp.name: lp.layer for lp in plan.layers}
        self._store_predictions()
        self._populate_table()
        self._updating_table = True
        try:
            self.threshold_slider.setValue(self.results.threshold)
        finally:
            self._updating_table = False
        self._show_results_controls(True)
        self._update_counts()
        self._update_overlay()
        self.model_info.setText(outcome.model_description)
        self.status_label.setText(
            f"Classified {len(rows)} cells in {outcome.elapsed_s:.1f} s "
            f"({len(plan.layers)} layer(s))."
        )
        self.resultsChanged.emit()

    # ------------------------------------------------------------------ results: storage

    def _store_predictions(self) -> None:
        """Write ``metadata["deparray"]["predictions"]`` of every classified layer."""
        results = self.results
        if results is None:
            return
        for name, layer in self._result_layers.items():
            meta = deparray_meta(layer)
            if meta is None:
                continue
            predictions = results.predictions_for_layer(name, cell_count(layer))
            if predictions is None:
                continue
            meta["predictions"] = predictions
            meta["predictions_threshold"] = results.threshold
            meta["predictions_model"] = results.model_path

    def _relabel_stored_predictions(self) -> None:
        results = self.results
        if results is None:
            return
        for i, row in enumerate(results.rows):
            layer = self._result_layers.get(row.layer)
            meta = deparray_meta(layer) if layer is not None else None
            predictions = (meta or {}).get("predictions")
            if predictions and row.index < len(predictions):
                predictions[row.index]["label"] = results.call(i)
        for layer in self._result_layers.values():
            meta = deparray_meta(layer)
            if meta is not None and "predictions" in meta:
                meta["predictions_threshold"] = results.threshold

    # ------------------------------------------------------------------ results: table

    def _show_results_controls(self, visible: bool) -> None:
        self.results_box.setEnabled(visible)

    def _populate_table(self) -> None:
        results = self.results
        assert results is not None
        self._updating_table = True
        table = self.table
        try:
            table.setSortingEnabled(False)
            table.clearContents()
            table.setRowCount(len(results))
            self._call_items = []
            self._annotation_items = []
            self._uncertainty_items = []
            editable = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
            for i, row in enumerate(results.rows):
                id_item = QTableWidgetItem(row.cell_id)
                id_item.setData(_ROW_ROLE, i)
                id_item.setToolTip(
                    f"{row.layer} [{row.index}]" + (f"\n{row.path}" if row.path else "")
                )
                id_item.setFlags(editable)
                p_item = _SortableItem(f"{row.p_ctc:.3f}")
                p_item.setData(_SORT_ROLE, float(row.p_ctc))
                p_item.setFlags(editable)
                p_item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                call_item = QTableWidgetItem()
                call_item.setFlags(editable)
                annotation_item = QTableWidgetItem(row.annotation or "")
                annotation_item.setFlags(editable | Qt.ItemFlag.ItemIsEditable)
                annotation_item.setToolTip("Double-click, or press C / W / Del")
                uncertainty_item = _SortableItem()
                uncertainty_item.setFlags(editable)
                order_item = _SortableItem(str(i))
                order_item.setData(_SORT_ROLE, i)
                for column, item in (
                    (COL_ID, id_item),
                    (COL_P, p_item),
                    (COL_CALL, call_item),
                    (COL_ANNOTATION, annotation_item),
                    (COL_UNCERTAINTY, uncertainty_item),
                    (COL_ORDER, order_item),
                ):
                    table.setItem(i, column, item)
                self._call_items.append(call_item)
                self._annotation_items.append(annotation_item)
                self._uncertainty_items.append(uncertainty_item)
            self._set_calls(range(len(results)))
            self._set_uncertainties()
            table.setSortingEnabled(True)
            if self.review_checkbox.isChecked():
                table.sortItems(COL_UNCERTAINTY, Qt.SortOrder.AscendingOrder)
            else:
                table.sortItems(COL_ORDER, Qt.SortOrder.AscendingOrder)
        finally:
            self._updating_table = False

    def _set_calls(self, rows: Sequence[int] | range) -> None:
        results = self.results
        assert results is not None
        for i in rows:
            call = results.call(i)
            item = self._call_items[i]
            item.setText(call)
            item.setForeground(_qcolor(_CALL_COLOURS[call]))

    def _set_uncertainties(self) -> None:
        results = self.results
        assert results is not None
        for i, item in enumerate(self._uncertainty_items):
            u = results.uncertainty(i)
            item.setData(_SORT_ROLE, u)
            item.setText(f"{u:.4f}")
        self._uncertainty_stale = False

    def table_order(self) -> list[int]:
        """Result row indices in the table's current (sorted) order."""
        order = []
        for r in range(self.table.rowCount()):
            item = self.table.item(r, COL_ID)
            if item is not None:
                order.append(int(item.data(_ROW_ROLE)))
        return order

    def table_rows(self) -> list[dict[str, str]]:
        """The visible table content, top to bottom (column name -> text)."""
        out = []
        for r in range(self.table.rowCount()):
            out.append(
                {
                    name: (self.table.item(r, c).text() if self.table.item(r, c) else "")
                    for c, name in enumerate(COLUMNS)
                }
            )
        return out

    def _table_row_of(self, result_row: int) -> int:
        return self.table.row(self._call_items[result_row])

    def set_review_queue(self, enabled: bool) -> None:
        """Order the table by uncertainty (nearest the threshold first), or back to run order."""
        if self.review_checkbox.isChecked() != bool(enabled):
            self.review_checkbox.setChecked(bool(enabled))  # re-enters through the signal
            return
        if self.results is None:
            return
        self._updating_table = True
        try:
            if enabled:
                if self._uncertainty_stale:
                    self.table.setSortingEnabled(False)
                    self._set_uncertainties()
                    self.table.setSortingEnabled(True)
                self.table.sortItems(COL_UNCERTAINTY, Qt.SortOrder.AscendingOrder)
                self.table.selectRow(0)
            else:
                self.table.sortItems(COL_ORDER, Qt.SortOrder.AscendingOrder)
        finally:
            self._updating_table = False
        if enabled and self.table.rowCount():
            self._show_table_row(0)

    # ------------------------------------------------------------------ threshold

    def set_threshold(self, threshold: float) -> None:
        """Move the threshold slider (relabels at once, no rerun)."""
        self.threshold_slider.setValue(float(threshold))

    def reset_threshold(self) -> None:
        """Back to the threshold stored in the model file."""
        if self.results is not None:
            self.set_threshold(self.results.model_threshold)

    def _on_threshold_changed(self, value: float) -> None:
        results = self.results
        if results is None or self._updating_table:
            return
        value = min(1.0, max(0.0, float(value)))
        changed = results.set_threshold(value)
        review = self.review_checkbox.isChecked()
        self.table.setSortingEnabled(False)
        self._updating_table = True
        try:
            self._set_calls(changed)
            if review:
                self._set_uncertainties()
            else:
                self._uncertainty_stale = True
        finally:
            self._updating_table = False
            self.table.setSortingEnabled(True)
        self._relabel_stored_predictions()
        self._update_counts()
        self._update_overlay()
        self.resultsChanged.emit()

    def _update_counts(self) -> None:
        results = self.results
        if results is None:
            self.counts_label.setText("")
            return
        counts = results.counts()
        annotated = results.annotation_counts()
        self.counts_label.setText(
            f"CTC {counts['CTC']} · WBC {counts['WBC']} at threshold {results.threshold:.3f} "
            f"(model: {results.model_threshold:.3f}) · annotated "
            f"{annotated['CTC'] + annotated['WBC']} of {len(results)}"
        )

    # ------------------------------------------------------------------ annotations

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if self._updating_table or item.column() != COL_ANNOTATION or self.results is None:
            return
        result_row = int(self.table.item(item.row(), COL_ID).data(_ROW_ROLE))
        text = item.text().strip().upper()
        label = text if text in ("CTC", "WBC") else None
        self.set_annotation(self.results.rows[result_row].cell_id, label)

    def eventFilter(self, watched: Any, event: Any) -> bool:
        """Review keys in the table: C = CTC, W = WBC, Delete/Backspace = blank."""
        if (
            watched is self.table
            and event.type() == QEvent.Type.KeyPress
            and int(event.key()) in _REVIEW_KEYS
            and not (event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier)
            and self.table.state() != QAbstractItemView.State.EditingState
        ):
            self._annotate_current(_REVIEW_KEYS[int(event.key())])
            return True
        return super().eventFilter(watched, event)

    def _annotate_current(self, label: str | None) -> None:
        row = self.table.currentRow()
        if self.results is None or row < 0:
            return
        result_row = int(self.table.item(row, COL_ID).data(_ROW_ROLE))
        self.set_annotation(self.results.rows[result_row].cell_id, label)

    def set_annotation(self, cell_id: str, label: str | None) -> None:
        """Annotate a cell as ``"CTC"``, ``"WBC"`` or ``None`` (blank).

        Writes the label to every layer holding the cell (BF and its fluorescence
        partners) via :func:`~napari_deparray_ctc.napari.cells.set_cell_label`, updates the
        table, then calls :attr:`annotation_changed` and emits :attr:`annotationChanged`.
        """
        label = _normalise_label(label)
        set_cell_label(list(self.viewer.layers), cell_id, label)
        if self.results is not None:
            rows = self.results.set_annotation(cell_id, label)
            self._updating_table = True
            self.table.setSortingEnabled(False)
            try:
                for i in rows:
                    self._annotation_items[i].setText(label or "")
            finally:
                self.table.setSortingEnabled(True)
                self._updating_table = False
        self._update_counts()
        self._update_overlay()
        for callback in list(self.annotation_changed):
            try:
                callback(cell_id, label)
            except Exception as exc:
                show_error(
                    f"annotation hook {getattr(callback, '__name__', callback)!r} failed: {exc}"
                )
        self.annotationChanged.emit(cell_id, label)

    def refresh_annotations(self) -> None:
        """Re-read the annotations from the layers (after another widget changed them)."""
        results = self.results
        if results is None:
            return
        self._updating_table = True
        self.table.setSortingEnabled(False)
        try:
            for i, row in enumerate(results.rows):
                layer = self._result_layers.get(row.layer)
                meta = deparray_meta(layer) if layer is not None else None
                labels = (meta or {}).get("labels") or []
                if row.index < len(labels):
                    label = _normalise_label(labels[row.index])
                    row.annotation = label
                    self._annotation_items[i].setText(label or "")
        finally:
            self.table.setSortingEnabled(True)
            self._updating_table = False
        self._update_counts()
        self._update_overlay()

    # ------------------------------------------------------------------ navigation / overlay

    def _on_current_cell_changed(self, row: int, *_: int) -> None:
        if not self._updating_table and row >= 0:
            self._show_table_row(row)

    def _show_table_row(self, table_row: int) -> None:
        item = self.table.item(table_row, COL_ID)
        if item is not None:
            self.show_cell(int(item.data(_ROW_ROLE)))

    def _layer_named(self, name: str) -> Any | None:
        layer = self._result_layers.get(name)
        if layer is not None and layer in self.viewer.layers:
            return layer
        return None

    def show_cell(self, result_row: int) -> None:
        """Bring a classified cell on screen: select its layer and move the slider to it."""
        if self.results is None:
            return
        row = self.results.rows[result_row]
        layer = self._layer_named(row.layer)
        if layer is None:
            self.status_label.setText(f"layer {row.layer!r} is no longer in the viewer")
            return
        layer.visible = True
        self.viewer.layers.selection.active = layer
        if _is_stack_layer(layer):
            axis = self.viewer.dims.ndim - layer.ndim
            world = layer.data_to_world([row.index] + [0] * (layer.ndim - 1))
            self.viewer.dims.set_point(axis, float(world[0]))
        self._update_overlay()

    def _cell_index_on_screen(self, layer: Any) -> int:
        if not _is_stack_layer(layer):
            return 0
        data_point = layer.world_to_data(self.viewer.dims.point)
        return int(np.clip(round(float(data_point[0])), 0, cell_count(layer) - 1))

    def current_result_row(self) -> int | None:
        """Result row of the cell on screen in the active layer (or its BF partner)."""
        results = self.results
        layer = self.viewer.layers.selection.active
        if results is None or layer is None or not _is_image_layer(layer):
            return None
        index = self._cell_index_on_screen(layer)
        row = results.index_at(layer.name, index) if layer.name in self._result_layers else None
        if row is None:  # e.g. the DAPI layer of a classified BF layer: match by cell id
            ids = (deparray_meta(layer) or {}).get("cell_ids") or []
            if index < len(ids):
                rows = results.indices_of(str(ids[index]))
                row = rows[0] if rows else None
        return row

    def overlay_text(self) -> str:
        """What the canvas overlay shows for the current cell (``"CTC 0.93"``), or ``""``."""
        row = self.current_result_row()
        if row is None or self.results is None:
            return ""
        results = self.results
        text = f"{results.call(row)} {results.rows[row].p_ctc:.2f}"
        annotation = results.rows[row].annotation
        if annotation:
            text += f" (annotated {annotation})"
        return text

    def _update_overlay(self, *_: Any) -> None:
        if self.results is None and not self._overlay_owned:
            return
        overlay = _text_overlay(self.viewer)
        text = self.overlay_text() if self.overlay_checkbox.isChecked() else ""
        if text:
            if not self._overlay_owned:  # first use: readable, and clear of notifications
                overlay.font_size = max(float(overlay.font_size), 14.0)
                overlay.position = "top_left"
            overlay.text = text
            overlay.visible = True
            self._overlay_owned = True
        elif self._overlay_owned:
            overlay.text = ""
            overlay.visible = False

    # ------------------------------------------------------------------ export

    def export_csv(self, path: str | os.PathLike) -> bool:
        """Write the table (its current order) to a CSV file, atomically.

        Columns: ``cell_id,path,p_ctc,label,threshold`` (as ``deparray-ctc classify``)
        plus ``annotation``.

        Returns
        -------
        bool
            ``True`` when written; otherwise the reason is shown as a notification and any
            existing file is left as it was.
        """
        if self.results is None:
            self._fail("Nothing to export yet: run the classifier first.")
            return False
        try:
            self.results.to_csv(path, order=self.table_order())
        except OSError as exc:
            self._fail(f"{os.fspath(path)}: could not write the CSV ({exc.strerror or exc})")
            return False
        self.status_label.setText(f"Exported {len(self.results)} cells to {os.fspath(path)}")
        show_info(f"Exported {len(self.results)} cells to {os.fspath(path)}")
        return True

    def _export_dialog(self) -> None:
        if self.results is None:
            return
        start = "ctc_calls.csv"
        if self.model_path:
            start = str(Path(self.model_path).expanduser().with_name("ctc_calls.csv"))
        path, _ = QFileDialog.getSaveFileName(self, "Export calls as CSV", start, "CSV (*.csv)")
        if path:
            if not path.lower().endswith(".csv"):
                path += ".csv"
            self.export_csv(path)


def _qcolor(name: str):
    from qtpy.QtGui import QColor

    return QColor(name)
