"""Discovery and reading of DEPArray single-cell image exports.

The instrument's export format is not publicly documented, so the reader accepts the layouts
in which such exports are found, detected from file names and TIFF headers:

1. **One TIFF per cell, channels inside** (``cell0012.tif``): the channels are pages (each page
   its own series, or all pages one series), a C axis of one series, or the planar samples of
   one page. Channel names come from OME-XML ``Channel@Name``, ImageJ ``Labels``, the TIFF
   ``PageName`` tag (285) or a short ``ImageDescription``, in that order, else from the channel
   map / default order (see :mod:`napari_deparray_ctc.core.channels`).
2. **One single-channel TIFF per channel per cell** with the channel as a token of the file name
   (``cell0012_BF.tif``, ``cell0012-DAPI.tiff``, ``DAPI cell 12.tif``); the rest of the name is
   the cell id that groups the files.
3. **A folder** of either, optionally with one sub-folder per class (``CTC/``, ``WBC/`` and
   aliases, see :mod:`napari_deparray_ctc.core.labels`) and/or a ``labels.csv`` (overrides the
   folder's class) and a ``channels.csv``/``channels.txt`` channel map, beside the files or in a
   parent folder that was opened. Sub-folders are searched up to :data:`MAX_FOLDER_DEPTH` deep;
   symbolic-link loops are skipped.
4. **A multi-cell stack**: one file shaped (N, C, Y, X), or one file per channel shaped
   (N, Y, X) with a channel token in its name (``stack_BF.tif``, ``stack_DAPI.tif``). Cell ids
   are ``<name>_0000``, ``<name>_0001``, ...

Pixel types: 8, 16 (incl. 12-bit data in 16-bit), 32-bit integers and 16/32/64-bit floats,
any byte order, uncompressed, LZW, zlib/deflate, packbits, strips or tiles. Arrays are returned
in their native dtype and native byte order.

Bad input never crashes the caller: every problem is a :class:`DeparrayReadError` naming the
file and the reason. In a folder, a bad file is *skipped* (listed in ``skipped``) while the good
cells are read. Refused: empty, truncated and non-TIFF files; interleaved RGB (``YXS``) and
palette colour images (planar samples, ``SYX``, are read as channels);
images with more than four dimensions; planes larger than :data:`MAX_PIXELS_PER_PLANE` pixels
or smaller than :data:`MIN_SIDE_PX` pixels a side (checked from the header *before* any pixel is
read); float channels with no finite value; channels of different sizes within one cell; a cell
without a bright-field (``BF``) channel; a second cell with an id already taken in the same
folder.

Speed: plain multi-page files are read without tifffile's series detection (the pages after
the first are read as frames of the first, after checking that their layout matches), so
reading a folder costs about as much as bare ``tifffile.imread`` calls on the same files
(``benchmarks/bench_reader.py``). Discovery reads file names, and at most a few headers per
folder. :func:`read_cell` keeps a few multi-cell stack files open between calls (see
:func:`release_open_files`), so reading a stack cell by cell is not quadratic.

Nothing here imports torch, napari or Qt.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import re
import struct
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tifffile

from napari_deparray_ctc.core.channels import (
    CANONICAL_CHANNELS,
    ChannelMap,
    ChannelMapError,
    as_channel_map,
    canonical_channel,
    find_channel_map,
    load_channel_map,
    order_channels,
    resolve_plane_names,
    split_channel_token,
    tokenize,
)
from napari_deparray_ctc.core.errors import DeparrayReadError, printable_path
from napari_deparray_ctc.core.labels import (
    LabelRecord,
    LabelsFileError,
    class_from_folder_name,
    read_labels_csv,
)

__all__ = [
    "MAX_CHANNELS_PER_CELL",
    "MAX_FOLDER_DEPTH",
    "MAX_PIXELS_PER_PLANE",
    "MIN_SIDE_PX",
    "TIFF_SUFFIXES",
    "Cell",
    "CellSource",
    "DeparrayReadError",
    "Export",
    "discover_cells",
    "format_skipped",
    "is_probably_deparray",
    "iter_cells",
    "read_cell",
    "read_export",
    "release_open_files",
    "stack_channel",
]

MAX_PIXELS_PER_PLANE: int = 4096 * 4096
"""Largest plane (height × width) read; larger images are refused from their header."""

MIN_SIDE_PX: int = 4
"""Smallest accepted plane side in pixels (a 1×1 image is not a cell image)."""

MAX_CHANNELS_PER_CELL: int = 8
"""An unnamed page sequence longer than this in a file without channel token is a stack."""

MAX_FOLDER_DEPTH: int = 4
"""How many folder levels below an opened folder are searched."""

MAX_WHOLE_READ_BYTES: int = 256 * 1024**2
"""Stacks up to this size are read in one go; larger ones cell by cell."""

TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
"""File name endings taken as TIFF (case-insensitive; ``.ome.tif`` included)."""

LABELS_FILENAME = "labels.csv"

_OTHER_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".jp2", ".czi", ".nd2", ".lif")
_NOT_IMAGE_SUFFIXES = (
    ".csv",
    ".txt",
    ".json",
    ".xml",
    ".md",
    ".log",
    ".yaml",
    ".yml",
    ".ini",
    ".pdf",
    ".html",
    ".zip",
    ".pt",
    ".pth",
    ".py",
)
_DEPARRAY_NAME_RE = re.compile(
    r"(?i)(?<![a-z])(?:cells?|ctcs?|wbcs?|deparray)[\s_\-#]*\d+|deparray"
)
_NATURAL_SPLIT_RE = re.compile(r"(\d+)")
_ALLOWED_KINDS = "uif"


# --------------------------------------------------------------------------------------------
# public data types


class _MultiCellFileError(DeparrayReadError):
    """A file discovered as one cell holds several (raised by :func:`read_cell`)."""

    def __init__(self, path: str, n_cells: int) -> None:
        super().__init__(
            path,
            f"holds {n_cells} cells (a multi-cell stack) but was found as a single cell; "
            "open the stack file on its own",
        )
        self.n_cells = n_cells


@dataclass
class CellSource:
    """Where one cell's images are; found without reading pixels.

    Attributes
    ----------
    cell_id
        Cell id (file name without extension and without the channel token; ``<name>_0007``
        for the eighth cell of a stack). Unique within one discovery.
    files
        Channel -> file path in the one-file-per-channel layouts; empty otherwise.
    path
        The multichannel file (or stack file); in the per-channel layouts the bright-field file
        (else the first channel file), so that it is always a usable representative path.
    stack_index
        Index of the cell inside a multi-cell stack file, else ``None``.
    label
        ``"CTC"``, ``"WBC"`` or ``None``, from the class folder or ``labels.csv``.
    group
        Sample / patient id from ``labels.csv`` (column ``sample``/``group``), else ``None``.
    channel_map
        The channel map that applies (the caller's, or the nearest ``channels.csv``/``.txt``),
        or ``None``. *Extension of the documented contract; defaults keep it compatible.*
    """

    cell_id: str
    files: dict[str, str] = field(default_factory=dict)
    path: str = ""
    stack_index: int | None = None
    label: str | None = None
    group: str | None = None
    channel_map: ChannelMap | None = field(default=None, repr=False)


@dataclass
class Cell:
    """One cell's channels, read into memory.

    Attributes
    ----------
    cell_id, path, label, group
        As in :class:`CellSource`.
    channels
        Canonical channel name -> 2-D array in the file's dtype (native byte order), in display
        order (see :func:`napari_deparray_ctc.core.channels.order_channels`).
    pixel_size_um
        Pixel size in micrometres from OME ``PhysicalSizeX``, ImageJ or TIFF resolution tags,
        else ``None``.
    original_shape
        ``(height, width)`` as stored in the file.
    """

    cell_id: str
    channels: dict[str, np.ndarray]
    path: str
    label: str | None = None
    group: str | None = None
    pixel_size_um: float | None = None
    original_shape: tuple[int, int] = (0, 0)


@dataclass
class Export:
    """Everything read from one or more paths.

    Attributes
    ----------
    cells
        The cells read, in discovery order (folder, then natural name order).
    skipped
        ``(path, reason)`` for every file or cell that could not be read.
    channels
        Channel names present in any cell, in display order.
    """

    cells: list[Cell]
    skipped: list[tuple[str, str]]
    channels: list[str]

    @property
    def cell_ids(self) -> list[str]:
        """Cell ids, aligned with :attr:`cells`."""
        return [cell.cell_id for cell in self.cells]


# --------------------------------------------------------------------------------------------
# small helpers


def _printable(path: str) -> str:
    return printable_path(path)


def _is_tiff_name(name: str) -> bool:
    return name.lower().endswith(TIFF_SUFFIXES)


def _stem(name: str) -> str:
    base = os.path.basename(name)
    lower = base.lower()
    for suffix in (".ome.tiff", ".ome.tif", *TIFF_SUFFIXES):
        if lower.endswith(suffix):
            return base[: -len(suffix)]
    return os.path.splitext(base)[0]


def _natural_key(text: str) -> tuple:
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part.lower())
        for part in _NATURAL_SPLIT_RE.split(text)
        if part
    )


def _group_key(text: str) -> str:
    return "_".join(tokenize(text))


def _looks_like_tiff_magic(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _as_path_list(paths: Any) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def _resolve_limit(max_pixels: int | None) -> int:
    return MAX_PIXELS_PER_PLANE if max_pixels is None else int(max_pixels)


def _error_from_exception(path: str, exc: BaseException) -> DeparrayReadError:
    """Turn whatever reading raised into a DeparrayReadError with a readable reason."""
    if isinstance(exc, DeparrayReadError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return DeparrayReadError(path, "file not found")
    if isinstance(exc, PermissionError):
        return DeparrayReadError(path, "permission denied (cannot open the file)")
    if isinstance(exc, IsADirectoryError):
        return DeparrayReadError(path, "is a folder, not a file")
    if isinstance(exc, MemoryError):
        return DeparrayReadError(path, "not enough memory to read the image")
    try:
        size = os.path.getsize(path)
    except OSError:
        size = -1
    if size == 0:
        return DeparrayReadError(path, "empty file (0 bytes)")
    message = str(exc)
    if isinstance(exc, tifffile.TiffFileError) and "not a TIFF" in message:
        return DeparrayReadError(path, "not a TIFF file")
    if "imagecodecs" in message:
        return DeparrayReadError(
            path,
            "this compression needs the 'imagecodecs' package (pip install imagecodecs)",
        )
    if isinstance(exc, OSError) and not isinstance(exc, tifffile.TiffFileError):
        return DeparrayReadError(path, f"cannot read the file ({exc.strerror or exc})")
    return DeparrayReadError(
        path, f"corrupt or truncated TIFF ({type(exc).__name__}: {message[:200]})"
    )


# --------------------------------------------------------------------------------------------
# TIFF header inspection (no pixel reads)


@dataclass
class _Plan:
    """How one TIFF file maps onto (cells, channels, Y, X), from its header only."""

    n_cells: int
    n_channels: int
    height: int
    width: int
    dtype: np.dtype
    stored_names: list[str | None] | None
    pixel_size_um: float | None
    series: list[Any]
    # single-series layout: series shape without singleton axes, and where N and C are in it
    kept_shape: tuple[int, ...] = ()
    cell_axis: int | None = None
    channel_axis: int | None = None
    # page index (within series[0]) of each plane, when pages are planes
    page_index: Callable[[int, int], int] | None = None
    # "page mode": plain files whose pages are the planes, in order (no series parsing)
    pages: list[Any] | None = None
    page_names: list[str | None] | None = None
    page_descriptions: list[str | None] | None = None

    @property
    def nbytes(self) -> int:
        return self.n_cells * self.n_channels * self.height * self.width * self.dtype.itemsize


def _check_plane(path: str, height: int, width: int, dtype: np.dtype, max_pixels: int) -> None:
    if dtype.kind not in _ALLOWED_KINDS:
        raise DeparrayReadError(path, f"unsupported pixel type {dtype} (need integer or float)")
    if height * width > max_pixels:
        side = math.isqrt(max_pixels)
        raise DeparrayReadError(
            path,
            f"image is {height}×{width} px, above the limit of {max_pixels:,} px per plane "
            f"(about {side}×{side}); not read to keep memory bounded "
            "(raise max_pixels to read it anyway)",
        )
    if height < MIN_SIDE_PX or width < MIN_SIDE_PX:
        raise DeparrayReadError(path, f"image is {height}×{width} px, too small for a cell image")


def _check_tiles(path: str, pages: Iterable[Any], max_pixels: int) -> None:
    """Refuse tiles larger than the largest plane read (a damaged TileWidth/TileLength).

    tifffile allocates a buffer per tile from these tags: one flipped bit in a 4 kB file
    asked for a 32 × 16,777,232 px tile, a gigabyte (found by fuzzing).
    """
    for page in pages:
        if not isinstance(page, tifffile.TiffPage) or not page.is_tiled:
            continue
        tile_pixels = page.tilewidth * page.tilelength * max(1, page.tiledepth)
        if tile_pixels > max_pixels:
            raise DeparrayReadError(
                path,
                f"corrupt tile size {page.tilelength}×{page.tilewidth} px (more than the "
                f"{max_pixels:,} px limit per plane)",
            )


def _refuse_colour(path: str, page: Any, samples_last: bool) -> None:
    photometric = int(getattr(page, "photometric", 1))
    if photometric == 3:
        raise DeparrayReadError(path, "palette colour image; channels must be grey-level planes")
    if samples_last:
        kind = {2: "RGB", 6: "YCbCr"}.get(photometric, "multi-sample")
        raise DeparrayReadError(
            path,
            f"{kind} colour image ({page.samplesperpixel} samples per pixel); DEPArray channels "
            "must be grey-level planes (one page or C-axis plane per channel)",
        )


_OME_PIXELS_RE = re.compile(r"<(?:\w+:)?Pixels\b[^>]*>")
_OME_PLANE_SIZE_RE = re.compile(r"\bSize([CZT])\s*=\s*[\"'](\d+)[\"']")
_MIN_OME_PLANE_LIMIT = 10_000


def _check_ome_plane_count(tif: tifffile.TiffFile, path: str) -> None:
    """Refuse OME-XML that declares far more image planes than the file can hold.

    tifffile builds Python lists as long as the declared SizeC × SizeZ × SizeT when it parses
    the OME series: a 1 kB file declaring 10**7 planes took minutes and gigabytes of memory
    (found by fuzzing). Each plane needs its own IFD (tens of bytes at least), so more than
    ``file size / 64`` planes (and more than :data:`_MIN_OME_PLANE_LIMIT`) is corrupt metadata.
    """
    try:
        if not tif.is_ome:
            return
        xml = tif.pages.first.description
    except Exception:  # tifffile reports unreadable headers itself, later
        return
    declared = 0
    for pixels in _OME_PIXELS_RE.finditer(xml):
        planes = 1
        for _axis, size in _OME_PLANE_SIZE_RE.findall(pixels.group(0)):
            planes *= max(1, int(size))
        declared += planes
    limit = max(_MIN_OME_PLANE_LIMIT, tif.filehandle.size // 64)
    if declared > limit:
        raise DeparrayReadError(
            path,
            f"corrupt OME-XML metadata: it declares {declared:,} image planes, more than a "
            f"file of {tif.filehandle.size:,} bytes can hold",
        )


def _check_series_fits(path: str, series: Any, tif: tifffile.TiffFile) -> None:
    """Refuse a series whose metadata declares more image planes than the file holds.

    tifffile trusts shape metadata (a ``{"shape": [...]}`` description, ImageJ ``images=``):
    a one-page file declaring 10**8 or 10**9 planes became that many cells here and ran out of
    memory (found by fuzzing). A series may declare more planes than the file has pages (IFDs)
    only when its data is stored contiguously, uncompressed, and then it must fit in the file.
    """
    axes, shape = series.axes, tuple(series.shape)
    planes = math.prod(n for ax, n in zip(axes, shape, strict=True) if ax not in "YXS")
    n_pages = len(tif.pages)  # the IFDs really in the file
    file_size = tif.filehandle.size
    if planes <= n_pages or series.nbytes <= file_size:
        return
    raise DeparrayReadError(
        path,
        f"corrupt metadata: it declares {planes:,} image planes (shape {shape}) but the file "
        f"holds {n_pages:,} page(s) and {file_size:,} bytes",
    )


def _inspect(tif: tifffile.TiffFile, path: str, single_channel: bool, max_pixels: int) -> _Plan:
    """Work out cells × channels of an open TIFF from its header (reads no pixels)."""
    _check_ome_plane_count(tif, path)
    plan = _inspect_plain_pages(tif, path, single_channel, max_pixels)
    if plan is not None:
        return plan
    series = list(tif.series)
    if not series:
        raise DeparrayReadError(path, "holds no image data")
    if len(series) > 1:
        return _inspect_multiseries(tif, path, series, single_channel, max_pixels)

    only = series[0]
    _check_series_fits(path, only, tif)
    axes, shape = only.axes, tuple(only.shape)
    keyframe = only.keyframe
    if "S" in axes and shape[axes.index("S")] > 1:
        _refuse_colour(path, keyframe, samples_last=axes.index("S") == len(axes) - 1)
    elif int(getattr(keyframe, "photometric", 1)) == 3:
        _refuse_colour(path, keyframe, samples_last=False)
    if "Y" not in axes or "X" not in axes:
        raise DeparrayReadError(path, f"no Y/X image axes (axes {axes!r}, shape {shape})")
    kept = [(ax, n) for ax, n in zip(axes, shape, strict=True) if n > 1 or ax in "YX"]
    kept_axes = "".join(ax for ax, _ in kept)
    if not kept_axes.endswith("YX"):
        raise DeparrayReadError(path, f"unsupported axis order {axes!r} (shape {shape})")
    height, width = shape[axes.index("Y")], shape[axes.index("X")]
    dtype = np.dtype(only.dtype)
    _check_plane(path, height, width, dtype, max_pixels)
    _check_tiles(path, [keyframe, *only.pages], max_pixels)
    extra = [(i, ax, n) for i, (ax, n) in enumerate(kept[:-2])]
    kept_shape = tuple(n for _, n in kept)
    cell_axis = channel_axis = None
    if len(extra) > 2:
        raise DeparrayReadError(
            path,
            f"{len(kept)}-D image (shape {shape}, axes {axes!r}); expected one cell (C, Y, X) "
            "or a stack of cells (N, C, Y, X)",
        )
    if len(extra) == 2:
        if single_channel:
            raise DeparrayReadError(
                path,
                f"4-D image (shape {shape}) in a file named for a single channel; "
                "expected (Y, X) or a stack (N, Y, X)",
            )
        letters = [ax for _, ax, _ in extra]
        c_pos = next((k for k, ax in enumerate(letters) if ax in "CS"), 1)
        channel_axis = extra[c_pos][0]
        cell_axis = extra[1 - c_pos][0]
    elif len(extra) == 1:
        position = extra[0][0]
        if single_channel:
            cell_axis = position
        else:
            channel_axis = position  # provisional; may become a stack below
    n_cells = kept_shape[cell_axis] if cell_axis is not None else 1
    n_channels = kept_shape[channel_axis] if channel_axis is not None else 1

    page_index = _page_indexer(only, axes, shape, kept, cell_axis, channel_axis)
    plan = _Plan(
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
    )
    if not single_channel:
        plan.stored_names = _stored_channel_names(tif, plan)
        if (
            len(extra) == 1
            and extra[0][1] not in "CS"
            and n_channels > MAX_CHANNELS_PER_CELL
            and not any(plan.stored_names or [])
        ):
            # a long unnamed page sequence in a file without channel token: cells, not channels
            plan.cell_axis, plan.channel_axis = plan.channel_axis, None
            plan.n_cells, plan.n_channels = n_channels, 1
            plan.stored_names = None
            plan.page_index = _page_indexer(only, axes, shape, kept, plan.cell_axis, None)
    plan.pixel_size_um = _pixel_size_um(tif, keyframe)
    return plan


_SPECIAL_FORMAT_TAGS = (34412, 33628, 50839)  # LSM info, MetaMorph STK, ImageJ meta data


def _plain_page_shape(page: Any) -> bool:
    """True when a page is a grey 2-D plane whose description declares nothing larger."""
    if page.samplesperpixel != 1 or len(page.shape) != 2 or page.dtype is None:
        return False
    if int(page.photometric) not in (0, 1):  # grey (min-is-white / min-is-black) only
        return False
    if page.is_ome or page.is_imagej:
        return False
    shaped = page.shaped_description
    if shaped is not None:
        try:
            shape = json.loads(shaped)["shape"] if shaped[:1] == "{" else ()
        except Exception:
            return False
        if sum(1 for n in shape if n > 1) > 2:
            return False
    tags = page.tags
    return not any(code in tags for code in _SPECIAL_FORMAT_TAGS)


_IFD_TYPE_FORMATS = {1: "B", 2: "s", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i", 13: "I"}
_IFD_TYPE_FORMATS.update({16: "Q", 17: "q", 18: "Q"})
_IFD_ITEM_SIZES = {kind: struct.calcsize(item) for kind, item in _IFD_TYPE_FORMATS.items()}


@functools.lru_cache(maxsize=64)
def _single_item(byteorder: str, item: str) -> struct.Struct:
    return struct.Struct(byteorder + item)


# tags that must match the first page for a page to be decoded like it
_LAYOUT_TAGS = (256, 257, 258, 259, 262, 277, 278, 284, 317, 322, 323, 339)
_IFD_CODES = frozenset((*_LAYOUT_TAGS, 254, 270, 273, 279, 285, 324, 325, 330, 347))
_MAX_PAGES = 1_000_000
_MAX_TAG_BYTES = 16 * 1024**2


def _scan_ifd(tif: tifffile.TiffFile, offset: int) -> tuple[dict[int, Any], int] | None:
    """Minimal IFD parser: the few tags needed to compare pages, their names and data offsets.

    Returns ``(values, next_ifd_offset)``, or ``None`` when anything is unusual (the caller then
    falls back to tifffile's full page parsing, which also produces the precise error).
    """
    handle = tif.filehandle
    fmt = tif.tiff
    try:
        handle.seek(offset)
        (count,) = struct.unpack(fmt.tagnoformat, handle.read(fmt.tagnosize))
        if count > 4096:
            return None
        block = handle.read(fmt.tagsize * count + fmt.offsetsize)
        if len(block) < fmt.tagsize * count + fmt.offsetsize:
            return None
        values: dict[int, Any] = {}
        entries = struct.iter_unpack(fmt.tagheaderformat, block[: fmt.tagsize * count])
        for code, kind, n_items, raw in entries:
            if code not in _IFD_CODES:
                continue
            item = _IFD_TYPE_FORMATS.get(kind)
            if item is None:
                return None
            size = n_items * _IFD_ITEM_SIZES[kind]
            if size > _MAX_TAG_BYTES:
                return None
            if size > fmt.tagoffsetthreshold:
                (position,) = struct.unpack(fmt.offsetformat, raw)
                handle.seek(position)
                raw = handle.read(size)
                if len(raw) < size:
                    return None
            else:
                raw = raw[:size]
            if kind == 2:
                values.setdefault(code, raw.split(b"\0", 1)[0].decode("utf-8", "replace"))
            elif n_items == 1:
                values[code] = _single_item(fmt.byteorder, item).unpack(raw)
            else:
                values[code] = struct.unpack(f"{fmt.byteorder}{n_items}{item}", raw)
        position = fmt.tagsize * count
        (next_offset,) = struct.unpack(
            fmt.offsetformat, block[position : position + fmt.offsetsize]
        )
        return values, next_offset
    except (struct.error, OSError, ValueError):
        return None


def _next_ifd_offset(tif: tifffile.TiffFile, offset: int) -> int | None:
    """Offset of the IFD after the one at ``offset`` (0 at the last page), or ``None``."""
    handle = tif.filehandle
    fmt = tif.tiff
    try:
        handle.seek(offset)
        (count,) = struct.unpack(fmt.tagnoformat, handle.read(fmt.tagnosize))
        handle.seek(offset + fmt.tagnosize + count * fmt.tagsize)
        return struct.unpack(fmt.offsetformat, handle.read(fmt.offsetsize))[0]
    except (struct.error, OSError, ValueError):
        return None


def _plain_page_list(
    tif: tifffile.TiffFile, path: str, first: Any
) -> tuple[list[Any], list[str | None], list[str | None]] | None:
    """All main pages as (first page + virtual frames), with their PageName and description.

    ``None`` when a page differs from the first in layout or anything is unusual; the caller
    then loads full pages with tifffile.
    """
    if _next_ifd_offset(tif, first.offset) == 0:  # single page: nothing to compare
        return [first], [_tag_text(first, 285)], [_tag_text(first, 270)]
    scanned = _scan_ifd(tif, first.offset)
    if scanned is None or 330 in scanned[0] or 347 in scanned[0]:
        return None
    first_values, next_offset = scanned
    layout = [first_values.get(code) for code in _LAYOUT_TAGS]
    pages: list[Any] = [first]
    page_names: list[str | None] = [first_values.get(285)]
    descriptions: list[str | None] = [first_values.get(270)]
    seen = {first.offset}
    size = tif.filehandle.size
    while next_offset:
        if next_offset >= size:
            raise DeparrayReadError(
                path,
                f"truncated file: page {len(pages)} would start at byte {next_offset}, "
                f"beyond the end of the file ({size} bytes)",
            )
        if next_offset in seen or len(pages) >= _MAX_PAGES:
            return None
        seen.add(next_offset)
        scanned = _scan_ifd(tif, next_offset)
        if scanned is None:
            return None
        values, following = scanned
        if values.get(254, (0,))[0] & 1:  # reduced-resolution page (thumbnail)
            next_offset = following
            continue
        if [values.get(code) for code in _LAYOUT_TAGS] != layout or 330 in values:
            return None
        offsets = values.get(324) or values.get(273)
        counts = values.get(325) or values.get(279)
        if not offsets or not counts or len(offsets) != len(counts) or 347 in values:
            return None
        frame = tifffile.TiffFrame(
            tif,
            index=len(pages),
            offset=next_offset,
            keyframe=first,
            dataoffsets=tuple(offsets),
            databytecounts=tuple(counts),
        )
        pages.append(frame)
        page_names.append(values.get(285))
        descriptions.append(values.get(270))
        next_offset = following
    return pages, page_names, descriptions


def _inspect_plain_pages(
    tif: tifffile.TiffFile, path: str, single_channel: bool, max_pixels: int
) -> _Plan | None:
    """Fast path: a plain TIFF whose pages are 2-D grey planes; ``None`` if it is not one.

    Avoids tifffile's series detection and full parsing of every page, which cost more than
    reading a small cell image: the pages after the first are read as frames of the first.
    """
    first = tif.pages.first
    if not _plain_page_shape(first):
        return None
    height, width = first.shape
    dtype = np.dtype(first.dtype)
    _check_plane(path, height, width, dtype, max_pixels)
    listed = _plain_page_list(tif, path, first)
    if listed is not None:
        pages, page_names, descriptions = listed
    else:
        pages = []
        for page in tif.pages:
            if not isinstance(page, tifffile.TiffPage) or page.is_reduced:
                continue
            if page.samplesperpixel != 1 or len(page.shape) != 2 or page.dtype is None:
                return None  # let the series path explain what it is
            pages.append(page)
        shapes = [tuple(page.shape) for page in pages]
        if len(set(shapes)) > 1:
            listed_shapes = ", ".join(f"page {i}: {h}×{w}" for i, (h, w) in enumerate(shapes[:8]))
            raise DeparrayReadError(path, f"planes differ in size ({listed_shapes})")
        dtypes = {np.dtype(page.dtype) for page in pages}
        if len(dtypes) > 1:
            listed_types = ", ".join(map(str, sorted(dtypes, key=str)))
            raise DeparrayReadError(path, f"planes differ in pixel type ({listed_types})")
        page_names = [_tag_text(page, 285) for page in pages]
        descriptions = [_tag_text(page, 270) for page in pages]
    # the fast page list already checked that every page has the first page's layout tags
    _check_tiles(path, pages if listed is None else [first], max_pixels)
    count = len(pages)
    plan = _Plan(
        n_cells=count if single_channel else 1,
        n_channels=1 if single_channel else count,
        height=height,
        width=width,
        dtype=dtype,
        stored_names=None,
        pixel_size_um=_pixel_size_um(tif, first),
        series=[],
        pages=pages,
        page_names=page_names,
        page_descriptions=descriptions,
    )
    if not single_channel:
        plan.stored_names = _stored_channel_names(tif, plan)
        if count > MAX_CHANNELS_PER_CELL and not any(plan.stored_names or []):
            plan.n_cells, plan.n_channels, plan.stored_names = count, 1, None
    return plan


def _tag_text(page: Any, code: int) -> str | None:
    tags = getattr(page, "tags", None)
    tag = tags.get(code) if tags is not None else None
    if tag is None or not isinstance(tag.value, str):
        return None
    return tag.value


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
) -> _Plan:
    """Pages each in their own series: every series must be one grey 2-D plane."""
    shapes = []
    for number, item in enumerate(series):
        axes, shape = item.axes, tuple(item.shape)
        if "S" in axes and shape[axes.index("S")] > 1:
            _refuse_colour(path, item.keyframe, samples_last=axes.index("S") == len(axes) - 1)
        squeezed = tuple(n for ax, n in zip(axes, shape, strict=True) if n > 1 or ax in "YX")
        if len(squeezed) != 2:
            raise DeparrayReadError(
                path,
                f"holds {len(series)} image series and series {number} is not a single plane "
                f"(shape {shape}); expected one plane per channel",
            )
        shapes.append(squeezed)
    dtypes = {np.dtype(item.dtype) for item in series}
    if len(set(shapes)) > 1:
        listed = ", ".join(f"page {i}: {h}×{w}" for i, (h, w) in enumerate(shapes))
        raise DeparrayReadError(path, f"channel planes differ in size ({listed})")
    if len(dtypes) > 1:
        raise DeparrayReadError(
            path, f"channel planes differ in pixel type ({', '.join(map(str, dtypes))})"
        )
    height, width = shapes[0]
    dtype = dtypes.pop()
    _check_plane(path, height, width, dtype, max_pixels)
    _check_tiles(path, (page for item in series for page in item.pages), max_pixels)
    count = len(series)
    plan = _Plan(
        n_cells=count if single_channel else 1,
        n_channels=1 if single_channel else count,
        height=height,
        width=width,
        dtype=dtype,
        stored_names=None,
        pixel_size_um=_pixel_size_um(tif, series[0].keyframe),
        series=series,
    )
    if not single_channel:
        plan.stored_names = _stored_channel_names(tif, plan)
        if count > MAX_CHANNELS_PER_CELL and not any(plan.stored_names or []):
            plan.n_cells, plan.n_channels, plan.stored_names = count, 1, None
    return plan


# ---- channel names and pixel size from metadata


def _ome_info(tif: tifffile.TiffFile) -> tuple[list[list[str | None]], float | None]:
    """Channel names per OME Image and the first PhysicalSizeX in µm."""
    import xml.etree.ElementTree as ElementTree

    text = tif.ome_metadata
    if not text:
        return [], None
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return [], None
    names_per_image: list[list[str | None]] = []
    pixel_size = None
    for image in (el for el in root if el.tag.endswith("}Image") or el.tag == "Image"):
        pixels = next((el for el in image if el.tag.endswith("Pixels")), None)
        if pixels is None:
            continue
        channels = [el for el in pixels if el.tag.endswith("}Channel") or el.tag == "Channel"]
        names = [ch.get("Name") for ch in channels]
        if len(names) == 1 and not names[0]:
            names = [image.get("Name")]
        names_per_image.append(names)
        if pixel_size is None and pixels.get("PhysicalSizeX"):
            try:
                value = float(pixels.get("PhysicalSizeX", ""))
            except ValueError:
                value = float("nan")
            unit = pixels.get("PhysicalSizeXUnit", "µm")
            factor = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}.get(unit)
            if factor is not None and math.isfinite(value) and value > 0:
                pixel_size = value * factor
    return names_per_image, pixel_size


def _clean_description(text: str | None) -> str | None:
    if not text:
        return None
    text = text.strip()
    if (
        not text
        or len(text) > 48
        or "\n" in text
        or text[0] in "{<["
        or text.startswith(("ImageJ=", "Created", "Shaped"))
        or not text.isprintable()
    ):
        return None
    return text


def _channel_pages(plan: _Plan) -> list[Any] | None:
    """The page holding each channel plane of the first cell, or ``None`` if not page-aligned."""
    try:
        if plan.pages is not None:
            return plan.pages[: plan.n_channels]
        if len(plan.series) > 1:
            return [item.pages[0] for item in plan.series[: plan.n_channels]]
        if plan.page_index is None:
            return None
        pages = plan.series[0].pages
        return [pages[plan.page_index(0, c)] for c in range(plan.n_channels)]
    except Exception:
        return None


def _stored_channel_names(tif: tifffile.TiffFile, plan: _Plan) -> list[str | None] | None:
    """Channel names in the file: OME, ImageJ Labels, PageName, ImageDescription (in order)."""
    n = plan.n_channels
    if tif.is_ome:
        per_image, _ = _ome_info(tif)
        if len(plan.series) > 1 and len(per_image) >= n:
            names = [image[0] if image else None for image in per_image[:n]]
        elif per_image and len(per_image[0]) == n:
            names = per_image[0]
        else:
            names = []
        if any(names):
            return names
    if tif.is_imagej:
        labels = (tif.imagej_metadata or {}).get("Labels")
        if isinstance(labels, (list, tuple)) and labels:
            indices = (
                [plan.page_index(0, c) for c in range(n)]
                if plan.page_index is not None
                else list(range(n))
            )
            names = [
                str(labels[i]).splitlines()[0].strip() if i < len(labels) and labels[i] else None
                for i in indices
            ]
            if any(names):
                return names
    if plan.pages is not None:
        raw_names = (plan.page_names or [])[:n]
        raw_descriptions = (plan.page_descriptions or [])[:n]
    else:
        pages = _channel_pages(plan)
        if not pages:
            return None
        raw_names = [_tag_text(page, 285) for page in pages]
        raw_descriptions = [_tag_text(page, 270) for page in pages]
    names = [name.strip() or None if name else None for name in raw_names]
    if any(names):
        return names
    descriptions = [_clean_description(text) for text in raw_descriptions]
    if not descriptions:
        return None
    if n == 1:
        known = descriptions[0] and canonical_channel(descriptions[0]) in CANONICAL_CHANNELS
        return descriptions if known else None
    if all(descriptions) and len(set(descriptions)) == n:
        return descriptions
    return None


def _pixel_size_um(tif: tifffile.TiffFile, page: Any) -> float | None:
    """Pixel size in µm from OME, ImageJ or TIFF resolution tags, when meaningful."""
    try:
        if tif.is_ome:
            _, size = _ome_info(tif)
            if size is not None:
                return size
        tags = getattr(page, "tags", None)
        if tags is None or 282 not in tags:
            return None
        x_resolution = float(page.resolution[0])
        if not math.isfinite(x_resolution) or x_resolution <= 0:
            return None
        unit = int(page.resolutionunit)
        size = None
        if tif.is_imagej:
            ij_unit = str((tif.imagej_metadata or {}).get("unit", "")).lower()
            if ij_unit in ("micron", "microns", "um", "µm", "\\u00b5m", "μm"):
                size = 1.0 / x_resolution
        if size is None and unit == 3:
            size = 1e4 / x_resolution
        elif size is None and unit == 2:
            size = 25400.0 / x_resolution
        elif size is None and unit == 4:
            size = 1e3 / x_resolution
        elif size is None and unit == 5:
            size = 1.0 / x_resolution
        if size is not None and 0.01 <= size <= 100.0:
            return float(size)
    except Exception:
        return None
    return None


# --------------------------------------------------------------------------------------------
# pixel reads


def _check_truncation(tif: tifffile.TiffFile, path: str, pages: Iterable[Any]) -> None:
    size = tif.filehandle.size
    for page in pages:
        offsets = getattr(page, "dataoffsets", ())
        counts = getattr(page, "databytecounts", ())
        if offsets and counts and max(o + c for o, c in zip(offsets, counts, strict=False)) > size:
            raise DeparrayReadError(
                path, f"truncated file: image data runs past the end of the file ({size} bytes)"
            )


def _read_pages(tif: tifffile.TiffFile, path: str, pages: list[Any]) -> np.ndarray:
    _check_truncation(tif, path, pages)
    if len(pages) == 1:
        return pages[0].asarray()[np.newaxis]
    return np.stack([page.asarray() for page in pages])


def _read_all(tif: tifffile.TiffFile, path: str, plan: _Plan) -> np.ndarray:
    """All pixels as (N, C, H, W)."""
    if plan.pages is not None:
        return _read_pages(tif, path, plan.pages).reshape(
            plan.n_cells, plan.n_channels, plan.height, plan.width
        )
    if len(plan.series) > 1:
        _check_truncation(tif, path, (item.pages[0] for item in plan.series))
        planes = [
            np.asarray(item.asarray()).reshape(plan.height, plan.width) for item in plan.series
        ]
        data = np.stack(planes)
        return data.reshape(plan.n_cells, plan.n_channels, plan.height, plan.width)
    only = plan.series[0]
    _check_truncation(tif, path, only.pages)
    data = np.asarray(only.asarray()).reshape(plan.kept_shape)
    order = [a for a in (plan.cell_axis, plan.channel_axis) if a is not None]
    if order:
        data = np.moveaxis(data, order, list(range(len(order))))
    return data.reshape(plan.n_cells, plan.n_channels, plan.height, plan.width)


def _read_cell_planes(tif: tifffile.TiffFile, path: str, plan: _Plan, cell: int) -> np.ndarray:
    """One cell's planes as (C, H, W), reading only that cell where the layout allows."""
    if plan.n_cells == 1:
        return _read_all(tif, path, plan)[0]
    if plan.pages is not None:
        chosen = plan.pages[cell * plan.n_channels : (cell + 1) * plan.n_channels]
        return _read_pages(tif, path, chosen)
    if len(plan.series) > 1:  # single-channel stack, one plane per series
        item = plan.series[cell]
        _check_truncation(tif, path, item.pages[:1])
        return np.asarray(item.asarray()).reshape(1, plan.height, plan.width)
    if plan.page_index is not None:
        keys = [plan.page_index(cell, c) for c in range(plan.n_channels)]
        pages = plan.series[0].pages
        _check_truncation(tif, path, (pages[k] for k in keys))
        data = tif.asarray(series=0, key=keys if len(keys) > 1 else keys[0])
        return np.asarray(data).reshape(plan.n_channels, plan.height, plan.width)
    if plan.nbytes > MAX_WHOLE_READ_BYTES:
        raise DeparrayReadError(
            path,
            f"stack of {plan.n_cells} cells ({plan.nbytes / 1024**2:.0f} MiB) cannot be read cell "
            "by cell (not one page per plane); not read to keep memory bounded",
        )
    return _read_all(tif, path, plan)[cell]


def _native(array: np.ndarray) -> np.ndarray:
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


_TIFFFILE_QUIET = threading.local()


class _DropTifffileLogWhileReading(logging.Filter):
    """Drop tifffile's log records emitted while this module reads a file.

    tifffile logs what it tolerates in a damaged file (``invalid offset to first page``...);
    the reader reports such files itself, as a :class:`DeparrayReadError` or one skip
    warning, so those lines would only be noise on stderr (the CLI) or the console.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_TIFFFILE_QUIET, "depth", 0)


logging.getLogger("tifffile").addFilter(_DropTifffileLogWhileReading())


def _quiet_tifffile(function: Callable) -> Callable:
    """Run ``function`` with tifffile's log records dropped (this thread only)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _TIFFFILE_QUIET.depth = getattr(_TIFFFILE_QUIET, "depth", 0) + 1
        try:
            return function(*args, **kwargs)
        finally:
            _TIFFFILE_QUIET.depth -= 1

    return wrapper


@_quiet_tifffile
def _open_tiff(path: str) -> tifffile.TiffFile:
    try:
        return tifffile.TiffFile(path)
    except Exception as exc:
        raise _error_from_exception(path, exc) from None


class _OpenFile:
    """An open TIFF with its plan; caches a whole-stack read for fast sequential access."""

    @_quiet_tifffile
    def __init__(self, path: str, single_channel: bool, max_pixels: int) -> None:
        self.path = path
        self.tif = _open_tiff(path)
        self._all: np.ndarray | None = None
        try:
            self.plan = _inspect(self.tif, path, single_channel, max_pixels)
        except Exception as exc:
            self.tif.close()
            raise _error_from_exception(path, exc) from None

    @_quiet_tifffile
    def cell(self, index: int, cache_whole: bool = False) -> np.ndarray:
        try:
            if index >= self.plan.n_cells:
                raise DeparrayReadError(
                    self.path, f"has {self.plan.n_cells} cells, no cell number {index}"
                )
            if cache_whole and self.plan.n_cells > 1 and self.plan.nbytes <= MAX_WHOLE_READ_BYTES:
                if self._all is None:
                    self._all = _read_all(self.tif, self.path, self.plan)
                return self._all[index].copy()  # a cell must not keep the whole stack alive
            return _read_cell_planes(self.tif, self.path, self.plan, index)
        except Exception as exc:
            raise _error_from_exception(self.path, exc) from None

    def close(self) -> None:
        self._all = None
        self.tif.close()


# --------------------------------------------------------------------------------------------
# building cells


def _check_values(path: str, name: str, array: np.ndarray) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).any():
        what = "is all NaN" if np.isnan(array).all() else "has no finite value (NaN/±inf only)"
        raise DeparrayReadError(path, f"channel {name} {what}")


def _finish_cell(
    source: CellSource,
    planes: dict[str, tuple[np.ndarray, str]],
    channel_map: ChannelMap | None,
    pixel_size: float | None,
) -> Cell:
    if "BF" not in planes:
        found = ", ".join(planes) or "none"
        raise DeparrayReadError(
            source.path,
            f"cell {source.cell_id!r} has no bright-field (BF) channel (found: {found}); "
            "name the channels in the file names or in a channels.csv",
        )
    bf_array, bf_path = planes["BF"]
    shape = bf_array.shape
    for name, (array, where) in planes.items():
        if array.shape != shape:
            raise DeparrayReadError(
                where,
                f"channel sizes differ within cell {source.cell_id!r}: BF is "
                f"{shape[0]}×{shape[1]} ({os.path.basename(bf_path)}), {name} is "
                f"{array.shape[0]}×{array.shape[1]}",
            )
        _check_values(where, name, array)
    ordered = order_channels(planes, channel_map)
    return Cell(
        cell_id=source.cell_id,
        channels={name: _native(planes[name][0]) for name in ordered},
        path=source.path,
        label=source.label,
        group=source.group,
        pixel_size_um=pixel_size,
        original_shape=(int(shape[0]), int(shape[1])),
    )


def _cell_from_open_files(
    source: CellSource,
    channel_map: ChannelMap | None,
    opener: Callable[[str, bool], _OpenFile],
    cache_whole: bool,
) -> Cell:
    planes: dict[str, tuple[np.ndarray, str]] = {}
    pixel_size = None
    index = source.stack_index
    if source.files:
        for channel, path in source.files.items():
            handle = opener(path, True)
            if index is None and handle.plan.n_cells > 1:
                raise _MultiCellFileError(path, handle.plan.n_cells)
            data = handle.cell(index or 0, cache_whole)
            planes[channel] = (data[0], path)
            if pixel_size is None:
                pixel_size = handle.plan.pixel_size_um
    else:
        handle = opener(source.path, False)
        plan = handle.plan
        if index is None and plan.n_cells > 1:
            raise _MultiCellFileError(source.path, plan.n_cells)
        data = handle.cell(index or 0, cache_whole)
        names = resolve_plane_names(plan.stored_names, plan.n_channels, channel_map)
        for name, plane in zip(names, data, strict=True):
            planes[name] = (plane, source.path)
        pixel_size = plan.pixel_size_um
    return _finish_cell(source, planes, channel_map, pixel_size)


def read_cell(
    source: CellSource,
    channel_map: ChannelMap | str | os.PathLike | Sequence[str] | dict | None = None,
    *,
    max_pixels: int | None = None,
) -> Cell:
    """Read one discovered cell.

    Parameters
    ----------
    source
        From :func:`discover_cells`.
    channel_map
        Overrides the map found at discovery (see :func:`discover_cells`).
    max_pixels
        Largest plane (height × width) read; default :data:`MAX_PIXELS_PER_PLANE`.

    Returns
    -------
    Cell

    Raises
    ------
    DeparrayReadError
        Naming the file and the reason (see the module docstring for what is refused).
    """
    cmap = _user_map(channel_map) or source.channel_map
    limit = _resolve_limit(max_pixels)
    if source.stack_index is not None:
        # cells of a stack are usually read one after another: keep the stack files open
        with _STACK_CACHE.lock:
            try:
                return _cell_from_open_files(
                    source, cmap, lambda p, single: _STACK_CACHE.get(p, single, limit), False
                )
            except Exception as exc:
                raise _error_from_exception(source.path, exc) from None
    opened: list[_OpenFile] = []

    def opener(path: str, single_channel: bool) -> _OpenFile:
        handle = _OpenFile(path, single_channel, limit)
        opened.append(handle)
        return handle

    try:
        return _cell_from_open_files(source, cmap, opener, cache_whole=False)
    except Exception as exc:
        raise _error_from_exception(source.path, exc) from None
    finally:
        for handle in opened:
            handle.close()


class _OpenStackCache:
    """A few stack files kept open between :func:`read_cell` calls (re-opened when changed).

    Opening a stack of thousands of pages means walking all its page headers, so reading it
    cell by cell with a fresh open per cell would cost O(N²). Entries are checked against the
    file's size and modification time on every use, and closed by :func:`release_open_files`
    or at interpreter exit.
    """

    max_files = 8

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._files: dict[tuple[str, bool, int], tuple[tuple[int, int], _OpenFile]] = {}

    def get(self, path: str, single_channel: bool, max_pixels: int) -> _OpenFile:
        try:
            info = os.stat(path)
        except OSError as exc:
            raise _error_from_exception(path, exc) from None
        signature = (info.st_size, info.st_mtime_ns)
        key = (path, single_channel, max_pixels)
        cached = self._files.pop(key, None)
        if cached is not None and cached[0] == signature:
            self._files[key] = cached  # most recently used last
            return cached[1]
        if cached is not None:
            cached[1].close()
        handle = _OpenFile(path, single_channel, max_pixels)
        self._files[key] = (signature, handle)
        while len(self._files) > self.max_files:
            _, oldest = self._files.pop(next(iter(self._files)))
            oldest.close()
        return handle

    def clear(self) -> None:
        with self.lock:
            for _, handle in self._files.values():
                handle.close()
            self._files.clear()


_STACK_CACHE = _OpenStackCache()
atexit.register(_STACK_CACHE.clear)


def release_open_files() -> None:
    """Close the stack files that :func:`read_cell` keeps open between calls."""
    _STACK_CACHE.clear()


# --------------------------------------------------------------------------------------------
# discovery


def _user_map(channel_map: Any) -> ChannelMap | None:
    try:
        return as_channel_map(channel_map)
    except ChannelMapError as exc:
        raise DeparrayReadError(exc.path, exc.reason) from None


@dataclass
class _DirContext:
    """What applies to the files of one folder: class, channel map, labels tables."""

    path: str
    label: str | None
    channel_map: ChannelMap | None
    labels: list[_LabelLookup]  # nearest first


class _LabelLookup:
    """Match cell ids against labels.csv rows: exact, then normalised (case, extension, token)."""

    def __init__(self, records: dict[str, LabelRecord]) -> None:
        self.exact = records
        self.records = list(records.values())
        self.normalised: dict[str, LabelRecord] = {}
        for cell_id, record in records.items():
            for key in _id_variants(cell_id):
                self.normalised.setdefault(key, record)

    def get(self, cell_id: str) -> LabelRecord | None:
        record = self.exact.get(cell_id)
        if record is not None:
            return record
        for key in _id_variants(cell_id):
            if key in self.normalised:
                return self.normalised[key]
        return None


def _id_variants(cell_id: str) -> list[str]:
    stem = _stem(cell_id)
    channel, rest = split_channel_token(stem)
    variants = [_group_key(stem)]
    if channel is not None and rest:
        variants.append(_group_key(rest))
    return [v for v in variants if v]


@dataclass
class _Discovery:
    user_map: ChannelMap | None
    max_pixels: int
    sources: list[CellSource] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    label_cache: dict[str, _LabelLookup | None] = field(default_factory=dict)
    map_cache: dict[str, ChannelMap | None] = field(default_factory=dict)
    failed_peeks: set[str] = field(default_factory=set)

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append((path, reason))

    # ---- per-folder side files

    def labels_in(self, folder: str) -> _LabelLookup | None:
        if folder not in self.label_cache:
            candidate = os.path.join(folder, LABELS_FILENAME)
            lookup = None
            if os.path.isfile(candidate):
                try:
                    lookup = _LabelLookup(read_labels_csv(candidate))
                except LabelsFileError as exc:
                    self.skip(exc.path, exc.reason)
            self.label_cache[folder] = lookup
        return self.label_cache[folder]

    def map_in(self, folder: str) -> ChannelMap | None:
        if folder not in self.map_cache:
            candidate = find_channel_map(folder)
            cmap = None
            if candidate is not None:
                try:
                    cmap = load_channel_map(candidate)
                except ChannelMapError as exc:
                    self.skip(exc.path, exc.reason)
            self.map_cache[folder] = cmap
        return self.map_cache[folder]


def _ancestors(folder: str, root: str) -> list[str]:
    """``folder`` and its parents up to and including ``root``."""
    chain = [folder]
    current = folder
    while current != root:
        parent = os.path.dirname(current)
        if parent == current or not current.startswith(root):
            break
        chain.append(parent)
        current = parent
    return chain


def _walk_folder(root: str, state: _Discovery) -> Iterator[tuple[str, list[str], str | None]]:
    """Yield (folder, tiff file names, class label) below ``root``; loops and errors skipped."""
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[str, int, str | None]] = [(root, 0, None)]
    while stack:
        folder, depth, label = stack.pop()
        try:
            info = os.stat(folder)
        except OSError as exc:
            state.skip(folder, f"cannot open folder ({exc.strerror or exc})")
            continue
        identity = (info.st_dev, info.st_ino)
        if identity in seen:
            state.skip(folder, "folder already visited (symbolic-link loop); skipped")
            continue
        seen.add(identity)
        files: list[str] = []
        subfolders: list[tuple[str, str | None]] = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith("."):
                        continue
                    try:
                        is_dir = entry.is_dir()
                        is_file = not is_dir and entry.is_file()
                    except OSError as exc:
                        state.skip(entry.path, f"cannot follow ({exc.strerror or exc})")
                        continue
                    if is_dir:
                        subfolders.append((entry.path, class_from_folder_name(name) or label))
                    elif is_file:
                        lower = name.lower()
                        if _is_tiff_name(lower):
                            files.append(name)
                        elif lower.endswith(_OTHER_IMAGE_SUFFIXES):
                            if _looks_like_tiff_magic(entry.path):
                                files.append(name)  # a TIFF misnamed .png, .jpg...
                            else:
                                state.skip(entry.path, "not a TIFF file; only TIFF images are read")
                        elif not lower.endswith(_NOT_IMAGE_SUFFIXES) and _looks_like_tiff_magic(
                            entry.path
                        ):
                            files.append(name)  # a TIFF with another extension
                    elif entry.is_symlink():
                        reason = "broken or looping symbolic link"
                        if _is_tiff_name(name.lower()):
                            state.skip(entry.path, reason)
        except OSError as exc:
            state.skip(folder, f"cannot list folder ({exc.strerror or exc})")
            continue
        yield folder, files, label
        if depth < MAX_FOLDER_DEPTH:
            for sub_path, sub_label in sorted(
                subfolders, key=lambda s: _natural_key(s[0]), reverse=True
            ):
                stack.append((sub_path, depth + 1, sub_label))


