"""How a TIFF maps onto cells × channels × Y × X, worked out from its header (no pixels)."""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import tifffile

from napari_deparray_ctc.core.errors import DeparrayReadError
from napari_deparray_ctc.core.io.common import (
    MAX_CHANNELS_PER_CELL,
    page_limit,
    require_resolved_name,
    tag_text,
)
from napari_deparray_ctc.core.io.fast_ifd import IMAGE_DESCRIPTION, PAGE_NAME, plain_page_list
from napari_deparray_ctc.core.io.header_checks import (
    check_codecs,
    check_colour,
    check_declared_size,
    check_ome_plane_count,
    check_plane,
    check_series_fits,
    check_tiles,
)
from napari_deparray_ctc.core.io.metadata import (
    micromanager_axes,
    pixel_size_um,
    stored_channel_names,
    stored_plane_labels,
)
from napari_deparray_ctc.core.io.types import NotACellImageError, Plan

#: axes that may hold cells: a generic page sequence, "other" (tifffile's unknown axis,
#: also OME's modulo "other") and tiles/positions. Z (depth) and T (time) never do.
CELL_AXES = "IQR"
#: axes that hold channels (S: grey samples stored as planes)
CHANNEL_AXES = "CS"
_PHYSICAL_AXES = {"Z": "z-stack", "T": "time series"}
_OWN_WRITER = 'Creator="napari-deparray-ctc'


def _axis_words(axis: str) -> str:
    name = tifffile.TIFF.AXES_NAMES.get(axis, "unknown")
    return f"{axis} ({name})"


def _own_legacy_stack(tif: tifffile.TiffFile) -> bool:
    """An OME cell stack written by this plugin's ``write_export`` (cells on the T axis).

    Versions up to 0.x stored the cell index on OME's T axis, for want of a cell axis in OME;
    those files are recognised by their OME ``Creator`` and read as before. No other file's
    T axis is ever read as cells.
    """
    try:
        return bool(tif.is_ome) and _OWN_WRITER in (tif.pages.first.description or "")[:2000]
    except Exception:
        return False


def _series_layout(
    path: str, tif: tifffile.TiffFile, series: Any, single_channel: bool
) -> tuple[list[tuple[str, int]], int | None, int | None]:
    """The kept (axis, size) pairs of a series and the positions of its cell and channel axes.

    Uses the axes tifffile reports (ImageJ, OME, shaped series, ScanImage, ...). Refuses, with
    the reason, files whose axes do not fit a cell export: z-stacks and time series, colour
    images, axes that are neither cells nor channels, more than two such axes.
    """
    axes, shape = series.axes, tuple(series.shape)
    if _own_legacy_stack(tif):
        axes = axes.replace("T", "Q")
    described = f"axes {axes}, shape {shape}"
    if "Y" not in axes or "X" not in axes:
        raise NotACellImageError(path, f"no Y/X image axes ({described})")
    samples = shape[axes.index("S")] if "S" in axes else 1
    check_colour(path, series.keyframe, samples, samples_last=axes.endswith("S"))
    kept = [(ax, n) for ax, n in zip(axes, shape, strict=True) if n > 1 or ax in "YX"]
    physical = [(ax, n) for ax, n in kept if ax in _PHYSICAL_AXES]
    if physical:
        found = " × ".join(f"{n} {'planes' if ax == 'Z' else 'time points'}" for ax, n in physical)
        kinds = " and ".join(_PHYSICAL_AXES[ax] for ax, _ in physical)
        raise NotACellImageError(
            path,
            f"holds a {kinds} ({found}; {described}); a cell image has one 2-D plane per "
            "channel, and z-planes or time points are never read as channels or cells",
        )
    if "".join(ax for ax, _ in kept)[-2:] != "YX":
        raise NotACellImageError(path, f"unsupported axis order ({described})")
    extra = kept[:-2]
    other = [ax for ax, _ in extra if ax not in CELL_AXES + CHANNEL_AXES]
    if other:
        listed = ", ".join(_axis_words(ax) for ax in other)
        raise NotACellImageError(
            path,
            f"has an axis that is neither cells nor channels: {listed} ({described})",
        )
    if len(extra) > 2:
        raise NotACellImageError(
            path,
            f"{len(kept)}-D image ({described}); expected one cell (C, Y, X) or a stack of "
            "cells (N, C, Y, X)",
        )
    letters = [ax for ax, _ in extra]
    cell_axis = channel_axis = None
    if len(extra) == 2:
        channel_like = [k for k, ax in enumerate(letters) if ax in CHANNEL_AXES]
        if len(channel_like) == 2:
            raise NotACellImageError(path, f"two channel axes ({described})")
        channel_axis = channel_like[0] if channel_like else 1
        cell_axis = 1 - channel_axis
        if letters[cell_axis] not in CELL_AXES:
            raise NotACellImageError(path, f"no axis that can hold cells ({described})")
    elif len(extra) == 1:
        if letters[0] in CHANNEL_AXES or not single_channel:
            channel_axis = 0  # for a page sequence: provisional, may become cells (see caller)
        else:
            cell_axis = 0
    return kept, cell_axis, channel_axis


