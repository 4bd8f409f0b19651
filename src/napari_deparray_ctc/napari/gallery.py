"""The cells of an export as gallery tiles (Qt-free): which cells, in which order, what image.

A tile shows one cell's channels side by side (BF grey, then DAPI, PE, APC... in their
colours), each scaled to its own 1st-99th percentiles and labelled with its channel's name in
its corner, with the cell's call and annotation as its caption. :func:`gallery_cells`
collects an export's cells with what is known about them, :func:`sort_cells` orders them,
:func:`tile_image` draws one tile and :func:`legend_text` says what a tile shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_deparray_ctc.napari.cells import (
    cell_image,
    find_partner_layers,
    layer_channel,
)
from napari_deparray_ctc.napari.layer_info import LayerInfo

__all__ = [
    "SORT_KEYS",
    "GalleryCell",
    "channel_layers",
    "gallery_cells",
    "legend_text",
    "ordered_cells",
    "page_text",
    "sort_cells",
    "tile_image",
]

#: how the gallery can be ordered
SORT_KEYS = ("P(CTC), highest first", "doubt (review queue)", "annotation", "cell id")
#: RGB weights of each channel's colour in a tile
CHANNEL_RGB = {
    "BF": (1.0, 1.0, 1.0),
    "DAPI": (0.3, 0.5, 1.0),
    "FITC": (0.2, 1.0, 0.2),
    "PE": (1.0, 0.9, 0.2),
    "APC": (1.0, 0.3, 1.0),
}
#: the colours' names, for the legend
COLOUR_NAMES = {"BF": "grey", "DAPI": "blue", "FITC": "green", "PE": "yellow", "APC": "magenta"}
#: smallest panel that gets its channel's name written in its corner
LABEL_MIN_SIZE = 32


@dataclass
class GalleryCell:
    """One tile: a cell of the export, and what is known about it."""

    cell_id: str
    index: int
    p_ctc: float | None = None
    call: str | None = None
    annotation: str | None = None
    uncertainty: float | None = None

    @property
    def caption(self) -> str:
        """Two short lines under the tile."""
        call = f"{self.call} {self.p_ctc:.2f}" if self.call is not None else "not classified"
        annotation = f"annotated {self.annotation}" if self.annotation else "not annotated"
        return f"{self.cell_id}\n{call} · {annotation}"


def channel_layers(layers: Sequence[Any], bf_layer: Any) -> list[Any]:
    """The BF layer and one layer per other channel holding the same cells, BF first."""
    found = [bf_layer]
    seen = {"BF"}
    for layer in layers:
        channel = layer_channel(layer)
        if channel is None or channel in seen:
            continue
        if layer in find_partner_layers(list(layers), bf_layer, channel):
            found.append(layer)
            seen.add(channel)
    order = {name: i for i, name in enumerate(CHANNEL_RGB)}
    return sorted(found, key=lambda ly: order.get(layer_channel(ly) or "", len(order)))


def gallery_cells(bf_layer: Any, results: Any = None) -> list[GalleryCell]:
    """The cells of ``bf_layer`` with their annotation and, when classified, their call."""
    info = LayerInfo.of(bf_layer)
    cells = []
    for index, cell_id in enumerate(info.cell_ids):
        cell = GalleryCell(cell_id, index)
        cell.annotation = info.label_of(index)
        rows = results.indices_of(str(cell_id)) if results is not None else []
        if rows:
            row = rows[0]
            cell.p_ctc = float(results.rows[row].p_ctc)
            cell.call = results.call(row)
            cell.uncertainty = results.uncertainty(row)
        cells.append(cell)
    return cells


def sort_cells(cells: Sequence[GalleryCell], key: str) -> list[GalleryCell]:
    """The cells in the order of ``key`` (one of :data:`SORT_KEYS`); unclassified cells last."""
    if key == SORT_KEYS[0]:
        return sorted(cells, key=lambda c: (c.p_ctc is None, -(c.p_ctc or 0.0), c.index))
    if key == SORT_KEYS[1]:
        return sorted(cells, key=lambda c: (c.uncertainty is None, c.uncertainty or 0.0, c.index))
    if key == SORT_KEYS[2]:
        rank = {"CTC": 0, "WBC": 1, None: 2}
        return sorted(cells, key=lambda c: (rank[c.annotation], c.index))
    return sorted(cells, key=lambda c: c.index)


def ordered_cells(
    cells: Sequence[GalleryCell], key: str, only_ids: Sequence[str] | None = None
) -> list[GalleryCell]:
    """What the gallery lists: the cells of ``only_ids`` in that order (the suggested ones;
    ids not among ``cells`` are skipped), or every cell in the order of ``key``."""
    if only_ids is None:
        return sort_cells(cells, key)
    by_id = {c.cell_id: c for c in cells}
    return [by_id[i] for i in only_ids if i in by_id]


def page_text(page: int, pages: int, n_cells: int, suggested: bool) -> str:
    """The gallery's page line, e.g. ``page 1 of 1 · 20 suggested cells`` (``page`` 0-based)."""
    if not n_cells:
        return "no cells: open an export"
    return f"page {page + 1} of {pages} · {n_cells} {'suggested cells' if suggested else 'cells'}"


