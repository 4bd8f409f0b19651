"""Annotation keys: ``c`` (CTC), ``w`` (WBC), ``u`` (clear) on the cell on screen.

The keys are bound on every DEPArray cell layer (a layer's keymap wins over napari's own, so
``c`` no longer runs "auto-contrast once" on cell layers) and on the viewer (with any other
layer selected, a status message says why nothing was labelled). They forward to the
viewer's :class:`~napari_deparray_ctc.napari.session.Session`, which labels the cell in every
channel layer and autosaves. The on-canvas caption names the keys while a cell layer is
selected, so their scope is visible.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from napari_deparray_ctc.napari.cells import is_cell_layer

__all__ = ["KEY_LABELS", "AnnotationKeys"]

#: key -> label it sets (``None`` clears)
KEY_LABELS: dict[str, str | None] = {"c": "CTC", "w": "WBC", "u": None}


def _key(key: str) -> Any:
    from napari.utils.key_bindings import coerce_keybinding

    return coerce_keybinding(key)


class AnnotationKeys:
    """The ``c`` / ``w`` / ``u`` bindings of one viewer (made by ``session.session_for``)."""

    def __init__(self, viewer: Any, session: Any) -> None:
        self._viewer_ref = weakref.ref(viewer)
        self._session_ref = weakref.ref(session)
        self._bound_layers: weakref.WeakSet = weakref.WeakSet()
        self.closed = False
        for key, label in KEY_LABELS.items():
            viewer.bind_key(key, self._handler(label, on_layer=False), overwrite=True)
        for layer in viewer.layers:
            self._bind_layer(layer)
        viewer.layers.events.inserted.connect(self._on_layer_inserted)

    def _handler(self, label: str | None, on_layer: bool) -> Callable[[Any], None]:
        def handler(target: Any) -> None:
            session = self._session_ref()
            if session is not None:
                session.annotate_current(label, target if on_layer else None)

        handler.__doc__ = f"Annotate the current cell as {label or 'unknown'} (DEPArray CTC)."
        return handler

    def _bind_layer(self, layer: Any) -> None:
        if (
            layer in self._bound_layers
            or not is_cell_layer(layer)
            or not hasattr(layer, "bind_key")
        ):
            return
        for key, label in KEY_LABELS.items():
            layer.bind_key(key, self._handler(label, on_layer=True), overwrite=True)
        self._bound_layers.add(layer)

    def _on_layer_inserted(self, event: Any) -> None:
        self._bind_layer(event.value)

    def close(self) -> None:
        """Remove the key bindings and stop listening to the viewer."""
        if self.closed:
            return
        self.closed = True
        for layer in list(self._bound_layers):
            for key in KEY_LABELS:
                layer.keymap.pop(_key(key), None)
        self._bound_layers = weakref.WeakSet()
        viewer = self._viewer_ref()
        if viewer is not None:
            for key in KEY_LABELS:
                viewer.keymap.pop(_key(key), None)
            try:
                viewer.layers.events.inserted.disconnect(self._on_layer_inserted)
            except (TypeError, ValueError, RuntimeError):  # pragma: no cover - already gone
                pass
