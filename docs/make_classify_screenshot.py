"""Regenerate ``docs/classify_widget.png``: "Classify cells" and the cell gallery, in napari.

Trains a small model on synthetic cells, opens a synthetic export with the plugin's reader,
classifies it with the widget, turns on the review queue, docks the cell gallery sorted by
doubt and saves a screenshot of the whole window, at a laptop's 1366×768 with napari's
default dock width (what an analyst sees).
Needs a display; on a headless machine::

    xvfb-run -a -s "-screen 0 1366x768x24" python docs/make_classify_screenshot.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "classify_widget.png"


def main() -> int:
    from qtpy.QtCore import QEventLoop, QTimer

    import napari
    from napari_deparray_ctc.core.gl_guard import avoid_gl_llvm_clash
    from napari_deparray_ctc.core.synth import synth_cells, write_export
    from napari_deparray_ctc.core.training import TrainingSet
    from napari_deparray_ctc.core.training.train import TrainConfig, train
    from napari_deparray_ctc.napari.session import session_for

    tmp = Path(tempfile.mkdtemp(prefix="classify-screenshot-"))
    os.environ.setdefault("DEPARRAY_CTC_CONFIG_DIR", str(tmp / "settings"))
    avoid_gl_llvm_clash()  # the window below may run on Mesa llvmpipe

    cells = synth_cells(240, ctc_fraction=0.4, seed=1, n_samples=2, image_size=48)
    data = TrainingSet(
        bf=[c.channels["BF"] for c in cells],
        labels=[c.label for c in cells],
        dapi=[c.channels["DAPI"] for c in cells],
        cell_ids=[c.cell_id for c in cells],
        groups=[c.sample for c in cells],
    )
    model = tmp / "model.pt"
    config = TrainConfig(epochs=6, image_size=48, batch_size=32, seed=0, folds=1, out=str(model))
    train(config, data=data)
    export = write_export(tmp / "sample_export", n_cells=40, ctc_fraction=0.3, seed=5)
    (export / "labels.csv").unlink()  # a fresh export: nobody has annotated it yet

    viewer = napari.Viewer(title="napari-deparray-ctc: Classify cells")
    viewer.window._qt_window.resize(1366, 768)
    viewer.open(str(export), plugin="napari-deparray-ctc")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-deparray-ctc", "Classify cells")
    widget.set_model_path(model)

    def settle(seconds: float) -> None:
        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec_()

    def wait(busy) -> None:
        loop = QEventLoop()
        timer = QTimer()
        timer.timeout.connect(lambda: None if busy() else loop.quit())
        timer.start(50)
        loop.exec_()

    wait(lambda: widget.model_box.is_checking)
    widget.run()
    wait(lambda: widget.is_running)
    if widget.results is None:
        print(f"classification failed: {widget.status_label.text()}", file=sys.stderr)
        return 1
    widget.results_box.review_checkbox.setChecked(True)
    session = session_for(viewer)
    for row, label in ((0, "CTC"), (1, "WBC")):
        session.set_label(widget.results.rows[widget.table.order()[row]].cell_id, label)
    from qtpy.QtWidgets import QScrollArea

    # under "Classify cells", as napari docks it: along the bottom it would push a 768 px
    # window past the screen
    _gdock, gallery = viewer.window.add_plugin_dock_widget("napari-deparray-ctc", "Cell gallery")
    gallery.sort_combo.setCurrentIndex(1)  # doubt: the review queue
    gallery.tile_spin.setValue(40)
    widget.table.setCurrentCell(2, 1)
    settle(1.0)
    scroll = widget.findChild(QScrollArea)
    if scroll is not None:  # the results, as the dock shows them after a run
        widget.results_box.reveal()
    _close_notifications(viewer)
    viewer.reset_view()
    settle(1.0)
    if scroll is not None:  # the table whole, as an analyst scrolls to it
        scroll.ensureWidgetVisible(widget.table, 0, 0)
        settle(0.5)
    viewer.window._qt_window.grab().save(str(OUT))
    print(f"wrote {OUT}")
    viewer.close()
    return 0


def _close_notifications(viewer) -> None:
    """napari's toasts (the backend note, the run's notes) are not part of the picture."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()


if __name__ == "__main__":
    sys.exit(main())
