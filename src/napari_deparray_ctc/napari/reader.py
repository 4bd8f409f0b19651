"""napari reader for DEPArray single-cell exports (npe2 ``readers`` contribution).

``napari_get_reader`` only looks at names and TIFF headers (through
:func:`napari_deparray_ctc.core.io.is_probably_deparray`), reads no pixels and never raises.
It claims folders of cell TIFFs and TIFFs whose names or headers show channels or
DEPArray-like cell names, and returns ``None`` for any other TIFF so napari's default
reader opens it.

Nothing here imports torch: opening a TIFF must stay fast and light.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .layer_data import LayerData, export_name, export_to_layer_data, lazy_export_to_layer_data

__all__ = ["napari_get_reader", "read_deparray", "skipped_message"]

PathOrPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]

#: at most this many skipped files are listed in the warning
MAX_LISTED_SKIPS = 20
_LOG = logging.getLogger(__name__)


def _as_path_list(path: Any) -> list[str]:
    """``path`` (one path or a sequence of paths) as a list of strings."""
    if isinstance(path, str | os.PathLike):
        return [os.fspath(path)]
    return [os.fspath(p) for p in path]


def napari_get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """Return :func:`read_deparray` if ``path`` looks like a DEPArray export, else ``None``.

    Cheap (reads no pixels, only names and TIFF headers) and never raises: any doubt gives
    ``None`` so that napari falls back to another reader. napari does not tell a reader
    whether the user chose it, so a path this plugin does not claim is declined silently
    even then (napari then says that the plugin refused the file). The reason is logged at
    INFO level on the ``napari_deparray_ctc.napari.reader`` logger, and
    :func:`napari_deparray_ctc.core.io.sniff.explain_claim` gives it in words
    (``docs/bad_input.md``).

    Parameters
    ----------
    path
        A file, a folder, or a list of them (several files opened together as a stack, e.g.
        ``viewer.open([...], stack=True)``); a list is claimed when any item is.

    Returns
    -------
    callable or None
        The reader function, or ``None`` when this plugin does not claim ``path``.
    """
    try:
        paths = _as_path_list(path)
        if not paths:
            return None
        from ..core.io.sniff import explain_claim

        claimed, reason = explain_claim(paths[0] if len(paths) == 1 else paths)
        if claimed:
            return read_deparray
        _LOG.info(
            "napari-deparray-ctc does not open %s as a DEPArray export: %s",
            paths[0] if len(paths) == 1 else ", ".join(paths[:3]),
            reason or "no cell images found",
        )
    except Exception:  # a reader probe must never raise
        return None
    return None


def skipped_message(skipped: Sequence[tuple[str, str]], n_read: int) -> str:
    """The one warning shown when some files of an export could not be read.

    Parameters
    ----------
    skipped
        ``(path, reason)`` pairs.
    n_read
        Number of cells that were read.

    Returns
    -------
    str
        ``"DEPArray reader: opened N cell(s); skipped ..."`` followed by one line per skipped
        file with its reason (the first :data:`MAX_LISTED_SKIPS`, then a count of the rest).
    """
    from ..core.io import format_skipped

    listing = format_skipped(skipped, limit=MAX_LISTED_SKIPS)
    return f"DEPArray reader: opened {n_read} cell(s); {listing}"


def _warn(message: str) -> None:
    """Show one warning in napari (or as a Python warning outside napari)."""
    try:
        from napari.utils.notifications import show_warning
    except ImportError:  # used from a script without napari
        import warnings

        warnings.warn(message, UserWarning, stacklevel=3)
        return
    show_warning(message)


def read_deparray(path: PathOrPaths) -> list[LayerData]:
    """Read a DEPArray export into napari layer data (one ``Image`` layer per channel).

    Parameters
    ----------
    path
        A cell file, a folder, a multi-cell stack file, or a list of files.

    Returns
    -------
    list of LayerData
        See :func:`napari_deparray_ctc.napari.layer_data.export_to_layer_data`: 2-D layers for one
        cell (named after the cell), ``(N, Y, X)`` stacks for several (named after the folder
        or file). An export of more than
        :data:`~napari_deparray_ctc.core.io.lazy.LAZY_MIN_CELLS` cells, or whose layers would
        take more than :data:`~napari_deparray_ctc.core.io.lazy.LAZY_MIN_BYTES`, opens lazily:
        dask arrays read chunk by chunk as napari shows the cells
        (:func:`~napari_deparray_ctc.napari.layer_data.lazy_export_to_layer_data`). Files that
        could not be read are listed in one napari warning while the good cells open.

    Raises
    ------
    napari_deparray_ctc.core.io.DeparrayReadError
        When no cell at all could be read; the message names the file(s) and the reason.
    """
    from ..core.annotations.sidecars import apply_sidecar
    from ..core.io import discover_cells
    from ..core.io.read import read_sources

    paths = _as_path_list(path)
    target = paths[0] if len(paths) == 1 else paths
    sources, skipped = discover_cells(target)
    lazy = _lazy_export(sources, skipped)
    if lazy is not None:
        if lazy.skipped or lazy.unreadable:
            problems = lazy.skipped + [
                (lazy.sources[i].path, reason) for i, reason in lazy.unreadable.items()
            ]
            _warn(skipped_message(problems, lazy.n_cells - len(lazy.unreadable)))
        # the user's autosaved annotations (the sidecar) win over class folders / labels.csv
        sidecar = apply_sidecar(target, lazy.sources)
        layers = lazy_export_to_layer_data(lazy, export_name(paths))
    else:
        export = read_sources(target, sources, skipped)  # raises if no cell at all
        if export.skipped:
            _warn(skipped_message(export.skipped, len(export.cells)))
        name = export.cells[0].cell_id if len(export.cells) == 1 else export_name(paths)
        sidecar = apply_sidecar(target, export.cells)
        layers = export_to_layer_data(export, name=name)
        if len(export.cells) > 1:
            del export  # the per-cell arrays: the layers hold stacked copies
            _return_freed_memory_to_the_os()
    for _data, kwargs, _kind in layers:
        kwargs["metadata"]["deparray"]["annotations_path"] = str(sidecar)
    _attach_session()
    return layers


def _attach_session() -> None:
    """Give the viewer its session before napari adds the layers: the annotation keys and
    the cell caption then work without any widget docked (``napari/session.py``)."""
    try:
        import napari

        from .session import session_for

        viewer = napari.current_viewer()
        if viewer is not None:
            session_for(viewer)
    except Exception:  # a convenience: reading never fails on it
        pass


#: exports of up to this many cells are read into memory without sampling them first
_ALWAYS_EAGER_CELLS = 256


def _lazy_export(sources: list, skipped: list) -> Any:
    """A :class:`~napari_deparray_ctc.core.io.lazy.LazyExport` when the export is large."""
    if len(sources) <= _ALWAYS_EAGER_CELLS:
        return None
    from ..core.errors import DeparrayReadError
    from ..core.io.lazy import LazyExport

    try:
        lazy = LazyExport(sources, skipped)
    except DeparrayReadError:
        return None  # the eager read reports every unreadable file
    return lazy if lazy.is_large else None


def _return_freed_memory_to_the_os() -> None:
    """Hand the heap pages freed after stacking back to the OS (glibc only; else a no-op).

    Reading an export allocates one small array per cell and channel, then copies them into
    the layer stacks. glibc keeps the freed small arrays' pages: about as much memory as the
    layers themselves (~300 MB for 10,000 cells × 4 channels of 64 × 64 px), which pushed a
    napari session that then classified those cells past 1.5 GB (``benchmarks/bench_load.py``).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to do
        pass