def _context_for(folder: str, root: str, label: str | None, state: _Discovery) -> _DirContext:
    chain = _ancestors(folder, root)
    cmap = state.user_map
    if cmap is None:
        cmap = next((m for m in (state.map_in(f) for f in chain) if m is not None), None)
    labels = [lookup for lookup in (state.labels_in(f) for f in chain) if lookup is not None]
    return _DirContext(folder, label, cmap, labels)


def _apply_labels(source: CellSource, context: _DirContext) -> bool:
    """Class from the folder, overridden by the nearest ``labels.csv`` row; True if a row hit."""
    source.label = context.label
    for lookup in context.labels:
        record = lookup.get(source.cell_id)
        if record is not None:
            source.label = record.label
            source.group = record.group
            return True
    return False


def _peek(path: str, single_channel: bool, state: _Discovery) -> _Plan | None:
    """Read one file's header; on failure record it as skipped and return ``None``."""
    try:
        handle = _OpenFile(path, single_channel, state.max_pixels)
    except DeparrayReadError as exc:
        state.skip(path, exc.reason)
        state.failed_peeks.add(path)
        return None
    plan = handle.plan
    handle.close()
    return plan


def _first_readable_header(
    paths: list[str], single_channel: bool, state: _Discovery, tries: int = 8
) -> tuple[str | None, _Plan | None]:
    """Header of the first file that can be read (bad ones are recorded as skipped)."""
    for path in paths[:tries]:
        plan = _peek(path, single_channel, state)
        if plan is not None:
            return path, plan
    return None, None