def _name_planes(tif: tifffile.TiffFile, plan: Plan, mm_axes: list[str] | None = None) -> None:
    """Set the plan's channel names, and the file's own plane names where those leave a gap
    (a page title or slice label that is not a channel name)."""
    plan.stored_names = stored_channel_names(tif, plan, mm_axes)
    if not plan.stored_names or not all(plan.stored_names):
        plan.plane_labels = stored_plane_labels(tif, plan, mm_axes)


def inspect_tiff(tif: tifffile.TiffFile, path: str, single_channel: bool, max_pixels: int) -> Plan:
    """Work out cells × channels of an open TIFF from its header (reads no pixels).

    ``single_channel``: the file's name names one channel (``cell7_BF.tif``), so a page
    sequence in it is a stack of cells; a declared channel axis (C) is still read as channels.
    """
    check_ome_plane_count(tif, path)
    plan = _inspect(tif, path, single_channel, max_pixels)
    check_declared_size(path, plan.nbytes, tif.filehandle.size)
    return plan


def _inspect(tif: tifffile.TiffFile, path: str, single_channel: bool, max_pixels: int) -> Plan:
    plan = _inspect_plain_pages(tif, path, single_channel, max_pixels)
    if plan is not None:
        return plan
    require_resolved_name(tif, path)  # tifffile's series may look for files beside it
    series = list(tif.series)
    if not series:
        raise DeparrayReadError(path, "holds no image data")
    if len(series) > 1:
        return _inspect_multiseries(tif, path, series, single_channel, max_pixels)

    only = series[0]
    keyframe = only.keyframe
    kept, cell_axis, channel_axis = _series_layout(path, tif, only, single_channel)
    check_series_fits(path, only, tif)
    axes, shape = only.axes, tuple(only.shape)
    height, width = shape[axes.index("Y")], shape[axes.index("X")]
    dtype = np.dtype(only.dtype)
    check_plane(path, height, width, dtype, max_pixels)
    check_tiles(path, [keyframe, *only.pages], max_pixels)
    check_codecs(path, [keyframe])
    mm_axes = micromanager_axes(path, only)
    kept_shape = tuple(n for _, n in kept)
    n_cells = kept_shape[cell_axis] if cell_axis is not None else 1
    n_channels = kept_shape[channel_axis] if channel_axis is not None else 1
    page_index = _page_indexer(only, axes, shape, kept, cell_axis, channel_axis)
    plan = Plan(
        n_cells=n_cells,
        n_channels=n_channels,
        height=height,
        width=width,
        dtype=dtype,
        stored_names=None,
        pixel_size_um=None,
        series=series,
        kept_shape=kept_shape,
        cell_axis=cell_axis,
        channel_axis=channel_axis,
        page_index=page_index,
        declared_channels=channel_axis is not None and kept[channel_axis][0] in CHANNEL_AXES,
    )
    if not single_channel or plan.declared_channels:
        _name_planes(tif, plan, mm_axes)
    if (
        channel_axis is not None
        and len(kept) == 3
        and not plan.declared_channels
        and n_channels > MAX_CHANNELS_PER_CELL
        and not any(plan.stored_names or [])
    ):
        # a long unnamed page sequence in a file without channel token: cells, not channels
        plan.cell_axis, plan.channel_axis = plan.channel_axis, None
        plan.n_cells, plan.n_channels = n_channels, 1
        plan.stored_names = plan.plane_labels = None
        plan.page_index = _page_indexer(only, axes, shape, kept, plan.cell_axis, None)
    plan.pixel_size_um = pixel_size_um(tif, keyframe)
    return plan


