"""The "Train classifier" dock widget: annotate, train on BF (+ DAPI) layers, use the model.

Workflow
--------
1. Annotate cells with the keys ``c`` (CTC), ``w`` (WBC), ``u`` (clear) on the selected
   layer's current cell (installed by this widget, see :mod:`.annotation`); every change is
   autosaved to the export's sidecar file. Labels from class folders / ``labels.csv`` are
   there from the start.
2. Choose the BF layer; the DAPI layer is paired automatically through the cells' ids
   (``metadata["deparray"]["cell_ids"]``), with a manual choice when several match. DAPI is
   optional (DAPI strategy ``none``).
3. Press **Train**: the class counts are checked first (a clear refusal when a class has too
   few annotated cells, or BF and DAPI cannot be paired). Training runs through the core
   :func:`~napari_deparray_ctc.core.train.train` off the UI thread, in a napari
   ``thread_worker`` generator; the loss / validation-F1 plot, the progress bar, the ETA and
   napari's activity dock update live.
4. **Stop** cancels within one batch; the best model so far is kept. The model is written
   atomically to ``<name>.in-progress.pt`` while training runs, and moved onto the chosen
   file only at the end, and only if it is not worse than the model already there (its
   stored validation F1), unless "Overwrite even if worse" is ticked. Otherwise it is saved
   next to it with a time-stamp suffix, and the widget says so.
5. On finish: precision, recall, F1 and the confusion matrix, and **Use this model**, which
   hands the file to the "Classify cells" widget (docking it if needed).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_deparray_ctc.napari.cells import (
    CellPairing,
    cell_image,
    deparray_meta,
    find_partner_layers,
    layer_channel,
    pair_channel_layers,
)
from napari_deparray_ctc.napari.widgets.train.loss_plot import LossPlot
from napari_deparray_ctc.napari.widgets.train.inputs import (
    AUGMENT_FAMILIES,
    MODEL_FILE_FILTER,
    ModelDestination,
    TrainInputs,
    decide_model_destination,
    in_progress_path,
)
from napari_deparray_ctc.napari.keys import (
    annotations_path_for_layer,
    find_classify_widgets,
    install_annotation_keys,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari_deparray_ctc.core.data import TrainingSet
    from napari_deparray_ctc.core.train import TrainProgress, TrainResult

from napari_deparray_ctc.core.gl_guard import avoid_gl_llvm_clash

__all__ = [
    "TrainOutcome",
    "TrainWidget",
    "TrainingJobError",
    "build_training_set",
    "training_job",
    "warm_up_training_imports",
]

#: label of the "no DAPI layer" choice
NO_DAPI = "(no DAPI)"
#: label shown when several DAPI layers match and the user has to choose
CHOOSE_DAPI = "(choose the DAPI layer)"
#: at most this many batch progress events per second reach the UI thread
_BATCH_EVENTS_PER_S = 4.0
#: default model file name, beside the export
DEFAULT_MODEL_NAME = "deparray_ctc_model.pt"


#: the background import of torch & co started by the first TrainWidget (one per process)
_WARMUP: threading.Thread | None = None


def _import_training_modules() -> None:
    try:
        import sklearn.metrics  # noqa: F401
        import torch  # noqa: F401
        import torchvision.models
        import torchvision.transforms.v2  # noqa: F401

        import napari_deparray_ctc.core.augment
        import napari_deparray_ctc.core.classify
        import napari_deparray_ctc.core.train  # noqa: F401
    except Exception:  # a broken install shows up (with its reason) when training starts
        pass


def warm_up_training_imports() -> threading.Thread:
    """Import torch, torchvision, scikit-learn and the core in a background thread (once).

    Loading those libraries takes seconds, and while a shared library is being loaded the
    Python interpreter lock is held, so the UI stalls whichever thread imports them. Doing
    it as soon as the widget opens (while the user is still choosing settings) keeps that
    cost out of the training run itself. Calls :func:`avoid_gl_llvm_clash` first.

    Returns
    -------
    threading.Thread
        The (possibly finished) import thread; ``join()`` it to wait.
    """
    global _WARMUP
    if _WARMUP is None:
        avoid_gl_llvm_clash()
        _WARMUP = threading.Thread(
            target=_import_training_modules, name="deparray-ctc-import", daemon=True
        )
        _WARMUP.start()
    return _WARMUP


# ------------------------------------------------------------------------------------------
# data from layers (no Qt)
# ------------------------------------------------------------------------------------------


@dataclass
class LayerTrainingData:
    """A training set built from layers, with what the widget shows before training.

    Attributes
    ----------
    data
        The labelled cells (``None`` when nothing is labelled).
    n_ctc, n_wbc, n_unlabelled
        Class counts of the BF layer's cells.
    n_with_dapi
        Labelled cells that have a DAPI image.
    """

    data: TrainingSet | None
    n_ctc: int
    n_wbc: int
    n_unlabelled: int
    n_with_dapi: int


def _usable_dapi(image: np.ndarray) -> bool:
    """A DAPI plane carries information (a cell without DAPI is stacked as a flat plane)."""
    return image.size > 0 and bool(np.ptp(image) > 0)


def build_training_set(pairing: CellPairing) -> LayerTrainingData:
    """The labelled cells of a BF layer (and their DAPI partners) as a ``TrainingSet``.

    A cell's label is its BF annotation, or its DAPI partner's when the BF one is empty.
    Unlabelled cells are counted but not copied.

    Parameters
    ----------
    pairing
        From :func:`~napari_deparray_ctc.napari.cells.pair_channel_layers`.

    Returns
    -------
    LayerTrainingData
    """
    from napari_deparray_ctc.core.data import TrainingSet

    bf_meta = deparray_meta(pairing.bf_layer) or {}
    bf_labels = list(bf_meta.get("labels") or [None] * len(pairing.cell_ids))
    groups = list(bf_meta.get("groups") or [None] * len(pairing.cell_ids))
    paths = list(bf_meta.get("paths") or [None] * len(pairing.cell_ids))
    dapi_labels: list[Any] = []
    if pairing.dapi_layer is not None:
        dapi_labels = list((deparray_meta(pairing.dapi_layer) or {}).get("labels") or [])

    bf, labels, dapi, ids, cell_groups, cell_paths = [], [], [], [], [], []
    n_unlabelled = 0
    for bf_index, dapi_index, cell_id in zip(
        pairing.bf_indices, pairing.dapi_indices, pairing.cell_ids, strict=True
    ):
        label = bf_labels[bf_index] if bf_index < len(bf_labels) else None
        if label is None and dapi_index is not None and dapi_index < len(dapi_labels):
            label = dapi_labels[dapi_index]
        if label not in ("CTC", "WBC"):
            n_unlabelled += 1
            continue
        bf.append(cell_image(pairing.bf_layer, bf_index))
        dapi_image = None
        if pairing.dapi_layer is not None and dapi_index is not None:
            candidate = cell_image(pairing.dapi_layer, dapi_index)
            dapi_image = candidate if _usable_dapi(candidate) else None
        dapi.append(dapi_image)
        labels.append(label)
        ids.append(str(cell_id))
        cell_groups.append(groups[bf_index] if bf_index < len(groups) else None)
        cell_paths.append(paths[bf_index] if bf_index < len(paths) else None)
    n_ctc = labels.count("CTC")
    n_wbc = labels.count("WBC")
    n_with_dapi = sum(d is not None for d in dapi)
    if not bf:
        return LayerTrainingData(None, 0, 0, n_unlabelled, 0)
    has_groups = any(g is not None for g in cell_groups)
    data = TrainingSet(
        bf=bf,
        labels=labels,
        dapi=dapi if n_with_dapi else None,
        cell_ids=ids,
        groups=cell_groups if has_groups else None,
        paths=[p or "" for p in cell_paths] if any(cell_paths) else None,
    )
    return LayerTrainingData(data, n_ctc, n_wbc, n_unlabelled, n_with_dapi)


# ------------------------------------------------------------------------------------------
# the job that runs off the UI thread (no Qt)
# ------------------------------------------------------------------------------------------


@dataclass
class TrainOutcome:
    """What a training job returns to the widget.

    Attributes
    ----------
    result
        The core ``TrainResult`` (its ``model`` is the best one).
    model_path
        Where the best model was finally written (``None`` if nothing was written).
    destination
        The decision about the chosen file (``None`` if nothing was written).
    message
        A sentence for the user.
    """

    result: TrainResult
    model_path: Path | None
    destination: ModelDestination | None
    message: str


_END = object()


class TrainingJobError(Exception):
    """An error raised by the core ``train``, carried out of the worker thread.

    napari's ``GeneratorWorker`` treats a ``RuntimeError`` escaping the generator as "the
    worker was deleted" and then emits neither ``errored`` nor ``finished``; torch reports
    most failures (e.g. out of memory) as ``RuntimeError``, so every error is wrapped.

    Attributes
    ----------
    original
        The exception ``train`` raised.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def _recover_leftover(path: Path) -> Path | None:
    """Move a model left by an interrupted run aside so a new run cannot overwrite it."""
    if not path.exists():
        return None
    stamp = _dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(path.name.replace(".in-progress", f".recovered-{stamp}"))
    n = 1
    while aside.exists():
        n += 1
        aside = aside.with_name(path.name.replace(".in-progress", f".recovered-{stamp}-{n}"))
    os.replace(path, aside)
    return aside


