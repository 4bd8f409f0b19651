"""The reader on ~100 real TIFFs written by other software (issue 16).

``../shared/foreign-tiffs`` holds TIFFs from 15 public repositories (libtiff, ImageMagick,
GIMP, Pillow, GDAL, ImageJ/Fiji, Bio-Formats, Micro-Manager, Leica LAS, ImageStream,
cellfinder, tifffile...; sources and licences in its ``SOURCES.md``). Skipped when absent; the
files are never copied into the repository.

Every file is tried on its own and as the only file of a folder, and its class is asserted:

* ``opened``: ``napari_get_reader`` claims it and the reader opens it correctly;
* ``left``: not claimed (napari's own reader opens it); the reader itself (the command line,
  or the plugin chosen explicitly) would open it correctly;
* ``refused``: not claimed, and the reader refuses it with a reason in words naming the file.

"Correctly" is checked against tifffile: the same pixels, no Z or T axis read as channels or
cells, a declared C axis never read as cells, and no page title or slice label taken for a
channel name. No file is claimed and then refused unless tifffile cannot read it either.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_deparray_ctc.core.channels import is_non_channel_name
from napari_deparray_ctc.core.io import DeparrayReadError, read_export, release_open_files
from napari_deparray_ctc.napari.reader import napari_get_reader, read_deparray

CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "foreign-tiffs"

OPENED, LEFT, REFUSED = "opened", "left", "refused"

#: (class on its own, class as the only file of a folder). Folders are claimed more often:
#: a folder of small (≤ 512 px) grey TIFFs is taken for a folder of cell images.
EXPECTED: dict[str, tuple[str, str]] = {
    # channel-index tokens in the name: one channel of a cell, opened without BF
    "cellfinder/pCellz10y522x392Ch0.tif": (OPENED, OPENED),  # Ch0: 20 cells (shaped Q axis)
    "cellfinder/pCellz10y522x392Ch1.tif": (OPENED, OPENED),
    "clesperanto/AICS_12_134_C=0.tif": (OPENED, OPENED),  # C=0; ImageJ label "c:1/8; z:22/52"
    "mlcp-ifc/Ch3_CP0001.tif": (OPENED, OPENED),  # ImageStream Ch3
    "mlcp-ifc/Ch4_CP0001.tif": (OPENED, OPENED),
    "mlcp-ifc/Ch6_CP0001.tif": (OPENED, OPENED),
    "scifio/leica_stack_Series014_z000_ch00.tif": (OPENED, OPENED),  # green LUT palette: grey
    "viv/Channel_0.tif": (OPENED, OPENED),
    "scifio/img_000000000_Cy3_000.tif": (OPENED, OPENED),  # a stain name: Cy3, not BF
    # grey images without any channel or cell name: cell-sized ones are claimed in a folder
    "cellfinder/despeckled.tif": (LEFT, LEFT),  # 1116 × 627 px
    "clesperanto/MorphoLibJ_example_image.tif": (LEFT, LEFT),  # 640 × 639 px
    "clesperanto/blobs.tif": (LEFT, OPENED),
    "clesperanto/membranes.tif": (LEFT, OPENED),
    "clesperanto/mini_blobs_otsu_imagej.tif": (LEFT, OPENED),
    "clesperanto/syntetic_cells.tif": (LEFT, OPENED),
    "galaxy/ct_image_float16.tiff": (LEFT, OPENED),
    "galaxy/cyx_uint8_uint8.tiff": (LEFT, OPENED),  # declared CYX: 3 channels
    "galaxy/galaxyIcon_noText.tiff": (LEFT, OPENED),
    "galaxy/he1_axes_cyx.tiff": (LEFT, OPENED),  # declared CYX: 3 channels
    "galaxy/input2_float64.tiff": (LEFT, OPENED),
    "image-tiff/12bit.cropped.tiff": (LEFT, OPENED),
    "image-tiff/int16.tif": (LEFT, OPENED),
    "image-tiff/int16_zstd.tif": (LEFT, OPENED),
    "image-tiff/minisblack-1c-16b.tiff": (LEFT, OPENED),
    "image-tiff/predictor-3-gray-f32.tif": (LEFT, OPENED),
    "image-tiff/random-fp16.tiff": (LEFT, OPENED),  # GIMP PageName "Background": no name
    "image-tiff/seq-1c-16b-bigendian-68f373a0.tiff": (LEFT, OPENED),
    "image-tiff/seq-1c-32f-deflate-fpredict-390fe673.tiff": (LEFT, OPENED),
    "image-tiff/seq-1c-8b-multipage-adeefdcc.tiff": (LEFT, OPENED),  # 3 unnamed pages
    "image-tiff/single-black-fp16.tiff": (LEFT, OPENED),
    "libtiffpic/flower-minisblack-12.tif": (LEFT, OPENED),  # 12-bit packed
    "napari-tiff/test_imagej_greyscale.tiff": (LEFT, OPENED),  # CYX, labels "c:1/2 z:30/64"
    "ome-types/ome.tiff": (LEFT, OPENED),
    "pillow/12in16bit.tif": (LEFT, OPENED),
    "pillow/16bit.MM.deflate.tif": (LEFT, OPENED),
    "pillow/16bit.s.tif": (LEFT, OPENED),
    "pillow/imagedraw_rectangle_I.tiff": (LEFT, OPENED),
    "pillow/separate_planar_extra_samples.tiff": (LEFT, OPENED),  # 2 planar grey samples
    "pycudadecon/otf.tif": (LEFT, OPENED),
    "pycudadecon/psf.tif": (LEFT, OPENED),  # 61 unnamed pages, no axes: a stack
    "rasterio/shade.tif": (LEFT, LEFT),  # 1024 × 1024 px
    "stardist/img2d.tif": (LEFT, OPENED),
    "stardist/img3d.tif": (LEFT, OPENED),  # shaped (31, 61, 57) without axes: Q, a stack
    "stardist/mask2d.tif": (LEFT, OPENED),
    "viv/data/multi-channel.ome.tif": (LEFT, OPENED),
    "viv/multi-channel.ome.tif": (LEFT, OPENED),
    "viv/multifile-Z1.ome.tiff": (LEFT, OPENED),
    # z-stacks and time series (ImageJ, OME, shaped, ScanImage, Micro-Manager): never cells
    "clesperanto/mini-t1-head.tif": (REFUSED, REFUSED),
    "galaxy/input4_float16.tiff": (REFUSED, REFUSED),
    "galaxy/input_yxt.tiff": (REFUSED, REFUSED),
    "galaxy/xyz_8bit__mitotic_plate_calibrated.tiff": (REFUSED, REFUSED),
    "galaxy/zyx_uint16.tiff": (REFUSED, REFUSED),
    "image-tiff/ScanImageBigTIFFv57.tif": (REFUSED, REFUSED),
    "napari-tiff/test_imagej.tiff": (REFUSED, REFUSED),
    "napari-tiff/test_imagej_with_time.tiff": (REFUSED, REFUSED),
    "napari-tiff/test_ome.tiff": (REFUSED, REFUSED),
    "napari-tiff/test_ome_with_time.tiff": (REFUSED, REFUSED),
    "ndstorage/12_bit_pycromanager_mda_NDTiffStack.tif": (REFUSED, REFUSED),
    "ndstorage/NDTiff3.2_multichannel_NDTiffStack.tif": (REFUSED, REFUSED),
    "ndstorage/explore_channels_NDTiffStack.tif": (REFUSED, REFUSED),  # tiles
    "ndstorage/ndtiff3.2_11bit_NDTiffStack.tif": (REFUSED, REFUSED),
    "ndstorage/ndtiffv3.0_test_NDTiffStack.tif": (REFUSED, REFUSED),
    "galaxy/multiseries.ome.tiff": (REFUSED, REFUSED),  # several multichannel images
    # colour: RGB, YCbCr, CMYK, LogLuv, indexed palettes, alpha
    "galaxy/res.ome.tiff": (REFUSED, REFUSED),
    "galaxy/res.tiff": (REFUSED, REFUSED),
    "image-tiff/BigTIFFMotorola.tif": (REFUSED, REFUSED),
    "image-tiff/gradient-3c-32b-float.tiff": (REFUSED, REFUSED),
    "image-tiff/logluv-3c-16b.tiff": (REFUSED, REFUSED),
    "image-tiff/minisblack-2c-8b-alpha.tiff": (REFUSED, REFUSED),
    "image-tiff/palette-1c-8b.tiff": (REFUSED, REFUSED),
    "image-tiff/planar-rgb-u8.tif": (REFUSED, REFUSED),
    "image-tiff/quad-tile.jpg.tiff": (REFUSED, REFUSED),
    "image-tiff/rgb-3c-16b.tiff": (REFUSED, REFUSED),
    "image-tiff/seq-3c-12b-planar-e29e8e25.tiff": (REFUSED, REFUSED),
    "image-tiff/subsubifds.tif": (REFUSED, REFUSED),
    "libtiffpic/flower-palette-16.tif": (REFUSED, REFUSED),
    "libtiffpic/flower-separated-planar-16.tif": (REFUSED, REFUSED),
    "libtiffpic/jello.tif": (REFUSED, REFUSED),
    "libtiffpic/quad-lzw.tif": (REFUSED, REFUSED),
    "libtiffpic/smallliz.tif": (REFUSED, REFUSED),
    "libtiffpic/ycbcr-cat.tif": (REFUSED, REFUSED),
    "ndstorage/Magellan_expolore_multi_channel_NDTiffStack.tif": (REFUSED, REFUSED),
    "pillow/child_ifd.tiff": (REFUSED, REFUSED),
    "pillow/hopper_bigtiff.tif": (REFUSED, REFUSED),
    "pillow/hopper_jpg.tif": (REFUSED, REFUSED),
    "pillow/hopper_webp.tif": (REFUSED, REFUSED),
    "pillow/multipage.tiff": (REFUSED, REFUSED),
    "pillow/tiff_tiled_planar_16bit_RGB.tiff": (REFUSED, REFUSED),
    "pillow/tiff_wrong_bits_per_sample.tiff": (REFUSED, REFUSED),
    "rasterio/RGB.byte.tif": (REFUSED, REFUSED),
    "rasterio/RGBA.uint16.tif": (REFUSED, REFUSED),
    "rasterio/corrupt.tif": (REFUSED, REFUSED),
    # 1-bit, too small, a codec nobody decodes, damaged
    "image-tiff/miniswhite-1c-1b.tiff": (REFUSED, REFUSED),
    "image-tiff/tiled-gray-i1.tif": (REFUSED, REFUSED),
    "pillow/crash-0da013a13571cc8eb457a39fee8db18f8a3c7127.tif": (REFUSED, REFUSED),
    "pillow/total-pages-zero.tif": (REFUSED, REFUSED),
    "image-tiff/gradient-1c-32b-float.tiff": (REFUSED, REFUSED),
    "image-tiff/hpredict-1c-12b.tiff": (REFUSED, REFUSED),
    "rasterio/float_nan.tif": (REFUSED, REFUSED),
    "libtiffpic/off_l16.tif": (REFUSED, REFUSED),  # SGI LogL compression
    "pillow/oom-225817ca0f8c663be7ab4b9e717b02c661e66834.tif": (REFUSED, REFUSED),
    "pillow/seek_too_large.tif": (REFUSED, REFUSED),
}

#: what tells a message in words from an internal one (as tests/reliability checks)
_INTERNAL = re.compile(r"\b[A-Z]\w*(Error|Exception)\b|Traceback|<[\w.]+ object at|\bNone\b")
_CELL_AXES, _CHANNEL_AXES = "IQR", "CS"


def _corpus_files() -> list[str]:
    if not CORPUS.is_dir():
        return []
    return sorted(
        str(p.relative_to(CORPUS)).replace(os.sep, "/")
        for p in CORPUS.rglob("*")
        if p.suffix.lower() in (".tif", ".tiff")
    )


def test_the_table_covers_the_whole_corpus() -> None:
    files = _corpus_files()
    if not files:
        pytest.skip(f"{CORPUS} not found")
    assert sorted(EXPECTED) == files


def _reference(path: Path) -> tuple[np.ndarray, str]:
    """tifffile's pixels of the file and its axes (one series, or one plane per series)."""
    with tifffile.TiffFile(path) as tif:
        series = tif.series
        if len(series) > 1:
            planes = np.stack([np.asarray(s.asarray()).squeeze() for s in series])
            return planes, "I" + "YX"
        return np.asarray(series[0].asarray()), series[0].axes


