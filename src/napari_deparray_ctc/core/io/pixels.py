"""Pixel reads of an inspected TIFF, and the few stack files kept open between reads."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
import tifffile

from napari_deparray_ctc.core.errors import DeparrayReadError
from napari_deparray_ctc.core.io.codec_frames import check_frames
from napari_deparray_ctc.core.io.common import (
    NameNotResolvedError,
    close_tiff,
    error_from_exception,
    open_tiff,
    quiet_tifffile,
)
from napari_deparray_ctc.core.io.header_checks import decode_reason
from napari_deparray_ctc.core.io.tiff_header import inspect_tiff
from napari_deparray_ctc.core.io.types import Plan

MAX_WHOLE_READ_BYTES: int = 256 * 1024**2
"""Stacks up to this size are read in one go; larger ones cell by cell."""


def _check_truncation(tif: tifffile.TiffFile, path: str, pages: Iterable[Any]) -> None:
    """Refuse pages whose data runs past the end of the file or whose compressed frames
    declare more than the page (see :mod:`.codec_frames`); run before any page is decoded."""
    size = tif.filehandle.size
    for page in pages:
        offsets = getattr(page, "dataoffsets", ())
        counts = getattr(page, "databytecounts", ())
        if offsets and counts and max(o + c for o, c in zip(offsets, counts, strict=False)) > size:
            raise DeparrayReadError(
                path, f"truncated file: image data runs past the end of the file ({size} bytes)"
            )
        check_frames(path, tif.filehandle, page)


def _read_pages(tif: tifffile.TiffFile, path: str, pages: list[Any]) -> np.ndarray:
    """The planes of ``pages`` (one size and pixel type, as the plan checked) as (N, H, W).

    Each later page is decoded straight into its place in the result, as tifffile's own
    page stacking does (no second copy).
    """
    _check_truncation(tif, path, pages)
    planes = _planes_from_memory(tif, pages)
    if planes is not None:
        return planes
    first = pages[0].asarray()
    if len(pages) == 1:
        return first[np.newaxis]
    planes = np.empty((len(pages), *first.shape), first.dtype)
    planes[0] = first
    for index in range(1, len(pages)):
        pages[index].asarray(out=planes[index])
    return planes


def _planes_from_memory(tif: tifffile.TiffFile, pages: list[Any]) -> np.ndarray | None:
    """The planes of ``pages`` as (N, H, W), taken straight from a small file read into memory
    (:func:`~.common.open_tiff`), or ``None`` where tifffile is to decode them.

    Only for the pages whose pixels tifffile itself copies as they are: pages of one key
    frame that tifffile calls final (uncompressed and stored contiguously, without predictor,
    bit-order reversal or chroma subsampling). tifffile then reads the plane's bytes from the first strip's offset
    and converts them to native byte order; so does this, without its per-page overhead, and
    a plane cut short raises ``ValueError`` as tifffile's read does.
    """
    survey = getattr(tif, "deparray_survey", None)
    data = survey.data if survey is not None else None
    if data is None or not getattr(tif, "deparray_in_memory", False):
        return None
    key = pages[0].keyframe
    # is_final: contiguous, no predictor, no bit-order reversal, no chroma subsampling
    if key.dtype is None or 0 in key.shaped or not key.is_final:
        return None
    for page in pages:
        if page.keyframe is not key or not len(page.dataoffsets):
            return None
    stored = np.dtype(tif.byteorder + key.dtype.char)  # as the file holds the pixels
    count = math.prod(key.shaped)
    shape = tuple(key.shape)
    planes = np.empty((len(pages), *shape), key.dtype)
    for index, page in enumerate(pages):
        planes[index] = np.frombuffer(data, stored, count, page.dataoffsets[0]).reshape(shape)
    return planes


def read_all(tif: tifffile.TiffFile, path: str, plan: Plan) -> np.ndarray:
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


def read_cell_planes(tif: tifffile.TiffFile, path: str, plan: Plan, cell: int) -> np.ndarray:
    """One cell's planes as (C, H, W), reading only that cell where the layout allows."""
    if plan.n_cells == 1:
        return read_all(tif, path, plan)[0]
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
    return read_all(tif, path, plan)[cell]


def native(array: np.ndarray) -> np.ndarray:
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


