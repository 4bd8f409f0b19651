"""Exports larger than memory: one lazy (N, Y, X) dask array per channel, read on demand.

:class:`LazyExport` is built from discovered cells (names only, no pixels) and a small sample
of cells read at once (for the channels, the common plane size, the dtypes and the contrast).
Each channel's dask array has chunks of :data:`CHUNK_CELLS` cells; a chunk is read once for
all channels (``read_cell`` per cell, fitted to the common size as
:func:`~napari_deparray_ctc.core.io.stack_channel` does) and kept in a small cache of the
last :data:`CACHED_CHUNKS` chunks, so stepping through cells in napari, which slices every
channel layer, reads each cell once. Nothing here imports napari or Qt.

Reading efficiently: slice whole chunks (``data[start:stop]`` with the bounds of
``data.chunks[0]``, or ``data.blocks[i]``), not one cell at a time; the channels of a chunk
come from the same read. A cell that cannot be read when its chunk is read (a file that
vanished since discovery, say) is a plane of zeros, and its reason is in :attr:`unreadable`.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from napari_deparray_ctc.core.channels import ChannelMap, order_channels
from napari_deparray_ctc.core.errors import DeparrayReadError
from napari_deparray_ctc.core.io.common import as_path_list, resolve_limit, user_map
from napari_deparray_ctc.core.io.discover import discover_cells
from napari_deparray_ctc.core.io.read import read_cell
from napari_deparray_ctc.core.io.stack import common_shape, fit_plane
from napari_deparray_ctc.core.io.types import Cell, CellSource

#: an export of more cells than this opens lazily
LAZY_MIN_CELLS = 20_000
#: ... or one whose stacked layers would take more than this many bytes
LAZY_MIN_BYTES = 512 * 1024**2
#: cells per dask chunk (a few MB per channel for 64 × 64 px cells)
CHUNK_CELLS = 256
#: chunks kept in memory (all channels of each)
CACHED_CHUNKS = 8
#: cells read when the export is opened, spread over it
SAMPLE_CELLS = 24

_TOKENS = itertools.count()


class LazyExport:
    """Discovered cells whose pixels are read chunk by chunk, on demand.

    Parameters
    ----------
    sources, skipped
        From :func:`~napari_deparray_ctc.core.io.discover_cells`.
    channel_map
        Overrides the map found at discovery.
    max_pixels
        Largest plane read (default :data:`~napari_deparray_ctc.core.io.MAX_PIXELS_PER_PLANE`).
    chunk_cells
        Cells per chunk (default :data:`CHUNK_CELLS`).

    Raises
    ------
    DeparrayReadError
        When none of the sampled cells can be read.
    """

    def __init__(
        self,
        sources: Sequence[CellSource],
        skipped: Iterable[tuple[str, str]] = (),
        channel_map: ChannelMap | str | os.PathLike | Sequence[str] | dict | None = None,
        *,
        max_pixels: int | None = None,
        chunk_cells: int | None = None,
    ) -> None:
        self.sources = list(sources)
        self.skipped = list(dict.fromkeys(skipped))
        self.channel_map = user_map(channel_map)
        self.max_pixels = resolve_limit(max_pixels)
        self.chunk_cells = max(1, int(chunk_cells or CHUNK_CELLS))
        #: cell index -> reason, for cells that could not be read when their chunk was
        self.unreadable: dict[int, str] = {}
        #: ``[height, width]`` as stored, per cell; ``None`` until the cell has been read
        self.original_shapes: list[list[int] | None] = [None] * len(self.sources)
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._loading: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self.samples = self._read_samples()
        names = [name for cell in self.samples.values() for name in cell.channels]
        first_map = self.channel_map or next(
            (s.channel_map for s in self.sources if s.channel_map), None
        )
        self.channels: list[str] = order_channels(names, first_map)
        self.shape: tuple[int, int] = common_shape(
            [cell.original_shape for cell in self.samples.values()]
        )
        self.dtypes: dict[str, np.dtype] = {
            name: np.result_type(
                *{c.channels[name].dtype for c in self.samples.values() if name in c.channels}
            )
            for name in self.channels
        }
        sizes = {cell.pixel_size_um for cell in self.samples.values()}
        self.pixel_size_um: float | None = sizes.pop() if len(sizes) == 1 else None

    @classmethod
    def from_paths(
        cls,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        channel_map: ChannelMap | str | os.PathLike | Sequence[str] | dict | None = None,
        **kwargs: Any,
    ) -> LazyExport:
        """Discover the cells of files and folders (names only) and open them lazily."""
        cmap = user_map(channel_map)
        sources, skipped = discover_cells(paths, cmap, max_pixels=kwargs.get("max_pixels"))
        if not sources:
            where = ", ".join(as_path_list(paths)[:3])
            raise DeparrayReadError(where, "no cell images found")
        return cls(sources, skipped, cmap, **kwargs)

    # ---- sizes

    @property
    def n_cells(self) -> int:
        return len(self.sources)

    @property
    def nbytes(self) -> int:
        """Bytes of all channel stacks, were they read (from the sampled dtypes and size)."""
        plane = self.shape[0] * self.shape[1]
        return self.n_cells * plane * sum(d.itemsize for d in self.dtypes.values())

    @property
    def is_large(self) -> bool:
        """True when the export should not be read into memory at open time."""
        return self.n_cells > LAZY_MIN_CELLS or self.nbytes > LAZY_MIN_BYTES

    @property
    def chunk_bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` cell indices of every chunk."""
        step = self.chunk_cells
        return [(s, min(s + step, self.n_cells)) for s in range(0, self.n_cells, step)]

    # ---- reading

    def _read(self, index: int) -> Cell | None:
        try:
            cell = read_cell(self.sources[index], self.channel_map, max_pixels=self.max_pixels)
        except DeparrayReadError as exc:
            self.unreadable[index] = exc.reason
            return None
        self.original_shapes[index] = [int(n) for n in cell.original_shape]
        return cell

    def _read_samples(self) -> dict[int, Cell]:
        count = min(self.n_cells, SAMPLE_CELLS)
        indices = np.unique(np.linspace(0, self.n_cells - 1, count).round().astype(int))
        samples = {int(i): cell for i in indices if (cell := self._read(int(i))) is not None}
        if not samples:
            first = "; ".join(
                f"{os.path.basename(self.sources[i].path)}: {self.unreadable[i]}"
                for i in list(self.unreadable)[:3]
            )
            where = self.sources[0].path if self.sources else ""
            raise DeparrayReadError(where, f"no readable cell images; {first}")
        return samples

    def chunk(self, index: int) -> dict[str, np.ndarray]:
        """All channels of chunk ``index``, as ``{channel: (n, Y, X) array}`` (read once)."""
        while True:
            with self._lock:
                cached = self._cache.get(index)
                if cached is not None:
                    self._cache.move_to_end(index)
                    return cached
                event = self._loading.get(index)
                if event is None:  # this thread reads the chunk
                    event = self._loading[index] = threading.Event()
                    break
            event.wait()  # another thread is reading it
        try:
            planes = self._read_chunk(index)
            with self._lock:
                self._cache[index] = planes
                while len(self._cache) > CACHED_CHUNKS:
                    self._cache.popitem(last=False)
            return planes
        finally:
            with self._lock:
                self._loading.pop(index).set()

    def _read_chunk(self, index: int) -> dict[str, np.ndarray]:
        start, stop = self.chunk_bounds[index]
        out = {ch: np.zeros((stop - start, *self.shape), self.dtypes[ch]) for ch in self.channels}
        for offset, cell_index in enumerate(range(start, stop)):
            cell = self.samples.get(cell_index) or self._read(cell_index)
            if cell is None:
                continue  # a plane of zeros; the reason is in self.unreadable
            for name, plane in cell.channels.items():
                if name in out:
                    target = out[name]
                    fitted = plane if plane.shape == self.shape else None
                    if fitted is None:
                        fitted = fit_plane(plane, self.shape, target.dtype)
                    target[offset] = fitted
        return out

    def channel_array(self, channel: str) -> Any:
        """The ``(N, Y, X)`` dask array of one channel (nothing is read until computed)."""
        import dask.array as da
        from dask.highlevelgraph import HighLevelGraph

        dtype = self.dtypes[channel]
        name = f"deparray-{channel}-{next(_TOKENS)}"
        graph = {
            (name, i, 0, 0): (_chunk_plane, self, i, channel) for i in range(len(self.chunk_bounds))
        }
        chunks = (
            tuple(stop - start for start, stop in self.chunk_bounds),
            (self.shape[0],),
            (self.shape[1],),
        )
        layers = HighLevelGraph.from_collections(name, graph, dependencies=())
        return da.Array(layers, name, chunks, dtype=dtype, meta=np.empty((0, 0, 0), dtype))

    def sample_stack(self, channel: str) -> np.ndarray:
        """The sampled cells' planes of ``channel`` fitted to the common size (for contrast)."""
        dtype = self.dtypes[channel]
        planes = [
            fit_plane(cell.channels[channel], self.shape, dtype)
            for cell in self.samples.values()
            if channel in cell.channels
        ]
        return np.stack(planes)


def _chunk_plane(lazy: LazyExport, index: int, channel: str) -> np.ndarray:
    return lazy.chunk(index)[channel]
