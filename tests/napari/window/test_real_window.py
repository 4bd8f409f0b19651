"""What a lab analyst sees in a real napari window (Xvfb), on a 1366×768 laptop screen.

Each test runs a small script in a fresh process under ``xvfb-run`` with a real X display
(not Qt's offscreen platform), so the window manager-free geometry is the one a user gets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="needs xvfb-run (Xvfb)"),
]


def _run_in_window(tmp_path: Path, body: str, screen: str = "1366x768x24") -> dict:
    script = tmp_path / "in_window.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys, time
            import napari
            from qtpy.QtWidgets import QApplication

            def settle(seconds=0.5):
                end = time.time() + seconds
                while time.time() < end:
                    QApplication.processEvents()
                    time.sleep(0.01)

            out = {}
            """
        )
        + textwrap.dedent(body)
        + "\nprint('RESULT ' + json.dumps(out))\n"
    )
    env = {**os.environ, "DEPARRAY_CTC_CONFIG_DIR": str(tmp_path / "settings")}
    env["DEPARRAY_CTC_CACHE_DIR"] = str(tmp_path / "cache")
    env.pop("QT_QPA_PLATFORM", None)  # a real (virtual) X display
    result = subprocess.run(
        ["xvfb-run", "-a", "-s", f"-screen 0 {screen}", sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[7:])


def test_docks_fit_a_laptop_screen(tmp_path: Path) -> None:
    """All three docks open: the window stays within 1366×768 and the docks scroll."""
    out = _run_in_window(
        tmp_path,
        """
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(1300, 740)
        viewer.open_sample("napari-deparray-ctc", "synthetic_deparray")
        docks = []
        for name in ("Classify cells", "Train classifier", "Cell gallery"):
            dock, widget = viewer.window.add_plugin_dock_widget("napari-deparray-ctc", name)
            docks.append((dock, widget))
        settle(1.5)
        window = viewer.window._qt_window
        out["window"] = [window.width(), window.height()]
        screen = QApplication.primaryScreen().availableGeometry()
        out["screen"] = [screen.width(), screen.height()]
        out["scrolls"] = [hasattr(w, "scroll_area") for _, w in docks if _ is not None][:2]
        out["min_heights"] = [w.minimumSizeHint().height() for _, w in docks]
        window.grab().save(sys.argv[0].replace(".py", ".png"))
        viewer.close()
        """,
    )
    width, height = out["window"]
    assert height <= out["screen"][1] and width <= out["screen"][0], out
    assert all(out["scrolls"]), out  # Classify and Train scroll instead of growing
    assert max(out["min_heights"]) < 768, out


def test_opening_an_export_starts_at_the_first_cell_with_bf_visible(tmp_path: Path) -> None:
    out = _run_in_window(
        tmp_path,
        """
        from napari_deparray_ctc.napari.session import session_for
        viewer = napari.Viewer(show=True)
        layers = viewer.open_sample("napari-deparray-ctc", "synthetic_deparray")
        settle(0.5)
        out["step"] = list(viewer.dims.current_step)
        out["axis_labels"] = list(viewer.dims.axis_labels)
        out["visible"] = {ly.name.split(" :: ")[1]: ly.visible for ly in viewer.layers}
        viewer.layers.selection.active = viewer.layers[0]
        settle(0.2)
        out["caption"] = session_for(viewer).caption.text
        viewer.close()
        """,
    )
    assert out["step"][0] == 0, out
    assert out["axis_labels"][0] == "cell", out
    assert out["visible"]["BF"] is True
    assert not any(v for k, v in out["visible"].items() if k != "BF"), out
    assert out["caption"].startswith("cell0000 (1 of 24)"), out
