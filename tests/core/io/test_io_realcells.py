"""Real 16-bit microscopy through the core reader.

Cuts a few 40×40 single-cell tiles out of the Jurkat imaging-flow-cytometry montages in
``../shared/real-cells/jurkat-ifc-blasi2016/`` (Ch3 = bright-field, Ch4 = DNA stain; tile
(r, c) is the same cell in every channel), writes them as per-cell files into ``tmp_path`` and
reads them back. Skipped when the folder is absent; the images are never copied into the
repository.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_deparray_ctc.core.io import read_export

pytestmark = pytest.mark.realdata

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
JURKAT = SHARED / "real-cells" / "jurkat-ifc-blasi2016"
TILE = 40


def _montages() -> tuple[np.ndarray, np.ndarray]:
    if not (JURKAT / "Ch3_CP0008.tif").is_file() or not (JURKAT / "Ch4_CP0008.tif").is_file():
        pytest.skip(f"Jurkat montages not found in {JURKAT}")
    return tifffile.imread(JURKAT / "Ch3_CP0008.tif"), tifffile.imread(JURKAT / "Ch4_CP0008.tif")


def _non_empty_tiles(bf: np.ndarray, count: int) -> list[tuple[int, int]]:
    tiles = []
    for row in range(bf.shape[0] // TILE):
        for col in range(bf.shape[1] // TILE):
            tile = bf[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE]
            if tile.std() > 0:
                tiles.append((row, col))
    return tiles[:: max(1, len(tiles) // count)][:count]


def _tile(image: np.ndarray, row: int, col: int) -> np.ndarray:
    return image[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE].copy()


def test_jurkat_tiles_as_per_cell_bf_and_dna_files(tmp_path: Path) -> None:
    bf, dna = _montages()
    assert bf.dtype == np.uint16 and bf.shape == dna.shape
    tiles = _non_empty_tiles(bf, 5)
    assert len(tiles) == 5
    for row, col in tiles:
        cell_id = f"jurkat_r{row:02d}c{col:02d}"
        tifffile.imwrite(tmp_path / f"{cell_id}_BF.tif", _tile(bf, row, col), compression="lzw")
        tifffile.imwrite(tmp_path / f"{cell_id}_DNA.tif", _tile(dna, row, col), compression="lzw")

    export = read_export(tmp_path)
    assert export.skipped == []
    assert export.channels == ["BF", "DAPI"]  # "DNA" is a DAPI alias
    assert export.cell_ids == [f"jurkat_r{r:02d}c{c:02d}" for r, c in tiles]
    for cell, (row, col) in zip(export.cells, tiles, strict=True):
        assert cell.original_shape == (TILE, TILE)
        assert cell.channels["BF"].dtype == np.uint16
        np.testing.assert_array_equal(cell.channels["BF"], _tile(bf, row, col))
        np.testing.assert_array_equal(cell.channels["DAPI"], _tile(dna, row, col))
        # real 16-bit data, not a flat test pattern
        assert cell.channels["BF"].std() > 0 and cell.channels["DAPI"].max() > 255


def test_jurkat_tiles_with_instrument_channel_names_and_a_channel_map(tmp_path: Path) -> None:
    bf, dna = _montages()
    tiles = _non_empty_tiles(bf, 3)
    for row, col in tiles:
        tifffile.imwrite(tmp_path / f"Ch3_cell{row:02d}{col:02d}.tif", _tile(bf, row, col))
        tifffile.imwrite(tmp_path / f"Ch4_cell{row:02d}{col:02d}.tif", _tile(dna, row, col))
    (tmp_path / "channels.csv").write_text("token,name\nCh3,BF\nCh4,DNA\n")
    (tmp_path / "labels.csv").write_text(
        "cell_id,label,sample\n"
        + "".join(f"cell{r:02d}{c:02d},WBC,jurkat\n" for r, c in tiles)  # a leukaemic T-cell line
    )
    export = read_export(tmp_path)
    assert export.skipped == []
    assert [cell.label for cell in export.cells] == ["WBC"] * len(tiles)
    assert {cell.group for cell in export.cells} == {"jurkat"}
    for cell, (row, col) in zip(export.cells, tiles, strict=True):
        np.testing.assert_array_equal(cell.channels["BF"], _tile(bf, row, col))
        np.testing.assert_array_equal(cell.channels["DAPI"], _tile(dna, row, col))
