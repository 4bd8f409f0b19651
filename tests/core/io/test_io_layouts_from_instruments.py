"""Issue 16: instrument file layouts, channel names from other software, LUTs and codecs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile
from io_helpers import assert_cell_matches

from napari_deparray_ctc.core.io import (
    DeparrayReadError,
    discover_cells,
    is_probably_deparray,
    read_export,
)


@pytest.mark.parametrize(
    ("pattern", "tokens", "cell_id"),
    [
        ("AS_0912_A01f00{t}.tif", ("d0", "d1", "d2"), "AS_0912_A01f00"),  # Cellomics
        ("{t}.tif", ("Channel_0", "Channel_1", "Channel_2"), "e"),  # viv multi-tiff
        ("pCellz10y522x392{t}.tif", ("Ch0", "Ch1"), "pCellz10y522x392"),  # cellfinder cubes
        ("AICS_12_134_{t}.tif", ("C=0", "C=1", "C=2"), "AICS_12_134"),  # Bio-Formats
        ("leica_Series014_z000_{t}.tif", ("ch00", "ch01"), "leica_Series014_z000"),  # Leica
        ("plate_A01_{t}.tif", ("w1", "w2"), "plate_A01"),  # MetaMorph
    ],
)
def test_channel_index_files_of_one_field_are_one_cell(
    tiffs, planes_factory, pattern, tokens, cell_id
) -> None:
    """``...d0/d1/d2`` or ``Channel_0..2`` are the channels of one field, not three BF cells."""
    planes = planes_factory(channels=tokens)
    for token, plane in planes.items():
        path = tiffs.base / "e" / pattern.format(t=token)
        path.parent.mkdir(exist_ok=True)
        tifffile.imwrite(path, plane)
    export = read_export(tiffs.base / "e")
    assert export.skipped == []
    (cell,) = export.cells
    assert cell.cell_id == cell_id
    assert_cell_matches(cell, planes, order=list(tokens))  # no BF: none is guessed
    assert is_probably_deparray(tiffs.base / "e")


def test_metamorph_wavelength_tokens_with_a_stain_name_the_stain(tiffs, planes_factory) -> None:
    planes = planes_factory(channels=("BF", "DAPI"))
    tifffile.imwrite(tiffs.base / "well_w1Brightfield.tif", planes["BF"])
    tifffile.imwrite(tiffs.base / "well_w2DAPI.tif", planes["DAPI"])
    (cell,) = read_export(tiffs.base).cells
    assert cell.cell_id == "well"
    assert_cell_matches(cell, planes)


def test_a_file_named_for_one_stain_that_holds_channels_is_one_cell(tiffs) -> None:
    """``BPAE_nuclei_golgi.tif`` holding 2 channels: its C axis is the channels (not cells),
    and its unnamed planes are not guessed to be BF and DAPI."""
    data = np.stack([np.full((16, 16), v, "uint16") for v in (10, 20)])
    path = tiffs.base / "BPAE_nuclei_golgi.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "CYX"})
    (cell,) = read_export(path).cells
    assert list(cell.channels) == ["C0", "C1"]
    np.testing.assert_array_equal(cell.channels["C1"], data[1])
    assert is_probably_deparray(path)


def test_a_z_stack_named_for_a_stain_is_not_claimed(tiffs) -> None:
    path = tiffs.base / "BPAE_nuclei.tif"
    tifffile.imwrite(path, np.zeros((7, 16, 16), "uint16"), imagej=True, metadata={"axes": "ZYX"})
    assert not is_probably_deparray(path)
    with pytest.raises(DeparrayReadError, match=r"holds a z-stack \(7 planes"):
        read_export(path)


def test_gimp_page_names_and_imagej_slice_labels_are_not_channel_names(tiffs) -> None:
    gimp = tiffs.base / "a" / "img.tif"
    gimp.parent.mkdir()
    tifffile.imwrite(
        gimp, np.ones((16, 16), "uint8"), extratags=[(285, "s", 0, "Background", True)]
    )
    assert list(read_export(gimp).cells[0].channels) == ["BF"]
    labelled = tiffs.base / "b" / "img.tif"
    labelled.parent.mkdir()
    data = np.ones((2, 16, 16), "uint8")
    tifffile.imwrite(
        labelled, data, imagej=True, metadata={"axes": "CYX", "Labels": ["243", "247"]}
    )
    assert list(read_export(labelled).cells[0].channels) == ["BF", "DAPI"]


def _palette(path, colormap: np.ndarray) -> np.ndarray:
    data = np.random.default_rng(0).integers(0, 255, (16, 16)).astype("uint8")
    tifffile.imwrite(path, data, photometric="palette", colormap=colormap)
    return data


def test_a_single_channel_shown_through_a_colour_lut_opens_as_grey(tmp_path) -> None:
    """ImageJ and Leica save one channel with a green (or any colour) LUT as a palette TIFF."""
    ramp = np.arange(256, dtype="uint16") * 257
    green = np.stack([np.zeros(256, "uint16"), ramp, np.zeros(256, "uint16")])
    data = _palette(tmp_path / "cell0001_FITC.tif", green)
    (cell,) = read_export(tmp_path / "cell0001_FITC.tif").cells
    np.testing.assert_array_equal(cell.channels["FITC"], data)


def test_an_indexed_colour_palette_is_refused(tmp_path) -> None:
    colours = np.random.default_rng(1).integers(0, 65535, (3, 256)).astype("uint16")
    _palette(tmp_path / "cell0001.tif", colours)
    with pytest.raises(DeparrayReadError, match="palette colour image"):
        read_export(tmp_path / "cell0001.tif")


def test_cells_on_an_ome_modulo_axis_and_channel_names_from_micromanager(tmp_path) -> None:
    """A Micro-Manager file whose images differ only in the channel: one cell, names kept."""
    path = tmp_path / "mm.tif"
    with tifffile.TiffWriter(path) as tif:
        for index, name in enumerate(("DAPI", "FITC")):
            tif.write(
                np.full((16, 16), index, "uint16"),
                extratags=[
                    (51123, "s", 0, f'{{"Channel": "{name}", "ChannelIndex": {index}}}', True)
                ],
                metadata=None,
            )
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_micromanager
    (cell,) = read_export(path).cells
    assert list(cell.channels) == ["DAPI", "FITC"]


NO_IMAGECODECS = """
import sys
sys.modules["imagecodecs"] = None  # as if it were not installed
from napari_deparray_ctc.core.io import DeparrayReadError, read_export
for path in sys.argv[1:]:
    try:
        read_export(path)
        print("READ", path)
    except DeparrayReadError as error:
        print("REFUSED", error.reason)
