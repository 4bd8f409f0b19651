"""The core DEPArray reader: every layout, dtype, compression, alias, channel map, label source
and bad input (tiny generated TIFFs from ``conftest.py``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_deparray_ctc.core import io
from napari_deparray_ctc.core.io import (
    Cell,
    DeparrayReadError,
    discover_cells,
    format_skipped,
    is_probably_deparray,
    iter_cells,
    read_cell,
    read_export,
    stack_channel,
)

CHANNELS = ("BF", "DAPI", "PE", "APC")


@pytest.fixture(autouse=True)
def _close_stack_files():
    """read_cell keeps stack files open between calls; close them after every test."""
    yield
    io.release_open_files()


def assert_cell_matches(
    cell: Cell, planes: dict[str, np.ndarray], order: list[str] | None = None
) -> None:
    """Same channel names (in display order), dtypes and pixels."""
    if order is None:
        order = [c for c in CHANNELS if c in planes] + [c for c in planes if c not in CHANNELS]
    assert list(cell.channels) == order
    for name, expected in planes.items():
        got = cell.channels[name]
        assert got.dtype == expected.dtype.newbyteorder("=")
        assert got.dtype.isnative
        np.testing.assert_array_equal(got, expected)
    assert cell.original_shape == next(iter(planes.values())).shape


# --------------------------------------------------------------------------------------------
# layout 1: one file per cell, channels inside


@pytest.mark.parametrize("how", ["pagename", "description"])
def test_pages_each_their_own_series_are_all_read(tiffs, planes_factory, how) -> None:
    planes = planes_factory()
    path = tiffs.pages("cell0001.tif", list(planes.values()), list(planes), how=how)
    with tifffile.TiffFile(path) as tif:  # the situation the issue warns about
        assert len(tif.series) == 4
    assert tifffile.imread(path).shape == (12, 10)  # imread alone sees only page 0
    export = read_export(path)
    assert export.skipped == []
    assert export.channels == list(CHANNELS)
    (cell,) = export.cells
    assert cell.cell_id == "cell0001"
    assert cell.path == os.path.abspath(path)
    assert_cell_matches(cell, planes)


def test_unnamed_pages_get_the_default_order(tiffs, planes_factory) -> None:
    planes = planes_factory()
    path = tiffs.pages("cell7.tif", list(planes.values()), None, how="none")
    cell = read_export(path).cells[0]
    assert list(cell.channels) == ["BF", "DAPI", "C2", "C3"]
    np.testing.assert_array_equal(cell.channels["C3"], planes["APC"])


def test_ome_channel_names_and_pixel_size(tiffs, planes_factory) -> None:
    planes = planes_factory()
    path = tiffs.c_axis(
        "cell3.ome.tif",
        list(planes.values()),
        ["Bright-field", "Hoechst", "PE", "Cy5"],
        how="ome",
        metadata={"PhysicalSizeX": 0.325, "PhysicalSizeXUnit": "µm"},
    )
    cell = read_export(path).cells[0]
    assert cell.cell_id == "cell3"
    assert_cell_matches(cell, planes)
    assert cell.pixel_size_um == pytest.approx(0.325)


def test_imagej_labels_and_resolution(tiffs, planes_factory) -> None:
    planes = planes_factory()
    path = tiffs.c_axis(
        "cell4.tif",
        list(planes.values()),
        list(planes),
        how="imagej",
        resolution=(1 / 0.5, 1 / 0.5),
        metadata={"unit": "um"},
    )
    cell = read_export(path).cells[0]
    assert_cell_matches(cell, planes)
    assert cell.pixel_size_um == pytest.approx(0.5)


def test_plain_c_axis_with_a_channel_map(tiffs, planes_factory) -> None:
    planes = planes_factory(channels=("DAPI", "BF", "FITC"))
    path = tiffs.c_axis("cell5.tif", list(planes.values()), how="plain")
    cell = read_export(path, channel_map=["DAPI", "BF", "FITC"]).cells[0]
    assert_cell_matches(cell, planes, order=["DAPI", "BF", "FITC"])  # the map sets the order


def test_stored_names_beat_the_default_order_but_not_a_map_index(tiffs, planes_factory) -> None:
    planes = planes_factory(channels=("DAPI", "BF"))
    path = tiffs.pages("c1.tif", list(planes.values()), ["DAPI", "BF"])
    assert_cell_matches(read_export(path).cells[0], planes)
    swapped = read_export(path, channel_map={0: "BF", 1: "DAPI"}).cells[0]
    np.testing.assert_array_equal(swapped.channels["BF"], planes["DAPI"])


def test_resolution_tags_in_centimetres_give_the_pixel_size(tiffs, planes_factory) -> None:
    planes = planes_factory(channels=("BF",))
    path = tiffs.pages("c1.tif", list(planes.values()), ["BF"], resolution=(25000, 25000))
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ResolutionUnit"].overwrite(3)
    assert read_export(path).cells[0].pixel_size_um == pytest.approx(0.4)


def test_default_resolution_is_not_a_pixel_size(tiffs, planes_factory) -> None:
    planes = planes_factory(channels=("BF",))
    path = tiffs.pages("c1.tif", list(planes.values()), ["BF"], resolution=(72, 72))
    assert read_export(path).cells[0].pixel_size_um is None


# --------------------------------------------------------------------------------------------
# layout 2: one file per channel


@pytest.mark.parametrize(
    ("pattern", "cell_id"),
    [
        ("{cell}_{channel}.tif", "cell0012"),
        ("{cell}-{channel}.tiff", "cell0012"),
        ("{channel} {cell}.tif", "cell0012"),
        ("{cell}_{channel}.TIF", "cell0012"),
    ],
)
def test_per_channel_files_grouped_into_a_cell(tiffs, planes_factory, pattern, cell_id) -> None:
    planes = planes_factory()
    tiffs.per_channel("cell0012", planes, pattern=pattern, folder="export")
    export = read_export(tiffs.base / "export")
    assert export.skipped == []
    (cell,) = export.cells
    assert cell.cell_id == cell_id
    assert Path(cell.path).name == pattern.format(cell="cell0012", channel="BF")
    assert_cell_matches(cell, planes)


def test_issue_example_names_with_spaces(tiffs, planes_factory) -> None:
    planes = planes_factory(channels=("BF", "DAPI"))
    tiffs.per_channel("cell 12", planes, pattern="{channel} {cell}.tif", folder="e")
    (cell,) = read_export(tiffs.base / "e").cells
    assert cell.cell_id == "cell 12"
    assert_cell_matches(cell, planes)


def test_channel_aliases_in_file_names(tiffs, planes_factory) -> None:
    raw = planes_factory(channels=("brightfield", "Hoechst", "FITC", "Cy5"))
    tiffs.per_channel("c1", raw, folder="e")
    cell = read_export(tiffs.base / "e").cells[0]
    assert list(cell.channels) == ["BF", "DAPI", "FITC", "APC"]
    np.testing.assert_array_equal(cell.channels["DAPI"], raw["Hoechst"])
    np.testing.assert_array_equal(cell.channels["APC"], raw["Cy5"])


def test_many_cells_in_natural_order_and_unknown_channels_kept(tiffs, planes_factory) -> None:
    written = {}
    for index in (10, 2, 1):
        planes = planes_factory(channels=("BF", "DAPI"), cell=index)
        tiffs.per_channel(f"cell{index}", planes, folder="e")
        written[f"cell{index}"] = planes
    extra = planes_factory(channels=("TRITC",), cell=99)["TRITC"]
    tifffile.imwrite(tiffs.base / "e" / "cell2_TRITC.tif", extra)
    export = read_export(tiffs.base / "e")
    assert export.cell_ids == ["cell1", "cell2", "cell10"]
    assert export.channels == ["BF", "DAPI", "TRITC"]
    for cell in export.cells:
        for name in ("BF", "DAPI"):
            np.testing.assert_array_equal(cell.channels[name], written[cell.cell_id][name])
    np.testing.assert_array_equal(export.cells[1].channels["TRITC"], extra)


def test_channels_csv_names_unknown_tokens(tiffs, planes_factory) -> None:
    raw = planes_factory(channels=("Ch3", "Ch4", "Ch6"))
    tiffs.per_channel("CP0008", raw, pattern="{channel}_{cell}.tif", folder="e")
    (tiffs.base / "e" / "channels.csv").write_text("token,name\nCh3,BF\nCh4,DNA\n")
    export = read_export(tiffs.base / "e")
    (cell,) = export.cells
    assert cell.cell_id == "CP0008"
    assert list(cell.channels) == ["BF", "DAPI", "Ch6"]
    np.testing.assert_array_equal(cell.channels["BF"], raw["Ch3"])
    np.testing.assert_array_equal(cell.channels["DAPI"], raw["Ch4"])


def test_channels_txt_in_the_opened_folder_applies_to_class_subfolders(
    tiffs, planes_factory
) -> None:
    planes = planes_factory(channels=("DAPI", "BF"))
    tiffs.pages("CTC/c1.tif", list(planes.values()), None, how="none")
    (tiffs.base / "channels.txt").write_text("DAPI\nBF\n")
    cell = read_export(tiffs.base).cells[0]
    assert cell.label == "CTC"
    assert_cell_matches(cell, planes, order=["DAPI", "BF"])


def test_bad_channel_map_argument_is_a_read_error(tiffs, planes_factory) -> None:
    tiffs.per_channel("c1", planes_factory(channels=("BF",)), folder="e")
    bad = tiffs.raw("map.csv", b"a,b,c\n")
    with pytest.raises(DeparrayReadError, match="line 1"):
        read_export(tiffs.base / "e", channel_map=bad)


def test_bad_channel_map_file_beside_the_images_is_skipped(tiffs, planes_factory) -> None:
    planes = planes_factory(channels=("BF",))
    tiffs.per_channel("c1", planes, folder="e")
    (tiffs.base / "e" / "channels.csv").write_text("a,b,c\n")
    export = read_export(tiffs.base / "e")
    assert export.cell_ids == ["c1"]
    assert [Path(p).name for p, _ in export.skipped] == ["channels.csv"]


# --------------------------------------------------------------------------------------------
# layout 3: folders, class sub-folders, labels.csv


def test_class_subfolders_with_aliases_give_labels(tiffs, planes_factory) -> None:
    folders = {"CTC": "CTC", "Tumour cells": "CTC", "WBC": "WBC", "non-CTC": "WBC", "misc": None}
    for number, folder in enumerate(folders):
        planes = planes_factory(channels=("BF", "DAPI"), cell=number)
        tiffs.per_channel(f"cell{number}", planes, folder=folder)
    export = read_export(tiffs.base)
    labels = {cell.cell_id: cell.label for cell in export.cells}
    assert labels == {f"cell{n}": label for n, label in enumerate(folders.values())}


def test_labels_csv_gives_classes_and_samples_and_overrides_folders(tiffs, planes_factory) -> None:
    for index in range(3):
        tiffs.per_channel(
            f"cell{index}", planes_factory(channels=("BF",), cell=index), folder="WBC"
        )
    (tiffs.base / "labels.csv").write_text(
        "cell_id,label,sample\ncell0,CTC,P1\ncell1_BF.tif,leukocyte,P2\n"
    )
    cells = {cell.cell_id: cell for cell in read_export(tiffs.base).cells}
    assert (cells["cell0"].label, cells["cell0"].group) == ("CTC", "P1")
    # a row may name a channel file instead of the cell id
    assert (cells["cell1"].label, cells["cell1"].group) == ("WBC", "P2")
    assert (cells["cell2"].label, cells["cell2"].group) == ("WBC", None)  # from the folder


def test_bad_labels_csv_is_skipped_and_cells_still_open(tiffs, planes_factory) -> None:
    tiffs.per_channel("c1", planes_factory(channels=("BF",)), folder="e")
    (tiffs.base / "e" / "labels.csv").write_text("cell_id,label\nc1,banana\n")
    export = read_export(tiffs.base / "e")
    assert export.cell_ids == ["c1"] and export.cells[0].label is None
    ((path, reason),) = export.skipped
    assert Path(path).name == "labels.csv" and "banana" in reason


def test_discovery_reads_no_pixels_and_finds_sources(tiffs, planes_factory, monkeypatch) -> None:
    for index in range(3):
        tiffs.per_channel(f"cell{index}", planes_factory(cell=index), folder="a")
        planes = planes_factory(cell=index)
        tiffs.pages(f"b/m{index}.tif", list(planes.values()), list(planes))

    def no_pixels(*args, **kwargs):
        raise AssertionError("discovery read pixels")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_pixels)
    monkeypatch.setattr(tifffile.TiffFrame, "asarray", no_pixels)
    sources, skipped = discover_cells(tiffs.base)
    assert skipped == []
    assert [s.cell_id for s in sources] == ["cell0", "cell1", "cell2", "m0", "m1", "m2"]
    assert set(sources[0].files) == set(CHANNELS)
    assert sources[0].path == sources[0].files["BF"]
    assert sources[3].files == {} and sources[3].path.endswith("m0.tif")
    assert all(s.stack_index is None for s in sources)


def test_tiff_with_another_extension_in_a_folder(tiffs, planes_factory) -> None:
    planes = planes_factory(channels=("BF",))
    path = tiffs.pages("e/cell9.tif", list(planes.values()), ["BF"])
    path.rename(path.with_suffix(".dat"))
    (tiffs.base / "e" / "notes.txt").write_text("not an image")
    export = read_export(tiffs.base / "e")
    assert export.cell_ids == ["cell9"] and export.skipped == []
    assert read_export(path.with_suffix(".dat")).cell_ids == ["cell9"]


def test_other_image_formats_in_a_folder_are_reported(tiffs, planes_factory) -> None:
    tiffs.per_channel("c1", planes_factory(channels=("BF",)), folder="e")
    (tiffs.base / "e" / "c2.png").write_bytes(b"\x89PNG....")
    export = read_export(tiffs.base / "e")
    assert export.cell_ids == ["c1"]
    assert [(Path(p).name, r) for p, r in export.skipped] == [
        ("c2.png", "not a TIFF file; only TIFF images are read")
    ]


def test_several_paths_at_once(tiffs, planes_factory) -> None:
    a = tiffs.per_channel("a1", planes_factory(channels=("BF",)), folder="x")["BF"]
    b = tiffs.pages("y/b1.tif", [planes_factory(channels=("BF",))["BF"]], ["BF"])
    assert read_export([a, b]).cell_ids == ["a1", "b1"]


# --------------------------------------------------------------------------------------------
# layout 4: multi-cell stacks


def stack_data(n_cells: int = 5, channels=CHANNELS, dtype="uint16") -> np.ndarray:
    from tiff_planes import make_planes

    return np.stack(
        [
            np.stack(list(make_planes(channels, dtype=dtype, cell=i).values()))
            for i in range(n_cells)
        ]
    )


@pytest.mark.parametrize("axes", ["TCYX", "ZCYX", "CTYX"])
def test_ome_stack_of_cells(tiffs, axes) -> None:
    data = stack_data()
    stored = data if axes != "CTYX" else data.transpose(1, 0, 2, 3)
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
    tiffs.stack("e/cells.ome.tif", data, axes="TCYX")
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
    path = tiffs.stack("cells.ome.tif", data, axes="TCYX")
    sources, _ = discover_cells(path)
    io.release_open_files()
    try:
        cells = [read_cell(source) for source in sources]
        for index, cell in enumerate(cells):
            np.testing.assert_array_equal(cell.channels["BF"], data[index, 0])
        assert len(io._STACK_CACHE._files) == 1  # opened once for all 40 cells
        replaced = data[::-1].copy()
        time.sleep(0.01)
        tiffs.stack("cells.ome.tif", replaced, axes="TCYX")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        np.testing.assert_array_equal(read_cell(sources[0]).channels["BF"], replaced[0, 0])
    finally:
        io.release_open_files()
    assert io._STACK_CACHE._files == {}


def test_imagej_hyperstack_of_cells_with_labels(tiffs) -> None:
    data = stack_data(3)
    path = tiffs.base / "cells.tif"
    labels = [name for _ in range(3) for name in ("bright field", "DNA", "PE", "APC")]
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TCYX", "Labels": labels})
    export = read_export(path)
    assert len(export.cells) == 3
    for index, cell in enumerate(export.cells):
        assert_cell_matches(cell, dict(zip(CHANNELS, data[index], strict=True)))


def test_large_stacks_are_read_cell_by_cell(tiffs, monkeypatch) -> None:
    data = stack_data(4)
    path = tiffs.stack("cells.ome.tif", data, axes="TCYX")
    monkeypatch.setattr(io, "MAX_WHOLE_READ_BYTES", 0)  # as if the stack were huge
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
    path = tiffs.stack("cells.ome.tif", data, axes="TCYX")
    source = io.CellSource("cells", {}, str(path), None)
    with pytest.raises(DeparrayReadError, match="holds 3 cells"):
        read_cell(source)


# --------------------------------------------------------------------------------------------
# pixel formats, encodings, byte order


DTYPES = ["uint8", "uint16", "int16", "int32", "uint32", "float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["perchannel", "pages"])
def test_pixel_types(tiffs, planes_factory, dtype, layout) -> None:
    planes = planes_factory(dtype=dtype)
    if layout == "perchannel":
        tiffs.per_channel("c1", planes, folder="e")
    else:
        tiffs.pages("e/c1.tif", list(planes.values()), list(planes))
    assert_cell_matches(read_export(tiffs.base / "e").cells[0], planes)


def test_twelve_bit_data_in_sixteen_bit_files(tiffs) -> None:
    rng = np.random.default_rng(3)
    planes = {name: rng.integers(0, 4096, (16, 16)).astype("uint16") for name in CHANNELS}
    tiffs.per_channel("c1", planes, folder="e", extratags=[(258, "H", 1, 16, True)])
    cell = read_export(tiffs.base / "e").cells[0]
    assert_cell_matches(cell, planes)
    assert max(int(a.max()) for a in cell.channels.values()) <= 4095


ENCODINGS = {
    "none": {},
    "lzw": {"compression": "lzw"},
    "zlib": {"compression": "zlib"},
    "deflate": {"compression": "adobe_deflate"},
    "packbits": {"compression": "packbits"},
    "tiled": {"tile": (16, 16)},
    "tiled-lzw": {"tile": (16, 16), "compression": "lzw"},
    "big-endian": {"byteorder": ">"},
    "big-endian-zlib": {"byteorder": ">", "compression": "zlib"},
    "predictor": {"compression": "zlib", "predictor": True},
    "bigtiff": {"bigtiff": True},
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("layout", ["perchannel", "pages"])
def test_compressions_tiles_and_byte_orders(tiffs, planes_factory, encoding, layout) -> None:
    planes = planes_factory(shape=(40, 36))
    kwargs = dict(ENCODINGS[encoding])
    if layout == "perchannel":
        tiffs.per_channel("c1", planes, folder="e", **kwargs)
    else:
        bigtiff = kwargs.pop("bigtiff", False)
        path = tiffs.base / "e" / "c1.tif"
        path.parent.mkdir()
        with tifffile.TiffWriter(
            path, byteorder=kwargs.pop("byteorder", None), bigtiff=bigtiff
        ) as t:
            for name, plane in planes.items():
                t.write(
                    plane, photometric="minisblack", extratags=[(285, "s", 0, name, True)], **kwargs
                )
    export = read_export(tiffs.base / "e")
    assert export.skipped == []
    assert_cell_matches(export.cells[0], planes)


def test_mixed_encodings_between_pages_fall_back_safely(tiffs, planes_factory) -> None:
    planes = planes_factory()
    path = tiffs.base / "c1.tif"
    with tifffile.TiffWriter(path) as tif:
        for number, (name, plane) in enumerate(planes.items()):
            compression = ("lzw", None, "zlib", "packbits")[number]
            tif.write(
                plane,
                photometric="minisblack",
                compression=compression,
                extratags=[(285, "s", 0, name, True)],
            )
    assert_cell_matches(read_export(path).cells[0], planes)


# --------------------------------------------------------------------------------------------
# bad input


def _huge_header(path: Path) -> Path:
    tifffile.imwrite(path, np.zeros((8, 8), "uint8"))
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(20000)
        tif.pages[0].tags["ImageLength"].overwrite(20000)
    return path


def make_bad_file(kind: str, folder: Path) -> tuple[Path, str]:
    """Write one bad input; return its path and a fragment of the expected reason."""
    folder.mkdir(parents=True, exist_ok=True)
    good = np.arange(64, dtype="uint16").reshape(8, 8)
    path = folder / f"bad_{re.sub('[^a-z0-9]', '', kind.lower())}.tif"  # no channel token

    def pages(planes, names):
        with tifffile.TiffWriter(path) as tif:
            for plane, name in zip(planes, names, strict=True):
                tif.write(plane, photometric="minisblack", extratags=[(285, "s", 0, name, True)])

    if kind == "zero-byte":
        path.write_bytes(b"")
        return path, "empty file (0 bytes)"
    if kind == "not-a-tiff":
        path.write_bytes(np.random.default_rng(1).bytes(500))
        return path, "not a TIFF file"
    if kind.startswith("truncated"):
        pages([good, good], ["BF", "DAPI"])
        content = path.read_bytes()
        fraction = float(kind.split("-")[1])
        path.write_bytes(content[: int(len(content) * fraction)])
        return path, "truncated"
    if kind == "rgb":
        tifffile.imwrite(path, np.zeros((8, 8, 3), "uint8"), photometric="rgb")
        return path, "RGB colour image"
    if kind == "palette":
        tifffile.imwrite(
            path,
            np.zeros((8, 8), "uint8"),
            photometric="palette",
            colormap=np.zeros((3, 256), "uint16"),
        )
        return path, "palette colour image"
    if kind == "5-D":
        tifffile.imwrite(path, np.zeros((2, 2, 2, 8, 8), "uint16"), photometric="minisblack")
        return path, "5-D image"
    if kind == "all-nan":
        pages([np.full((8, 8), np.nan, "float32"), np.ones((8, 8), "float32")], ["BF", "DAPI"])
        return path, "channel BF is all NaN"
    if kind == "all-inf":
        pages([np.full((8, 8), -np.inf, "float32")], ["BF"])
        return path, "channel BF has no finite value"
    if kind == "mismatched-sizes":
        pages([good, np.zeros((9, 8), "uint16")], ["BF", "DAPI"])
        return path, "differ in size (page 0: 8×8, page 1: 9×8)"
    if kind == "no-bf":
        pages([good, good], ["DAPI", "PE"])
        return path, "no bright-field (BF) channel (found: DAPI, PE)"
    if kind == "unknown-channels-only":
        pages([good, good], ["foo", "bar"])
        return path, "no bright-field (BF) channel (found: foo, bar)"
    if kind == "1x1":
        pages([np.zeros((1, 1), "uint16")], ["BF"])
        return path, "1×1 px, too small"
    if kind == "huge":
        return _huge_header(path), "20000×20000 px, above the limit"
    if kind == "complex":
        tifffile.imwrite(path, np.zeros((8, 8), "complex64"))
        return path, "unsupported pixel type complex64"
    raise ValueError(kind)


BAD_KINDS = [
    "zero-byte",
    "not-a-tiff",
    "truncated-0.1",
    "truncated-0.5",
    "truncated-0.8",
    "truncated-0.95",
    "rgb",
    "palette",
    "5-D",
    "all-nan",
    "all-inf",
    "mismatched-sizes",
    "no-bf",
    "unknown-channels-only",
    "1x1",
    "huge",
    "complex",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_alone_is_a_clear_error(tmp_path, kind) -> None:
    path, fragment = make_bad_file(kind, tmp_path)
    with pytest.raises(DeparrayReadError) as info:
        read_export(path)
    error = info.value
    assert error.path == str(path)
    assert fragment in error.reason
    assert str(error) == f"{path}: {error.reason}"


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_in_a_folder_is_skipped_and_good_cells_open(tiffs, planes_factory, kind) -> None:
    good = planes_factory()
    tiffs.pages("e/cell0001.tif", list(good.values()), list(good))
    path, fragment = make_bad_file(kind, tiffs.base / "e")
    export = read_export(tiffs.base / "e")
    assert export.cell_ids == ["cell0001"]
    assert_cell_matches(export.cells[0], good)
    ((skipped_path, reason),) = export.skipped
    assert skipped_path == str(path) and fragment in reason


def test_huge_image_is_refused_before_any_pixel_is_read(tmp_path, monkeypatch) -> None:
    path = _huge_header(tmp_path / "huge_BF.tif")

    def no_pixels(*args, **kwargs):
        raise AssertionError("pixels were read")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_pixels)
    monkeypatch.setattr(tifffile.TiffFrame, "asarray", no_pixels)
    with pytest.raises(DeparrayReadError, match="above the limit of 16,777,216 px"):
        read_export(path)


def test_pixel_limit_is_configurable(tiffs, planes_factory) -> None:
    planes = planes_factory(shape=(32, 32))
    path = tiffs.pages("c1.tif", list(planes.values()), list(planes))
    with pytest.raises(DeparrayReadError, match="above the limit of 1,000 px"):
        read_export(path, max_pixels=1000)
    assert read_export(path, max_pixels=32 * 32).cell_ids == ["c1"]


def test_mismatched_sizes_between_channel_files(tiffs, planes_factory) -> None:
    tiffs.per_channel("c1", planes_factory(channels=("BF", "PE")), folder="e")
    tifffile.imwrite(tiffs.base / "e" / "c1_DAPI.tif", np.zeros((5, 5), "uint16"))
    tiffs.per_channel("c2", planes_factory(channels=("BF", "DAPI"), cell=2), folder="e")
    export = read_export(tiffs.base / "e")
    assert export.cell_ids == ["c2"]
    ((path, reason),) = export.skipped
    assert Path(path).name == "c1_DAPI.tif"
    assert "channel sizes differ within cell 'c1': BF is 12×10 (c1_BF.tif), DAPI is 5×5" in reason


def test_a_cell_missing_its_bf_file_is_skipped(tiffs, planes_factory) -> None:
    tiffs.per_channel("c1", planes_factory(channels=("DAPI", "PE")), folder="e")
    tiffs.per_channel("c2", planes_factory(channels=("BF", "DAPI")), folder="e")
    export = read_export(tiffs.base / "e")
    assert export.cell_ids == ["c2"]
    assert "cell 'c1' has no bright-field (BF) channel" in export.skipped[0][1]


def test_duplicate_cell_ids(tiffs, planes_factory) -> None:
    planes = planes_factory(channels=("BF",))
    tiffs.pages("e/c1.tif", list(planes.values()), ["BF"])
    tiffs.pages("e/c1.tiff", list(planes.values()), ["BF"])
    tiffs.per_channel("c1", planes, folder="e", pattern="{cell}-{channel}.tif")
    tiffs.per_channel("c1", planes, folder="e", pattern="{cell}_{channel}.tif")
    export = read_export(tiffs.base / "e")
    assert export.cell_ids == ["c1"]
    assert len(export.skipped) == 3
    assert any("second BF file for cell 'c1'" in reason for _, reason in export.skipped)
    assert sum("duplicate cell id 'c1'" in reason for _, reason in export.skipped) == 2


def test_same_cell_id_in_two_class_folders_keeps_both(tiffs, planes_factory) -> None:
    tiffs.per_channel("c1", planes_factory(channels=("BF",), cell=1), folder="CTC")
    tiffs.per_channel("c1", planes_factory(channels=("BF",), cell=2), folder="WBC")
    export = read_export(tiffs.base)
    assert sorted((c.cell_id, c.label) for c in export.cells) == [
        ("CTC/c1", "CTC"),
        ("WBC/c1", "WBC"),
    ]


def test_empty_folder_and_missing_path(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeparrayReadError, match="no cell images found") as info:
        read_export(tmp_path / "empty")
    assert info.value.path == str(tmp_path / "empty")
    with pytest.raises(DeparrayReadError, match="no such file or folder"):
        read_export(tmp_path / "missing.tif")


def test_symlink_loops_are_skipped(tiffs, planes_factory) -> None:
    tiffs.per_channel("c1", planes_factory(channels=("BF",)), folder="e/sub")
    os.symlink(tiffs.base / "e", tiffs.base / "e" / "sub" / "loop")
    os.symlink("self_BF.tif", tiffs.base / "e" / "self_BF.tif")  # points at itself
    start = time.perf_counter()
    export = read_export(tiffs.base / "e")
    assert time.perf_counter() - start < 10
    assert export.cell_ids == ["c1"]
    reasons = " | ".join(reason for _, reason in export.skipped)
    assert "symbolic-link loop" in reasons
    assert "self_BF.tif" in " ".join(path for path, _ in export.skipped)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_unreadable_file_is_skipped(tiffs, planes_factory) -> None:
    tiffs.per_channel("c1", planes_factory(channels=("BF",)), folder="e")
    locked = tiffs.per_channel("c2", planes_factory(channels=("BF",)), folder="e")["BF"]
    locked.chmod(0)
    try:
        export = read_export(tiffs.base / "e")
    finally:
        locked.chmod(0o644)
    assert export.cell_ids == ["c1"]
    assert "permission denied" in export.skipped[0][1]


def test_permission_errors_become_clear_skips(tiffs, planes_factory, monkeypatch) -> None:
    """Same as above without needing a non-root user: opening one file is denied."""
    tiffs.per_channel("c1", planes_factory(channels=("BF",)), folder="e")
    locked = tiffs.per_channel("c2", planes_factory(channels=("BF",)), folder="e")["BF"]
    real_tiff_file = tifffile.TiffFile

    def guarded(path, *args, **kwargs):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_tiff_file(path, *args, **kwargs)

    monkeypatch.setattr(io.tifffile, "TiffFile", guarded)
    export = read_export(tiffs.base / "e")
    assert export.cell_ids == ["c1"]
    assert export.skipped == [(str(locked), "permission denied (cannot open the file)")]


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system with byte names")
def test_non_utf8_file_names(tiffs, planes_factory) -> None:
    folder = tiffs.base / "e"
    folder.mkdir()
    data = planes_factory(channels=("BF",))["BF"]
    name = os.fsdecode(b"cell\xff_BF.tif")
    tifffile.imwrite(folder / name, data)
    (folder / os.fsdecode(b"bad\xfe.tif")).write_bytes(b"junk")
    export = read_export(folder)
    assert len(export.cells) == 1
    np.testing.assert_array_equal(export.cells[0].channels["BF"], data)
    message = format_skipped(export.skipped)
    message.encode("utf-8")  # printable: no lone surrogates
    with pytest.raises(DeparrayReadError) as info:
        read_export(folder / os.fsdecode(b"bad\xfe.tif"))
    str(info.value).encode("utf-8")


def test_folder_of_ten_thousand_files_is_discovered_quickly(tmp_path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    template = tmp_path / "t.tif"
    tifffile.imwrite(template, np.zeros((8, 8), "uint16"))
    content = template.read_bytes()
    for cell in range(2500):
        for channel in CHANNELS:
            (folder / f"cell{cell:05d}_{channel}.tif").write_bytes(content)
    start = time.perf_counter()
    sources, skipped = discover_cells(folder)
    elapsed = time.perf_counter() - start
    assert len(sources) == 2500 and skipped == []
    assert sources[-1].cell_id == "cell02499"
    assert elapsed < 5.0, f"discovering 10,000 files took {elapsed:.1f} s"


# --------------------------------------------------------------------------------------------
# streaming, read_cell, stacking


def test_iter_cells_streams_and_reports_skips(tiffs, planes_factory) -> None:
    for index in range(3):
        tiffs.per_channel(f"c{index}", planes_factory(channels=("BF",), cell=index), folder="e")
    (tiffs.base / "e" / "c9_BF.tif").write_bytes(b"")
    reported = []
    iterator = iter_cells(tiffs.base / "e", on_skip=lambda p, r: reported.append((p, r)))
    first = next(iterator)
    assert isinstance(first, Cell) and first.cell_id == "c0"
    rest = list(iterator)
    assert [c.cell_id for c in rest] == ["c1", "c2"]
    assert [(Path(p).name, r) for p, r in reported] == [("c9_BF.tif", "empty file (0 bytes)")]


def test_iter_cells_warns_once_without_a_callback(tiffs, planes_factory) -> None:
    tiffs.per_channel("c1", planes_factory(channels=("BF",)), folder="e")
    for name in ("x_BF.tif", "y_BF.tif"):
        (tiffs.base / "e" / name).write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cells = list(iter_cells(tiffs.base / "e"))
    assert [c.cell_id for c in cells] == ["c1"]
    assert len(caught) == 1
    assert "x_BF.tif" in str(caught[0].message) and "y_BF.tif" in str(caught[0].message)


def test_read_cell_uses_the_map_found_at_discovery(tiffs, planes_factory) -> None:
    planes = planes_factory(channels=("DAPI", "BF"))
    tiffs.pages("e/c1.tif", list(planes.values()), None, how="none")
    (tiffs.base / "e" / "channels.txt").write_text("DAPI\nBF\n")
    (source,), _ = discover_cells(tiffs.base / "e")
    assert_cell_matches(read_cell(source), planes, order=["DAPI", "BF"])
    overridden = read_cell(source, channel_map=["BF", "DAPI"])
    np.testing.assert_array_equal(overridden.channels["BF"], planes["DAPI"])


def _cell(cell_id: str, image: np.ndarray) -> Cell:
    return Cell(cell_id, {"BF": image}, f"{cell_id}.tif", original_shape=image.shape)


def test_stack_channel_pads_with_the_border_median_and_centre_crops() -> None:
    small = np.full((4, 4), 7, "uint16")
    small[1:3, 1:3] = 100
    large = np.arange(64, dtype="uint16").reshape(8, 8)
    stacked = stack_channel([_cell("a", small), _cell("b", large)], "BF")
    assert stacked.shape == (2, 8, 8) and stacked.dtype == np.uint16
    np.testing.assert_array_equal(stacked[1], large)
    np.testing.assert_array_equal(stacked[0, 2:6, 2:6], small)
    assert (stacked[0, :2] == 7).all() and (stacked[0, :, :2] == 7).all()
    cropped = stack_channel([_cell("a", small), _cell("b", large)], "BF", shape=(4, 4))
    np.testing.assert_array_equal(cropped[1], large[2:6, 2:6])
    np.testing.assert_array_equal(cropped[0], small)


def test_stack_channel_ignores_an_outlier_size_and_fills_missing_channels() -> None:
    cells = [_cell(f"c{i}", np.ones((10, 10), "uint8")) for i in range(5)]
    cells.append(_cell("huge", np.ones((200, 200), "uint8")))
    cells.append(Cell("nobf", {"DAPI": np.ones((10, 10), "uint8")}, "x.tif"))
    stacked = stack_channel(cells, "BF")
    assert stacked.shape == (7, 10, 10)
    assert (stacked[6] == 0).all()
    with pytest.raises(ValueError, match="no cell has a 'PE' channel"):
        stack_channel(cells, "PE")


def test_export_channels_are_ordered_and_cells_keep_original_shapes(tiffs, planes_factory) -> None:
    tiffs.per_channel("a", planes_factory(channels=("APC", "BF"), shape=(10, 12)), folder="e")
    tiffs.per_channel("b", planes_factory(channels=("DAPI", "BF"), shape=(14, 12)), folder="e")
    export = read_export(tiffs.base / "e")
    assert export.channels == ["BF", "DAPI", "APC"]
    assert [c.original_shape for c in export.cells] == [(10, 12), (14, 12)]
    assert stack_channel(export.cells, "BF").shape == (2, 14, 12)


# --------------------------------------------------------------------------------------------
# is_probably_deparray (napari_get_reader's cheap check)


def test_is_probably_deparray_claims_exports(tiffs, planes_factory) -> None:
    planes = planes_factory(channels=("BF", "DAPI"))
    per_channel = tiffs.per_channel("cell0001", planes, folder="perchannel")
    named = tiffs.c_axis("ome/x.ome.tif", list(planes.values()), ["BF", "DAPI"], how="ome")
    tiffs.per_channel("x", planes, folder="classes/CTC")
    tiffs.pages("small/img.tif", [planes["BF"]], None, how="none")
    assert is_probably_deparray(tiffs.base / "perchannel")
    assert is_probably_deparray(per_channel["BF"])
    assert is_probably_deparray(named)  # channel names in the header
    assert is_probably_deparray(tiffs.base / "ome")
    assert is_probably_deparray(tiffs.base / "classes")
    assert is_probably_deparray(tiffs.base / "small")  # folder of cell-sized TIFFs
    assert is_probably_deparray([tiffs.base / "nothing.tif", per_channel["DAPI"]])


def test_is_probably_deparray_leaves_ordinary_tiffs_alone(tmp_path, monkeypatch) -> None:
    ordinary = tmp_path / "image.tif"
    tifffile.imwrite(ordinary, np.zeros((600, 600), "uint16"))
    (tmp_path / "stack").mkdir()
    tifffile.imwrite(tmp_path / "stack" / "frame_001.tif", np.zeros((600, 600), "uint16"))
    (tmp_path / "notes.txt").write_text("x")
    junk = tmp_path / "junk_x.tif"
    junk.write_bytes(b"\x00" * 10)

    def no_pixels(*args, **kwargs):
        raise AssertionError("pixels were read")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_pixels)
    assert not is_probably_deparray(ordinary)
    assert not is_probably_deparray(tmp_path / "stack")
    assert not is_probably_deparray(tmp_path / "notes.txt")
    assert not is_probably_deparray(tmp_path / "missing.tif")
    assert not is_probably_deparray(junk)
    assert not is_probably_deparray(None)  # type: ignore[arg-type]
    assert not is_probably_deparray(12)  # type: ignore[arg-type]


def test_reading_imports_no_torch_napari_or_qt(tmp_path) -> None:
    path = tmp_path / "cell1_BF.tif"
    tifffile.imwrite(path, np.zeros((8, 8), "uint16"))
    code = (
        "import sys\n"
        "from napari_deparray_ctc.core.io import is_probably_deparray, read_export\n"
        f"assert is_probably_deparray({str(path)!r})\n"
        f"assert read_export({str(path)!r}).cell_ids == ['cell1']\n"
        "bad = [m for m in ('torch', 'napari', 'qtpy', 'PyQt5', 'PySide2', 'magicgui')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