class OpenFile:
    """An open TIFF with its plan; caches a whole-stack read for fast sequential access."""

    @quiet_tifffile
    def __init__(self, path: str, single_channel: bool, max_pixels: int) -> None:
        self.path = path
        self.max_pixels = max_pixels
        self._all: np.ndarray | None = None
        for resolve_links in (False, True):
            self.tif = open_tiff(path, resolve_links)
            try:
                self.plan = inspect_tiff(self.tif, path, single_channel, max_pixels)
                break
            except NameNotResolvedError:
                close_tiff(self.tif)  # opened again under its real path
            except Exception as exc:
                close_tiff(self.tif)
                raise error_from_exception(path, exc) from None
        else:  # pragma: no cover - a symbolic link changed between the two opens
            raise DeparrayReadError(path, "the file was moved or replaced while it was read")

    @quiet_tifffile
    def cell(self, index: int, cache_whole: bool = False) -> np.ndarray:
        try:
            if index >= self.plan.n_cells:
                raise DeparrayReadError(
                    self.path,
                    f"has {self.plan.n_cells} cells, no cell number {index} (the file changed "
                    "since it was listed)",
                )
            if cache_whole and self.plan.n_cells > 1 and self.plan.nbytes <= MAX_WHOLE_READ_BYTES:
                if self._all is None:
                    self._all = read_all(self.tif, self.path, self.plan)
                return self._all[index].copy()  # a cell must not keep the whole stack alive
            return read_cell_planes(self.tif, self.path, self.plan, index)
        except DeparrayReadError:
            raise
        except Exception as exc:
            reason = decode_reason(self.key_page, exc)
            if reason is not None:
                raise DeparrayReadError(self.path, reason) from None
            raise error_from_exception(self.path, exc) from None

    @property
    def key_page(self) -> Any:
        """The page whose compression and bit depth all planes of this file share."""
        if self.plan.pages:
            return self.plan.pages[0]
        return self.plan.series[0].keyframe if self.plan.series else None

    def close(self) -> None:
        self._all = None
        close_tiff(self.tif)


class _OpenStackCache:
    """A few stack files kept open between :func:`read_cell` calls (re-opened when changed).

    Opening a stack of thousands of pages means walking all its page headers, so reading it
    cell by cell with a fresh open per cell would cost O(N²); the lazy layers of a large
    export read stacks chunk by chunk through it too. Entries are checked against the file's
    size and modification time on every use (a file rewritten since is re-opened), the least
    recently used is closed beyond :attr:`max_files`, and :func:`release_open_files` closes
    them all. There is no ``atexit`` hook (there used to be): at interpreter exit the
    operating system closes the handles, and a hook only delayed exit and kept a reference to
    every open file; call :func:`release_open_files` before deleting or rewriting the files
    on a system that locks open files (Windows).
    """

    max_files = 8

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._files: dict[tuple[str, bool, int], tuple[tuple[int, int], OpenFile]] = {}

    def get(self, path: str, single_channel: bool, max_pixels: int) -> OpenFile:
        try:
            info = os.stat(path)
        except OSError as exc:
            raise error_from_exception(path, exc) from None
        signature = (info.st_size, info.st_mtime_ns)
        key = (path, single_channel, max_pixels)
        cached = self._files.pop(key, None)
        if cached is not None and cached[0] == signature:
            self._files[key] = cached  # most recently used last
            return cached[1]
        if cached is not None:
            cached[1].close()
        handle = OpenFile(path, single_channel, max_pixels)
        self._files[key] = (signature, handle)
        while len(self._files) > self.max_files:
            _, oldest = self._files.pop(next(iter(self._files)))
            oldest.close()
        return handle

    def adopt(self, handle: OpenFile, single_channel: bool, signature: tuple[int, int]) -> None:
        """Keep a stack file that discovery has just opened, for the reads that follow.

        ``signature``: the file's ``(st_size, st_mtime_ns)`` taken before it was opened.
        Opening a 400,000-page OME stack costs tifffile about 20 s; this saves the second.
        """
        with self.lock:
            key = (handle.path, single_channel, handle.max_pixels)
            previous = self._files.pop(key, None)
            if previous is not None and previous[1] is not handle:
                previous[1].close()
            self._files[key] = (signature, handle)
            while len(self._files) > self.max_files:
                _, oldest = self._files.pop(next(iter(self._files)))
                oldest.close()

    def take(self, path: str, single_channel: bool, max_pixels: int) -> OpenFile | None:
        """Remove and return the open file for ``path`` if it is cached and unchanged.

        The caller owns (and closes) it: a whole-export read takes over the stack that
        discovery opened instead of opening it a second time.
        """
        with self.lock:
            cached = self._files.pop((path, single_channel, max_pixels), None)
            if cached is None:
                return None
            try:
                info = os.stat(path)
            except OSError:
                info = None
            if info is not None and cached[0] == (info.st_size, info.st_mtime_ns):
                return cached[1]
            cached[1].close()
            return None

    def clear(self) -> None:
        with self.lock:
            for _, handle in self._files.values():
                handle.close()
            self._files.clear()


STACK_CACHE = _OpenStackCache()


def release_open_files() -> None:
    """Close the stack files that :func:`read_cell` keeps open between calls."""
    STACK_CACHE.clear()
