"""Regenerate ``docs/classify_widget.png``: the "Classify cells" widget in a real napari window.

Trains a small model on synthetic cells, opens a synthetic export with the plugin's reader,
classifies it with the widget, turns on the review queue and saves a window screenshot.
Needs a display; on a headless machine::

    xvfb-run -a -s "-screen 0 1500x950x24" python docs/make_classify_screenshot.py
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
    from napari_deparray_ctc.core.data import TrainingSet
    from napari_deparray_ctc.core.synth import synth_cells, write_export
    from napari_deparray_ctc.core.train import TrainConfig, train
    from napari_deparray_ctc.napari.widgets.classify.widget import ClassifyWidget, avoid_gl_llvm_clash

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
    config = TrainConfig(epochs=8, image_size=48, batch_size=32, seed=0, out=str(model))
    train(config, data=data)
    export = write_export(tmp / "sample_export", n_cells=40, ctc_fraction=0.3, seed=5)
    (export / "labels.csv").unlink()  # a fresh export: nobody has annotated it yet

    viewer = napari.Viewer(title="napari-deparray-ctc: Classify cells")
    viewer.window._qt_window.resize(1500, 950)
    viewer.open(str(export), plugin="napari-deparray-ctc")
    widget = ClassifyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Classify cells", area="right")
    widget.set_model_path(model)
    widget.run()
    loop = QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: None if widget.is_running else loop.quit())
    timer.start(50)
    loop.exec_()
    if widget.results is None:
        print(f"classification failed: {widget.status_label.text()}", file=sys.stderr)
        return 1
    widget.set_review_queue(True)
    for row, label in ((0, "CTC"), (1, "WBC")):
        widget.set_annotation(widget.results.rows[widget.table_order()[row]].cell_id, label)
    widget.table.setCurrentCell(2, 1)
    viewer.reset_view()
    for _ in range(20):
        napari.qt.get_qapp().processEvents()
    viewer.screenshot(str(OUT), canvas_only=False)
    print(f"wrote {OUT}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