def _discover_folder_files(
    folder: str, names: list[str], context: _DirContext, state: _Discovery
) -> list[CellSource]:
    """Turn the TIFF names of one folder into cell sources (peeks at most a few headers)."""
    cmap = context.channel_map
    groups: dict[str, dict[str, str]] = {}
    group_names: dict[str, str] = {}
    plain: list[str] = []
    for name in sorted(names, key=_natural_key):
        stem = _stem(name)
        channel, rest = split_channel_token(stem, cmap)
        if channel is None:
            plain.append(name)
            continue
        key = _group_key(rest)
        members = groups.setdefault(key, {})
        group_names.setdefault(key, rest or os.path.basename(folder))
        if channel in members:
            state.skip(
                os.path.join(folder, name),
                f"second {channel} file for cell {group_names[key]!r} "
                f"(already {members[channel]}); skipped",
            )
            continue
        members[channel] = name

    # a token-less file whose name is a group's name plus one unknown word: an unknown channel
    remaining: list[str] = []
    for name in plain:
        tokens = tokenize(_stem(name))
        placed = False
        if groups and len(tokens) >= 2:
            raw_words = re.findall(r"[A-Za-z0-9]+", _stem(name))
            for key, word in (
                ("_".join(tokens[:-1]), raw_words[-1]),
                ("_".join(tokens[1:]), raw_words[0]),
            ):
                if key in groups and canonical_channel(word, cmap) not in groups[key]:
                    groups[key][canonical_channel(word, cmap)] = name
                    placed = True
                    break
        if not placed:
            remaining.append(name)

    sources: list[CellSource] = []
    full = lambda name: os.path.join(folder, name)  # noqa: E731

    # ---- per-channel files (layout 2 or per-channel stacks of layout 4)
    if groups:
        first_file, plan = _first_readable_header(
            [full(name) for members in groups.values() for name in members.values()], True, state
        )
        stacked = plan is not None and plan.n_cells > 1
        for key, members in groups.items():
            paths = {channel: full(name) for channel, name in members.items()}
            representative = paths.get("BF") or next(iter(paths.values()))
            if not stacked:
                sources.append(CellSource(group_names[key], paths, representative, None))
                continue
            counts = {}
            for channel, path in paths.items():
                member_plan = plan if path == first_file else _peek(path, True, state)
                if member_plan is not None:
                    counts[channel] = member_plan.n_cells
            if not counts:
                continue
            if len(set(counts.values())) > 1:
                listed = ", ".join(f"{c}: {n}" for c, n in counts.items())
                state.skip(representative, f"channel stacks hold different cell counts ({listed})")
                continue
            usable = {c: p for c, p in paths.items() if c in counts}
            representative = usable.get("BF") or next(iter(usable.values()))
            n_cells = next(iter(counts.values()))
            for index in range(n_cells):
                cell_id = f"{group_names[key]}_{index:04d}"
                sources.append(CellSource(cell_id, usable, representative, index))

    # ---- multichannel files (layout 1 or (N, C, Y, X) stacks of layout 4)
    if remaining:
        first_file, plan = _first_readable_header([full(n) for n in remaining], False, state)
        stacked = plan is not None and plan.n_cells > 1
        for name in remaining:
            path = full(name)
            if path in state.failed_peeks:
                continue  # already recorded as skipped
            if not stacked:
                sources.append(CellSource(_stem(name), {}, path, None))
                continue
            file_plan = plan if path == first_file else _peek(path, False, state)
            if file_plan is None:
                continue
            for index in range(file_plan.n_cells):
                index_id = f"{_stem(name)}_{index:04d}" if file_plan.n_cells > 1 else _stem(name)
                sources.append(
                    CellSource(index_id, {}, path, index if file_plan.n_cells > 1 else None)
                )
    matched = False
    for source in sources:
        source.channel_map = cmap
        matched |= _apply_labels(source, context)
    if not matched and sources and context.labels:
        _apply_labels_by_order(sources, context)
    return sources