def _check_against_tifffile(path: Path, export) -> None:
    data, axes = _reference(path)
    kept = [(ax, n) for ax, n in zip(axes, data.shape, strict=True) if n > 1 or ax in "YX"]
    squeezed = data.reshape([n for _, n in kept])
    letters = "".join(ax for ax, _ in kept)
    assert not set(letters) & set("ZT"), f"a Z or T axis was read: {letters}"
    cells = export.cells
    for cell in cells:
        for name in cell.channels:
            assert not is_non_channel_name(name), f"{name!r} is a page title, not a channel"
    declared = [n for ax, n in kept[:-2] if ax in _CHANNEL_AXES]
    if declared:  # a C axis is always the channels, never cells
        assert all(len(cell.channels) == declared[0] for cell in cells), letters
    # every plane read is one of tifffile's planes, each used once, in cell order
    flat = squeezed.reshape(-1, *squeezed.shape[-2:])
    n_channels = flat.shape[0] // len(cells)
    assert n_channels * len(cells) == flat.shape[0], (len(cells), flat.shape)
    if declared and len(kept) == 4 and letters[0] in _CHANNEL_AXES:  # C before the cells
        flat = np.swapaxes(squeezed, 0, 1).reshape(-1, *squeezed.shape[-2:])
    for index, cell in enumerate(cells):
        reference = list(flat[index * n_channels : (index + 1) * n_channels])
        for name, plane in cell.channels.items():
            match = next(
                (
                    k
                    for k, ref in enumerate(reference)
                    if np.array_equal(ref, plane, equal_nan=True)
                ),
                None,
            )
            assert match is not None, f"cell {index} channel {name} is not a tifffile plane"
            reference.pop(match)