"""


def test_a_missing_codec_says_which_and_how_to_install_it(tmp_path) -> None:
    """LZW needs imagecodecs; uncompressed 12-bit packed pixels need it to unpack."""
    lzw = tmp_path / "cell0001_BF.tif"
    tifffile.imwrite(lzw, np.ones((16, 16), "uint16"), compression="lzw")
    packed = tmp_path / "cell0002_BF.tif"
    with tifffile.TiffWriter(packed) as tif:  # 12-bit packed, uncompressed (written by hand)
        tif.write(np.zeros((16, 16), "uint16"), bitspersample=12)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NO_IMAGECODECS), str(lzw), str(packed)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("REFUSED LZW compression needs the 'imagecodecs' package")
    assert "pip install imagecodecs" in lines[0]
    assert lines[1].startswith("REFUSED 12-bit packed pixels need the 'imagecodecs' package")


def test_an_unsupported_compression_names_the_codec(tmp_path) -> None:
    path = tmp_path / "cell0001_BF.tif"
    tifffile.imwrite(path, np.ones((16, 16), "uint16"))
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["Compression"].overwrite(34676)  # SGI LogL: decoded by nobody here
    with pytest.raises(DeparrayReadError, match=r"SGILOG compression \(code 34676\) cannot be"):
        read_export(path)


def test_discovery_of_index_token_files_reads_no_pixels(tiffs, planes_factory, monkeypatch) -> None:
    for cell in range(3):
        for token in ("d0", "d1"):
            tifffile.imwrite(tiffs.base / f"A0{cell}f00{token}.tif", np.ones((8, 8), "uint8"))

    def no_pixels(*args, **kwargs):
        raise AssertionError("discovery read pixels")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_pixels)
    sources, skipped = discover_cells(tiffs.base)
    assert skipped == [] and [s.cell_id for s in sources] == ["A00f00", "A01f00", "A02f00"]
    assert all(set(s.files) == {"d0", "d1"} for s in sources)