#: tags of formats whose pages are not simply planes in order: CZ_LSMINFO (LSM), UIC1tag
#: (MetaMorph STK), IJMetadata (ImageJ), MicroManagerMetadata (per-page axes)
_SPECIAL_FORMAT_TAGS = tuple(
    tifffile.TIFF.TAGS[name]
    for name in ("CZ_LSMINFO", "UIC1tag", "IJMetadata", "MicroManagerMetadata")
)
#: tifffile page flags of formats that declare their own axes (read through tifffile's series)
_SPECIAL_FORMAT_FLAGS = (
    "is_ome",
    "is_imagej",
    "is_scanimage",
    "is_micromanager",
    "is_lsm",
    "is_stk",
    "is_fluoview",
    "is_nih",
    "is_mdgel",
    "is_sis",
    "is_vista",
)


@functools.lru_cache(maxsize=256)
def _shaped_as_a_plane(shaped: str) -> bool:
    """False when a tifffile shape description declares more than one plane (or is broken).

    Cached: the pages of an export share a handful of descriptions (``{"shape": [64, 64]}``).
    """
    try:
        shape = json.loads(shaped)["shape"] if shaped[:1] == "{" else ()
    except Exception:
        return False
    return sum(1 for n in shape if n > 1) <= 2


def _plain_page_shape(page: Any) -> bool:
    """True when a page is a grey 2-D plane whose description declares nothing larger."""
    if page.samplesperpixel != 1 or len(page.shape) != 2 or page.dtype is None:
        return False
    if int(page.photometric) not in (0, 1):  # grey (min-is-white / min-is-black) only
        return False
    if any(getattr(page, flag, False) for flag in _SPECIAL_FORMAT_FLAGS):
        return False
    shaped = page.shaped_description
    if shaped is not None:
        check = _shaped_as_a_plane if len(shaped) <= 4096 else _shaped_as_a_plane.__wrapped__
        if not check(shaped):
            return False
    tags = page.tags
    return not any(code in tags for code in _SPECIAL_FORMAT_TAGS)


def _inspect_plain_pages(
    tif: tifffile.TiffFile, path: str, single_channel: bool, max_pixels: int
) -> Plan | None:
    """Fast path: a plain TIFF whose pages are 2-D grey planes; ``None`` if it is not one.

    Avoids tifffile's series detection and full parsing of every page, which cost more than
    reading a small cell image: the pages after the first are read as frames of the first.
    """
    first = tif.pages.first
    if not _plain_page_shape(first):
        return None
    height, width = first.shape
    dtype = np.dtype(first.dtype)
    check_plane(path, height, width, dtype, max_pixels)
    listed = plain_page_list(tif, path, first)
    if listed is not None:
        pages, page_names, descriptions = listed
    else:
        pages = []
        # bounded by the pages the survey counted (open_tiff): tifffile's iterator never ends
        # on a chain that loops
        for page in itertools.islice(tif.pages, page_limit(tif)):
            if not isinstance(page, tifffile.TiffPage) or page.is_reduced:
                continue
            if page.samplesperpixel != 1 or len(page.shape) != 2 or page.dtype is None:
                return None  # let the series path explain what it is
            pages.append(page)
        shapes = [tuple(page.shape) for page in pages]
        if len(set(shapes)) > 1:
            listed_shapes = ", ".join(f"page {i}: {h}×{w}" for i, (h, w) in enumerate(shapes[:8]))
            raise NotACellImageError(path, f"planes differ in size ({listed_shapes})")
        dtypes = {np.dtype(page.dtype) for page in pages}
        if len(dtypes) > 1:
            listed_types = ", ".join(map(str, sorted(dtypes, key=str)))
            raise NotACellImageError(path, f"planes differ in pixel type ({listed_types})")
        page_names = [tag_text(page, PAGE_NAME) for page in pages]
        descriptions = [tag_text(page, IMAGE_DESCRIPTION) for page in pages]
    # the fast page list already checked that every page has the first page's layout tags
    check_tiles(path, pages if listed is None else [first], max_pixels)
    check_codecs(path, pages if listed is None else [first])
    plan = Plan(1, 1, height, width, dtype, None, pixel_size_um(tif, first), series=[])
    plan.pages, plan.page_names, plan.page_descriptions = pages, page_names, descriptions
    return _one_plane_each(tif, plan, len(pages), single_channel)


