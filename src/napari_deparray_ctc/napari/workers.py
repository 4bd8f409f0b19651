"""Background workers: classification and training off napari's UI thread.

Each worker is a napari ``WorkerBase`` (cellfinder's pattern) whose ``work()`` calls one core
function and turns the core's plain-callable progress reports into Qt signals. Qt queues a
signal emitted from the worker thread to the receiver's thread, so every slot runs on the UI
thread; nothing here touches a widget or a layer.

The handshake, in order:

1. the widget builds a Qt-free job (:class:`ClassifyJob` / :class:`TrainJob`) on the UI thread:
   references to the layers' arrays, the settings, the cells;
2. ``work()`` first maps torch's libraries with the GIL released
   (:func:`~napari_deparray_ctc.core.runtime.preload_torch_libraries`), imports torch and
   loads the model, emitting ``stage`` before each step, so no heavy import or model load
   ever runs on the UI thread;
3. the core function runs; its ``progress`` callback emits ``progress`` at most
   :data:`EMITS_PER_SECOND` times a second (and always for the last step or an epoch end), so
   the UI thread is never flooded; its ``should_stop`` reads a ``threading.Event`` the widget
   sets;
4. ``work()`` returns an outcome object. Expected problems (a foreign model file, unusable
   cells) are an outcome with ``error`` set, in words, never an exception; an unexpected
   exception reaches ``errored``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import WorkerBase, WorkerBaseSignals
from qtpy.QtCore import Signal

from napari_deparray_ctc.core.errors import DeparrayError, describe_os_error
from napari_deparray_ctc.core.runtime import load_torch_in_this_thread
from napari_deparray_ctc.napari.cells import iter_cell_images
from napari_deparray_ctc.napari.runs import GuardedRunMixin

__all__ = [
    "EMITS_PER_SECOND",
    "ClassifyJob",
    "ClassifyOutcome",
    "ClassifyWorker",
    "LayerCells",
    "TrainJob",
    "TrainOutcome",
    "TrainWorker",
    "calibrate_job",
    "saliency_job",
    "shift_note",
    "suggest_job",
]

LOG = logging.getLogger(__name__)
#: at most this many progress signals per second reach the UI thread
EMITS_PER_SECOND = 8.0


class _Throttle:
    """True at most ``rate`` times a second (and always when ``force``)."""

    def __init__(self, rate: float = EMITS_PER_SECOND) -> None:
        self.interval = 1.0 / rate
        self.last = -1e9

    def __call__(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            return True
        return False


# ============================================================================ classification


@dataclass
class LayerCells:
    """The cells of one layer to classify, as the worker reads them (no layer object)."""

    name: str
    data: Any  # the layer's array (numpy or dask); read in chunks, never copied whole
    rgb: bool
    indices: list[int]
    cell_ids: list[str]


@dataclass
class ClassifyJob:
    """One classification run, prepared on the UI thread."""

    model_path: str
    layers: list[LayerCells]
    batch_size: int = 64
    device: str | None = None
    num_threads: int | None = None
    options: dict = field(default_factory=dict)  # extra keyword arguments of core classify

    @property
    def n_cells(self) -> int:
        """Cells in the run."""
        return sum(len(layer.indices) for layer in self.layers)


@dataclass
class ClassifyOutcome:
    """What the classification worker returns."""

    p_ctc: np.ndarray | None = None
    model_threshold: float | None = None
    model_metadata: dict = field(default_factory=dict)
    done: int = 0
    cancelled: bool = False
    error: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    shift_warning: str | None = None  # the cells look unlike the model's training cells


class ClassifySignals(WorkerBaseSignals):
    """``stage(text)`` before each step, ``progress(done, total)`` while classifying."""

    stage = Signal(str)
    progress = Signal(int, int)


class _LayerStandIn:
    """What ``iter_cell_images`` needs of a layer: name, data, rgb."""

    def __init__(self, layer: LayerCells) -> None:
        self.name, self.data, self.rgb = layer.name, layer.data, layer.rgb


class ClassifyWorker(GuardedRunMixin, WorkerBase):
    """Loads the model and classifies the job's cells with ``core.classify.classify``."""

    def __init__(self, job: ClassifyJob) -> None:
        super().__init__(SignalsClass=ClassifySignals)
        self._init_guard()
        self.job = job
        self.stop_event = threading.Event()

    def stop(self) -> None:
        """Stop after the current batch (the outcome says ``cancelled``)."""
        self.stop_event.set()

    def _images(self):
        for layer in self.job.layers:
            yield from iter_cell_images(_LayerStandIn(layer), layer.indices)

    def work(self) -> ClassifyOutcome:
        start = time.perf_counter()
        job = self.job
        self.stage.emit("loading the classifier")
        load_torch_in_this_thread()
        from napari_deparray_ctc.core.inference.classify import classify
        from napari_deparray_ctc.core.runtime import torch_threads

        try:
            model = cached_model(job.model_path, device=job.device)
        except DeparrayError as exc:
            return ClassifyOutcome(error=str(exc))
        except OSError as exc:
            return ClassifyOutcome(error=f"{job.model_path}: {describe_os_error(exc)}")
        total = job.n_cells
        throttle = _Throttle()
        self.stage.emit("classifying")
        self.progress.emit(0, total)

        def progress(done: int, _total: int | None = None) -> None:
            if throttle(force=done >= total):
                self.progress.emit(int(done), total)

        ids = [cell_id for layer in job.layers for cell_id in layer.cell_ids]
        try:
            with torch_threads(job.num_threads), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                predictions = classify(
                    self._images(),
                    model,
                    batch_size=job.batch_size,
                    cell_ids=ids,
                    progress=progress,
                    should_stop=self.stop_event.is_set,
                    **job.options,
                )
        except (DeparrayError, ValueError) as exc:
            return ClassifyOutcome(error=f"The cells could not be classified: {exc}")
        except OSError as exc:  # a lazily read export whose files went away
            where = f" ({exc.filename})" if exc.filename else ""
            return ClassifyOutcome(
                error=f"The cells could not be read{where}: {describe_os_error(exc)}"
            )
        if predictions.cancelled:
            return ClassifyOutcome(done=len(predictions.p_ctc), cancelled=True)
        note = shift_note(model, job.layers)
        if note:
            caught.append(warnings.WarningMessage(note, UserWarning, __file__, 0))
        shifted = note
        return ClassifyOutcome(
            p_ctc=np.asarray(predictions.p_ctc, dtype=np.float64),
            model_threshold=float(model.threshold),
            model_metadata=dict(model.metadata),
            done=len(predictions.p_ctc),
            seconds=time.perf_counter() - start,
            notes=[str(w.message) for w in caught if issubclass(w.category, UserWarning)],
            shift_warning=shifted,
        )


