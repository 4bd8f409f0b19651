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

__all__ = [
    "LayerData",
    "contrast_limits",
    "export_name",
    "export_to_layer_data",
]

#: ``(data, layer keyword arguments, layer type)``, what a napari reader returns
LayerData = tuple[np.ndarray, dict[str, Any], str]

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

    layers: list[LayerData] = []
    for index, channel in enumerate(channels):
        if single and channel in cells[0].channels:
            data = np.asarray(cells[0].channels[channel])
        else:
            data = stack_channel(cells, channel)
            if single:
                data = data[0]
        metadata = {
            "channel": channel,
            "cell_ids": [cell.cell_id for cell in cells],
            "paths": [str(cell.path) for cell in cells],
            "labels": [cell.label for cell in cells],
            "groups": [cell.group for cell in cells],
            "pixel_size_um": pixel_size,
            "original_shapes": [[int(s) for s in cell.original_shape] for cell in cells],
        }
        kwargs: dict[str, Any] = {
            "name": f"{name} :: {channel}",
            "colormap": _colormap(channel),
            "blending": "translucent_no_depth" if index == 0 else "additive",
            "contrast_limits": contrast_limits(data),
            "metadata": {"deparray": metadata},
        }
        if pixel_size is not None:
            kwargs["scale"] = (pixel_size,) * 2 if single else (1.0, pixel_size, pixel_size)
        layers.append((data, kwargs, "image"))
    return layers
