"""One evented state per viewer that every widget listens to (no Qt, no polling).

The session holds what the plugin's widgets share: the annotations (set in the layers'
metadata and autosaved to each export's sidecar), the last classification results, the model
file in use, and requests to bring a cell on screen. Widgets change it through its methods and
react to its events (napari's ``EmitterGroup``, as in napari-animation's evented key-frame list):

``events.annotation(cell_id, label, saved_to)``
    a cell was annotated (keys, table, gallery...), after the layers and the sidecar changed;
``events.results(results)``
    a run finished, or the threshold relabelled the cells;
``events.model_path(path)``
    the model file changed ("Use this model", Browse...);
``events.shown(layer, index, cell_id)``
    a cell was brought on screen (table row, gallery tile);
``events.suggested(cell_ids)``
    cells were suggested for labelling (the table and the gallery show them first);
``events.message(text)``
    a one-line status for the user (also set as the viewer's status).

The session also owns the viewer's background work: :attr:`Session.runs` (every worker, ended
when the window closes), :attr:`Session.model` (the chosen model file, checked once),
:attr:`Session.classify` and :attr:`Session.train` (the one owner of each kind of run).
Widgets never look each other up: they call these and follow their events.

:func:`session_for` gives the viewer's one session, created on first use together with the
annotation keys and the on-canvas cell caption.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any

from napari.utils.events import EmitterGroup, Event

from napari_deparray_ctc.core.annotations.sidecars import (
    AnnotationStore,
    sidecar_for_cell_paths,
    sidecar_path,
)
from napari_deparray_ctc.core.constants import is_class_label
from napari_deparray_ctc.core.errors import AnnotationFileError
from napari_deparray_ctc.napari.caption import CellCaption
from napari_deparray_ctc.napari.cells import (
    cell_count,
    current_cell_index,
    is_cell_layer,
    is_stack,
    set_cell_label,
)
from napari_deparray_ctc.napari.keys import AnnotationKeys
from napari_deparray_ctc.napari.layer_info import LayerInfo
from napari_deparray_ctc.napari.model_choice import ModelChoice
from napari_deparray_ctc.napari.runs import BackgroundRuns

__all__ = ["Session", "annotations_path_for_layer", "session_for"]

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def annotations_path_for_layer(layer: Any) -> Path | None:
    """The annotation sidecar of the export a layer was opened from.

    In order: ``metadata["deparray"]["annotations_path"]`` (set by the reader: the file it
    applied when opening), the path napari recorded as the layer's source, and the common
    folder (or single file) of the cells' paths (e.g. the sample data). ``None`` for a
    plain layer.
    """
    info = LayerInfo.of(layer)
    if info.annotations_path:
        return Path(info.annotations_path)
    source = getattr(getattr(layer, "source", None), "path", None)
    if source:
        return sidecar_path(source)
    return sidecar_for_cell_paths(info.paths)


def _notify(kind: str, message: str) -> None:
    from napari.utils import notifications

    {
        "info": notifications.show_info,
        "warning": notifications.show_warning,
        "error": notifications.show_error,
    }[kind](message)


class Session:
    """The plugin's shared state for one viewer.

    Parameters
    ----------
    viewer
        The napari viewer (held weakly).

    Attributes
    ----------
    events
        ``annotation``, ``results``, ``model_path``, ``shown`` and ``message`` (see the
        module docstring).
    sidecar_override
        Save every annotation to this file instead of each export's own sidecar.
    advance
        After an annotation key, move the slider to the next cell.
    last_message
        The last status message.
    """

    def __init__(self, viewer: Any) -> None:
        self._viewer_ref = weakref.ref(viewer)
        self.events = EmitterGroup(
            source=self,
            annotation=Event,
            results=Event,
            model_path=Event,
            shown=Event,
            suggested=Event,
            message=Event,
        )
        self.sidecar_override: Path | None = None
        self.advance = False
        #: the cells last suggested (``suggest``): c / w on one of them brings the next one
        #: without a label on screen
        self.suggested_ids: list[str] = []
        self.last_message = ""
        self._results: Any = None
        self._stores: dict[Path, AnnotationStore] = {}
        self._warned_unsaved = False
        self.runs = BackgroundRuns(viewer)
        self.model = ModelChoice(self.runs)
        self.model.events.path.connect(lambda event: self.events.model_path(path=event.path))
        self._classify: Any = None
        self._train: Any = None
        self._calibrate: Any = None
        viewer.layers.events.inserted.connect(self._on_layer_inserted)

    def _on_layer_inserted(self, event: Any) -> None:
        """A new stack of cells starts at its first cell (napari's default is the middle)."""
        layer, viewer = event.value, self.viewer
        if viewer is None or not is_cell_layer(layer) or not is_stack(layer):
            return
        viewer.dims.set_current_step(viewer.dims.ndim - layer.ndim, 0)

    # -- shared values --------------------------------------------------------------------

    @property
    def viewer(self) -> Any:
        """The viewer (``None`` once it was garbage collected)."""
        return self._viewer_ref()

    @property
    def results(self) -> Any:
        """The last :class:`~napari_deparray_ctc.napari.results.ClassificationResults`."""
        return self._results

    @results.setter
    def results(self, value: Any) -> None:
        self._results = value
        self.events.results(results=value)

    def results_changed(self) -> None:
        """Tell the listeners that the results changed in place (e.g. a new threshold)."""
        self.events.results(results=self._results)

    @property
    def model_path(self) -> str:
        """The model file the classifier uses (``""`` when none is chosen)."""
        return self.model.path

    @model_path.setter
    def model_path(self, value: str | os.PathLike) -> None:
        self.model.set_path(value)

    @property
    def classify(self) -> Any:
        """The owner of this viewer's classification runs (``napari/classify_run.py``)."""
        if self._classify is None:
            from napari_deparray_ctc.napari.classify_run import ClassifyRun

            self._classify = ClassifyRun(self)
        return self._classify

    @property
    def train(self) -> Any:
        """The owner of this viewer's training runs (``napari/train_run.py``)."""
        if self._train is None:
            from napari_deparray_ctc.napari.train_run import TrainRun

            self._train = TrainRun(self)
        return self._train

    @property
    def calibrate(self) -> Any:
        """The owner of this viewer's site calibrations (``napari/calibrate_run.py``)."""
        if self._calibrate is None:
            from napari_deparray_ctc.napari.calibrate_run import CalibrateRun

            self._calibrate = CalibrateRun(self)
        return self._calibrate

    def start_suggestion(
        self, layer: Any, n: int, purpose: str, name: str, **callbacks: Any
    ) -> Any | None:
        """Suggest ``n`` of ``layer``'s cells not yet annotated (``core.inference.suggest``,
        ``purpose`` "labelling" or "calibration") with the chosen model, in a background run;
        ``callbacks`` as for :meth:`BackgroundRuns.start`. Returns the worker (``None``: the
        window is closing)."""
        from napari_deparray_ctc.napari.workers import LayerCells, suggest_job

        info = LayerInfo.of(layer)
        ids = info.cell_ids
        exclude = [c for c, label in zip(ids, info.labels, strict=False) if is_class_label(label)]
        cells = LayerCells(layer.name, layer.data, False, list(range(len(ids))), ids)
        worker = self.runs.function_worker(
            suggest_job, self.model.path, cells, exclude, n, purpose, info.pixel_size_um
        )
        return self.runs.start(worker, name, **callbacks)

    def suggest(self, cell_ids: list[str]) -> None:
        """Show these cells first wherever cells are listed (``events.suggested``)."""
        self.suggested_ids = list(cell_ids)
        self.events.suggested(cell_ids=list(cell_ids))
        if cell_ids:
            self.show_cell(cell_ids[0])

    # -- messages -------------------------------------------------------------------------

    def status(self, message: str) -> None:
        """A one-line message in napari's status bar (and ``events.message``)."""
        self.last_message = message
        viewer = self.viewer
        if viewer is not None:
            viewer.status = message
        self.events.message(text=message)

    # -- annotations ----------------------------------------------------------------------

    def layers(self) -> list[Any]:
        """The viewer's layers (empty once the viewer is gone)."""
        viewer = self.viewer
        return list(viewer.layers) if viewer is not None else []

    def layer_of(self, cell_id: str) -> Any | None:
        """A layer holding ``cell_id`` (a BF layer when there is one)."""
        holders = [layer for layer in self.layers() if cell_id in LayerInfo.of(layer).cell_ids]
        bf = [layer for layer in holders if LayerInfo.of(layer).channel == "BF"]
        return (bf or holders or [None])[0]

    def set_label(self, cell_id: str, label: str | None, layer: Any | None = None) -> Path | None:
        """Annotate ``cell_id`` in every layer holding it, autosave, then tell the listeners.

        Parameters
        ----------
        cell_id
            The cell.
        label
            ``"CTC"``, ``"WBC"`` or ``None`` (cleared).
        layer
            A layer holding the cell (decides which export's sidecar is written); found among
            the viewer's layers when omitted.

        Returns
        -------
        pathlib.Path or None
            The sidecar written, or ``None`` when it could not be saved (a message says why;
            the label is still set in the layers).
        """
        label = label if is_class_label(label) else None
        layers = self.layers() or ([layer] if layer is not None else [])
        set_cell_label(layers, cell_id, label)
        if layer is None:
            layer = self.layer_of(cell_id)
        saved = self._autosave(cell_id, label, layer)
        if self._results is not None:
            self._results.set_annotation(cell_id, label)
        self.events.annotation(cell_id=cell_id, label=label, saved_to=saved)
        return saved

    def annotate_current(self, label: str | None, layer: Any | None = None) -> str | None:
        """Annotate the cell on screen in ``layer`` (default: the selected layer).

        Returns
        -------
        str or None
            The annotated cell's id, or ``None`` when there is no cell to annotate (a status
            message says why).
        """
        viewer = self.viewer
        if viewer is None:
            return None
        if layer is None:
            layer = viewer.layers.selection.active
        if layer is None or not is_cell_layer(layer):
            name = "no layer is selected" if layer is None else f"layer {layer.name!r} is"
            self.status(
                f"Annotation keys c / w / u: {name} not a DEPArray cell layer; select a BF or "
                "DAPI layer opened with the DEPArray reader"
            )
            return None
        n = cell_count(layer)
        if n > 1 and viewer.dims.ndisplay == 3:
            self.status("Annotation: switch to the 2-D view to annotate one cell at a time")
            return None
        index = current_cell_index(viewer, layer)
        cell_id = LayerInfo.of(layer).cell_ids[index]
        self.set_label(cell_id, label, layer)
        following = self.next_suggested(cell_id) if label is not None else None
        if following is not None:  # working through suggested cells: the next one to confirm
            self.show_cell(following)
        elif self.advance and n > 1 and index + 1 < n:
            self.show(layer, index + 1)
        return cell_id

    def next_suggested(self, after: str) -> str | None:
        """The next suggested cell after ``after`` (wrapping round) that has no label yet;
        ``None`` when ``after`` was not suggested or every suggested cell has one."""
        ids = self.suggested_ids
        if after not in ids:
            return None
        start = ids.index(after)
        for step in range(1, len(ids)):
            cell_id = ids[(start + step) % len(ids)]
            layer = self.layer_of(cell_id)
            if layer is None:
                continue
            info = LayerInfo.of(layer)
            index = info.index_of(cell_id)
            if index is not None and not is_class_label(info.label_of(index)):
                return cell_id
        return None

    def sidecar_for(self, layer: Any | None) -> Path | None:
        """Where annotations of ``layer``'s cells are saved (``None``: nowhere known)."""
        if self.sidecar_override is not None:
            return self.sidecar_override
        return None if layer is None else annotations_path_for_layer(layer)

    def store(self, path: str | os.PathLike) -> AnnotationStore:
        """The (cached) annotation store of a sidecar file."""
        path = Path(path)
        if path not in self._stores:
            self._stores[path] = AnnotationStore(path)
        return self._stores[path]

    def _autosave(self, cell_id: str, label: str | None, layer: Any | None) -> Path | None:
        shown = label or "unknown"
        path = self.sidecar_for(layer)
        if path is None:
            self.status(
                f"{cell_id}: {shown} (not saved: no file is known for these cells; choose an "
                "annotations file in 'Train classifier')"
            )
            if not self._warned_unsaved:
                self._warned_unsaved = True
                _notify(
                    "warning",
                    "Annotations of this layer are kept in memory only: choose an annotations "
                    "file in the 'Train classifier' widget to save them.",
                )
            return None
        store = self.store(path)
        try:
            written = store.update(cell_id, label)
        except AnnotationFileError as exc:
            self.status(f"{cell_id}: {shown} (NOT saved: {exc})")
            _notify("error", f"Annotation not saved: {exc}")
            return None
        if store.moved_aside is not None and store.load_error is not None:
            _notify(
                "warning",
                f"{store.load_error}; the unreadable file was kept as {store.moved_aside}",
            )
            store.load_error = None
        notice = getattr(store, "notice", None)
        if notice:
            _notify("info", notice)
            store.notice = None
        self.status(f"{cell_id}: {shown} (saved to {written.name})")
        return written

    # -- navigation -----------------------------------------------------------------------

    def show(self, layer: Any, index: int) -> None:
        """Bring cell ``index`` of ``layer`` on screen: select the layer, move the slider."""
        viewer = self.viewer
        if viewer is None or layer not in viewer.layers:
            self.status("That layer is no longer in the viewer.")
            return
        layer.visible = True
        viewer.layers.selection.active = layer
        if is_stack(layer):
            axis = viewer.dims.ndim - layer.ndim
            world = layer.data_to_world([index] + [0] * (layer.ndim - 1))
            viewer.dims.set_point(axis, float(world[0]))
        cell_id = LayerInfo.of(layer).id_of(index)
        self.events.shown(layer=layer, index=index, cell_id=cell_id)

    def show_cell(self, cell_id: str) -> bool:
        """Bring ``cell_id`` on screen (in its BF layer); ``False`` when no layer holds it."""
        layer = self.layer_of(cell_id)
        if layer is None:
            self.status(f"Cell {cell_id} is not in any open layer.")
            return False
        self.show(layer, LayerInfo.of(layer).index_of(cell_id) or 0)
        return True

    def current(self) -> tuple[Any, int, str] | None:
        """``(layer, index, cell_id)`` of the cell on screen in the selected layer, or ``None``."""
        viewer = self.viewer
        layer = viewer.layers.selection.active if viewer is not None else None
        if layer is None or not is_cell_layer(layer):
            return None
        index = current_cell_index(viewer, layer)
        cell_id = LayerInfo.of(layer).id_of(index)
        return None if cell_id is None else (layer, index, cell_id)


def session_for(viewer: Any) -> Session:
    """The viewer's session (created on first use, with the annotation keys and the caption)."""
    session = _SESSIONS.get(viewer)
    if session is None:
        session = Session(viewer)
        _SESSIONS[viewer] = session
        session.keys = AnnotationKeys(viewer, session)  # type: ignore[attr-defined]
        session.caption = CellCaption(viewer, session)  # type: ignore[attr-defined]
    return session


def install_annotation_keys(viewer: Any, sidecar_override: str | os.PathLike | None = None):
    """The viewer's session, with its annotation keys bound (once per viewer).

    Parameters
    ----------
    viewer
        The napari viewer.
    sidecar_override
        If given, every annotation is saved to this file.

    Returns
    -------
    napari_deparray_ctc.napari.session.Session
    """
    session = session_for(viewer)
    if session.keys.closed:
        session.keys = AnnotationKeys(viewer, session)
    if sidecar_override is not None:
        session.sidecar_override = Path(sidecar_override)
    return session
