"""Does the "Train classifier" widget keep napari responsive while it trains?

A real napari window (under Xvfb on a headless machine) holds a synthetic export opened
with the plugin's reader, with the "Train classifier" widget docked. A ``QTimer`` probe
ticks every 10 ms on the UI thread and records the gap between ticks; a gap much longer
than 10 ms is the event loop stalled (the UI frozen). The probe runs

* idle, for comparison (on a busy shared machine this is the noise floor);
* while the widget is docked: it starts importing torch, torchvision and scikit-learn in a
  background thread (``warm_up_training_imports``); loading shared libraries holds the
  interpreter lock, so this is where the one-off import stall now lands;
* during the **first** training of the session;
* during later trainings, ``--repeats`` times per torch thread setting: torch's own
  default (every core: "before") and the widget's default (all cores but one:
  ``TrainInputs.num_threads``, "after").

The Train click itself (``TrainWidget.start``: checks, and copying the annotated cells out
of the layers, on the UI thread) is timed separately ("click").

``--no-warmup`` skips the background import (the widget as first written), so the first
training then pays for the imports inside the measured run.

Usage::

    xvfb-run -a python benchmarks/bench_train_ui.py            # headless machine
    python benchmarks/bench_train_ui.py --cells 400 --epochs 3  # desktop

With ``QT_QPA_PLATFORM=offscreen`` the window is not shown (vispy cannot create its GL
context there), so canvas redraws are not part of the measurement; prefer Xvfb.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _probe_gaps(seconds: float | None, until=None, interval_ms: int = 10) -> np.ndarray:
    """Run the event loop with an ``interval_ms`` timer; return the gaps between ticks (ms)."""
    from qtpy.QtCore import QEventLoop, QTimer

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(interval_ms)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    loop = QEventLoop()
    stopper = QTimer()
    stopper.setInterval(5)
    start = time.perf_counter()

    def check() -> None:
        if (until is not None and until()) or (
            seconds is not None and time.perf_counter() - start >= seconds
        ):
            loop.quit()

    stopper.timeout.connect(check)
    timer.start()
    stopper.start()
    loop.exec_()
    timer.stop()
    stopper.stop()
    if len(ticks) < 2:
        return np.array([float("nan")])
    return np.diff(np.array(ticks)) * 1000.0


def _summary(gaps_ms: np.ndarray) -> dict[str, float]:
    return {
        "max_stall_ms": round(float(np.nanmax(gaps_ms)), 1),
        "p99_gap_ms": round(float(np.nanpercentile(gaps_ms, 99)), 1),
        "median_gap_ms": round(float(np.nanmedian(gaps_ms)), 1),
        "gaps_over_100ms": int(np.sum(gaps_ms > 100.0)),
        "ticks": int(gaps_ms.size),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=160, help="annotated cells (160)")
    parser.add_argument("--image-size", type=int, default=64, help="network input (64 px)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training (2)")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=1, help="warm trainings per setting (1)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--no-warmup", action="store_true", help="do not import torch & co when the widget opens"
    )
    args = parser.parse_args(argv)

    import napari
    from napari_deparray_ctc.core.synth import write_export
    from napari_deparray_ctc.napari.widgets.train import widget as tw
    from napari_deparray_ctc.napari.widgets.train.inputs import default_ui_threads
    from napari_deparray_ctc.napari.widgets.train.widget import TrainWidget

    if args.no_warmup:
        tw.warm_up_training_imports = lambda: tw.threading.Thread(target=lambda: None)

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-ui-"))
    export = write_export(
        tmp / "export", args.cells, ctc_fraction=0.3, seed=0, layout="classdirs", n_samples=2
    )
    print(f"{args.cells} synthetic cells in {export}; torch imported: {'torch' in sys.modules}")

    show = os.environ.get("QT_QPA_PLATFORM") != "offscreen"
    viewer = napari.Viewer(show=show)
    viewer.open(str(export), plugin="napari-deparray-ctc")
    results: dict[str, dict] = {"idle": _summary(_probe_gaps(args.idle_seconds))}
    print(f"idle: {results['idle']}")

    t0 = time.perf_counter()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train classifier")
    create_ms = (time.perf_counter() - t0) * 1000.0
    if not args.no_warmup:
        gaps = _probe_gaps(None, until=lambda: not widget.warmup.is_alive())
        results["dock widget + background imports"] = {
            **_summary(gaps),
            "train_click_ms": round(create_ms, 1),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"dock: {results['dock widget + background imports']}")
    widget.arch_combo.setCurrentText(args.arch)
    widget.epochs_spin.setValue(args.epochs)
    widget.size_spin.setValue(args.image_size)
    widget.overwrite_check.setChecked(True)

    cores = os.cpu_count() or 1
    settings = [("first training, widget default threads", default_ui_threads())]
    for _ in range(args.repeats):
        settings.append((f"warm, torch default threads ({cores}) [before]", None))
        settings.append(
            (f"warm, widget default threads ({default_ui_threads()}) [after]", default_ui_threads())
        )

    for run, (label, threads) in enumerate(settings):
        widget.num_threads = threads
        widget.out_edit.setText(str(tmp / f"model-{run}.pt"))
        t0 = time.perf_counter()
        worker = widget.start()
        click_ms = (time.perf_counter() - t0) * 1000.0
        if worker is None:
            print(f"refused: {widget.last_message}")
            return 1
        gaps = _probe_gaps(None, until=lambda: not widget.is_running)
        seconds = time.perf_counter() - t0
        summary = _summary(gaps)
        summary.update(train_click_ms=round(click_ms, 1), seconds=round(seconds, 1))
        if widget.last_outcome is None:
            print(f"{label}: failed: {widget.last_message}")
            return 1
        summary["val_f1"] = widget.last_outcome.result.metrics.get("f1")
        key = label if label not in results else f"{label} #{run}"
        results[key] = summary
        print(f"{key}: {summary}")

    print()
    print(
        f"{'setting':<52} {'max stall':>10} {'p99 gap':>8} {'>100ms':>7} {'click':>7} {'time':>7}"
    )
    for key, r in results.items():
        print(
            f"{key:<52} {r['max_stall_ms']:>8.1f}ms {r['p99_gap_ms']:>6.1f}ms "
            f"{r['gaps_over_100ms']:>7d} {r.get('train_click_ms', 0):>5.0f}ms "
            f"{r.get('seconds', args.idle_seconds):>6.1f}s"
        )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"cores: {cores}; load average (1, 5, 15 min): {load}; cells: {args.cells}; "
        f"{args.arch} at {args.image_size} px; {args.epochs} epochs; "
        f"platform: {os.environ.get('QT_QPA_PLATFORM', 'default')}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
