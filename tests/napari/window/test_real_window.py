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


HERE = Path(__file__).resolve().parent
#: where the screenshots of these tests go, to be looked at by eye (default: the test's tmp)
SHOTS_ENV = "DEPARRAY_CTC_WINDOW_SHOTS"


def _run_in_window(tmp_path: Path, body: str, screen: str = "1366x768x24") -> dict:
    script = tmp_path / "in_window.py"
    shots = Path(os.environ.get(SHOTS_ENV) or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    script.write_text(
        textwrap.dedent(
            f"""
            import json, sys, time
            sys.path.insert(0, {str(HERE)!r})
            import napari
            from qtpy.QtWidgets import QApplication
            from fit_check import cut_widgets

            SHOTS = {str(shots)!r}

            def settle(seconds=0.5):
                end = time.time() + seconds
                while time.time() < end:
                    QApplication.processEvents()
                    time.sleep(0.01)

            def wait_for(ready, seconds=120):
                end = time.time() + seconds
                while not ready() and time.time() < end:
                    QApplication.processEvents()
                    time.sleep(0.02)
                assert ready(), "timed out"

            def shot(window, name):
                window.grab().save(f"{{SHOTS}}/{{name}}.png")

            out = {{}}
            """
        )
        + textwrap.dedent(body)
        + "\nprint('RESULT ' + json.dumps(out))\n"
    )
    env = {**os.environ, "DEPARRAY_CTC_CONFIG_DIR": str(tmp_path / "settings")}
    env["DEPARRAY_CTC_CACHE_DIR"] = str(tmp_path / "cache")
    env["DEPARRAY_CTC_DATA_DIR"] = str(tmp_path / "documents")
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
    """Issue 22, point 8: BF is the selected layer at once (not the hidden APC layer napari
    selects as the last one added), and the caption's numbers agree with the slider's."""
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
        out["active"] = viewer.layers.selection.active.name
        out["caption"] = session_for(viewer).caption.text
        viewer.dims.set_current_step(0, 7)
        settle(0.2)
        out["caption_7"] = session_for(viewer).caption.text
        out["slider_max"] = int(viewer.dims.nsteps[0]) - 1
        shot(viewer.window._qt_window, "caption")
        viewer.close()
        """,
    )
    assert out["step"][0] == 0, out
    assert out["axis_labels"][0] == "cell", out
    assert out["visible"]["BF"] is True
    assert not any(v for k, v in out["visible"].items() if k != "BF"), out
    assert out["active"].endswith(":: BF"), out
    assert out["caption"].startswith("cell0000 (1 of 24, slider 0)"), out
    assert out["caption_7"].startswith("cell0007 (8 of 24, slider 7)"), out
    assert out["slider_max"] == 23, out  # napari's slider reads "7 | 23"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny, one-epoch) model file: what an analyst's first training writes."""
    out = tmp_path_factory.mktemp("model") / "tiny_model.pt"
    code = textwrap.dedent(
        f"""
        from napari_deparray_ctc.core.synth import synth_cells
        from napari_deparray_ctc.core.training import TrainingSet
        from napari_deparray_ctc.core.training.train import TrainConfig, train
        cells = synth_cells(60, ctc_fraction=0.4, seed=1, n_samples=2, image_size=32)
        data = TrainingSet(
            bf=[c.channels["BF"] for c in cells], labels=[c.label for c in cells],
            cell_ids=[c.cell_id for c in cells], groups=[c.sample for c in cells],
        )
        train(TrainConfig(epochs=1, image_size=32, batch_size=32, seed=0, folds=1,
                          num_threads=1, out={str(out)!r}), data=data)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600, capture_output=True)
    return out


def test_docks_cut_nothing_at_the_default_dock_width(tmp_path: Path, tiny_model: Path) -> None:
    """Issue 22, points 3, 4 and 5: at 1366×768, with napari's default dock width, no button,
    check box or one-line label of either dock is cut, before and after a run; the first Run
    without a model guides, with a button that docks *Train classifier*; the results table
    shows its cell ids whole, needs no sideways scrolling, and keeps room for rows when
    *Train classifier* docks under *Classify cells*."""
    out = _run_in_window(
        tmp_path,
        f"""
        from napari_deparray_ctc.napari.widgets.classify.table import (
            COL_ID, COL_LAYER, MIN_VISIBLE_ROWS)
        viewer = napari.Viewer(show=True)
        window = viewer.window._qt_window
        window.resize(1366, 768)
        viewer.open_sample("napari-deparray-ctc", "synthetic_deparray")
        dock, classify = viewer.window.add_plugin_dock_widget(
            "napari-deparray-ctc", "Classify cells")
        settle(1.0)
        out["dock_width"] = dock.width()
        out["cut_fresh"] = cut_widgets(dock)
        shot(window, "classify_fresh")
        classify.run()  # the analyst's first Run, before any model exists
        settle(0.5)
        out["first_run"] = classify.status_label.text()
        out["guide_shown"] = classify.guide.isVisible()
        out["cut_first_run"] = cut_widgets(dock)
        shot(window, "classify_first_run")
        classify.set_model_path({str(tiny_model)!r})
        wait_for(lambda: not classify.model_box.is_checking)
        settle(0.3)
        out["cut_model"] = cut_widgets(dock)
        assert classify.run() is not None, classify.status_label.text()
        wait_for(lambda: not classify.is_running)
        settle(0.5)
        out["status"] = classify.status_label.text()
        out["cut_results"] = cut_widgets(dock)
        shot(window, "classify_results")
        table = classify.table
        out["layer_column_hidden"] = table.isColumnHidden(COL_LAYER)
        ids = [table.item(r, COL_ID).text() for r in range(table.rowCount())]
        out["id_width"] = table.columnWidth(COL_ID)
        out["id_text"] = max(table.fontMetrics().horizontalAdvance(t) for t in ids)
        out["sideways"] = table.horizontalScrollBar().maximum()
        out["guide_after_run"] = classify.guide.isVisible()
        classify.open_train_button.click()  # what the guidance offers: dock Train classifier
        settle(1.0)
        train_dock = next(
            d for d in window.findChildren(type(dock)) if "Train classifier" in d.name)
        out["cut_both"] = cut_widgets(dock) + cut_widgets(train_dock)
        out["classify_height"] = dock.height()
        viewport = classify.scroll_area.viewport()
        top = table.mapTo(viewport, table.rect().topLeft()).y()
        out["table_height"] = min(top + table.height(), viewport.height()) - max(top, 0)
        out["rows_height"] = table.height_for_rows(MIN_VISIBLE_ROWS)
        out["window"] = [window.width(), window.height()]
        shot(window, "classify_and_train")
        viewer.close()
        """,
    )
    assert out["dock_width"] < 420, out  # napari's default, not widened by the plugin
    # point 5: the first Run without a model guides (what to do, a button), in words
    assert out["first_run"].startswith("No classifier yet"), out
    assert "Train classifier" in out["first_run"] and "c for CTC" in out["first_run"], out
    assert out["guide_shown"] and not out["guide_after_run"], out
    for key in ("cut_fresh", "cut_first_run", "cut_model", "cut_results", "cut_both"):
        assert out[key] == [], (key, out[key])
    assert out["status"].startswith("Classified 24 cells"), out
    assert out["layer_column_hidden"], out  # one export: its name is not repeated per row
    assert out["id_width"] >= out["id_text"], out
    assert out["sideways"] == 0, out  # the table needs no sideways scrolling
    assert out["table_height"] >= out["rows_height"], out  # on screen, not scrolled away
    assert out["window"][1] <= 768, out