def _one_plane_each(tif: tifffile.TiffFile, plan: Plan, count: int, single_channel: bool) -> Plan:
    """Finish the plan of a file whose ``count`` pages (or series) are one plane each.

    In a file named for one channel they are cells; otherwise channels, named from the file,
    except that a run of more than :data:`MAX_CHANNELS_PER_CELL` planes that the file does not
    name is a stack of cells.
    """
    if single_channel:
        plan.n_cells, plan.n_channels = count, 1
        return plan
    plan.n_cells, plan.n_channels = 1, count
    _name_planes(tif, plan)
    if count > MAX_CHANNELS_PER_CELL and not any(plan.stored_names or []):
        plan.n_cells, plan.n_channels, plan.stored_names = count, 1, None
        plan.plane_labels = None
    return plan


def _page_indexer(
    series: Any,
    axes: str,
    shape: tuple[int, ...],
    kept: list[tuple[str, int]],
    cell_axis: int | None,
    channel_axis: int | None,
) -> Callable[[int, int], int] | None:
    """Map (cell, channel) to a page index of the series when each page is one plane."""
    non_yx = [(ax, n) for ax, n in zip(axes, shape, strict=True) if ax not in "YXS"]
    if "S" in axes and shape[axes.index("S")] > 1:
        return None
    n_planes = math.prod(n for _, n in non_yx)
    try:
        n_pages = len(series.pages)
    except Exception:
        return None
    if n_pages != n_planes:
        return None
    # positions of the kept N / C axes inside the full non-YX shape
    kept_positions = [
        i for i, (ax, n) in enumerate(zip(axes, shape, strict=True)) if n > 1 or ax in "YX"
    ]
    full_non_yx_positions = [i for i, ax in enumerate(axes) if ax not in "YXS"]

    def to_full(kept_axis: int | None) -> int | None:
        if kept_axis is None:
            return None
        return full_non_yx_positions.index(kept_positions[kept_axis])

    n_full, c_full = to_full(cell_axis), to_full(channel_axis)
    dims = tuple(n for _, n in non_yx)

    def index(cell: int, channel: int) -> int:
        multi = [0] * len(dims)
        if n_full is not None:
            multi[n_full] = cell
        if c_full is not None:
            multi[c_full] = channel
        return int(np.ravel_multi_index(multi, dims)) if dims else 0

    return index


def _inspect_multiseries(
    tif: tifffile.TiffFile, path: str, series: list, single_channel: bool, max_pixels: int
) -> Plan:
    """Pages each in their own series: every series must be one grey 2-D plane."""
    shapes = []
    for number, item in enumerate(series):
        axes, shape = item.axes, tuple(item.shape)
        samples = shape[axes.index("S")] if "S" in axes else 1
        check_colour(path, item.keyframe, samples, samples_last=axes.endswith("S"))
        squeezed = tuple(n for ax, n in zip(axes, shape, strict=True) if n > 1 or ax in "YX")
        if len(squeezed) != 2:
            raise NotACellImageError(
                path,
                f"holds {len(series)} image series and series {number} is not a single plane "
                f"(axes {axes}, shape {shape}); expected one plane per channel",
            )
        shapes.append(squeezed)
    dtypes = {np.dtype(item.dtype) for item in series}
    if len(set(shapes)) > 1:
        listed = ", ".join(f"page {i}: {h}×{w}" for i, (h, w) in enumerate(shapes))
        raise NotACellImageError(path, f"channel planes differ in size ({listed})")
    if len(dtypes) > 1:
        raise NotACellImageError(
            path, f"channel planes differ in pixel type ({', '.join(map(str, dtypes))})"
        )
    height, width = shapes[0]
    dtype = dtypes.pop()
    check_plane(path, height, width, dtype, max_pixels)
    check_tiles(path, (page for item in series for page in item.pages), max_pixels)
    check_codecs(path, (item.keyframe for item in series))
    size = pixel_size_um(tif, series[0].keyframe)
    plan = Plan(1, 1, height, width, dtype, None, size, series=series)
    return _one_plane_each(tif, plan, len(series), single_channel)
