"""Import boundaries, checked in fresh interpreters (a test process has napari loaded already).

* ``napari_deparray_ctc.core`` imports no napari, Qt or magicgui: every module under it.
* Opening a TIFF through the reader (and the sample data) imports no torch.
* Importing the package itself is cheap: no torch, no napari.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

GUI_MODULES = ("napari", "qtpy", "PyQt5", "PySide2", "PyQt6", "PySide6", "magicgui", "superqt")


def _run(code: str, tmp_path: Path) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line, which is returned."""
    env = {**os.environ, "DEPARRAY_CTC_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_core_imports_no_gui_toolkit(tmp_path):
    found = _run(
        f"""
        import importlib, json, pkgutil, sys
        import napari_deparray_ctc.core as core
        names = [m.name for m in pkgutil.walk_packages(core.__path__, core.__name__ + ".")]
        for name in names:
            importlib.import_module(name)
        gui = [m for m in {GUI_MODULES!r} if m in sys.modules]
        print(json.dumps({{"modules": names, "gui": gui}}))
        """,
        tmp_path,
    )
    # the walk really covered the core (the reader core at least)
    for expected in ("io", "channels", "annotations.labels", "synth", "atomic"):
        assert f"napari_deparray_ctc.core.{expected}" in found["modules"]
    assert found["gui"] == [], f"core imports {found['gui']}"


def test_package_import_is_light(tmp_path):
    found = _run(
        f"""
        import json, sys
        import napari_deparray_ctc
        heavy = [m for m in ("torch", "torchvision", *{GUI_MODULES!r}) if m in sys.modules]
        print(json.dumps({{"heavy": heavy}}))
        """,
        tmp_path,
    )
    assert found["heavy"] == []


@pytest.mark.parametrize("layout", ["multipage", "perchannel", "ome", "stack"])
def test_reading_a_tiff_imports_no_torch(tmp_path, layout):
    from napari_deparray_ctc.core.synth import write_export

    folder = write_export(tmp_path / layout, 3, ctc_fraction=0.5, seed=1, layout=layout)
    found = _run(
        f"""
        import json, sys
        from napari_deparray_ctc.napari.reader import napari_get_reader
        path = {str(folder)!r}
        reader = napari_get_reader(path)
        layers = reader(path)
        print(json.dumps({{
            "n_layers": len(layers),
            "shape": list(layers[0][0].shape),
            "torch": [m for m in ("torch", "torchvision") if m in sys.modules],
        }}))
        """,
        tmp_path,
    )
    assert found["n_layers"] == 4
    assert found["shape"][0] == 3
    assert found["torch"] == []


def test_sample_data_imports_no_torch(tmp_path):
    found = _run(
        """
        import json, sys
        from napari_deparray_ctc.napari.sample_data import synthetic_sample
        layers = synthetic_sample()
        print(json.dumps({
            "n_layers": len(layers),
            "torch": [m for m in ("torch", "torchvision") if m in sys.modules],
        }))
        """,
        tmp_path,
    )
    assert found["n_layers"] == 4
    assert found["torch"] == []
