"""Turn a :class:`~napari_deparray_ctc.core.io.Export` into napari ``LayerData`` tuples.

Pure data plumbing: nothing here imports napari or Qt, so it can be tested without a
viewer. The reader (:mod:`napari_deparray_ctc.napari.reader`) and the sample data
(:mod:`napari_deparray_ctc.napari.sample_data`) both go through :func:`export_to_layer_data`.

Layout of the result (one napari ``Image`` layer per channel):

* one cell gives 2-D layers; several cells give one ``(N, Y, X)`` stack per channel
  (cells of different sizes are padded or centre-cropped by
  :func:`~napari_deparray_ctc.core.io.stack_channel`), so the dims slider steps through cells;
* names are ``"<stem> :: <channel>"``;
* the first layer blends ``translucent_no_depth``, the others ``additive``;
* ``metadata["deparray"]`` follows the contract in ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.io import tiff_stem

if TYPE_CHECKING:
    from ..core.io import Cell, Export
    from ..core.io.lazy import LazyExport

__all__ = [
    "LayerData",
    "contrast_limits",
    "export_name",
    "export_to_layer_data",
    "lazy_export_to_layer_data",
]

#: ``(data, layer keyword arguments, layer type)``, what a napari reader returns; the data is
#: a numpy array, or a dask array for a large export
LayerData = tuple[Any, dict[str, Any], str]

#: contrast limits are taken at these percentiles of the pixel values
CONTRAST_PERCENTILES = (0.5, 99.8)
#: at most this many pixels are looked at to find the contrast limits
_CONTRAST_SAMPLE = 1_000_000


def export_name(paths: Sequence[str | os.PathLike[str]]) -> str:
    """Name for the layers of an export opened from ``paths``.

    Parameters
    ----------
    paths
        What the user opened: one folder, one file, or several files.

    Returns
    -------
    str
        The folder name for a folder, the file stem for one file, and the name of the
        deepest common folder for several files (``"DEPArray export"`` if there is none).
    """
    resolved = [Path(os.fspath(p)) for p in paths]
    if len(resolved) == 1:
        only = resolved[0]
        return only.name if only.is_dir() else tiff_stem(only)
    try:
        common = Path(os.path.commonpath([str(p.absolute().parent) for p in resolved]))
    except ValueError:  # different drives on Windows
        common = None
    return common.name if common is not None and common.name else "DEPArray export"


def contrast_limits(data: np.ndarray) -> tuple[float, float]:
    """Contrast limits from robust percentiles of the (finite) pixel values.

    Parameters
    ----------
    data
        Image or stack. Large arrays are subsampled with a regular stride.

    Returns
    -------
    tuple of float
        ``(low, high)`` with ``low < high`` always (a flat image gets ``high = low + 1``).
    """
    flat = np.asarray(data).reshape(-1)
    if flat.size > _CONTRAST_SAMPLE:
        flat = flat[:: int(np.ceil(flat.size / _CONTRAST_SAMPLE))]
    if np.issubdtype(flat.dtype, np.floating):
        flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(flat, CONTRAST_PERCENTILES))
    if not high > low:
        low, high = float(flat.min()), float(flat.max())
    if not high > low:
        high = low + 1.0
    return low, high


def _common_pixel_size(cells: Sequence[Cell]) -> float | None:
    """The pixel size shared by all cells, or ``None`` when unknown or not shared."""
    sizes = {cell.pixel_size_um for cell in cells}
    if len(sizes) != 1:
        return None
    (size,) = sizes
    return float(size) if size is not None and size > 0 else None


def _colormap(channel: str) -> str:
    from ..core.channels import colormap_for

    return colormap_for(channel)


def export_to_layer_data(export: Export, name: str | None = None) -> list[LayerData]:
    """One napari ``Image`` layer per channel of an export.

    Parameters
    ----------
    export
        What :func:`~napari_deparray_ctc.core.io.read_export` returned; must hold at least
        one cell.
    name
        Stem of the layer names (``"<name> :: <channel>"``). Default: the cell id for one
        cell, ``"DEPArray export"`` for several.

    Returns
    -------
    list of LayerData
        ``(data, kwargs, "image")`` per channel, in ``export.channels`` order.

    Raises
    ------
    ValueError
        When the export holds no cell.
    """
    from ..core.io import stack_channel

    cells = list(export.cells)
    if not cells:
        raise ValueError("the export holds no readable cell")
    single = len(cells) == 1
    if name is None:
        name = cells[0].cell_id if single else "DEPArray export"
    channels = list(export.channels) or list(cells[0].channels)
    pixel_size = _common_pixel_size(cells)

    shared = _shared_metadata(
        cells, pixel_size, [[int(s) for s in cell.original_shape] for cell in cells]
    )
    layers: list[LayerData] = []
    for index, channel in enumerate(channels):
        if single and channel in cells[0].channels:
            data = np.asarray(cells[0].channels[channel])
        else:
            data = stack_channel(cells, channel)
            if single:
                data = data[0]
        kwargs = _layer_kwargs(name, channel, index, contrast_limits(data), shared, single)
        _show_file_plane_names(kwargs, name, channel, cells)
        layers.append((data, kwargs, "image"))
    return layers


def _show_file_plane_names(kwargs: dict[str, Any], name: str, channel: str, cells: Any) -> None:
    """Show the file's own name of the plane beside the channel it is used as.

    A file that names its planes otherwise than by a channel (GIMP's ``Background``, an ImageJ
    slice label ``c:1/2 z:30/64 t:1/68 - 4``) keeps that name in the layer's name:
    ``"<stem> :: Background (as BF)"``; the channel (its role: ``BF`` is what the classifier
    reads) stays ``metadata["deparray"]["channel"]``. The metadata also gets ``plane_names``
    (the file's name per cell, aligned with ``cell_ids``; ``None`` where the file has none)
    and ``channel_note``, a sentence saying why the plane has that role.
    """
    per_cell = [getattr(cell, "plane_names", {}).get(channel) for cell in cells]
    found = [label for label in per_cell if label]
    if not found:
        return
    distinct = list(dict.fromkeys(found))
    if len(distinct) == 1 and len(found) == len(per_cell):
        kwargs["name"] = f"{name} :: {distinct[0]} (as {channel})"
    else:
        kwargs["name"] = f"{name} :: {channel} (named {distinct[0]!r}... in the files)"
    role = (
        "bright-field (BF), the image the classifier reads"
        if channel == "BF"
        else f"channel {channel}"
    )
    meta = kwargs["metadata"]["deparray"]
    meta["plane_names"] = per_cell
    meta["channel_note"] = (
        f"the file names this plane {distinct[0]!r}, which is not a channel name; the reader "
        f"uses it as {role} (unnamed planes are BF, DAPI, C2... in page order, or C0, C1... "
        "when the file names a stain); a channel map (channels.csv beside the file, "
        "docs/reader.md) assigns the channels otherwise"
    )


def _shared_metadata(items: Any, pixel_size: float | None, original_shapes: list) -> dict:
    """The metadata every channel layer of an export shares, from its cells (read) or cell
    sources (discovered): anything with ``cell_id``, ``path``, ``label`` and ``group``."""
    return {
        "cell_ids": [item.cell_id for item in items],
        "paths": [str(item.path) for item in items],
        "labels": [item.label for item in items],
        "groups": [item.group for item in items],
        "pixel_size_um": pixel_size,
        "original_shapes": original_shapes,
    }


def _layer_kwargs(
    name: str, channel: str, index: int, limits: tuple[float, float], shared: dict, single: bool
) -> dict[str, Any]:
    """The layer keyword arguments of one channel: name, colormap, blending, metadata."""
    kwargs: dict[str, Any] = {
        "name": f"{name} :: {channel}",
        "colormap": _colormap(channel),
        "blending": "translucent_no_depth" if index == 0 else "additive",
        "contrast_limits": limits,
        "metadata": {"deparray": {"channel": channel, **shared}},
        # the classifier reads BF (the first channel): the fluorescence layers, drawn
        # additively on top, would hide it, so they open hidden (their eye shows them)
        "visible": index == 0,
    }
    if not single:
        kwargs["axis_labels"] = ("cell", "y", "x")  # the slider steps through cells
    pixel_size = shared["pixel_size_um"]
    if pixel_size is not None:
        kwargs["scale"] = (pixel_size,) * 2 if single else (1.0, pixel_size, pixel_size)
    return kwargs


def lazy_export_to_layer_data(lazy: LazyExport, name: str) -> list[LayerData]:
    """One napari ``Image`` layer per channel of a large export, each a lazy dask array.

    Parameters
    ----------
    lazy
        A :class:`~napari_deparray_ctc.core.io.lazy.LazyExport` (discovered, not read).
    name
        Stem of the layer names (``"<name> :: <channel>"``).

    Returns
    -------
    list of LayerData
        ``(dask array (N, Y, X), kwargs, "image")`` per channel, with the metadata contract of
        :func:`export_to_layer_data`: ids, paths, labels and groups come from discovery;
        ``original_shapes`` holds ``None`` for the cells not read yet and is filled in place
        as chunks are read. ``metadata["deparray"]["lazy"]`` holds ``chunk_cells`` (read the
        data chunk by chunk, ``data.chunks[0]``) and ``unreadable`` (cell index -> reason, for
        cells whose files could not be read when their chunk was). Contrast limits come from
        the sampled cells: nothing else is read at open time.
    """
    sources = lazy.sources
    pixel_size = lazy.pixel_size_um if lazy.pixel_size_um and lazy.pixel_size_um > 0 else None
    shared = _shared_metadata(sources, pixel_size, lazy.original_shapes)
    shared["lazy"] = {"chunk_cells": lazy.chunk_cells, "unreadable": lazy.unreadable}
    layers: list[LayerData] = []
    for index, channel in enumerate(lazy.channels):
        limits = contrast_limits(lazy.sample_stack(channel))
        kwargs = _layer_kwargs(name, channel, index, limits, shared, single=False)
        layers.append((lazy.channel_array(channel), kwargs, "image"))
    return layers