def _apply_labels_by_order(sources: list[CellSource], context: _DirContext) -> None:
    """A single stack whose ``labels.csv`` rows list its cells in order (same count, no id hit).

    The cells then take the ids, classes and samples of the rows, in order.
    """
    stacks = {(s.path, *sorted(s.files.values())) for s in sources}
    if len(stacks) != 1 or any(s.stack_index is None for s in sources):
        return
    lookup = context.labels[0]
    if len(lookup.records) != len(sources):
        return
    ordered = sorted(sources, key=lambda s: s.stack_index or 0)
    for source, record in zip(ordered, lookup.records, strict=True):
        source.cell_id = record.cell_id
        source.label = record.label
        source.group = record.group


def discover_cells(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    channel_map: ChannelMap | str | os.PathLike | Sequence[str] | dict | None = None,
    *,
    max_pixels: int | None = None,
) -> tuple[list[CellSource], list[tuple[str, str]]]:
    """Find the cells in files and folders without reading pixels.

    Parameters
    ----------
    paths
        A file, a folder, or several of them.
    channel_map
        A :class:`~napari_deparray_ctc.core.channels.ChannelMap`, a map file path, a list of
        names in plane order, or a ``{index_or_token: name}`` dict. ``None`` uses the nearest
        ``channels.csv``/``channels.txt`` beside the files (up to the opened folder).
    max_pixels
        Largest plane read (default :data:`MAX_PIXELS_PER_PLANE`); used where headers are read.

    Returns
    -------
    (sources, skipped)
        The cells found, and ``(path, reason)`` for everything that could not be used.

    Raises
    ------
    DeparrayReadError
        Only for an unusable ``channel_map`` given by the caller.

    Notes
    -----
    File names decide the layout. At most the first file of each kind in a folder has its
    header read (to tell single cells from multi-cell stacks); every file's header is read only
    in folders of stacks. Cell ids that repeat across folders are prefixed with the folder name;
    a repeat within one folder is skipped.
    """
    state = _Discovery(user_map=_user_map(channel_map), max_pixels=_resolve_limit(max_pixels))
    explicit_files: dict[str, list[str]] = {}
    for raw in _as_path_list(paths):
        path = os.path.abspath(raw)
        if os.path.isdir(path):
            for folder, names, label in _walk_folder(path, state):
                context = _context_for(folder, path, label, state)
                state.sources.extend(_discover_folder_files(folder, names, context, state))
        elif os.path.isfile(path):
            explicit_files.setdefault(os.path.dirname(path), []).append(os.path.basename(path))
        elif os.path.lexists(path):
            state.skip(raw, "cannot open (broken or looping symbolic link, or not a file)")
        else:
            state.skip(raw, "no such file or folder")
    for folder, names in explicit_files.items():
        context = _context_for(folder, folder, None, state)
        state.sources.extend(_discover_folder_files(folder, names, context, state))
    _make_ids_unique(state)
    return state.sources, state.skipped