def training_job(
    inputs: TrainInputs,
    data: TrainingSet,
    stop: threading.Event,
    train: Callable[..., TrainResult] | None = None,
    min_interval_s: float = 1.0 / _BATCH_EVENTS_PER_S,
) -> Iterator[TrainProgress]:
    """Generator run by the widget's ``thread_worker``: train, yielding progress.

    The core ``train`` runs in a plain thread and reports through a queue; this generator
    forwards every epoch event and at most ``1 / min_interval_s`` batch events per second
    (so the UI thread is not flooded), then moves the best model onto its destination
    (see :func:`~._train_inputs.decide_model_destination`) and returns a
    :class:`TrainOutcome`.

    Parameters
    ----------
    inputs
        The widget's inputs.
    data
        The cells.
    stop
        Set by the Stop button; ``train``'s ``should_stop`` reads it before every batch.
    train
        The core ``train`` (injectable for tests).
    min_interval_s
        Least time between two forwarded batch events.

    Yields
    ------
    TrainProgress
    """
    if train is None:
        from napari_deparray_ctc.core.train import train

    out = Path(inputs.out).expanduser()
    working = in_progress_path(out)
    recovered = _recover_leftover(working)
    config = inputs.to_config(out=working)
    events: queue.SimpleQueue = queue.SimpleQueue()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                box["result"] = train(
                    config, data=data, progress=events.put, should_stop=stop.is_set
                )
        except BaseException as exc:  # handed to the worker thread, raised there
            box["error"] = exc
        finally:
            events.put(_END)

    thread = threading.Thread(target=run, name="deparray-ctc-train", daemon=True)
    thread.start()
    last_sent = 0.0
    pending = None
    while True:
        try:
            item = events.get(timeout=min_interval_s)
        except queue.Empty:
            if pending is not None:
                last_sent = time.monotonic()
                yield pending
                pending = None
            continue
        if item is _END:
            break
        if getattr(item, "phase", None) == "batch":
            if time.monotonic() - last_sent >= min_interval_s:
                last_sent = time.monotonic()
                pending = None
                yield item
            else:
                pending = item
        else:
            pending = None
            yield item
    thread.join()
    if "error" in box:
        raise TrainingJobError(box["error"]) from box["error"]
    result: TrainResult = box["result"]
    written = Path(result.out_path) if result.out_path else None
    if written is None or not written.exists():
        return TrainOutcome(result, None, None, f"No model was written; {out} was left as it was.")
    f1 = result.metrics.get("f1")
    val_loss = result.metrics.get("val_loss")
    destination = decide_model_destination(
        out,
        float(f1) if f1 is not None else None,
        inputs.overwrite_if_worse,
        float(val_loss) if val_loss is not None else None,
    )
    os.replace(written, destination.path)
    message = destination.message
    if result.cancelled:
        message = "Stopped; the best model so far was kept. " + message
    if recovered is not None:
        message += f" A model left by an interrupted run was kept as {recovered.name}."
    return TrainOutcome(result, destination.path, destination, message)