def _scaled(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape, np.float32)
    low, high = np.percentile(finite, [1.0, 99.0])
    if not high > low:
        return np.zeros(image.shape, np.float32)
    return np.clip((np.nan_to_num(image, nan=low) - low) / (high - low), 0.0, 1.0)


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape
    rows = np.clip((np.arange(size) + 0.5) * h / size, 0, h - 1).astype(int)
    cols = np.clip((np.arange(size) + 0.5) * w / size, 0, w - 1).astype(int)
    return image[rows][:, cols]


def _heat(image: np.ndarray) -> np.ndarray:
    """A saliency map as a black-red-yellow heat map, ``(H, W, 3)`` in [0, 1]."""
    v = np.clip(image / max(float(image.max()), 1e-12), 0.0, 1.0)
    return np.stack([np.clip(2 * v, 0, 1), np.clip(2 * v - 1, 0, 1), np.zeros_like(v)], axis=-1)


def legend_text(layers: Sequence[Any], saliency: bool = False) -> str:
    """What a tile shows, left to right, and what its caption says (one line of words)."""
    names = [layer_channel(layer) or "?" for layer in layers]
    panels = [f"{n} ({COLOUR_NAMES.get(n, 'grey')})" for n in names]
    if saliency:
        panels.append("saliency (dark red to yellow: pixels that made the call)")
    return (
        "Each tile, left to right: "
        + ", ".join(panels)
        + "; each channel scaled to its own range. Under it: the call with P(CTC), and your "
        "annotation (red background: annotated CTC, blue: annotated WBC)."
    )


def _text_mask(text: str, height: int) -> np.ndarray | None:
    """``text`` as a boolean mask about ``height`` pixels tall (``None`` without Pillow)."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:  # pragma: no cover - Pillow comes with napari (imageio)
        return None
    try:
        font = ImageFont.load_default(size=max(8, height))
    except TypeError:  # pragma: no cover - Pillow < 10.1: one small bitmap font
        font = ImageFont.load_default()
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox(
        (0, 0), text, font=font
    )
    canvas = Image.new("L", (max(1, right - left + 2), max(1, bottom - top + 2)))
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), text, fill=255, font=font)
    return np.asarray(canvas) > 110


def _label(panel: np.ndarray, text: str, colour: np.ndarray) -> None:
    """Write ``text`` in the panel's top-left corner, on a dark box, in place."""
    size = panel.shape[0]
    mask = _text_mask(text, max(8, size // 6))
    if mask is None:
        return
    h, w = min(mask.shape[0], size), min(mask.shape[1], panel.shape[1])
    mask = mask[:h, :w]
    box = panel[: h + 1, : w + 1].astype(np.float32)
    panel[: h + 1, : w + 1] = (box * 0.35).astype(np.uint8)
    ink = np.clip(0.45 + 0.55 * colour, 0.0, 1.0) * 255
    panel[:h, :w][mask] = ink.astype(np.uint8)


def tile_image(
    layers: Sequence[Any],
    index: int,
    size: int = 64,
    gap: int = 2,
    saliency: np.ndarray | None = None,
    labels: bool = True,
) -> np.ndarray:
    """One cell's channels side by side, ``(size, k * size + gaps, 3)`` ``uint8`` RGB.

    With ``saliency`` (the BF image's map, ``core.explain``), a heat-map panel is appended.
    With ``labels`` (and panels of at least :data:`LABEL_MIN_SIZE` pixels), each panel has
    its channel's name in its top-left corner, in the channel's colour.
    """
    panels = []
    for layer in layers:
        image = _resized(_scaled(cell_image(layer, index)), size)
        channel = layer_channel(layer) or ""
        colour = np.asarray(CHANNEL_RGB.get(channel, (1.0, 1.0, 1.0)))
        panel = (image[..., None] * colour[None, None, :] * 255).astype(np.uint8)
        if labels and size >= LABEL_MIN_SIZE and channel:
            _label(panel, channel, colour)
        panels.append(panel)
        panels.append(np.full((size, gap, 3), 40, np.uint8))
    if saliency is not None:
        panel = (_heat(_resized(np.asarray(saliency, np.float32), size)) * 255).astype(np.uint8)
        if labels and size >= LABEL_MIN_SIZE:
            _label(panel, "saliency", np.asarray((1.0, 0.8, 0.3)))
        panels.append(panel)
        panels.append(np.full((size, gap, 3), 40, np.uint8))
    return np.ascontiguousarray(np.concatenate(panels[:-1], axis=1))
