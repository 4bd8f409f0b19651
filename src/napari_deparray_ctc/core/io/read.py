"""Reading discovered cells: one (:func:`read_cell`), streamed, or a whole export."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from napari_deparray_ctc.core.channels import (
    ChannelMap,
    canonical_channel,
    order_channels,
    resolve_plane_names,
)
from napari_deparray_ctc.core.errors import DeparrayReadError, printable_path
from napari_deparray_ctc.core.io.common import (
    as_path_list,
    error_from_exception,
    resolve_limit,
    user_map,
)
from napari_deparray_ctc.core.io.discover import discover_cells
from napari_deparray_ctc.core.io.pixels import STACK_CACHE, OpenFile, native
from napari_deparray_ctc.core.io.types import Cell, CellSource, Export, MultiCellFileError, Plan


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
    """Check the planes of one cell (same size, some finite value) and build the Cell.

    A cell without a bright-field (BF) channel is read too, for viewing and annotation; only
    classification needs BF, and it says so where it runs.
    """
    reference = "BF" if "BF" in planes else next(iter(planes))
    first_array, first_path = planes[reference]
    shape = first_array.shape
    for name, (array, where) in planes.items():
        if array.shape != shape:
            raise DeparrayReadError(
                where,
                f"channel sizes differ within cell {source.cell_id!r}: {reference} is "
                f"{shape[0]}×{shape[1]} ({os.path.basename(first_path)}), {name} is "
                f"{array.shape[0]}×{array.shape[1]}",
            )
        _check_values(where, name, array)
    ordered = order_channels(planes, channel_map)
    return Cell(
        cell_id=source.cell_id,
        channels={name: native(planes[name][0]) for name in ordered},
        path=source.path,
        label=source.label,
        group=source.group,
        pixel_size_um=pixel_size,
        original_shape=(int(shape[0]), int(shape[1])),
    )


def _named_planes(
    data: np.ndarray, plan: Plan, channel_map: ChannelMap | None, path: str, named: bool
) -> dict[str, tuple[np.ndarray, str]]:
    """The planes of a multichannel file under their names.

    ``named``: the file's name names a channel, so unnamed planes are not guessed to be BF.
    """
    guess = not named and not any(plan.stored_names or [])
    names = resolve_plane_names(
        plan.stored_names, plan.n_channels, channel_map, guess_unnamed=guess
    )
    return {name: (plane, path) for name, plane in zip(names, data, strict=True)}


#: the longest plane name of a file kept for display (an ImageJ label can be a paragraph)
MAX_PLANE_NAME_CHARS = 48


def file_plane_names(
    plan: Plan, names: list[str], channel_map: ChannelMap | None
) -> dict[str, str]:
    """Channel -> the file's own name of that plane, where the channel was not read from it.

    Parameters
    ----------
    plan
        The file's plan (its ``plane_labels``).
    names
        The channel of each plane, in plane order.
    channel_map
        The channel map in use (a name it maps *is* read as that channel).

    Returns
    -------
    dict
        Only the planes whose name in the file is not a name of their channel: GIMP's
        ``Background`` used as ``BF``, ImageJ's ``c:1/2 z:30/64 t:1/68 - 4``, a named plane
        that a channel map's ``INDEX`` entry renames.
    """
    found: dict[str, str] = {}
    for label, name in zip(plan.plane_labels or [], names, strict=False):
        if not label or canonical_channel(label, channel_map) == name:
            continue
        if len(label) > MAX_PLANE_NAME_CHARS:
            label = label[: MAX_PLANE_NAME_CHARS - 1].rstrip() + "…"
        found[name] = label
    return found


def _cell_from_open_files(
    source: CellSource,
    channel_map: ChannelMap | None,
    opener: Callable[[str, bool], OpenFile],
    cache_whole: bool,
) -> Cell:
    planes: dict[str, tuple[np.ndarray, str]] = {}
    plane_names: dict[str, str] = {}
    pixel_size = None
    index = source.stack_index
    if source.files:
        for channel, path in source.files.items():
            handle = opener(path, True)
            plan = handle.plan
            if index is None and plan.n_cells > 1:
                raise MultiCellFileError(path, plan.n_cells)
            data = handle.cell(index or 0, cache_whole)
            if plan.n_channels > 1 and len(source.files) == 1:
                # named for one channel but holding a declared C axis: a multichannel cell
                planes = _named_planes(data, plan, channel_map, path, named=True)
                plane_names = file_plane_names(plan, list(planes), channel_map)
            elif plan.n_channels > 1:
                raise DeparrayReadError(
                    path,
                    f"holds {plan.n_channels} channels but is the {channel} file of cell "
                    f"{source.cell_id!r} (other files of this cell hold its other channels)",
                )
            else:
                planes[channel] = (data[0], path)
            if pixel_size is None:
                pixel_size = plan.pixel_size_um
    else:
        handle = opener(source.path, False)
        plan = handle.plan
        if index is None and plan.n_cells > 1:
            raise MultiCellFileError(source.path, plan.n_cells)
        data = handle.cell(index or 0, cache_whole)
        planes = _named_planes(data, plan, channel_map, source.path, named=False)
        plane_names = file_plane_names(plan, list(planes), channel_map)
        pixel_size = plan.pixel_size_um
    cell = _finish_cell(source, planes, channel_map, pixel_size)
    cell.plane_names = plane_names
    return cell


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
        Naming the file and the reason (``docs/reader.md`` lists what is refused).
    """
    cmap = user_map(channel_map) or source.channel_map
    limit = resolve_limit(max_pixels)
    if source.stack_index is not None:
        # cells of a stack are usually read one after another: keep the stack files open
        with STACK_CACHE.lock:
            try:
                return _cell_from_open_files(
                    source, cmap, lambda p, single: STACK_CACHE.get(p, single, limit), False
                )
            except Exception as exc:
                raise error_from_exception(source.path, exc) from None
    opened: list[OpenFile] = []

    def opener(path: str, single_channel: bool) -> OpenFile:
        handle = OpenFile(path, single_channel, limit)
        opened.append(handle)
        return handle

    try:
        return _cell_from_open_files(source, cmap, opener, cache_whole=False)
    except Exception as exc:
        raise error_from_exception(source.path, exc) from None
    finally:
        for handle in opened:
            handle.close()


