"""``is_probably_deparray`` (napari_get_reader's cheap check) and the reader's imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import tifffile

from napari_deparray_ctc.core.io import (
    is_probably_deparray,
)


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
