"""The caption on the canvas: the cell on screen, its annotation and its call, at all times.

While a DEPArray cell layer is selected, napari's text overlay (top left) shows for example::

    cell0012 (13 of 24, slider 12)
    annotated CTC · called CTC 0.93
    keys: c = CTC, w = WBC, u = clear

"13 of 24" counts cells from 1; napari's slider counts from 0 and shows ``12 | 23``: the
caption names the slider position too, so the two never seem to disagree.

It follows the slider, the selected layer, every annotation and every classification run
(through the viewer's :class:`~napari_deparray_ctc.napari.session.Session`). With any other
layer selected the caption is hidden, which also shows where the keys work.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from napari_deparray_ctc.core.constants import is_class_label
from napari_deparray_ctc.napari.cells import cell_count
from napari_deparray_ctc.napari.layer_info import LayerInfo

__all__ = ["KEYS_HINT", "CellCaption", "bf_partner", "caption_text"]

KEYS_HINT = "keys: c = CTC, w = WBC, u = clear"
#: seconds after an export's layer is added during which napari's selecting it is undone
SELECT_BF_WITHIN_S = 1.0


def _text_overlay(viewer: Any) -> Any:
    """The viewer's text overlay (``viewer.canvas.overlays.text`` from napari 0.9 on)."""
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)
    text = getattr(overlays, "text", None)
    return text if text is not None else viewer.text_overlay


def bf_partner(layers: Any, layer: Any) -> Any:
    """The BF layer of the export ``layer`` belongs to (``None``: it is BF, or has none)."""
    info = LayerInfo.of(layer)
    if info.channel is None or info.channel == "BF":
        return None
    stem = str(getattr(layer, "name", "")).split(" :: ")[0]
    for other in layers:
        theirs = LayerInfo.of(other)
        if (
            other is not layer
            and theirs.channel == "BF"
            and theirs.cell_ids == info.cell_ids
            and str(other.name).split(" :: ")[0] == stem
        ):
            return other
    return None


def caption_text(session: Any) -> str:
    """What the caption shows for the cell on screen (``""`` when no cell layer is selected)."""
    current = session.current()
    if current is None:
        return ""
    layer, index, cell_id = current
    n = cell_count(layer)
    where = cell_id if n == 1 else f"{cell_id} ({index + 1} of {n}, slider {index})"
    label = LayerInfo.of(layer).label_of(index)
    parts = [f"annotated {label}" if is_class_label(label) else "not annotated"]
    results = session.results
    rows = results.indices_of(cell_id) if results is not None else []
    if rows:
        row = rows[0]
        parts.append(f"called {results.call(row)} {results.rows[row].p_ctc:.2f}")
    # three short lines: one long line ran off the canvas of a laptop screen
    return "\n".join([where, " · ".join(parts), KEYS_HINT])


class CellCaption:
    """Keeps napari's text overlay on the current cell (made by ``session_for``).

    Attributes
    ----------
    enabled
        Turn the caption off (the overlay is then left to others).
    """

    def __init__(self, viewer: Any, session: Any) -> None:
        self._viewer_ref = weakref.ref(viewer)
        self._session_ref = weakref.ref(session)
        self._owned = False
        self.enabled = True
        self._just_added: Any = None
        viewer.dims.events.current_step.connect(self.update)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.selection.events.active.connect(self._keep_bf_selected)
        viewer.layers.selection.events.active.connect(self.update)
        session.events.annotation.connect(self.update)
        session.events.results.connect(self.update)
        session.events.shown.connect(self.update)

    # -- BF selected when an export opens ------------------------------------------------

    def _on_inserted(self, event: Any) -> None:
        layer = getattr(event, "value", None)
        viewer = self._viewer_ref()
        if layer is None or viewer is None:
            return
        bf = bf_partner(viewer.layers, layer)
        self._just_added = None if bf is None else (layer, bf, time.monotonic())

    def _keep_bf_selected(self, event: Any) -> None:
        """napari selects the layer it added last (an export's hidden APC layer): select the
        export's BF layer instead, so that the caption and the keys work at once.

        napari announces the new active layer more than once per insertion; a choice made
        later than :data:`SELECT_BF_WITHIN_S` after the insertion is the user's, and is kept.
        """
        viewer = self._viewer_ref()
        if viewer is None or self._just_added is None:
            return
        added, bf, when = self._just_added
        if time.monotonic() - when > SELECT_BF_WITHIN_S or bf not in viewer.layers:
            self._just_added = None
        elif getattr(event, "value", None) is added:
            viewer.layers.selection.active = bf

    @property
    def text(self) -> str:
        """The caption now (``""`` when hidden)."""
        session = self._session_ref()
        return caption_text(session) if session is not None and self.enabled else ""

    def update(self, *_: Any) -> None:
        """Redraw the caption (connected to the viewer's and the session's events)."""
        viewer = self._viewer_ref()
        if viewer is None:
            return
        text = self.text
        overlay = _text_overlay(viewer)
        if text:
            if not self._owned:  # first use: readable, and clear of notifications
                overlay.font_size = max(float(overlay.font_size), 12.0)
                overlay.position = "top_left"
                self._owned = True
            overlay.text = text
            overlay.visible = True
        elif self._owned:
            overlay.text = ""
            overlay.visible = False