def sources_then_cells(
    sources: list[CellSource],
    channel_map: ChannelMap | None,
    max_pixels: int,
    on_error: Callable[[str, str], None],
) -> Iterator[Cell]:
    """Read cells in order; stack files stay open while consecutive cells come from them."""
    open_files: dict[tuple[str, bool], OpenFile] = {}

    def opener(path: str, single_channel: bool) -> OpenFile:
        key = (path, single_channel)
        handle = open_files.get(key)
        if handle is None:  # a stack that discovery opened is taken over, not opened again
            handle = STACK_CACHE.take(path, single_channel, max_pixels)
            handle = handle or OpenFile(path, single_channel, max_pixels)
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
                error = error_from_exception(source.path, exc)
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
    cmap = user_map(channel_map)
    limit = resolve_limit(max_pixels)
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
    yield from sources_then_cells(sources, cmap, limit, report)
    if on_skip is None and collected:
        warnings.warn(format_skipped(collected), UserWarning, stacklevel=2)


def format_skipped(skipped: Sequence[tuple[str, str]], limit: int = 20) -> str:
    """One message listing skipped files (for a single warning)."""
    lines = [f"skipped {len(skipped)} unreadable file(s)/cell(s):"]
    lines += [f"  {printable_path(path)}: {reason}" for path, reason in skipped[:limit]]
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
    cmap = user_map(channel_map)
    limit = resolve_limit(max_pixels)
    sources, skipped = discover_cells(paths, cmap, max_pixels=limit)
    return read_sources(paths, sources, skipped, cmap, max_pixels=limit)


def read_sources(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    sources: list[CellSource],
    skipped: list[tuple[str, str]],
    channel_map: ChannelMap | None = None,
    *,
    max_pixels: int | None = None,
) -> Export:
    """:func:`read_export` for cells already discovered from ``paths`` (no second discovery).

    ``skipped``: what discovery skipped; the cells that cannot be read are added to it.
    """
    cmap, limit = channel_map, resolve_limit(max_pixels)
    skipped = list(dict.fromkeys(skipped))

    def record(path: str, reason: str) -> None:
        if (path, reason) not in skipped:
            skipped.append((path, reason))

    cells = list(sources_then_cells(sources, cmap, limit, record))
    if not cells:
        path_list = as_path_list(paths)
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
