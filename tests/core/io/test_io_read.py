"""Reading cells: layouts 1 and 2 (channels inside one file, one file per channel), pixel
types, compressions and byte orders, streaming and ``read_cell`` (tiny generated TIFFs)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from io_helpers import CHANNELS, assert_cell_matches

from napari_deparray_ctc.core.io import (
    Cell,
    discover_cells,
    iter_cells,
    read_cell,
    read_export,
    stack_channel,
)


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


def test_export_channels_are_ordered_and_cells_keep_original_shapes(tiffs, planes_factory) -> None:
    tiffs.per_channel("a", planes_factory(channels=("APC", "BF"), shape=(10, 12)), folder="e")
    tiffs.per_channel("b", planes_factory(channels=("DAPI", "BF"), shape=(14, 12)), folder="e")
    export = read_export(tiffs.base / "e")
    assert export.channels == ["BF", "DAPI", "APC"]
    assert [c.original_shape for c in export.cells] == [(10, 12), (14, 12)]
    assert stack_channel(export.cells, "BF").shape == (2, 14, 12)
