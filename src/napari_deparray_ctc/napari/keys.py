"""Annotating cells in the viewer: keys ``c`` (CTC), ``w`` (WBC), ``u`` (clear).

A key press labels the *current cell* of the selected layer: the current slice of an
``(N, Y, X)`` stack (where the dims slider is), or the one cell of a 2-D layer. The label is
written to ``metadata["deparray"]["labels"]`` of **every** layer that holds that cell (its BF,
DAPI, PE... layers stay consistent, through :func:`~napari_deparray_ctc.napari.cells.set_cell_label`),
and autosaved at once, atomically, to the export's annotation sidecar (see
:mod:`napari_deparray_ctc.core.annotations`), so a crash of napari loses nothing.

The keys are bound on each cell layer (layer keymaps win over napari's defaults, so ``c``
no longer runs "auto-contrast once" on cell layers) and on the viewer (any other selected
layer then gets a status message instead of a silent no-op). They are installed by the
"Train classifier" widget, or by :func:`install_annotation_keys`.

Nothing here imports Qt at module level (napari's key-binding and notification API only; finding
docked widgets imports qtpy when called).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from napari_deparray_ctc.core.annotations import (
    AnnotationFileError,
    AnnotationStore,
    sidecar_for_cell_paths,
    sidecar_path,
)
from napari_deparray_ctc.napari.cells import (
    cell_count,
    deparray_meta,
    set_cell_label,
)

__all__ = [
    "KEY_LABELS",
    "AnnotationController",
    "annotation_counts",
    "annotations_path_for_layer",
    "current_cell_index",
    "find_classify_widgets",
    "install_annotation_keys",
]

#: key -> label it sets (``None`` clears)
KEY_LABELS: dict[str, str | None] = {"c": "CTC", "w": "WBC", "u": None}

#: one controller per viewer
_CONTROLLERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

ChangeListener = Callable[[str, "str | None"], None]


def _is_cell_layer(layer: Any) -> bool:
    return deparray_meta(layer) is not None and np.ndim(getattr(layer, "data", None)) in (2, 3)


def current_cell_index(viewer: Any, layer: Any) -> int:
    """Index of the cell of ``layer`` shown now (the stack slice under the slider, or 0).

    Parameters
    ----------
    viewer
        The napari viewer (its ``dims.point`` gives the world position of the sliders).
    layer
        A 2-D cell layer or an ``(N, Y, X)`` stack.

    Returns
    -------
    int
        A valid index into the layer's ``cell_ids``.
    """
    n = cell_count(layer)
    if n <= 1:
        return 0
    point = np.asarray(viewer.dims.point, dtype=float)
    data_point = np.asarray(layer.world_to_data(point[-layer.ndim :]), dtype=float)
    return int(np.clip(np.round(data_point[0]), 0, n - 1))


def annotations_path_for_layer(layer: Any) -> Path | None:
    """The annotation sidecar of the export a layer was opened from.

    In order: ``metadata["deparray"]["annotations_path"]`` (set by the reader, the same file
    it applied when opening), the path napari recorded as the layer's source, and finally
    the common folder (or single file) of the cells' paths (e.g. the sample data).

    Returns
    -------
    pathlib.Path or None
        ``None`` when nothing tells where the cells came from (a plain layer).
    """
    meta = deparray_meta(layer) or {}
    explicit = meta.get("annotations_path")
    if explicit:
        return Path(explicit)
    source = getattr(getattr(layer, "source", None), "path", None)
    if source:
        return sidecar_path(source)
    return sidecar_for_cell_paths(meta.get("paths") or [])


def annotation_counts(layer: Any) -> dict[str, int]:
    """``{"CTC": n, "WBC": n, "unlabelled": n}`` for the cells of a layer."""
    labels = (deparray_meta(layer) or {}).get("labels") or []
    n_ctc = sum(1 for v in labels if v == "CTC")
    n_wbc = sum(1 for v in labels if v == "WBC")
    return {"CTC": n_ctc, "WBC": n_wbc, "unlabelled": len(labels) - n_ctc - n_wbc}


class AnnotationController:
    """Key bindings, label consistency across channel layers, and autosave for one viewer.

    Parameters
    ----------
    viewer
        The napari viewer.
    sidecar_override
        Save every annotation to this file instead of each export's own sidecar.
    advance
        After ``c`` / ``w`` / ``u``, move the slider to the next cell.

    Attributes
    ----------
    listeners
        Callables ``f(cell_id, label)`` run after every change (widgets refresh counts and
        tables with them).
    last_message
        The last status message (also shown in napari's status bar).
    """

    def __init__(
        self,
        viewer: Any,
        sidecar_override: str | os.PathLike | None = None,
        advance: bool = False,
    ) -> None:
        self._viewer_ref = weakref.ref(viewer)
        self.sidecar_override: Path | None = Path(sidecar_override) if sidecar_override else None
        self.advance = advance
        self.listeners: list[ChangeListener] = []
        self.last_message = ""
        self._stores: dict[Path, AnnotationStore] = {}
        self._bound_layers: weakref.WeakSet = weakref.WeakSet()
        self._classify_widgets: weakref.WeakSet = weakref.WeakSet()
        self._refresh_classify = True
        self._warned_unsaved = False
        self._closed = False
        for key, label in KEY_LABELS.items():
            viewer.bind_key(key, self._viewer_key_handler(label), overwrite=True)
        for layer in viewer.layers:
            self._bind_layer(layer)
        viewer.layers.events.inserted.connect(self._on_layer_inserted)

    # -- key bindings -------------------------------------------------------------------

    @property
    def viewer(self) -> Any:
        """The viewer (``None`` once it was garbage collected)."""
        return self._viewer_ref()

    def _viewer_key_handler(self, label: str | None) -> Callable[[Any], None]:
        def handler(viewer: Any) -> None:
            self.annotate_current(label)

        handler.__doc__ = f"Annotate the current cell as {label or 'unknown'} (DEPArray CTC)."
        return handler

    def _layer_key_handler(self, label: str | None) -> Callable[[Any], None]:
        def handler(layer: Any) -> None:
            self.annotate_current(label, layer)

        handler.__doc__ = f"Annotate the current cell as {label or 'unknown'} (DEPArray CTC)."
        return handler

    def _bind_layer(self, layer: Any) -> None:
        if layer in self._bound_layers or not _is_cell_layer(layer):
            return
        if not hasattr(layer, "bind_key"):
            return
        for key, label in KEY_LABELS.items():
            layer.bind_key(key, self._layer_key_handler(label), overwrite=True)
        self._bound_layers.add(layer)

    def _on_layer_inserted(self, event: Any) -> None:
        self._bind_layer(event.value)

    def close(self) -> None:
        """Remove the key bindings and stop listening to the viewer."""
        if self._closed:
            return
        self._closed = True
        viewer = self.viewer
        for layer in list(self._bound_layers):
            for key in KEY_LABELS:
                layer.keymap.pop(_key(key), None)
        self._bound_layers = weakref.WeakSet()
        if viewer is not None:
            for key in KEY_LABELS:
                viewer.keymap.pop(_key(key), None)
            try:
                viewer.layers.events.inserted.disconnect(self._on_layer_inserted)
            except (TypeError, ValueError, RuntimeError):  # pragma: no cover - already gone
                pass
            if _CONTROLLERS.get(viewer) is self:
                del _CONTROLLERS[viewer]

    # -- annotating ---------------------------------------------------------------------

    def annotate_current(self, label: str | None, layer: Any | None = None) -> str | None:
        """Label the current cell of ``layer`` (default: the selected layer).

        Parameters
        ----------
        label
            ``"CTC"``, ``"WBC"`` or ``None`` (clear).
        layer
            The layer whose current cell is meant; the viewer's active layer if omitted.

        Returns
        -------
        str or None
            The annotated cell's id, or ``None`` when there was no cell to annotate (the
            status message says why).
        """
        viewer = self.viewer
        if viewer is None:
            return None
        if layer is None:
            layer = viewer.layers.selection.active
        if layer is None or not _is_cell_layer(layer):
            name = "no layer" if layer is None else f"layer {layer.name!r}"
            self._status(
                f"Annotation: {name} is not a DEPArray cell layer; select a BF or DAPI layer "
                "opened with the DEPArray reader"
            )
            return None
        n = cell_count(layer)
        if n > 1 and viewer.dims.ndisplay == 3:
            self._status("Annotation: switch to the 2-D view to annotate one cell at a time")
            return None
        index = current_cell_index(viewer, layer)
        cell_id = deparray_meta(layer)["cell_ids"][index]
        self.set_label(cell_id, label, layer)
        if self.advance and n > 1 and index + 1 < n:
            axis = viewer.dims.ndim - layer.ndim
            viewer.dims.set_current_step(axis, viewer.dims.current_step[axis] + 1)
        return cell_id

    def set_label(self, cell_id: str, label: str | None, layer: Any | None = None) -> Path | None:
        """Set ``cell_id``'s label in every layer holding it, then autosave.

        Parameters
        ----------
        cell_id
            The cell.
        label
            ``"CTC"``, ``"WBC"`` or ``None``.
        layer
            A layer holding the cell (decides which export's sidecar is written); found
            among the viewer's layers when omitted.

        Returns
        -------
        pathlib.Path or None
            The sidecar written, or ``None`` when it could not be saved (the status
            message and a notification say why; the label is still set in the layers).
        """
        viewer = self.viewer
        layers = list(viewer.layers) if viewer is not None else ([layer] if layer else [])
        set_cell_label(layers, cell_id, label)
        if layer is None:
            layer = next(
                (
                    lyr
                    for lyr in layers
                    if cell_id in ((deparray_meta(lyr) or {}).get("cell_ids") or [])
                ),
                None,
            )
        saved = self._autosave(cell_id, label, layer)
        if viewer is not None:
            for widget in find_classify_widgets(viewer):
                self.connect_classify_widget(widget)
        if self._refresh_classify:
            for widget in list(self._classify_widgets):
                refresh = getattr(widget, "refresh_annotations", None)
                if callable(refresh):
                    refresh()
        for listener in list(self.listeners):
            listener(cell_id, label)
        return saved

    def on_annotation_edited(self, cell_id: str, label: str | None, *args: Any) -> None:
        """Callback for the classify widget's editable annotation column.

        Keeps the channel layers consistent and autosaves, like a key press. Extra
        positional arguments (e.g. the layer) are accepted and used when they are layers.
        """
        layer = next((a for a in args if deparray_meta(a) is not None), None)
        self._refresh_classify = False  # the editing table is already up to date
        try:
            self.set_label(cell_id, label, layer)
        finally:
            self._refresh_classify = True

    def connect_classify_widget(self, widget: Any) -> None:
        """Autosave edits made in a ClassifyWidget's annotation column, and refresh its
        table after key presses (idempotent)."""
        callbacks = getattr(widget, "annotation_changed", None)
        if isinstance(callbacks, list) and self.on_annotation_edited not in callbacks:
            callbacks.append(self.on_annotation_edited)
        self._classify_widgets.add(widget)

    # -- saving -------------------------------------------------------------------------

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
            self._status(
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
            self._status(f"{cell_id}: {shown} (NOT saved: {exc})")
            _notify("error", f"Annotation not saved: {exc}")
            return None
        if store.moved_aside is not None and store.load_error is not None:
            _notify(
                "warning",
                f"{store.load_error}; the unreadable file was kept as {store.moved_aside}",
            )
            store.load_error = None
        self._status(f"{cell_id}: {shown} (saved to {written.name})")
        return written

    def _status(self, message: str) -> None:
        self.last_message = message
        viewer = self.viewer
        if viewer is not None:
            viewer.status = message


def _docked_widgets(viewer: Any) -> list[Any]:
    """Every widget inside the viewer's dock widgets (the docked widget and its children)."""
    window = getattr(viewer, "window", None)
    docks = getattr(window, "dock_widgets", None)  # napari >= 0.6: the inner widgets
    if docks is None:
        wrappers = getattr(window, "_dock_widgets", None) or {}
        inners = [d.widget() for d in list(wrappers.values()) if hasattr(d, "widget")]
    else:
        inners = list(docks.values())
    from qtpy.QtWidgets import QWidget

    found: list[Any] = []
    for inner in inners:
        inner = getattr(inner, "native", inner)  # magicgui widgets
        if not isinstance(inner, QWidget):
            continue
        found.append(inner)
        found.extend(inner.findChildren(QWidget))
    return found


def find_classify_widgets(viewer: Any) -> list[Any]:
    """The "Classify cells" widgets docked in ``viewer`` (found by their API, not by class)."""
    return [
        w
        for w in _docked_widgets(viewer)
        if callable(getattr(w, "set_model_path", None))
        and isinstance(getattr(w, "annotation_changed", None), list)
    ]


def _key(key: str) -> Any:
    from napari.utils.key_bindings import coerce_keybinding

    return coerce_keybinding(key)


def _notify(kind: str, message: str) -> None:
    from napari.utils import notifications

    {"warning": notifications.show_warning, "error": notifications.show_error}[kind](message)


def install_annotation_keys(
    viewer: Any,
    sidecar_override: str | os.PathLike | None = None,
    classify_widgets: Iterable[Any] = (),
) -> AnnotationController:
    """Install the ``c`` / ``w`` / ``u`` annotation keys on a viewer (once per viewer).

    Parameters
    ----------
    viewer
        The napari viewer.
    sidecar_override
        If given, every annotation is saved to this file (also on an existing controller).
    classify_widgets
        ClassifyWidget instances whose annotation-column edits should be autosaved too.

    Returns
    -------
    AnnotationController
        The viewer's controller (the same object on every call).
    """
    controller = _CONTROLLERS.get(viewer)
    if controller is None or controller._closed:
        controller = AnnotationController(viewer, sidecar_override)
        _CONTROLLERS[viewer] = controller
    elif sidecar_override is not None:
        controller.sidecar_override = Path(sidecar_override)
    for widget in [*classify_widgets, *find_classify_widgets(viewer)]:
        controller.connect_classify_widget(widget)
    return controller
