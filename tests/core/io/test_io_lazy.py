"""Lazy exports (issue 14): dask arrays per channel, read chunk by chunk, never at open time."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from io_helpers import stack_data

from napari_deparray_ctc.core.io import lazy as lazy_module
from napari_deparray_ctc.core.io import read_export, stack_channel
from napari_deparray_ctc.core.io.lazy import LazyExport


def _export(folder, n: int, shape=(12, 10)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(4)
    for index in range(n):
        side = shape if index % 7 else (shape[0] + 2, shape[1] + 4)  # a few larger cells
        with tifffile.TiffWriter(folder / f"cell{index:04d}.tif") as tif:
            for channel in ("BF", "DAPI"):
                plane = rng.integers(0, 4000, side).astype("uint16")
                tif.write(plane, photometric="minisblack", extratags=[(285, "s", 0, channel, True)])


@pytest.fixture
def counted_reads(monkeypatch):
    reads: list[str] = []
    real = lazy_module.read_cell

    def counting(source, *args, **kwargs):
        reads.append(source.cell_id)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(lazy_module, "read_cell", counting)
    return reads


def test_lazy_arrays_equal_the_eager_stacks(tmp_path) -> None:
    _export(tmp_path / "e", 150)
    eager = read_export(tmp_path / "e")
    lazy = LazyExport.from_paths(tmp_path / "e", chunk_cells=32)
    assert lazy.channels == eager.channels == ["BF", "DAPI"]
    for channel in lazy.channels:
        data = lazy.channel_array(channel)
        assert data.shape == (150, 14, 14) and data.chunks[0][:2] == (32, 32)
        # the lazy plane size comes from a sample of cells (here the same as over all cells)
        expected = stack_channel(eager.cells, channel)
        np.testing.assert_array_equal(np.asarray(data), expected)
    assert all(shape is not None for shape in lazy.original_shapes)  # filled as read
    assert lazy.original_shapes == [list(c.original_shape) for c in eager.cells]


def test_opening_reads_only_a_sample_and_a_slice_reads_one_chunk(tmp_path, counted_reads) -> None:
    _export(tmp_path / "e", 400)
    lazy = LazyExport.from_paths(tmp_path / "e", chunk_cells=50)
    assert len(counted_reads) == lazy_module.SAMPLE_CELLS  # nothing but the sample
    bf, dapi = (lazy.channel_array(ch) for ch in ("BF", "DAPI"))
    counted_reads.clear()
    np.asarray(bf[123])  # one cell: its chunk (cells 100-149), once for both channels
    np.asarray(dapi[120:140])
    read = set(counted_reads)
    assert read <= {f"cell{i:04d}" for i in range(100, 150)}
    assert len(counted_reads) == len(read) == 50 - sum(100 <= i < 150 for i in lazy.samples)


def test_a_file_that_vanishes_after_opening_is_a_blank_cell_with_its_reason(tmp_path) -> None:
    _export(tmp_path / "e", 60)
    lazy = LazyExport.from_paths(tmp_path / "e", chunk_cells=16)
    victim = next(i for i in range(60) if i not in lazy.samples)
    (tmp_path / "e" / f"cell{victim:04d}.tif").unlink()
    data = np.asarray(lazy.channel_array("BF"))
    assert (data[victim] == 0).all() and data[victim - 1].any()
    assert lazy.unreadable == {victim: "file not found (it was moved or deleted while reading)"}


def test_a_stack_file_opens_lazily(tiffs) -> None:
    data = stack_data(70)
    path = tiffs.stack("cells.ome.tif", data, axes="QCYX")
    lazy = LazyExport.from_paths(path, chunk_cells=16)
    assert lazy.n_cells == 70 and lazy.channels == ["BF", "DAPI", "C2", "C3"]
    np.testing.assert_array_equal(np.asarray(lazy.channel_array("C3")), data[:, 3])


def test_size_decides_laziness(tmp_path, monkeypatch) -> None:
    _export(tmp_path / "e", 40)
    lazy = LazyExport.from_paths(tmp_path / "e")
    assert not lazy.is_large
    monkeypatch.setattr(lazy_module, "LAZY_MIN_CELLS", 30)
    assert lazy.is_large
    monkeypatch.setattr(lazy_module, "LAZY_MIN_CELLS", 10**9)
    monkeypatch.setattr(lazy_module, "LAZY_MIN_BYTES", lazy.nbytes - 1)
    assert lazy.is_large
    assert lazy.shape == (14, 14)  # cell 0 (sampled) is one of the larger cells
    assert lazy.nbytes == 40 * 14 * 14 * 2 * 2


def test_lazy_module_imports_neither_napari_nor_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\nimport napari_deparray_ctc.core.io.lazy\n"
        "bad = [m for m in ('torch', 'napari', 'qtpy') if m in sys.modules]\nassert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