def _as_folder(path: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    try:
        os.symlink(path, folder / path.name)
    except OSError:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


@pytest.mark.parametrize("mode", ["file", "folder"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_foreign_tiff(name: str, mode: str, tmp_path) -> None:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    expected = EXPECTED[name][0 if mode == "file" else 1]
    target = path if mode == "file" else _as_folder(path, tmp_path)
    claimed = napari_get_reader(str(target)) is read_deparray
    assert claimed == (expected == OPENED), f"claimed={claimed}, expected {expected}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            export = read_export(target)
        except DeparrayReadError as error:
            export, refusal = None, error
        finally:
            release_open_files()
    if expected == REFUSED:
        assert export is None, f"opened {len(export.cells)} cell(s); expected a refusal"
        assert path.name in str(refusal) and refusal.reason
        assert _INTERNAL.search(refusal.reason) is None, refusal.reason
        return
    assert export is not None, f"refused: {refusal}"
    _check_against_tifffile(path, export)
    if expected == OPENED:  # through napari's reader function too: one layer per channel
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layers = read_deparray(str(target))
        assert [kw["metadata"]["deparray"]["channel"] for _, kw, _ in layers] == export.channels


def test_unnamed_planes_are_not_called_bf_when_a_stain_is_named() -> None:
    path = CORPUS / "scifio" / "img_000000000_Cy3_000.tif"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    (cell,) = read_export(path).cells
    assert list(cell.channels) == ["Cy3"]