# ============================================================================ training


@dataclass
class TrainJob:
    """One training run, prepared on the UI thread."""

    config: Any  # core.train.TrainConfig (its ``out`` is the in-progress file)
    data: Any  # core TrainingSet
    out: Path  # the model file the user chose
    overwrite_if_worse: bool = False


@dataclass
class TrainOutcome:
    """What the training worker returns."""

    result: Any = None  # core TrainResult
    model_path: Path | None = None
    destination: Any = None  # core.model_files.ModelDestination
    message: str = ""
    error: str | None = None


class TrainSignals(WorkerBaseSignals):
    """``stage(text)`` before each step, ``progress(TrainProgress)`` while training."""

    stage = Signal(str)
    progress = Signal(object)


class TrainWorker(GuardedRunMixin, WorkerBase):
    """Trains with ``core.train.train`` and applies the model-file policy of core."""

    def __init__(self, job: TrainJob) -> None:
        super().__init__(SignalsClass=TrainSignals)
        self._init_guard()
        self.job = job
        self.stop_event = threading.Event()

    def stop(self) -> None:
        """Stop after the current batch; the best model so far is kept."""
        self.stop_event.set()

    def work(self) -> TrainOutcome:
        job = self.job
        load_torch_in_this_thread()
        self.stage.emit("loading the classifier")
        from napari_deparray_ctc.core.model.file_policy import (
            place_trained_model,
            start_model_file,
        )
        from napari_deparray_ctc.core.training.train import train

        throttle = _Throttle(4.0)

        def progress(report: Any) -> None:
            if throttle(force=report.phase != "batch"):
                self.progress.emit(report)

        self.stage.emit("training")
        try:
            start = start_model_file(job.out)
            config = dataclasses.replace(job.config, out=str(start.in_progress))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                result = train(
                    config, data=job.data, progress=progress, should_stop=self.stop_event.is_set
                )
            placed = place_trained_model(
                result, job.out, job.overwrite_if_worse, recovered=start.recovered
            )
        except DeparrayError as exc:
            return TrainOutcome(error=f"Training refused: {exc}")
        except OSError as exc:  # a full disk or a vanished share while saving the model
            where = f" ({exc.filename})" if exc.filename else ""
            return TrainOutcome(
                error=f"The model could not be saved{where}: {describe_os_error(exc)}; any "
                "previous model file was kept."
            )
        return TrainOutcome(result, placed.path, placed.destination, placed.message)


