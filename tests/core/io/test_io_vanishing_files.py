"""Files that vanish or change between discovery and reading (an export still being written,
issue 15): the cell is skipped with its reason, the rest open."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import tifffile
from io_helpers import stack_data

from napari_deparray_ctc.core.io import discover_cells, iter_cells, read_cell, read_export
from napari_deparray_ctc.core.io import read as read_module
from napari_deparray_ctc.core.io.types import DeparrayReadError


def _write_cells(folder, n: int) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(n):
        path = folder / f"cell{index:04d}.tif"
        with tifffile.TiffWriter(path) as tif:
            for channel in ("BF", "DAPI"):
                plane = np.full((16, 16), 100 * index + len(channel), "uint16")
                tif.write(plane, photometric="minisblack", extratags=[(285, "s", 0, channel, True)])
        paths.append(path)
    return paths


def test_files_deleted_emptied_or_replaced_while_streaming_are_skipped(tmp_path) -> None:
    paths = _write_cells(tmp_path / "e", 6)
    skipped: list[tuple[str, str]] = []
    stream = iter_cells(tmp_path / "e", on_skip=lambda p, r: skipped.append((p, r)))
    first = next(stream)  # discovery is done: now the export changes under the reader
    assert first.cell_id == "cell0000"
    paths[1].unlink()  # deleted (moved away)
    paths[2].write_bytes(b"")  # being rewritten: empty for now
    content = paths[3].read_bytes()
    paths[3].write_bytes(content[: len(content) // 3])  # half written
    paths[4].write_text("not an image any more")  # replaced by something else
    rest = list(stream)
    assert [cell.cell_id for cell in rest] == ["cell0005"]
    np.testing.assert_array_equal(rest[0].channels["BF"], np.full((16, 16), 502, "uint16"))
    reasons = {os.path.basename(path): reason for path, reason in skipped}
    assert reasons["cell0001.tif"] == "file not found (it was moved or deleted while reading)"
    assert reasons["cell0002.tif"] == "empty file (0 bytes)"
    assert "truncated" in reasons["cell0003.tif"]
    assert reasons["cell0004.tif"] == "not a TIFF file"
    assert len(skipped) == 4


def test_read_export_skips_a_file_that_vanishes_after_discovery(tmp_path, monkeypatch) -> None:
    paths = _write_cells(tmp_path / "e", 3)
    real_discover = read_module.discover_cells

    def discover_then_delete(*args, **kwargs):
        found = real_discover(*args, **kwargs)
        paths[1].unlink()  # gone between discovery and reading
        return found

    monkeypatch.setattr(read_module, "discover_cells", discover_then_delete)
    export = read_export(tmp_path / "e")
    assert export.cell_ids == ["cell0000", "cell0002"]
    assert export.skipped == [
        (str(paths[1]), "file not found (it was moved or deleted while reading)")
    ]


def test_a_channel_file_that_vanishes_skips_its_cell_only(tiffs, planes_factory) -> None:
    for index in range(3):
        tiffs.per_channel(f"c{index}", planes_factory(cell=index), folder="e")
    sources, _ = discover_cells(tiffs.base / "e")
    (tiffs.base / "e" / "c1_PE.tif").unlink()
    cells, reasons = [], []
    for source in sources:
        try:
            cells.append(read_cell(source).cell_id)
        except DeparrayReadError as error:
            reasons.append((os.path.basename(error.path), error.reason))
    assert cells == ["c0", "c2"]
    assert reasons == [("c1_PE.tif", "file not found (it was moved or deleted while reading)")]


def test_a_stack_that_shrinks_after_discovery(tiffs) -> None:
    path = tiffs.stack("cells.ome.tif", stack_data(5), axes="QCYX")
    sources, _ = discover_cells(path)
    assert len(sources) == 5
    time.sleep(0.01)
    tiffs.stack("cells.ome.tif", stack_data(3), axes="QCYX")  # rewritten with fewer cells
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert read_cell(sources[2]).cell_id == "cells_0002"
    with pytest.raises(
        DeparrayReadError, match=r"has 3 cells, no cell number 4 \(the file changed"
    ):
        read_cell(sources[4])
