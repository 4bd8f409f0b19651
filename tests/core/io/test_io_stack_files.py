"""Layout 4, multi-cell stacks: OME/ImageJ stacks, per-channel stacks, the open-file cache."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import tifffile
from io_helpers import CHANNELS, assert_cell_matches, stack_data

from napari_deparray_ctc.core import io
from napari_deparray_ctc.core.io import (
    DeparrayReadError,
    discover_cells,
    is_probably_deparray,
    pixels,
    read_cell,
    read_export,
)


@pytest.mark.parametrize("axes", ["QCYX", "RCYX", "CQYX"])
def test_ome_stack_of_cells(tiffs, axes) -> None:
    """Cells on OME's "other" (Q, a modulo axis) or tile (R) axis, either side of C."""
    data = stack_data()
    stored = data if axes != "CQYX" else data.transpose(1, 0, 2, 3)
    path = tiffs.stack("cells.ome.tif", stored, axes=axes)
    with tifffile.TiffFile(path, mode="r+b") as tif:  # name the channels in the OME-XML
        xml = tif.ome_metadata
        for index, name in enumerate(CHANNELS):
            xml = xml.replace(f'ID="Channel:0:{index}"', f'ID="Channel:0:{index}" Name="{name}"')
        tif.pages[0].tags["ImageDescription"].overwrite(xml.encode())
    export = read_export(path)
    assert export.cell_ids == [f"cells_{i:04d}" for i in range(5)]
    for index, cell in enumerate(export.cells):
        assert_cell_matches(cell, dict(zip(CHANNELS, data[index], strict=True)))


def test_per_channel_stacks(tiffs) -> None:
    data = stack_data(6)
    for index, name in enumerate(CHANNELS):
        tiffs.stack(f"e/stack_{name}.tif", data[:, index], axes="plain")
    sources, skipped = discover_cells(tiffs.base / "e")
    assert skipped == []
    assert [s.stack_index for s in sources] == list(range(6))
    export = read_export(tiffs.base / "e")
    assert export.cell_ids == [f"stack_{i:04d}" for i in range(6)]
    for index, cell in enumerate(export.cells):
        assert_cell_matches(cell, dict(zip(CHANNELS, data[index], strict=True)))
        single = read_cell(sources[index])
        np.testing.assert_array_equal(single.channels["DAPI"], data[index, 1])


def test_per_channel_stacks_with_different_counts_are_refused(tiffs) -> None:
    data = stack_data(4, channels=("BF", "DAPI"))
    tiffs.stack("e/s_BF.tif", data[:, 0], axes="plain")
    tiffs.stack("e/s_DAPI.tif", data[:3, 1], axes="plain")
    with pytest.raises(DeparrayReadError, match=r"different cell counts \(BF: 4, DAPI: 3\)"):
        read_export(tiffs.base / "e")


def test_long_unnamed_page_sequence_is_a_stack_of_bf_cells(tiffs) -> None:
    data = stack_data(12, channels=("BF",))[:, 0]
    path = tiffs.pages("run.tif", list(data), None, how="none")
    export = read_export(path)
    assert len(export.cells) == 12 and export.channels == ["BF"]
    np.testing.assert_array_equal(export.cells[11].channels["BF"], data[11])


def test_stack_labels_by_row_order(tiffs) -> None:
    data = stack_data(3)
    tiffs.stack("e/cells.ome.tif", data, axes="QCYX")
    (tiffs.base / "e" / "labels.csv").write_text(
        "cell_id,label,sample\nA,CTC,S1\nB,WBC,S1\nC,WBC,S2\n"
    )
    export = read_export(tiffs.base / "e")
    assert [(c.cell_id, c.label, c.group) for c in export.cells] == [
        ("A", "CTC", "S1"),
        ("B", "WBC", "S1"),
        ("C", "WBC", "S2"),
    ]


