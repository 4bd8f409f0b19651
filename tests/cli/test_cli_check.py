"""``deparray-ctc check``: the reason napari cannot show when the plugin declines a path."""

from __future__ import annotations

import numpy as np
import tifffile

from napari_deparray_ctc.cli import main
from napari_deparray_ctc.core.synth import write_export


def test_check_counts_the_cells_of_an_export(tmp_path, capsys):
    export = tmp_path / "export"
    write_export(export, n_cells=6, seed=0, layout="perchannel")
    assert main(["check", str(export)]) == 0
    out = capsys.readouterr().out
    assert f"{export}: opens as a DEPArray export: 6 cells" in out


def test_check_says_why_a_folder_of_photos_is_not_opened(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rgb = np.random.default_rng(2).integers(0, 255, (64, 64, 3)).astype("uint8")
    tifffile.imwrite(photos / "holiday.tif", rgb, photometric="rgb")
    export = tmp_path / "export"
    write_export(export, n_cells=2, seed=0, layout="multipage")
    assert main(["check", str(photos), str(export)]) == 1
    out = capsys.readouterr().out
    assert f"{photos}: not opened by the plugin:" in out
    assert "holiday.tif" in out and "RGB colour image" in out
    assert f"{export}: opens as a DEPArray export: 2 cells" in out
