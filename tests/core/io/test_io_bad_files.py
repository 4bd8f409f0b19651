"""Bad input: every kind of unusable file is a clear error alone and a skip in a folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from io_helpers import assert_cell_matches

from napari_deparray_ctc.core.io import (
    DeparrayReadError,
    read_export,
)


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


@pytest.mark.parametrize("names", [("DAPI", "PE"), ("foo", "bar")])
def test_cells_without_bf_open_for_viewing(tiffs, planes_factory, names) -> None:
    """Issue 16: only classification needs BF; a cell without it opens with its channels."""
    planes = planes_factory(channels=names)
    path = tiffs.pages("e/bad_nobf.tif", list(planes.values()), list(names))
    (cell,) = read_export(path).cells
    assert_cell_matches(cell, planes, order=list(names))
    good = planes_factory(channels=("BF", "DAPI"), cell=1)
    tiffs.pages("e/cell0001.tif", list(good.values()), list(good))
    export = read_export(tiffs.base / "e")
    assert sorted(export.cell_ids) == ["bad_nobf", "cell0001"] and export.skipped == []


def test_a_cell_missing_its_bf_file_opens_without_bf(tiffs, planes_factory) -> None:
    planes = planes_factory(channels=("DAPI", "PE"))
    tiffs.per_channel("c1", planes, folder="e")
    tiffs.per_channel("c2", planes_factory(channels=("BF", "DAPI")), folder="e")
    export = read_export(tiffs.base / "e")
    assert export.cell_ids == ["c1", "c2"] and export.skipped == []
    assert_cell_matches(export.cells[0], planes)


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
    real_open = os.open

    def guarded(path, *args, **kwargs):
        # the reader opens each file once, with os.open, and hands the descriptor to tifffile
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)
    export = read_export(tiffs.base / "e")
    assert export.cell_ids == ["c1"]
    assert export.skipped == [(str(locked), "permission denied (cannot open the file)")]