def _make_ids_unique(state: _Discovery) -> None:
    """Repeats within one folder are skipped; ids found in several folders get the folder name."""
    folders_of: dict[str, list[str]] = {}
    for source in state.sources:
        folders = folders_of.setdefault(source.cell_id, [])
        folder = os.path.dirname(source.path)
        if folder not in folders:
            folders.append(folder)
    taken = set(folders_of)
    seen: set[tuple[str, str]] = set()
    kept: list[CellSource] = []
    for source in state.sources:
        cell_id = source.cell_id
        folder = os.path.dirname(source.path)
        if (cell_id, folder) in seen:
            state.skip(
                source.path, f"duplicate cell id {cell_id!r} (another file in this folder has it)"
            )
            continue
        seen.add((cell_id, folder))
        if len(folders_of[cell_id]) > 1:
            new_id = f"{os.path.basename(folder)}/{cell_id}"
            if new_id in taken:
                new_id = f"{folder}/{cell_id}"
            taken.add(new_id)
            source.cell_id = new_id
        kept.append(source)
    state.sources[:] = kept


# --------------------------------------------------------------------------------------------
# reading many cells


def _sources_then_cells(
    sources: list[CellSource],
    channel_map: ChannelMap | None,
    max_pixels: int,
    on_error: Callable[[str, str], None],
) -> Iterator[Cell]:
    """Read cells in order; stack files stay open while consecutive cells come from them."""
    open_files: dict[tuple[str, bool], _OpenFile] = {}

    def opener(path: str, single_channel: bool) -> _OpenFile:
        key = (path, single_channel)
        handle = open_files.get(key)
        if handle is None:
            handle = _OpenFile(path, single_channel, max_pixels)
            open_files[key] = handle
        return handle

    previous_stack: tuple | None = None
    try:
        for source in sources:
            stack_key = (
                (source.path, *sorted(source.files.values()))
                if source.stack_index is not None
                else None
            )
            if stack_key != previous_stack or stack_key is None:
                for handle in open_files.values():
                    handle.close()
                open_files.clear()
            previous_stack = stack_key
            cmap = channel_map or source.channel_map
            try:
                yield _cell_from_open_files(source, cmap, opener, cache_whole=True)
            except Exception as exc:
                error = _error_from_exception(source.path, exc)
                on_error(error.path, error.reason)
    finally:
        for handle in open_files.values():
            handle.close()


