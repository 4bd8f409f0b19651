"""Does the "Classify cells" widget keep napari responsive while it classifies?

A real napari window (under Xvfb on a headless machine) holds a BF stack of synthetic
cells; a ``QTimer`` probe ticks every 10 ms on the UI thread and records the gap between
ticks. A gap much longer than 10 ms is the event loop stalled (the UI frozen). The probe runs

* idle, for comparison,
* during a **cold** first run (``ClassifyWidget.run``, the same path as the Run button):
  torch is not imported before it, so this includes importing torch/torchvision and loading
  the model in the worker, as the first Run in a fresh napari session does,
* during **warm** runs, ``--repeats`` times per torch thread setting: the widget's default
  (all cores but one, :func:`~napari_deparray_ctc.napari.widgets.classify.widget.inference_threads`)
  and, with ``--compare-threads``, torch's own default (every core).

Usage::

    python benchmarks/bench_classify_ui.py                           # 2,000 cells, desktop
    xvfb-run -a python benchmarks/bench_classify_ui.py --compare-threads   # headless
    python benchmarks/bench_classify_ui.py --model my_model.pt --device cuda

With ``QT_QPA_PLATFORM=offscreen`` the window is not shown (vispy cannot create its GL
context there), so canvas redraws are not part of the measurement; prefer Xvfb.

Without ``--model`` an untrained ResNet18 at the default 64 px input is written to a
temporary folder: inference costs the same as with trained weights. ``--unique`` synthetic
cells are rendered and tiled to ``--cells`` (rendering 2,000 cells would take longer than
classifying them; the classifier sees the same amount of work).
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


def _probe_gaps(app, seconds: float | None, until=None, interval_ms: int = 10) -> np.ndarray:
    """Run the event loop with a ``interval_ms`` timer; return the gaps between ticks (ms)."""
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
        if until is not None and until():
            loop.quit()
        elif seconds is not None and time.perf_counter() - start >= seconds:
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
        "max_stall_ms": float(np.nanmax(gaps_ms)),
        "p99_stall_ms": float(np.nanpercentile(gaps_ms, 99)),
        "median_gap_ms": float(np.nanmedian(gaps_ms)),
        "ticks": int(gaps_ms.size),
    }


def _tiny_untrained_model(folder: Path, image_size: int) -> str:
    """Write an untrained ResNet18 model file in a subprocess (torch stays unimported here)."""
    import subprocess

    path = folder / "untrained_resnet18.pt"
    code = (
        "import sys; from napari_deparray_ctc.core.model import build_network, save_model;"
        "save_model(sys.argv[1], build_network('resnet18'),"
        " {'arch': 'resnet18', 'threshold': 0.5, 'image_size': int(sys.argv[2])})"
    )
    subprocess.run([sys.executable, "-c", code, str(path), str(image_size)], check=True)
    return str(path)


def _cells(n: int, unique: int, seed: int) -> tuple[np.ndarray, list[str]]:
    from napari_deparray_ctc.core.synth import synth_cells

    base = synth_cells(min(n, unique), ctc_fraction=0.3, seed=seed)
    images = [base[i % len(base)].channels["BF"] for i in range(n)]
    return np.stack(images), [f"bench{i:05d}" for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000, help="cells to classify (2000)")
    parser.add_argument("--unique", type=int, default=250, help="distinct synthetic cells (250)")
    parser.add_argument("--model", help="model file (default: untrained ResNet18, 64 px)")
    parser.add_argument(
        "--image-size", type=int, default=64, help="input size of the default model"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument(
        "--compare-threads",
        action="store_true",
        help="also classify with torch's default thread count (every core)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="warm runs per setting (1)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import napari
    from napari_deparray_ctc.napari.cells import cell_count
    from napari_deparray_ctc.napari.widgets.classify import widget as cw
    from napari_deparray_ctc.napari.widgets.classify.inputs import CONFIG_DIR_ENV

    tmp = Path(tempfile.mkdtemp(prefix="bench-classify-ui-"))
    os.environ.setdefault(CONFIG_DIR_ENV, str(tmp / "settings"))  # keep user settings alone
    model_path = args.model or _tiny_untrained_model(tmp, args.image_size)
    t0 = time.perf_counter()
    stack, ids = _cells(args.cells, args.unique, seed=0)
    print(f"{args.cells} cells ({args.unique} distinct) ready in {time.perf_counter() - t0:.1f} s")
    torch_was_imported = "torch" in sys.modules

    show = os.environ.get("QT_QPA_PLATFORM") != "offscreen"
    viewer = napari.Viewer(show=show)
    app = napari.qt.get_qapp()
    n = len(ids)
    meta = {
        "channel": "BF",
        "cell_ids": ids,
        "paths": [None] * n,
        "labels": [None] * n,
        "groups": [None] * n,
        "pixel_size_um": None,
        "original_shapes": [list(stack.shape[1:])] * n,
    }
    layer = viewer.add_image(stack, name="bench :: BF", metadata={"deparray": meta})
    assert cell_count(layer) == n
    widget = cw.ClassifyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Classify cells")
    widget.set_model_path(model_path)
    widget.batch_spin.setValue(args.batch_size)
    widget.device = None if args.device == "auto" else args.device
    _probe_gaps(app, 1.0)  # let the window settle

    figures: dict[str, dict] = {"idle": _summary(_probe_gaps(app, args.idle_seconds))}

    def measure(label: str, threads: int) -> bool:
        cw.inference_threads = lambda: threads
        start = time.perf_counter()
        worker = widget.run()
        if worker is None:
            print(f"run refused: {widget.status_label.text()}", file=sys.stderr)
            return False
        gaps = _probe_gaps(app, None, until=lambda: not widget.is_running)
        elapsed = time.perf_counter() - start
        if widget.results is None or len(widget.results) != n:
            print(f"run failed: {widget.status_label.text()}", file=sys.stderr)
            return False
        figures[f"{label}, {threads} torch thread(s)"] = {
            **_summary(gaps),
            "run_s": elapsed,
            "cells_per_s": n / elapsed,
        }
        return True

    original = cw.inference_threads
    default_threads = original()
    try:
        cold = "cold first run" + ("" if not torch_was_imported else " (torch pre-imported)")
        if not measure(cold, default_threads):
            return 1
        import torch

        settings = [("warm, widget default", default_threads)]
        if args.compare_threads:
            settings.append(("warm, torch default", torch.get_num_threads()))
        for repeat in range(args.repeats):
            for label, threads in settings:
                suffix = f" #{repeat + 1}" if args.repeats > 1 else ""
                if not measure(label + suffix, threads):
                    return 1
    finally:
        cw.inference_threads = original
    figures["machine"] = {
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "device": args.device,
        "window_shown": show,
        "cells": n,
        "batch_size": args.batch_size,
    }

    width = max(len(k) for k in figures)
    print(f"\nmachine: {figures['machine']}")
    print(f"{'':{width}}  max stall   p99 stall   median gap   run time")
    for key, value in figures.items():
        if key == "machine":
            continue
        run = (
            f"{value['run_s']:.1f} s ({value['cells_per_s']:.0f} cells/s)"
            if "run_s" in value
            else "-"
        )
        print(
            f"{key:{width}}  {value['max_stall_ms']:7.1f} ms  {value['p99_stall_ms']:7.1f} ms"
            f"  {value['median_gap_ms']:8.1f} ms   {run}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
