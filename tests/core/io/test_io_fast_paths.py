"""The reader's shortcuts for small plain files give what tifffile gives (issue 19).

A small file is read whole and parsed from memory, later pages laid out like the first are
recognised from their bytes, and uncompressed planes are taken straight from the bytes read:
each of these must give exactly the pixels and names that tifffile's own reading gives, and
must step aside for anything else.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_deparray_ctc.core.io import fast_ifd, read_export
from napari_deparray_ctc.core.io.common import close_tiff, open_tiff
from napari_deparray_ctc.core.io.pixels import OpenFile

CHANNELS = ("BF", "DAPI", "PE", "APC")


def _planes(seed: int = 0, dtype: str = "uint16") -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 4000, size=(24, 20)).astype(dtype) for _ in CHANNELS]


def _write_named(path, planes, byteorder="<", **kwargs) -> None:
    with tifffile.TiffWriter(path, byteorder=byteorder) as tif:
        for name, plane in zip(CHANNELS, planes, strict=True):
            tif.write(
                plane, photometric="minisblack", extratags=[(285, "s", 0, name, True)], **kwargs
            )


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_small_multipage_file_reads_as_tifffile_does(tmp_path, byteorder, dtype):
    planes = _planes(dtype=dtype)
    path = tmp_path / "cell0001.tif"
    _write_named(path, planes, byteorder)

    tif = open_tiff(str(path))
    try:
        assert tif.deparray_in_memory
    finally:
        close_tiff(tif)
    export = read_export(tmp_path)
    (cell,) = export.cells
    assert list(cell.channels) == list(CHANNELS)
    expected = tifffile.imread(path, key=slice(None))
    for index, name in enumerate(CHANNELS):
        assert cell.channels[name].dtype == np.dtype(dtype)
        assert cell.channels[name].dtype.isnative
        np.testing.assert_array_equal(cell.channels[name], expected[index])


@pytest.mark.parametrize("compression", ["zlib", "lzw"])
def test_compressed_and_predicted_pages_are_decoded_by_tifffile(tmp_path, compression):
    planes = _planes()
    path = tmp_path / "cell0002.tif"
    _write_named(path, planes, compression=compression, predictor=True)
    (cell,) = read_export(tmp_path).cells
    for name, plane in zip(CHANNELS, planes, strict=True):
        np.testing.assert_array_equal(cell.channels[name], plane)


def test_later_pages_laid_out_otherwise_are_scanned(tmp_path):
    """A page that does not match the first page's bytes (other compression) is parsed tag by
    tag; the file is still read through the page list, with each page as stored."""
    planes = _planes()
    path = tmp_path / "cell0003.tif"
    with tifffile.TiffWriter(path) as tif:
        for index, (name, plane) in enumerate(zip(CHANNELS, planes, strict=True)):
            tif.write(
                plane,
                photometric="minisblack",
                compression="zlib" if index == 2 else None,
                extratags=[(285, "s", 0, name, True)],
            )
    handle = OpenFile(str(path), False, 4096 * 4096)
    try:
        # page 2 differs in compression from the first page: tifffile parses every page
        assert len(handle.plan.pages) == 4
        assert all(isinstance(page, tifffile.TiffPage) for page in handle.plan.pages)
        data = handle.cell(0)
    finally:
        handle.close()
    for index, plane in enumerate(planes):
        np.testing.assert_array_equal(data[index], plane)


def test_page_names_match_a_full_scan(tmp_path):
    """The byte-level match gives every page the PageName and description a scan gives."""
    paths = []
    for cell in range(3):
        path = tmp_path / f"cell{cell:04d}.tif"
        _write_named(path, _planes(cell))
        paths.append(path)
    for path in paths:
        tif = open_tiff(str(path))
        try:
            first = tif.pages.first
            pages, names, descriptions = fast_ifd.plain_page_list(tif, str(path), first)
            assert names == list(CHANNELS)
            offsets = [page.offset for page in pages]
            for offset, name, description in zip(offsets, names, descriptions, strict=True):
                values, _ = fast_ifd._scan_ifd(tif, offset)
                assert values.get(fast_ifd.PAGE_NAME) == name
                assert values.get(fast_ifd.IMAGE_DESCRIPTION) == description
                frame = pages[offsets.index(offset)]
                assert tuple(frame.dataoffsets) == values[fast_ifd.STRIP_OFFSETS]
        finally:
            close_tiff(tif)


@pytest.mark.parametrize("kind", ["imagej", "ome"])
def test_small_series_formats_are_parsed_from_disk(tmp_path, kind):
    """OME and ImageJ files are read through tifffile's series, which may look beside the
    file: they are never parsed from memory."""
    data = np.stack(_planes())
    path = tmp_path / f"cell0004.{'ome.tif' if kind == 'ome' else 'tif'}"
    if kind == "ome":
        tifffile.imwrite(path, data, ome=True, metadata={"axes": "CYX"})
    else:
        tifffile.imwrite(path, data, imagej=True, metadata={"axes": "CYX"})
    tif = open_tiff(str(path))
    try:
        assert not tif.deparray_in_memory
    finally:
        close_tiff(tif)
    (cell,) = read_export(tmp_path).cells
    assert len(cell.channels) == 4
    for array, plane in zip(cell.channels.values(), data, strict=True):
        np.testing.assert_array_equal(array, plane)


def test_large_files_are_not_read_whole(tmp_path, monkeypatch):
    from napari_deparray_ctc.core.io import common

    path = tmp_path / "cell0005.tif"
    _write_named(path, _planes())
    monkeypatch.setattr(common, "IN_MEMORY_MAX_BYTES", 100)
    tif = open_tiff(str(path))
    try:
        assert not tif.deparray_in_memory and tif.deparray_survey.data is None
    finally:
        close_tiff(tif)
    (cell,) = read_export(tmp_path).cells
    for name, plane in zip(CHANNELS, _planes(), strict=True):
        np.testing.assert_array_equal(cell.channels[name], plane)