def iter_cells(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    channel_map: ChannelMap | str | os.PathLike | Sequence[str] | dict | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    *,
    max_pixels: int | None = None,
) -> Iterator[Cell]:
    """Stream the cells of files and folders, one at a time (bounded memory).

    Parameters
    ----------
    paths, channel_map, max_pixels
        As for :func:`discover_cells`.
    on_skip
        Called as ``on_skip(path, reason)`` for every file or cell skipped (discovery problems
        first). When ``None``, one :class:`UserWarning` listing all of them is issued at the end.

    Yields
    ------
    Cell
    """
    cmap = _user_map(channel_map)
    limit = _resolve_limit(max_pixels)
    sources, skipped = discover_cells(paths, cmap, max_pixels=limit)
    collected: list[tuple[str, str]] = []
    reported: set[tuple[str, str]] = set()

    def report(path: str, reason: str) -> None:
        if (path, reason) in reported:
            return
        reported.add((path, reason))
        if on_skip is not None:
            on_skip(path, reason)
        else:
            collected.append((path, reason))

    for path, reason in skipped:
        report(path, reason)
    yield from _sources_then_cells(sources, cmap, limit, report)
    if on_skip is None and collected:
        warnings.warn(format_skipped(collected), UserWarning, stacklevel=2)


def format_skipped(skipped: Sequence[tuple[str, str]], limit: int = 20) -> str:
    """One message listing skipped files (for a single warning)."""
    lines = [f"skipped {len(skipped)} unreadable file(s)/cell(s):"]
    lines += [f"  {_printable(path)}: {reason}" for path, reason in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    return "\n".join(lines)


def read_export(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    channel_map: ChannelMap | str | os.PathLike | Sequence[str] | dict | None = None,
    *,
    max_pixels: int | None = None,
) -> Export:
    """Read every cell of files and folders into memory.

    Parameters
    ----------
    paths, channel_map, max_pixels
        As for :func:`discover_cells`.

    Returns
    -------
    Export
        Cells, skipped files (the caller should warn once with :func:`format_skipped`), and the
        channel names in display order.

    Raises
    ------
    DeparrayReadError
        When not a single cell could be read (the reason lists the first problems).
    """
    cmap = _user_map(channel_map)
    limit = _resolve_limit(max_pixels)
    sources, skipped = discover_cells(paths, cmap, max_pixels=limit)
    skipped = list(dict.fromkeys(skipped))

    def record(path: str, reason: str) -> None:
        if (path, reason) not in skipped:
            skipped.append((path, reason))

    cells = list(_sources_then_cells(sources, cmap, limit, record))
    if not cells:
        path_list = _as_path_list(paths)
        where = path_list[0] if len(path_list) == 1 else ", ".join(path_list[:3])
        if skipped:
            first = "; ".join(f"{os.path.basename(p)}: {r}" for p, r in skipped[:3])
            more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
            reason = f"no readable cell images; {first}{more}"
            if (
                len(skipped) == 1
                and len(path_list) == 1
                and os.path.abspath(skipped[0][0]) == os.path.abspath(path_list[0])
            ):
                raise DeparrayReadError(skipped[0][0], skipped[0][1])
        else:
            reason = "no cell images found (expected TIFF files: see the supported layouts)"
        raise DeparrayReadError(where, reason)
    channel_names = [name for cell in cells for name in cell.channels]
    first_map = cmap or next((s.channel_map for s in sources if s.channel_map), None)
    return Export(cells=cells, skipped=skipped, channels=order_channels(channel_names, first_map))


# --------------------------------------------------------------------------------------------
# stacking for display


def _common_shape(shapes: list[tuple[int, int]]) -> tuple[int, int]:
    """Per-axis maximum over the cells whose area is not an outlier (> 4× the median area)."""
    areas = np.array([h * w for h, w in shapes], dtype=float)
    typical = [s for s, a in zip(shapes, areas, strict=True) if a <= 4 * np.median(areas)]
    return max(h for h, _ in typical), max(w for _, w in typical)


def _border_median(image: np.ndarray) -> float:
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    if border.dtype.kind == "f":
        border = border[np.isfinite(border)]
        if border.size == 0:
            return 0.0
    return float(np.median(border))


def _fit(image: np.ndarray, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """Centre-crop and/or pad ``image`` to ``shape`` (padding with its border median)."""
    height, width = image.shape
    target_h, target_w = shape
    top = max(0, (height - target_h) // 2)
    left = max(0, (width - target_w) // 2)
    cropped = image[top : top + target_h, left : left + target_w]
    if cropped.shape == shape:
        return cropped.astype(dtype, copy=False)
    fill = _border_median(image)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        fill = min(max(round(fill), info.min), info.max)
    out = np.full(shape, fill, dtype=dtype)
    pad_top = (target_h - cropped.shape[0]) // 2
    pad_left = (target_w - cropped.shape[1]) // 2
    out[pad_top : pad_top + cropped.shape[0], pad_left : pad_left + cropped.shape[1]] = cropped
    return out


def stack_channel(
    cells: Sequence[Cell], channel: str, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Stack one channel of many cells into an (N, Y, X) array.

    Parameters
    ----------
    cells
        Cells (e.g. ``export.cells``); their ``original_shape`` keeps the size before fitting.
    channel
        Canonical channel name.
    shape
        ``(Y, X)`` of the result. Default: the per-axis maximum over the cells, ignoring cells
        more than 4× the median area (those are centre-cropped instead, so one huge image does
        not blow up the stack).

    Returns
    -------
    numpy.ndarray
        ``(N, Y, X)`` in the common dtype of the cells' planes. Smaller images are centred and
        padded with the median of their border (the background); larger ones are centre-cropped.
        A cell without this channel gives a plane of zeros.
    """
    planes = [cell.channels.get(channel) for cell in cells]
    present = [p for p in planes if p is not None]
    if not present:
        raise ValueError(f"no cell has a {channel!r} channel")
    if shape is None:
        shape = _common_shape([p.shape for p in present])
    shape = (int(shape[0]), int(shape[1]))
    dtype = np.result_type(*{p.dtype for p in present})
    out = np.zeros((len(cells), *shape), dtype=dtype)
    for index, plane in enumerate(planes):
        if plane is not None:
            out[index] = plane if plane.shape == shape else _fit(plane, shape, dtype)
    return out


# --------------------------------------------------------------------------------------------
# cheap check for napari_get_reader


@_quiet_tifffile
def _header_has_channel_names(path: str) -> bool:
    with tifffile.TiffFile(path) as tif:
        if len(tif.pages) == 0:
            return False
        plan = _inspect(tif, path, single_channel=False, max_pixels=2**62)
        names = plan.stored_names or []
        return any(n and canonical_channel(n) in CANONICAL_CHANNELS for n in names)


@_quiet_tifffile
def _looks_like_cell_tiff(path: str) -> bool:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        height, width = page.shape[:2] if page.ndim >= 2 else (0, 0)
        return 0 < height <= 512 and 0 < width <= 512


def _folder_looks_like_export(folder: str, depth: int = 0) -> bool:
    tiffs: list[str] = []
    with os.scandir(folder) as entries:
        for count, entry in enumerate(entries):
            if count > 5000:
                break
            name = entry.name
            lower = name.lower()
            if name.startswith("."):
                continue
            if lower in (LABELS_FILENAME, "channels.csv", "channels.txt"):
                return True
            try:
                if entry.is_dir():
                    if depth == 0 and class_from_folder_name(name) is not None:
                        if _folder_looks_like_export(entry.path, depth + 1):
                            return True
                    continue
            except OSError:
                continue
            if _is_tiff_name(lower):
                stem = _stem(name)
                if split_channel_token(stem)[0] is not None or _DEPARRAY_NAME_RE.search(stem):
                    return True
                tiffs.append(entry.path)
    if not tiffs:
        return False
    first = min(tiffs)
    return _header_has_channel_names(first) or _looks_like_cell_tiff(first)


def is_probably_deparray(path: str | os.PathLike | Sequence[str | os.PathLike]) -> bool:
    """Cheap guess whether ``path`` is a DEPArray export this reader should claim.

    Reads no pixels and never raises. Claims: folders holding a ``labels.csv`` or channel map,
    class sub-folders of TIFFs, TIFFs with channel tokens or DEPArray-like names (``cell0012``,
    ``CTC_12``), or small (≤ 512 px) cell-sized TIFFs; TIFF files whose name holds a channel
    token or a DEPArray-like name, or whose header names recognisable channels. An ordinary
    TIFF (``image.tif`` without channel names) is not claimed, so napari's default reader
    handles it. For a list of paths, claims it when any item is claimed.
    """
    try:
        if not isinstance(path, (str, os.PathLike)):
            return any(is_probably_deparray(item) for item in list(path)[:64])
        text = os.fspath(path)
        if os.path.isdir(text):
            return _folder_looks_like_export(text)
        if not _is_tiff_name(text) or not os.path.isfile(text):
            return False
        stem = _stem(text)
        if split_channel_token(stem)[0] is not None or _DEPARRAY_NAME_RE.search(stem):
            return True
        return _header_has_channel_names(text)
    except Exception:
        return False
