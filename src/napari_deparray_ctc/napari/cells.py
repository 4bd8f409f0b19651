"""Cells inside napari image layers: the glue shared by the session, the workers and the widgets.

Works on any object with ``.name``, ``.data`` and ``.metadata`` (a napari ``Image`` layer,
or a stand-in in tests), so nothing here imports napari or Qt.

Three kinds of layers hold cells:

* a 2-D single-cell layer (one cell),
* an ``(N, Y, X)`` stack (each slice one cell; the first dims slider steps through cells),
* a plain 2-D layer from another reader, without ``metadata["deparray"]``: one cell, with a
  generated id (:func:`ensure_deparray_metadata` adds the metadata so predictions and
  annotations can be stored the same way).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_deparray_ctc.core.constants import is_class_label
from napari_deparray_ctc.napari.layer_info import LayerInfo

__all__ = [
    "LABELS",
    "CellPairing",
    "cell_count",
    "cell_image",
    "cells_for_training",
    "current_cell_index",
    "deparray_meta",
    "ensure_deparray_metadata",
    "find_partner_layers",
    "is_cell_layer",
    "is_stack",
    "iter_cell_images",
    "layer_channel",
    "pair_channel_layers",
    "set_cell_label",
]

#: cells read at once from a stack (a lazy dask stack is read chunk by chunk, not cell by cell)
READ_CHUNK = 64

#: annotation values a cell can carry
LABELS = ("CTC", "WBC", None)


def deparray_meta(layer: Any) -> dict | None:
    """Return ``layer.metadata["deparray"]`` or ``None`` when the layer has none."""
    meta = getattr(layer, "metadata", None) or {}
    value = meta.get("deparray")
    return value if isinstance(value, dict) else None


def layer_channel(layer: Any) -> str | None:
    """Canonical channel of a layer (``"BF"``, ``"DAPI"``, ...), or ``None`` if unknown."""
    meta = deparray_meta(layer)
    return None if meta is None else meta.get("channel")


def is_stack(layer: Any) -> bool:
    """``(N, Y, X)`` stack of cells (the first axis steps through the cells)."""
    return np.ndim(layer.data) == 3 and not getattr(layer, "rgb", False)


def is_cell_layer(layer: Any) -> bool:
    """A layer opened by the DEPArray reader (2-D cell or stack of cells)."""
    return deparray_meta(layer) is not None and np.ndim(getattr(layer, "data", None)) in (2, 3)


def cell_count(layer: Any) -> int:
    """Number of cells a layer holds: ``N`` for an ``(N, Y, X)`` stack, otherwise 1."""
    return int(np.shape(layer.data)[0]) if is_stack(layer) else 1


def cell_image(layer: Any, index: int = 0) -> np.ndarray:
    """The 2-D image of cell ``index`` of a layer (a stack slice, or the whole 2-D layer).

    RGB layers are converted to grey by averaging the colour channels.
    """
    data = layer.data
    if getattr(layer, "rgb", False):
        return np.asarray(data, dtype=np.float32)[..., :3].mean(axis=-1)
    if is_stack(layer):
        return np.asarray(data[index])
    if np.ndim(data) != 2:
        raise ValueError(
            f"layer {layer.name!r}: expected a 2-D cell image or an (N, Y, X) stack of cells, "
            f"got shape {np.shape(data)}"
        )
    return np.asarray(data)


def iter_cell_images(
    layer: Any, indices: Sequence[int] | None = None, chunk: int = READ_CHUNK
) -> Iterator[np.ndarray]:
    """Yield cells' 2-D images in order, reading a stack ``chunk`` cells at a time.

    A napari stack may be a lazy dask array (a large export): slicing it cell by cell would
    read one small piece per call, so consecutive cells are read together and handed out one
    by one; at most ``chunk`` cells are in memory at once.

    Parameters
    ----------
    layer
        A cell layer (or any object with ``.data``, ``.name``).
    indices
        Cells to read (default: all, in order).
    chunk
        Cells read per step from a stack.
    """
    if indices is None:
        indices = range(cell_count(layer))
    if not is_stack(layer):
        for index in indices:
            yield cell_image(layer, index)
        return
    order = list(indices)
    position = 0
    while position < len(order):
        # the longest run of consecutive indices, up to chunk cells, in one read
        end = position + 1
        while end < len(order) and end - position < chunk and order[end] == order[end - 1] + 1:
            end += 1
        first, last = order[position], order[end - 1]
        block = np.asarray(layer.data[first : last + 1])
        yield from block
        position = end


def current_cell_index(viewer: Any, layer: Any) -> int:
    """Index of the cell of ``layer`` on screen now: the stack slice under the slider, or 0."""
    n = cell_count(layer)
    if n <= 1:
        return 0
    point = np.asarray(viewer.dims.point, dtype=float)
    data_point = np.asarray(layer.world_to_data(point[-layer.ndim :]), dtype=float)
    return int(np.clip(np.round(data_point[0]), 0, n - 1))


def ensure_deparray_metadata(layer: Any, channel: str = "BF") -> dict:
    """Return the layer's ``deparray`` metadata, creating it for a plain layer.

    A layer from another reader gets generated cell ids (``"<layer name>"`` for a 2-D
    layer, ``"<layer name>#0007"`` for slice 7 of a stack), no paths, no labels.
    Existing metadata is returned unchanged apart from filling missing aligned lists.
    """
    meta = deparray_meta(layer)
    n = cell_count(layer)
    if meta is None:
        if n == 1:
            ids = [str(layer.name)]
        else:
            ids = [f"{layer.name}#{i:04d}" for i in range(n)]
        meta = {
            "channel": channel,
            "cell_ids": ids,
            "paths": [None] * n,
            "labels": [None] * n,
            "groups": [None] * n,
            "pixel_size_um": None,
            "original_shapes": [list(np.shape(cell_image(layer, 0)))] * n,
            "generated_ids": True,
        }
        layer.metadata = {**(getattr(layer, "metadata", None) or {}), "deparray": meta}
        return meta
    for key in ("paths", "labels", "groups"):
        if len(meta.get(key) or []) != len(meta.get("cell_ids") or []):
            meta[key] = [None] * len(meta.get("cell_ids") or [])
    return meta


def set_cell_label(layers: Iterable[Any], cell_id: str, label: str | None) -> int:
    """Set the annotation of ``cell_id`` in every layer that holds that cell.

    Keeps the cell's channel layers (BF, DAPI, ...) consistent.

    Returns
    -------
    int
        How many layers were updated.
    """
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, not {label!r}")
    updated = 0
    for layer in layers:
        meta = deparray_meta(layer)
        if not meta:
            continue
        ids = meta.get("cell_ids") or []
        labels = list(meta.get("labels") or [None] * len(ids))
        changed = False
        for i, cid in enumerate(ids):
            if cid == cell_id:
                labels[i] = label
                changed = True
        if changed:
            meta["labels"] = labels
            updated += 1
    return updated


def _usable_dapi(image: np.ndarray) -> bool:
    """A DAPI plane carries information (a cell without DAPI is stacked as a flat plane)."""
    return image.size > 0 and bool(np.ptp(image) > 0)


def cells_for_training(pairing: CellPairing) -> tuple[list[Any], int]:
    """The annotated cells of a BF layer and their DAPI partners, as ``core.io.Cell`` objects.

    A cell's label is its BF annotation, or its DAPI partner's when the BF one is empty. The
    cells go through core's one TrainingSet assembler (``training_set_from_cells``).

    Returns
    -------
    (cells, n_unlabelled)
    """
    from napari_deparray_ctc.core.io import Cell

    bf = LayerInfo.of(pairing.bf_layer)
    n = len(pairing.cell_ids)
    bf_labels = bf.labels or [None] * n
    groups = bf.groups or [None] * n
    paths = bf.paths or [None] * n
    dapi_labels: list[Any] = []
    if pairing.dapi_layer is not None:
        dapi_labels = LayerInfo.of(pairing.dapi_layer).labels
    chosen: list[tuple[int, int | None, str, str]] = []
    n_unlabelled = 0
    for bf_index, dapi_index, cell_id in zip(
        pairing.bf_indices, pairing.dapi_indices, pairing.cell_ids, strict=True
    ):
        label = bf_labels[bf_index] if bf_index < len(bf_labels) else None
        if label is None and dapi_index is not None and dapi_index < len(dapi_labels):
            label = dapi_labels[dapi_index]
        if is_class_label(label):
            chosen.append((bf_index, dapi_index, str(cell_id), label))
        else:
            n_unlabelled += 1
    bf_images = iter_cell_images(pairing.bf_layer, [c[0] for c in chosen])
    cells = []
    for (bf_index, dapi_index, cell_id, label), bf in zip(chosen, bf_images, strict=True):
        channels = {"BF": bf}
        if pairing.dapi_layer is not None and dapi_index is not None:
            dapi = cell_image(pairing.dapi_layer, dapi_index)
            if _usable_dapi(dapi):
                channels["DAPI"] = dapi
        cells.append(
            Cell(
                cell_id=cell_id,
                channels=channels,
                path=(paths[bf_index] if bf_index < len(paths) else None) or "",
                label=label,
                group=groups[bf_index] if bf_index < len(groups) else None,
                original_shape=tuple(np.shape(bf)),
            )
        )
    return cells, n_unlabelled


@dataclass
class CellPairing:
    """BF cells matched to DAPI cells through their cell ids.

    Attributes
    ----------
    bf_layer, dapi_layer
        The paired layers (``dapi_layer`` is ``None`` when no DAPI is used).
    bf_indices, dapi_indices
        Aligned cell indices into each layer (``dapi_indices[i]`` is ``None`` where the
        BF cell has no DAPI partner).
    cell_ids
        Cell ids, aligned with ``bf_indices``.
    """

    bf_layer: Any
    dapi_layer: Any | None
    bf_indices: list[int]
    dapi_indices: list[int | None]
    cell_ids: list[str]

    @property
    def n_paired(self) -> int:
        """Number of BF cells that have a DAPI partner."""
        return sum(i is not None for i in self.dapi_indices)


def pair_channel_layers(bf_layer: Any, dapi_layer: Any | None) -> CellPairing:
    """Pair the cells of a BF layer with those of a DAPI layer by cell id.

    Falls back to pairing by position when neither layer has cell ids but both hold the
    same number of cells.

    Raises
    ------
    ValueError
        When the layers share no cell id (and cannot be paired by position), with a
        message naming both layers.
    """
    bf_meta = ensure_deparray_metadata(bf_layer, "BF")
    bf_ids = list(bf_meta["cell_ids"])
    if dapi_layer is None:
        return CellPairing(bf_layer, None, list(range(len(bf_ids))), [None] * len(bf_ids), bf_ids)
    dapi_meta = deparray_meta(dapi_layer)
    n_dapi = cell_count(dapi_layer)
    if dapi_meta is None or bf_meta.get("generated_ids"):
        if n_dapi != len(bf_ids):
            raise ValueError(
                f"cannot pair BF layer {bf_layer.name!r} ({len(bf_ids)} cells) with DAPI layer "
                f"{dapi_layer.name!r} ({n_dapi} cells): no cell ids and different cell counts"
            )
        return CellPairing(
            bf_layer, dapi_layer, list(range(len(bf_ids))), list(range(n_dapi)), bf_ids
        )
    dapi_index = {cid: i for i, cid in enumerate(dapi_meta.get("cell_ids") or [])}
    dapi_indices = [dapi_index.get(cid) for cid in bf_ids]
    if bf_ids and all(i is None for i in dapi_indices):
        raise ValueError(
            f"cannot pair BF layer {bf_layer.name!r} with DAPI layer {dapi_layer.name!r}: "
            "they share no cell id"
        )
    return CellPairing(bf_layer, dapi_layer, list(range(len(bf_ids))), dapi_indices, bf_ids)


def find_partner_layers(layers: Sequence[Any], layer: Any, channel: str) -> list[Any]:
    """Layers of ``channel`` that share at least one cell id with ``layer``."""
    meta = deparray_meta(layer)
    if not meta:
        return []
    ids = set(LayerInfo.of(layer).cell_ids)
    return [
        other
        for other in layers
        if other is not layer
        and layer_channel(other) == channel
        and ids & set(LayerInfo.of(other).cell_ids)
    ]