# ============================================================================ review tools

_MODEL_CACHE: dict[tuple[str, float], Any] = {}
_MODEL_CACHE_LOCK = threading.Lock()


def cached_model(path: str, device: str | None = None) -> Any:
    """The model file loaded once per path, modification time and device (worker threads
    only): the check of a chosen file, the classification, suggestions and saliency share it.
    """
    from napari_deparray_ctc.core.model.loaded import load_model

    key = (str(path), os.path.getmtime(path), device)
    with _MODEL_CACHE_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE.clear()
            _MODEL_CACHE[key] = load_model(path, device=device)
        return _MODEL_CACHE[key]


def suggest_job(
    model_path: str,
    layer: LayerCells,
    exclude: list[str],
    n: int,
    purpose: str = "labelling",
    pixel_size: float | None = None,
) -> list[str]:
    """The cells to label next (``core.suggest``), not yet annotated: uncertain and diverse
    (``purpose="labelling"``), or those that best inform a site calibration
    (``"calibration"``).

    Run in a background worker; the images are read from the layer's array chunk by chunk.
    """
    load_torch_in_this_thread()
    from napari_deparray_ctc.core.inference.suggest import suggest_cells

    model = cached_model(model_path)
    images = list(iter_cell_images(_LayerStandIn(layer), layer.indices))
    sizes = None if pixel_size is None else [pixel_size] * len(images)
    return suggest_cells(
        images,
        model,
        n=n,
        cell_ids=layer.cell_ids,
        exclude=exclude,
        pixel_sizes=sizes,
        purpose=purpose,
    )


def saliency_job(model_path: str, images: list[np.ndarray]) -> list[np.ndarray]:
    """Saliency maps (``core.explain``, integrated gradients) of a few cells' BF images."""
    load_torch_in_this_thread()
    from napari_deparray_ctc.core.inference.explain import saliency_maps

    return saliency_maps(images, cached_model(model_path), steps=8)


@dataclass
class CalibrationOutcome:
    """What the site calibration job returns."""

    site_model: Path | None = None
    metadata: dict = field(default_factory=dict)
    cancelled: bool = False
    started_from: str | None = None


def calibrate_job(
    model_path: str,
    layer: LayerCells,
    labels: list[str | None],
    pixel_size: float | None,
    site: str,
    should_stop: Any = None,
) -> CalibrationOutcome:
    """Calibrate the model to this export's instrument from its labelled cells
    (``core.inference.site_calibration``) and save the site model beside the original."""
    load_torch_in_this_thread()
    from napari_deparray_ctc.core.inference.site_calibration import (
        calibrate_to_site,
        calibration_start,
    )
    from napari_deparray_ctc.core.model.file_policy import site_model_path
    from napari_deparray_ctc.core.model.loaded import save_model

    # a site model calibrated again starts from the model it came from (no chained site models)
    model_path = str(calibration_start(model_path, cached_model(model_path).metadata))
    site_model = calibrate_to_site(
        cached_model(model_path),
        iter_cell_images(_LayerStandIn(layer), layer.indices),
        labels,
        cell_ids=layer.cell_ids,
        pixel_size=pixel_size,
        data_name=site,
        source=model_path,
        should_stop=should_stop,
    )
    if site_model is None:
        return CalibrationOutcome(cancelled=True)
    out = site_model_path(model_path, site)
    save_model(out, site_model.network, site_model.metadata)
    return CalibrationOutcome(out, dict(site_model.metadata), started_from=model_path)


def shift_note(model: Any, layers: list[LayerCells], limit: int = 512) -> str | None:
    """``core.shift``'s warning for the first ``limit`` cells of a run (``None``: no shift)."""
    from napari_deparray_ctc.core.inference.shift import shift_warning

    images = []
    for layer in layers:
        for image in iter_cell_images(_LayerStandIn(layer), layer.indices[: limit - len(images)]):
            images.append(image)
        if len(images) >= limit:
            break
    try:
        return shift_warning(images, model.metadata, remedy="napari") if images else None
    except (
        Exception
    ):  # the warning is advice: it never fails a run (e.g. a model without a summary)
        return None