def test_read_cell_keeps_a_stack_open_and_notices_changes(tiffs) -> None:
    data = stack_data(40)
    path = tiffs.stack("cells.ome.tif", data, axes="QCYX")
    sources, _ = discover_cells(path)
    io.release_open_files()
    try:
        cells = [read_cell(source) for source in sources]
        for index, cell in enumerate(cells):
            np.testing.assert_array_equal(cell.channels["BF"], data[index, 0])
        assert len(pixels.STACK_CACHE._files) == 1  # opened once for all 40 cells
        replaced = data[::-1].copy()
        time.sleep(0.01)
        tiffs.stack("cells.ome.tif", replaced, axes="QCYX")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        np.testing.assert_array_equal(read_cell(sources[0]).channels["BF"], replaced[0, 0])
    finally:
        io.release_open_files()
    assert pixels.STACK_CACHE._files == {}


@pytest.mark.parametrize(("axes", "what"), [("TCYX", "time series"), ("ZCYX", "z-stack")])
def test_ome_z_and_t_axes_are_never_cells(tiffs, axes, what) -> None:
    """Issue 16: a TCYX or ZCYX stack from other software is refused, not read as cells."""
    path = tiffs.stack("cells.ome.tif", stack_data(3), axes=axes)
    with pytest.raises(DeparrayReadError, match=f"holds a {what} \\(3 "):
        read_export(path)


@pytest.mark.parametrize(("axes", "what"), [("TCYX", "time series"), ("ZCYX", "z-stack")])
def test_imagej_hyperstacks_are_never_cells(tiffs, axes, what) -> None:
    data = stack_data(3)
    path = tiffs.base / "cells.tif"
    labels = [name for _ in range(3) for name in ("bright field", "DNA", "PE", "APC")]
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": axes, "Labels": labels})
    with pytest.raises(DeparrayReadError, match=f"holds a {what}"):
        read_export(path)
    assert not is_probably_deparray(path)  # a valid image of another kind: left to napari


def test_cell_stacks_written_by_earlier_versions_still_open(tmp_path) -> None:
    """``write_export(layout="stack")`` stored the cell index on OME's T axis; its files are
    recognised by their OME Creator and still read as cells (no other file's T axis is)."""
    from napari_deparray_ctc.core.synth import write_export

    folder = write_export(tmp_path / "e", 3, seed=1, layout="stack", image_size=16)
    with tifffile.TiffFile(folder / "cells.ome.tif") as tif:
        stored = tif.asarray()
        axes = tif.series[0].axes
    export = read_export(folder)
    assert len(export.cells) == 3
    if axes == "TCYX":  # the legacy layout (a later writer may use a cell axis instead)
        np.testing.assert_array_equal(export.cells[2].channels["BF"], stored[2, 0])


def test_large_stacks_are_read_cell_by_cell(tiffs, monkeypatch) -> None:
    data = stack_data(4)
    path = tiffs.stack("cells.ome.tif", data, axes="QCYX")
    monkeypatch.setattr(pixels, "MAX_WHOLE_READ_BYTES", 0)  # as if the stack were huge
    export = read_export(path)
    for index, cell in enumerate(export.cells):
        np.testing.assert_array_equal(
            np.stack([cell.channels[name] for name in ("BF", "DAPI", "C2", "C3")]), data[index]
        )


def test_ome_file_with_one_image_per_channel(tiffs, planes_factory) -> None:
    planes = planes_factory(channels=("BF", "DAPI", "PE"))
    path = tiffs.base / "cell1.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        for name, plane in planes.items():
            tif.write(plane, metadata={"axes": "YX", "Channel": {"Name": name}})
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series) == 3
    assert_cell_matches(read_export(path).cells[0], planes)


def test_read_cell_on_a_stack_file_found_as_one_cell(tiffs) -> None:
    data = stack_data(3)
    path = tiffs.stack("cells.ome.tif", data, axes="QCYX")
    source = io.CellSource("cells", {}, str(path), None)
    with pytest.raises(DeparrayReadError, match="holds 3 cells"):
        read_cell(source)
