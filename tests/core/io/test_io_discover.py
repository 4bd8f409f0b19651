"""Discovery: channel maps, class folders, ``labels.csv``, odd names and big folders (no pixels)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from io_helpers import CHANNELS, assert_cell_matches

from napari_deparray_ctc.core.io import (
    DeparrayReadError,
    discover_cells,
    format_skipped,
    read_export,
)


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
