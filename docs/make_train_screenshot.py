"""Regenerate ``docs/train_widget.png``: the "Train classifier" widget training, in napari.

Opens a labelled synthetic export with the plugin's reader, docks the widget, starts a short
training and saves a screenshot of the whole window once a few epochs are on the plot.
Needs a display; on a headless machine::

    xvfb-run -a -s "-screen 0 1366x768x24" python docs/make_train_screenshot.py

The window is a laptop's 1366×768, the dock napari's default width (what an analyst sees).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "train_widget.png"
SHOT_AFTER_EPOCH = 3


def main() -> int:
    from qtpy.QtCore import QEventLoop, QTimer

    import napari
    from napari_deparray_ctc.core.gl_guard import avoid_gl_llvm_clash
    from napari_deparray_ctc.core.synth import write_export

    tmp = Path(tempfile.mkdtemp(prefix="train-screenshot-"))
    export = write_export(
        tmp / "export", 200, ctc_fraction=0.35, seed=3, layout="classdirs", n_samples=2
    )
    viewer = napari.Viewer(title="napari-deparray-ctc: Train classifier")
    viewer.window._qt_window.resize(1366, 768)
    layers = viewer.open(str(export), plugin="napari-deparray-ctc")
    avoid_gl_llvm_clash()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-deparray-ctc", "Train classifier")
    viewer.layers.selection.active = layers[0]
    viewer.dims.set_current_step(0, 7)
    widget.settings.epochs_spin.setValue(8)
    widget.settings.size_spin.setValue(48)
    widget.settings.out_edit.setText(str(tmp / "model.pt"))

    loop = QEventLoop()
    done = {"shot": False}

    def maybe_shoot(progress) -> None:
        if (
            progress.phase == "epoch_end"
            and progress.epoch >= SHOT_AFTER_EPOCH
            and not done["shot"]
        ):
            QTimer.singleShot(300, shoot)
            done["shot"] = True

    def shoot() -> None:
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()  # e.g. napari's note about the Qt backend: not part of the picture
        scroll = getattr(widget, "scroll_area", None)
        if scroll is not None:  # the live plot, as an analyst scrolls to it while training
            scroll.ensureWidgetVisible(widget.plot, 0, 0)
        QTimer.singleShot(300, grab)

    def grab() -> None:
        viewer.window._qt_window.grab().save(str(OUT))
        print(f"wrote {OUT}")
        widget.stop()

    worker = widget.start()
    if worker is None:
        print(f"training refused: {widget.last_message}", file=sys.stderr)
        return 1
    worker.progress.connect(maybe_shoot)
    worker.finished.connect(lambda: QTimer.singleShot(200, loop.quit))
    loop.exec_()
    viewer.close()
    return 0 if OUT.exists() else 1


if __name__ == "__main__":
    sys.exit(main())
