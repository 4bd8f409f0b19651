"""Discovery and reading of DEPArray single-cell image exports (no torch, napari or Qt).

What is recognised (layouts, channel names and tokens, refusals) is described in
``docs/reader.md``. The modules: :mod:`.types` (the data types), :mod:`.discover` (files to
cells, no pixels), :mod:`.read` (cells to arrays), :mod:`.stack` (stacking for display),
:mod:`.sniff` (the cheap probe for ``napari_get_reader``), :mod:`.tiff_header`,
:mod:`.metadata` and :mod:`.fast_ifd` (headers), :mod:`.pixels` (pixel reads).
"""

from napari_deparray_ctc.core.constants import TIFF_SUFFIXES
from napari_deparray_ctc.core.errors import DeparrayReadError
from napari_deparray_ctc.core.io.common import (
    MAX_CHANNELS_PER_CELL,
    MAX_FOLDER_DEPTH,
    MAX_PIXELS_PER_PLANE,
    MIN_SIDE_PX,
    tiff_stem,
)
from napari_deparray_ctc.core.io.discover import discover_cells
from napari_deparray_ctc.core.io.pixels import release_open_files
from napari_deparray_ctc.core.io.read import format_skipped, iter_cells, read_cell, read_export
from napari_deparray_ctc.core.io.sniff import is_probably_deparray
from napari_deparray_ctc.core.io.stack import stack_channel
from napari_deparray_ctc.core.io.types import Cell, CellSource, Export

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
    "tiff_stem",
]
