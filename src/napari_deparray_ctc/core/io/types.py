"""The reader's data types: where a cell is, a cell read, an export, a file's plan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_deparray_ctc.core.channels import ChannelMap
from napari_deparray_ctc.core.errors import DeparrayReadError


class MultiCellFileError(DeparrayReadError):
    """A file discovered as one cell holds several (raised by :func:`read_cell`)."""

    def __init__(self, path: str, n_cells: int) -> None:
        super().__init__(
            path,
            f"holds {n_cells} cells (a multi-cell stack) but was found as a single cell; "
            "open the stack file on its own",
        )
        self.n_cells = n_cells


class NotACellImageError(DeparrayReadError):
    """A valid image whose layout is not a cell export (a z-stack, a colour photo, ...).

    Unlike a damaged file, such a file opens in napari's own reader, so the reader probe
    leaves it to napari instead of claiming it and then refusing it.
    """


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
    plane_names
        Channel -> the name the file itself gives that plane, for the planes whose channel was
        not read from that name (a page title such as GIMP's ``Background``, an ImageJ slice
        label, or a plane that a channel map's ``INDEX`` entry names). The channel is the
        plane's *role* (``BF`` is what the classifier reads); the file's name is kept so that
        the layer can show both. *Added field; empty for DEPArray-like exports.*
    """

    cell_id: str
    channels: dict[str, np.ndarray]
    path: str
    label: str | None = None
    group: str | None = None
    pixel_size_um: float | None = None
    original_shape: tuple[int, int] = (0, 0)
    plane_names: dict[str, str] = field(default_factory=dict)


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


@dataclass
class Plan:
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
    # the channel axis is one the file declares (C, or grey planar samples), not a page run
    declared_channels: bool = False
    # the names the file gives its planes, page titles and slice labels included (set only
    # where they differ from stored_names: GIMP's "Background", "c:1/2 z:30/64 t:1/68 - 4")
    plane_labels: list[str | None] | None = None

    @property
    def nbytes(self) -> int:
        return self.n_cells * self.n_channels * self.height * self.width * self.dtype.itemsize