# ------------------------------------------------------------------------------------------
# the widget
# ------------------------------------------------------------------------------------------


def _format_seconds(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "--:--"
    seconds = round(float(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def metrics_html(metrics: dict) -> str:
    """Precision, recall, F1, threshold and the confusion matrix as a small HTML table."""

    def fmt(key: str) -> str:
        value = metrics.get(key)
        return f"{value:.3f}" if isinstance(value, int | float) else "n/a"

    text = (
        f"<b>Validation</b>: precision {fmt('precision')}, recall {fmt('recall')}, "
        f"F1 {fmt('f1')} (CTC positive), threshold {fmt('threshold')}"
    )
    matrix = metrics.get("confusion_matrix")
    if isinstance(matrix, list | tuple) and len(matrix) == 2:
        (tn, fp), (fn, tp) = matrix
        text += (
            "<table border='1' cellspacing='0' cellpadding='3'>"
            "<tr><th></th><th>called WBC</th><th>called CTC</th></tr>"
            f"<tr><th>true WBC</th><td align='right'>{tn}</td><td align='right'>{fp}</td></tr>"
            f"<tr><th>true CTC</th><td align='right'>{fn}</td><td align='right'>{tp}</td></tr>"
            "</table>"
        )
    return text


class TrainWidget(QWidget):
    """Dock widget that trains a CTC / WBC classifier on annotated BF (+ DAPI) layers.

    Parameters
    ----------
    napari_viewer
        The viewer holding the cell layers.
    parent
        Optional Qt parent.

    Attributes
    ----------
    annotations
        The viewer's :class:`~.annotation.AnnotationController` (keys ``c``/``w``/``u``).
    plot
        The live loss / F1 plot.
    last_outcome
        The last finished run (``None`` before).
    last_message
        The last message shown in the widget's status line.
    num_threads
        torch threads used for training (``None``: torch's default, all cores). Defaults
        to all cores but one, which keeps the UI responsive (``benchmarks/bench_train_ui.py``).
    warmup
        The background thread importing torch & co (see :func:`warm_up_training_imports`).
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._defaults = TrainInputs()
        #: torch threads while training (default: all cores but one, so napari keeps a core)
        self.num_threads: int | None = self._defaults.num_threads
        self._worker = None
        self._stop = threading.Event()
        self._progress_bar = None
        self._dapi_ambiguous = False
        self._updating = False
        self.last_outcome: TrainOutcome | None = None
        self.last_message = ""
        self.annotations = install_annotation_keys(napari_viewer)
        self.annotations.listeners.append(self._on_annotation_changed)

        self._build_ui()
        self._connect_viewer()
        self._refresh_layers()
        self._set_running(False)
        self.warmup = warm_up_training_imports()
        # ClassifyWidgets docked later: hook their annotation column into the autosave
        self._scan_timer = QTimer(self)
        self._scan_timer.setInterval(1000)
        self._scan_timer.timeout.connect(self._connect_classify_widgets)
        self._scan_timer.start()

    # ------------------------------------------------------------------ UI

    def _build_ui(self) -> None:
        d = self._defaults
        layout = QVBoxLayout(self)

        # -- cells
        cells = QGroupBox("Cells")
        form = QFormLayout(cells)
        self.bf_combo = QComboBox()
        self.bf_combo.setToolTip("Layer whose annotated cells are used (its channel is BF)")
        self.dapi_combo = QComboBox()
        self.dapi_combo.setToolTip(
            "DAPI layer paired with the BF layer by cell id (used for training only)"
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
            "Annotate the current cell of the selected layer: <b>c</b> = CTC, "
            "<b>w</b> = WBC, <b>u</b> = clear. Saved automatically after every change."
        )
        keys.setWordWrap(True)
        form.addRow(keys)
        self.advance_check = QCheckBox("Go to the next cell after c / w / u")
        form.addRow(self.advance_check)
        self.annotations_edit = QLineEdit()
        self.annotations_edit.setPlaceholderText("beside the export (automatic)")
        self.annotations_edit.setToolTip(
            "Annotations are autosaved here; empty = the export's own sidecar file "
            "(deparray_annotations.csv in the folder, or <file>.annotations.csv)"
        )
        browse_annotations = QPushButton("…")
        browse_annotations.setMaximumWidth(30)
        browse_annotations.clicked.connect(self._browse_annotations)
        row = QHBoxLayout()
        row.addWidget(self.annotations_edit)
        row.addWidget(browse_annotations)
        form.addRow("Annotations file", row)
        layout.addWidget(cells)

        # -- settings
        settings = QGroupBox("Training")
        form = QFormLayout(settings)
        from napari_deparray_ctc.core.data import DAPI_STRATEGIES
        from napari_deparray_ctc.core.model import ARCHITECTURES

        self.arch_combo = QComboBox()
        self.arch_combo.addItems(list(ARCHITECTURES))
        self.arch_combo.setCurrentText(d.arch)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1000)
        self.epochs_spin.setValue(d.epochs)
        self.size_spin = QSpinBox()
        self.size_spin.setRange(16, 1024)
        self.size_spin.setSingleStep(16)
        self.size_spin.setValue(d.image_size)
        self.size_spin.setSuffix(" px")
        self.augment_checks: dict[str, QCheckBox] = {}
        augment_row = QHBoxLayout()
        for family in AUGMENT_FAMILIES:
            check = QCheckBox(family)
            check.setChecked(family in d.augment)
            self.augment_checks[family] = check
            augment_row.addWidget(check)
        self.dapi_strategy_combo = QComboBox()
        self.dapi_strategy_combo.addItems(list(DAPI_STRATEGIES))
        self.dapi_strategy_combo.setCurrentText(d.dapi_strategy)
        self.val_spin = QDoubleSpinBox()
        self.val_spin.setRange(0.05, 0.5)
        self.val_spin.setSingleStep(0.05)
        self.val_spin.setDecimals(2)
        self.val_spin.setValue(d.val_fraction)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(d.seed)
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText(DEFAULT_MODEL_NAME)
        browse_out = QPushButton("…")
        browse_out.setMaximumWidth(30)
        browse_out.clicked.connect(self._browse_out)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit)
        out_row.addWidget(browse_out)
        self.overwrite_check = QCheckBox("Overwrite even if worse")
        self.overwrite_check.setToolTip(
            "Replace the existing model file even when its stored validation F1 is higher"
        )
        form.addRow("Architecture", self.arch_combo)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Image size", self.size_spin)
        form.addRow("Augmentation", augment_row)
        form.addRow("DAPI strategy", self.dapi_strategy_combo)
        form.addRow("Validation fraction", self.val_spin)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Model file", out_row)
        form.addRow(self.overwrite_check)
        layout.addWidget(settings)

        # -- run
        buttons = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current batch, keeping the best model so far")
        self.stop_button.clicked.connect(self.stop)
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.stop_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("idle")
        layout.addWidget(self.progress)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.status_label)
        self.plot = LossPlot()
        layout.addWidget(self.plot)
        self.metrics_label = QLabel()
        self.metrics_label.setWordWrap(True)
        self.metrics_label.setTextFormat(Qt.RichText)
        layout.addWidget(self.metrics_label)
        self.use_button = QPushButton("Use this model")
        self.use_button.setToolTip("Load the trained model into the 'Classify cells' widget")
        self.use_button.clicked.connect(self.use_model)
        self.use_button.setEnabled(False)
        layout.addWidget(self.use_button)
        layout.addStretch(1)

        self.bf_combo.currentTextChanged.connect(self._on_bf_changed)
        self.dapi_combo.currentTextChanged.connect(self._on_dapi_changed)
        self.dapi_strategy_combo.currentTextChanged.connect(lambda *_: self._update_summary())
        self.advance_check.toggled.connect(self._on_advance_toggled)
        self.annotations_edit.editingFinished.connect(self._on_annotations_file_edited)

    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        events.inserted.connect(self._on_layers_changed)
        events.removed.connect(self._on_layers_changed)
        events.moved.connect(self._on_layers_changed)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._on_layers_changed)

    # ------------------------------------------------------------------ layers and pairing

    def _layer(self, name: str | None) -> Any | None:
        if not name or name in (NO_DAPI, CHOOSE_DAPI):
            return None
        try:
            return self.viewer.layers[name]
        except KeyError:
            return None

    def _on_layers_changed(self, event: Any = None) -> None:
        if event is not None and getattr(event, "type", "") == "inserted":
            with contextlib.suppress(AttributeError, TypeError):
                event.value.events.name.connect(self._on_layers_changed)
        self._refresh_layers()

    def _refresh_layers(self) -> None:
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

    def _on_bf_changed(self, name: str, keep_dapi: bool = False) -> None:
        if self._updating:
            return
        bf = self._layer(name)
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
            if keep_dapi and previous in names and previous != CHOOSE_DAPI:
                self.dapi_combo.setCurrentText(previous)
                self._dapi_ambiguous = False
            elif len(partners) == 1:
                self.dapi_combo.setCurrentText(partners[0].name)
                self._dapi_ambiguous = False
            elif len(partners) > 1:
                self.dapi_combo.setCurrentText(CHOOSE_DAPI)
                self._dapi_ambiguous = True
            else:
                self.dapi_combo.setCurrentText(NO_DAPI)
                self._dapi_ambiguous = False
        finally:
            self._updating = False
        if bf is not None and not self.out_edit.text().strip():
            sidecar = annotations_path_for_layer(bf)
            if sidecar is not None:
                self.out_edit.setText(str(sidecar.parent / DEFAULT_MODEL_NAME))
        self._update_summary()

    def _on_dapi_changed(self, name: str) -> None:
        if self._updating:
            return
        self._dapi_ambiguous = name == CHOOSE_DAPI
        self._update_summary()

    def choose_layers(self, bf: str, dapi: str | None = None) -> None:
        """Choose the BF layer and (optionally) the DAPI layer by name (``None``: no DAPI)."""
        self.bf_combo.setCurrentText(bf)
        self.dapi_combo.setCurrentText(dapi if dapi is not None else NO_DAPI)
        self._dapi_ambiguous = False
        self._update_summary()

    def pairing(self) -> CellPairing:
        """Pair the chosen BF layer's cells with the chosen DAPI layer's.

        Raises
        ------
        ValueError
            No BF layer, an ambiguous DAPI choice, or layers that cannot be paired (the
            message says which and why).
        """
        bf = self._layer(self.bf_combo.currentText())
        if bf is None:
            raise ValueError(
                "No BF layer: open an export with the DEPArray reader (its BF layer is used)."
            )
        if self._dapi_ambiguous:
            raise ValueError(
                f"Several DAPI layers share cell ids with {bf.name!r}: choose the DAPI layer."
            )
        return pair_channel_layers(bf, self._layer(self.dapi_combo.currentText()))

    def _on_annotation_changed(self, cell_id: str, label: str | None) -> None:
        self._update_summary()

    def _update_summary(self) -> None:
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
        labels = (deparray_meta(pairing.bf_layer) or {}).get("labels") or []
        n_ctc = sum(v == "CTC" for v in labels)
        n_wbc = sum(v == "WBC" for v in labels)
        self.counts_label.setText(
            f"Annotated: <b>{n_ctc} CTC</b>, <b>{n_wbc} WBC</b>, "
            f"{len(labels) - n_ctc - n_wbc} unlabelled."
        )

    def _connect_classify_widgets(self) -> None:
        for widget in find_classify_widgets(self.viewer):
            self.annotations.connect_classify_widget(widget)

    # ------------------------------------------------------------------ files

    def _browse_out(self) -> None:
        start = self.out_edit.text().strip() or DEFAULT_MODEL_NAME
        path, _ = QFileDialog.getSaveFileName(self, "Model file", start, MODEL_FILE_FILTER)
        if path:
            self.out_edit.setText(path)

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
        self.annotations.sidecar_override = Path(text).expanduser() if text else None

    def _on_advance_toggled(self, checked: bool) -> None:
        self.annotations.advance = bool(checked)

    # ------------------------------------------------------------------ inputs

    def inputs(self) -> TrainInputs:
        """The current settings as a :class:`~._train_inputs.TrainInputs`."""
        dapi = self.dapi_combo.currentText()
        return TrainInputs(
            bf_layer=self.bf_combo.currentText() or None,
            dapi_layer=None if dapi in (NO_DAPI, CHOOSE_DAPI, "") else dapi,
            arch=self.arch_combo.currentText(),
            epochs=self.epochs_spin.value(),
            image_size=self.size_spin.value(),
            batch_size=self._defaults.batch_size,
            augment=tuple(f for f, check in self.augment_checks.items() if check.isChecked()),
            dapi_strategy=self.dapi_strategy_combo.currentText(),
            val_fraction=round(self.val_spin.value(), 4),
            seed=self.seed_spin.value(),
            out=self.out_edit.text().strip(),
            overwrite_if_worse=self.overwrite_check.isChecked(),
            num_threads=self.num_threads,
        )

    def prepare(self) -> tuple[TrainInputs, TrainingSet]:
        """Check everything before training and build the training set.

        Returns
        -------
        (TrainInputs, TrainingSet)

        Raises
        ------
        ValueError
            With the message to show: bad settings, no or ambiguous layers, BF/DAPI that
            cannot be paired, or too few annotated cells of a class (with the counts).
        """
        from napari_deparray_ctc.core.data import TrainingDataError, check_training_set
        from napari_deparray_ctc.core.train import TrainConfig

        inputs = self.inputs()
        pairing = self.pairing()  # ValueError: no BF / ambiguous / cannot pair
        error = inputs.validation_error()
        if error:
            raise ValueError(error)
        if inputs.dapi_strategy != "none" and pairing.n_paired == 0:
            raise ValueError(
                f"DAPI strategy {inputs.dapi_strategy!r} needs DAPI images, but no cell of "
                f"{pairing.bf_layer.name!r} has a DAPI partner; choose the DAPI layer or set "
                "the strategy to 'none'."
            )
        built = build_training_set(pairing)
        counts = f"({built.n_ctc} CTC, {built.n_wbc} WBC, {built.n_unlabelled} unlabelled)"
        if built.data is None:
            raise ValueError(
                f"No annotated cell in {pairing.bf_layer.name!r} {counts}: annotate cells "
                "with c (CTC) and w (WBC) first."
            )
        if inputs.dapi_strategy != "none" and built.n_with_dapi == 0:
            raise ValueError(
                f"DAPI strategy {inputs.dapi_strategy!r}: none of the annotated cells has a "
                "DAPI image; choose the DAPI layer or set the strategy to 'none'."
            )
        min_per_class = TrainConfig().min_per_class
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                check_training_set(built.data, min_per_class=min_per_class)
        except TrainingDataError as exc:
            raise ValueError(
                f"Cannot train on {pairing.bf_layer.name!r} {counts}: {exc}. Annotate more "
                "cells with c (CTC) and w (WBC)."
            ) from None
        return inputs, built.data

    # ------------------------------------------------------------------ running

    @property
    def is_running(self) -> bool:
        """``True`` while a training runs."""
        return self._worker is not None

    def start(self, *_: Any, train: Callable[..., TrainResult] | None = None):
        """Check the inputs and start training in a ``thread_worker``.

        Parameters
        ----------
        train
            Replacement for the core ``train`` (tests).

        Returns
        -------
        napari.qt.threading.GeneratorWorker or None
            The running worker, or ``None`` when training was refused (the status line and
            a notification say why).
        """
        if self.is_running:
            return None
        try:
            inputs, data = self.prepare()
        except ValueError as exc:
            self._fail(str(exc))
            return None
        from napari.qt.threading import create_worker

        avoid_gl_llvm_clash()  # before torch is imported by the training thread
        self._stop.clear()
        self.plot.clear()
        self.plot.set_epochs(inputs.epochs)
        self.metrics_label.setText("")
        self.use_button.setEnabled(False)
        self.last_outcome = None
        self._set_status(f"Training {inputs.arch} on {len(data)} annotated cells…")
        worker = create_worker(
            training_job,
            inputs,
            data,
            self._stop,
            train,
            _start_thread=False,
            _connect={
                "yielded": self._on_progress,
                "returned": self._on_returned,
                "errored": self._on_errored,  # handled here: not re-raised in the event loop
                "finished": self._on_finished,
            },
        )
        self._worker = worker
        self._set_running(True)
        self._open_activity(inputs, data)
        worker.start()
        return worker

    def stop(self) -> None:
        """Ask the training to stop after the current batch (the best model is kept)."""
        if self.is_running:
            self._stop.set()
            self.stop_button.setEnabled(False)
            self._set_status("Stopping after the current batch…")

    def _set_running(self, running: bool) -> None:
        self.train_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        for widget in (
            self.bf_combo,
            self.dapi_combo,
            self.arch_combo,
            self.epochs_spin,
            self.size_spin,
            self.dapi_strategy_combo,
            self.val_spin,
            self.seed_spin,
            self.out_edit,
            self.overwrite_check,
            *self.augment_checks.values(),
        ):
            widget.setEnabled(not running)

    def _on_progress(self, p: TrainProgress) -> None:
        total = max(1, p.epochs * max(1, p.batches))
        done = min(total, (p.epoch - 1) * p.batches + p.batch)
        if p.phase == "done":
            done = total
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        loss = "" if p.train_loss is None else f", loss {p.train_loss:.3f}"
        best = "" if p.best_f1 is None else f", best F1 {p.best_f1:.3f}"
        self.progress.setFormat(
            f"epoch {p.epoch}/{p.epochs}{loss}{best} - ETA {_format_seconds(p.eta_s)}"
        )
        if p.phase == "epoch_end":
            self.plot.add_point(p.epoch, p.train_loss, p.val_loss, p.val_f1)
        self._update_activity(p, done, total)

    def _open_activity(self, inputs: TrainInputs, data: TrainingSet) -> None:
        """Show the run in napari's activity dock (created before the work starts, so its
        one-off set-up cost does not land inside the training)."""
        import math

        n_train = max(1, round(len(data) * (1.0 - inputs.val_fraction)))
        if inputs.dapi_strategy in ("substitute", "blend") and data.dapi is not None:
            n_train *= 2
        batches = max(1, math.ceil(n_train / max(1, inputs.batch_size)))
        try:
            from napari.utils import progress

            self._progress_bar = progress(
                total=inputs.epochs * batches, desc="Training classifier: starting"
            )
        except Exception:  # the activity dock is a mirror; never fail on it
            self._progress_bar = None

    def _update_activity(self, p: TrainProgress, done: int, total: int) -> None:
        """Mirror the progress in napari's activity dock."""
        bar = self._progress_bar
        if bar is None:
            return
        try:
            if bar.total != total:
                bar.total = total
            bar.set_description(
                f"Training classifier: epoch {p.epoch}/{p.epochs}, ETA {_format_seconds(p.eta_s)}"
            )
            if done > bar.n:
                bar.update(done - bar.n)
        except Exception:  # the activity dock is a mirror; never fail on it
            self._close_activity()

    def _close_activity(self) -> None:
        if self._progress_bar is not None:
            with contextlib.suppress(Exception):
                self._progress_bar.close()
            self._progress_bar = None

    def _on_returned(self, outcome: TrainOutcome) -> None:
        self.last_outcome = outcome
        result = outcome.result
        self.metrics_label.setText(metrics_html(result.metrics))
        for record in result.history:
            self.plot.add_point(
                record.get("epoch", 0),
                record.get("train_loss"),
                record.get("val_loss"),
                record.get("val_f1"),
            )
        self.use_button.setEnabled(outcome.model_path is not None)
        self.progress.setFormat("stopped" if result.cancelled else "done")
        self.progress.setValue(self.progress.maximum())
        self._set_status(outcome.message)
        if result.cancelled or (outcome.destination and outcome.destination.kept_previous):
            _notify("info", outcome.message)  # worth a pop-up: not the file asked for
        else:
            self.viewer.status = outcome.message

    def _on_errored(self, exc: BaseException) -> None:
        from napari_deparray_ctc.core.data import TrainingDataError

        if isinstance(exc, TrainingJobError):
            exc = exc.original
        if isinstance(exc, TrainingDataError | ValueError):
            message = f"Training refused: {exc}"
        else:
            message = f"Training failed ({type(exc).__name__}): {exc}"
        self.progress.setFormat("failed")
        self._fail(message)

    def _on_finished(self) -> None:
        self._worker = None
        self._close_activity()
        self._set_running(False)

    def _fail(self, message: str) -> None:
        self._set_status(message, error=True)
        _notify("error", message)

    def _set_status(self, message: str, error: bool = False) -> None:
        self.last_message = message
        colour = "#e57373" if error else ""
        self.status_label.setText(
            f"<span style='color:{colour}'>{message}</span>" if colour else message
        )

    # ------------------------------------------------------------------ after training

    def use_model(self) -> Any | None:
        """Load the trained model into the "Classify cells" widget (docking it if needed).

        Returns
        -------
        The ClassifyWidget, or ``None`` when there is no model yet.
        """
        outcome = self.last_outcome
        if outcome is None or outcome.model_path is None:
            self._fail("No trained model yet: train first.")
            return None
        widgets = find_classify_widgets(self.viewer)
        if widgets:
            widget = widgets[0]
        else:
            _dock, widget = self.viewer.window.add_plugin_dock_widget(
                "napari-deparray-ctc", "Classify cells"
            )
        widget.set_model_path(str(outcome.model_path))
        self.annotations.connect_classify_widget(widget)
        self._set_status(f"'Classify cells' now uses {outcome.model_path}.")
        return widget

    def closeEvent(self, event) -> None:
        """Stop a running training when the widget closes."""
        self._stop.set()
        self._scan_timer.stop()
        super().closeEvent(event)


def _notify(kind: str, message: str) -> None:
    from napari.utils import notifications

    {
        "info": notifications.show_info,
        "error": notifications.show_error,
    }[kind](message)
