"""Closing napari while the plugin works: a clean exit, every time (issues 21 and 22).

Each case opens the sample in a real window (Xvfb) in a fresh process, starts one kind of
background work (the model check of a remembered model, a classification, a training, the
saliency overlay, suggestions, the gallery's saliency) and closes the window while it runs:
as napari's File ▸ Close Window does (``viewer.close()``), or by quitting the application. The
process must exit with status 0, with no "Aborted", no deleted-Qt-object error and no
traceback; a training ended this way keeps what *Stop* keeps (a model file, no in-progress
file left behind).
"""

from __future__ import annotations

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

_SCRIPT = """
import os, sys, time
scenario, delay_s, how = sys.argv[1], float(sys.argv[2]), sys.argv[3]
import napari
from napari._qt.qt_event_loop import quit_app
from qtpy.QtCore import QTimer

model, out = os.environ["TEST_MODEL"], os.environ["TEST_OUT"]
viewer = napari.Viewer(show=True)
viewer.open_sample("napari-deparray-ctc", "synthetic_deparray")
PLUGIN = "napari-deparray-ctc"

def close():
    print("CLOSING", flush=True)
    viewer.close() if how == "viewer" else quit_app()

def later(seconds, fn):
    QTimer.singleShot(int(seconds * 1000), fn)

def classify_widget():
    return viewer.window.add_plugin_dock_widget(PLUGIN, "Classify cells")[1]

if scenario == "model_check":
    classify_widget().set_model_path(model)
    later(delay_s, close)
elif scenario == "classify":
    widget = classify_widget()
    widget.set_model_path(model)
    def go():
        assert widget.run() is not None, widget.status_label.text()
        later(delay_s, close)
    later(2.0, go)
elif scenario in ("saliency", "suggest"):
    widget = classify_widget()
    widget.set_model_path(model)
    def go():
        if scenario == "saliency":
            widget.review_tools.saliency_check.setChecked(True)
        else:
            assert widget.review_tools.suggest() is not None
        later(delay_s, close)
    later(2.0, go)
elif scenario == "gallery":
    classify_widget().set_model_path(model)
    gallery = viewer.window.add_plugin_dock_widget(PLUGIN, "Cell gallery")[1]
    def go():
        gallery.saliency_check.setChecked(True)
        later(delay_s, close)
    later(2.0, go)
elif scenario == "train":
    train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train classifier")[1]
    train.settings.size_spin.setValue(32)
    train.settings.epochs_spin.setValue(30)
    train.settings.out_edit.setText(out)
    def go():
        assert train.start() is not None, train.last_message
        later(delay_s, close)
    later(1.0, go)
later(120, lambda: (print("TIMEOUT", flush=True), os._exit(3)))
napari.run()
print("EXITED", flush=True)
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from napari_deparray_ctc.core.model.loaded import save_model
    from napari_deparray_ctc.core.model.network import build_network

    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(
        path, build_network("resnet18"), {"arch": "resnet18", "threshold": 0.5, "image_size": 32}
    )
    return path


def _close_during(tmp_path: Path, model: Path, scenario: str, delay_s: float, how: str):
    script = tmp_path / "close_during.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    out = tmp_path / "trained.pt"
    env = {
        **os.environ,
        "TEST_MODEL": str(model),
        "TEST_OUT": str(out),
        "DEPARRAY_CTC_CONFIG_DIR": str(tmp_path / "settings"),
        "DEPARRAY_CTC_CACHE_DIR": str(tmp_path / "cache"),
    }
    env.pop("QT_QPA_PLATFORM", None)  # a real (virtual) X display
    result = subprocess.run(
        [
            "xvfb-run",
            "-a",
            "-s",
            "-screen 0 1366x768x24",
            sys.executable,
            str(script),
            scenario,
            str(delay_s),
            how,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    return result, out


@pytest.mark.parametrize(
    ("scenario", "delay_s", "how"),
    [
        ("model_check", 0.2, "viewer"),
        ("model_check", 0.2, "quit"),
        ("classify", 0.3, "viewer"),
        ("classify", 3.0, "quit"),
        ("saliency", 0.3, "viewer"),
        ("suggest", 0.3, "quit"),
        ("gallery", 0.5, "viewer"),
        ("train", 0.5, "quit"),
        ("train", 4.0, "viewer"),
    ],
)
def test_closing_mid_run_exits_cleanly(tmp_path, tiny_model, scenario, delay_s, how):
    result, out = _close_during(tmp_path, tiny_model, scenario, delay_s, how)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "CLOSING" in result.stdout and "EXITED" in result.stdout, log[-4000:]
    for sign in ("Aborted", "has been deleted", "Traceback", "TIMEOUT", "core dumped"):
        assert sign not in log, log[-4000:]
    if scenario == "train":
        # what Stop keeps: the best model so far under the chosen name, nothing half-written
        leftovers = [p.name for p in out.parent.glob("*.in-progress*")]
        assert not leftovers, leftovers
        if delay_s >= 4.0:
            assert out.exists(), log[-4000:]
