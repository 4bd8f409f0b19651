"""Load: classify 10,000 synthetic cells through the CLI and through the widget; peak RSS.

Issue 6 asks for a peak resident memory below 1.5 GB and no growth across repeated runs.

1. **Export.** ``--unique`` distinct synthetic cells are rendered with
   :func:`napari_deparray_ctc.core.synth.write_export` (multipage layout: one TIFF per cell,
   BF, DAPI, PE, APC pages) and copied under new names up to ``--cells`` files (rendering
   10,000 cells would take longer than classifying them; the reader and the classifier see
   10,000 files either way).
2. **Model.** An untrained one-channel ResNet-18 at ``--image-size`` px, saved with
   :func:`napari_deparray_ctc.core.model.loaded.save_model` (inference costs the same as with trained
   weights), or ``--model``.
3. **CLI.** ``deparray-ctc classify EXPORT --model M --out results.csv`` in a fresh Python
   process, ``--repeats`` times. Each process reports its own peak RSS (``ru_maxrss``) and its
   RSS once torch is imported and the model loaded (the fixed cost); a psutil poll of the
   process (every 50 ms) cross-checks the peak from outside.
4. **Widget.** One napari session (a child process, under Xvfb when there is no display):
   the export is opened with the plugin's reader (all four channels become layers), the
   "Classify cells" widget is docked and run ``--repeats`` times on the BF stack. A sampling
   thread records the process RSS every 20 ms; printed per run: the peak during the run and
   the RSS after it (after ``gc.collect()``, and after glibc's ``malloc_trim`` returned the
   allocator's cached free memory to the OS: the live memory). The first run is cold (it
   imports torch and loads the model), so growth is measured over the warm runs (2 to last).

Usage (from the repository root; several minutes on a 2-core CPU)::

    nice python benchmarks/bench_load.py
    nice python benchmarks/bench_load.py --cells 2000 --repeats 2      # a quicker look
    nice python benchmarks/bench_load.py --json benchmarks/results/bench_load.json

Figures measured on the development machine are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

GOAL_MB = 1536.0
#: growth across repeated runs still called "no leak" (allocator noise, caches warming up)
LEAK_TOLERANCE_MB = 50.0


# --------------------------------------------------------------------------------------------
# data


def make_export(folder: Path, n_cells: int, unique: int, image_size: int) -> Path:
    """``n_cells`` multipage cell files: ``unique`` rendered ones, copied under new names."""
    from napari_deparray_ctc.core.synth import write_export

    rendered = folder / "rendered"
    write_export(
        rendered, n_cells=min(unique, n_cells), ctc_fraction=0.2, seed=7, image_size=image_size
    )
    sources = sorted(rendered.glob("cell*.tif"))
    export = folder / "export"
    export.mkdir()
    for index in range(n_cells):
        shutil.copyfile(sources[index % len(sources)], export / f"cell{index:05d}.tif")
    shutil.rmtree(rendered)
    return export


def make_model(folder: Path, image_size: int) -> Path:
    import torch

    from napari_deparray_ctc.core.model.loaded import build_network, save_model

    torch.manual_seed(0)
    path = folder / f"untrained_resnet18_{image_size}px.pt"
    metadata = {"arch": "resnet18", "threshold": 0.5, "image_size": image_size}
    save_model(path, build_network("resnet18"), metadata)
    return path


# --------------------------------------------------------------------------------------------
# process memory


class RssSampler:
    """Polls a process's resident set size (and its children's) in a background thread."""

    def __init__(self, pid: int, interval_s: float) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        import psutil

        try:
            total = self.process.memory_info().rss
            for child in self.process.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            return total
        except psutil.Error:
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self.samples += 1
            self._stop.wait(self.interval_s)

    def reset(self) -> None:
        self.peak = self._rss()

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def mb(n_bytes: float) -> float:
    return n_bytes / 1024**2


def release_free_memory() -> bool:
    """Return freed heap memory to the OS (glibc ``malloc_trim``), so that the RSS after a
    run shows live memory, not what the allocator keeps cached per thread arena."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


# --------------------------------------------------------------------------------------------
# CLI


CLI_CHILD = textwrap.dedent(
    """
    import resource, sys
    def maxrss_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from napari_deparray_ctc.cli import main
    import napari_deparray_ctc.core.inference.classify, napari_deparray_ctc.core.io
    from napari_deparray_ctc.core.model.loaded import load_model
    load_model(sys.argv[sys.argv.index("--model") + 1], device="cpu")
    print("FIXED_MB", maxrss_mb(), flush=True)
    code = main(sys.argv[1:])
    print("PEAK_MB", maxrss_mb(), flush=True)
    sys.exit(code)
    """
)


def run_cli(export: Path, model: Path, out_csv: Path, threads: int | None) -> dict:
    argv = ["classify", str(export), "--model", str(model), "--out", str(out_csv)]
    argv += ["--device", "cpu"] + (["--threads", str(threads)] if threads else [])
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", CLI_CHILD, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler = RssSampler(process.pid, 0.05).start()
    out, err = process.communicate()
    polled = sampler.stop()
    elapsed = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"deparray-ctc classify failed ({process.returncode}):\n{err[-3000:]}")
    values = {
        line.split()[0]: float(line.split()[1])
        for line in out.splitlines()
        if line.startswith(("FIXED_MB", "PEAK_MB"))
    }
    with open(out_csv, encoding="utf-8", errors="surrogateescape") as handle:
        rows = sum(1 for _ in handle) - 1
    return {
        "peak_mb": values["PEAK_MB"],
        "fixed_mb": values["FIXED_MB"],
        "polled_peak_mb": mb(polled),
        "seconds": elapsed,
        "rows": rows,
    }


# --------------------------------------------------------------------------------------------
# widget (runs in a child process: `python bench_load.py --widget-child ...`)


def widget_session(export: Path, model: Path, repeats: int, batch_size: int, out: Path) -> int:
    """One napari session: open the export, dock the widget, classify ``repeats`` times."""
    import gc

    import psutil

    import napari
    from napari_deparray_ctc.napari.widgets.classify import widget as cw
    from napari_deparray_ctc.napari.widgets.classify.inputs import CONFIG_DIR_ENV

    os.environ.setdefault(CONFIG_DIR_ENV, str(out.parent / "settings"))  # not the user's
    me = psutil.Process()
    sampler = RssSampler(os.getpid(), 0.02).start()
    figures: dict = {"rss_napari_started_mb": None, "runs": []}

    viewer = napari.Viewer(show=False)
    app = napari.qt.get_qapp()
    app.processEvents()
    figures["rss_napari_started_mb"] = mb(me.memory_info().rss)
    start = time.perf_counter()
    layers = viewer.open(str(export), plugin="napari-deparray-ctc")
    figures["open_seconds"] = time.perf_counter() - start
    figures["layers"] = {layer.name: list(layer.data.shape) for layer in layers}
    figures["layer_data_mb"] = mb(sum(layer.data.nbytes for layer in layers))
    app.processEvents()
    figures["rss_export_open_mb"] = mb(me.memory_info().rss)

    widget = cw.ClassifyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Classify cells")
    widget.set_model_path(model)
    widget.cells.batch_spin.setValue(batch_size)
    widget.device = "cpu"
    for number in range(1, repeats + 1):
        gc.collect()
        sampler.reset()
        start = time.perf_counter()
        worker = widget.run()
        if worker is None:
            print(f"run refused: {widget.status_label.text()}", file=sys.stderr)
            return 1
        while widget.is_running:
            app.processEvents()
            time.sleep(0.01)
        app.processEvents()
        elapsed = time.perf_counter() - start
        n = 0 if widget.results is None else len(widget.results)
        peak = sampler.peak
        gc.collect()
        after = me.memory_info().rss
        release_free_memory()
        trimmed = me.memory_info().rss
        figures["runs"].append(
            {
                "run": number,
                "cells": n,
                "seconds": elapsed,
                "peak_mb": mb(peak),
                "rss_after_mb": mb(after),
                "rss_after_trim_mb": mb(trimmed),
                "status": widget.status_label.text(),
            }
        )
        print(f"  widget run {number}: {n} cells in {elapsed:.0f} s, peak {mb(peak):.0f} MB")
    sampler.stop()
    import resource

    figures["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write_text(json.dumps(figures, indent=2))
    viewer.close()
    return 0


def run_widget(export: Path, model: Path, repeats: int, batch_size: int, work: Path) -> dict:
    out = work / "widget.json"
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--widget-child",
        str(export),
        str(model),
        str(repeats),
        str(batch_size),
        str(out),
    ]
    env = dict(os.environ)
    if not env.get("DISPLAY") and shutil.which("xvfb-run"):
        command = ["xvfb-run", "-a", *command]  # napari's canvas needs a display
    env.setdefault("QT_QPA_PLATFORM", "xcb" if env.get("DISPLAY") else "offscreen")
    if command[0] == "xvfb-run":
        env["QT_QPA_PLATFORM"] = "xcb"
    result = subprocess.run(command, env=env, text=True, capture_output=True)
    sys.stdout.write(result.stdout)
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"widget session failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(out.read_text())


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--widget-child"]:
        export, model, repeats, batch, out = argv[1:6]
        return widget_session(Path(export), Path(model), int(repeats), int(batch), Path(out))

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000, help="cells to classify (10,000)")
    parser.add_argument("--unique", type=int, default=200, help="distinct rendered cells (200)")
    parser.add_argument("--image-size", type=int, default=48, help="cell and model size (48)")
    parser.add_argument("--model", help="model file (default: untrained ResNet-18)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per entry point (3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the CLI")
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--skip-widget", action="store_true")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    figures: dict = {"cells": args.cells, "image_size": args.image_size, "goal_mb": GOAL_MB}
    try:
        start = time.perf_counter()
        export = make_export(work, args.cells, args.unique, args.image_size)
        model = Path(args.model) if args.model else make_model(work, args.image_size)
        print(
            f"{args.cells} cell files ({args.unique} distinct, {args.image_size} px, 4 channels) "
            f"and the model ready in {time.perf_counter() - start:.0f} s"
        )
        ok = True
        if not args.skip_cli:
            runs = []
            for number in range(1, args.repeats + 1):
                run = run_cli(export, model, work / f"results{number}.csv", args.threads)
                runs.append(run)
                print(
                    f"  CLI run {number}: {run['rows']} cells in {run['seconds']:.0f} s, "
                    f"peak {run['peak_mb']:.0f} MB (polled {run['polled_peak_mb']:.0f} MB; "
                    f"torch + model alone {run['fixed_mb']:.0f} MB)"
                )
            growth = runs[-1]["peak_mb"] - runs[0]["peak_mb"]
            peak = max(max(run["peak_mb"], run["polled_peak_mb"]) for run in runs)
            figures["cli"] = {"runs": runs, "peak_mb": peak, "growth_mb": growth}
            ok &= peak < GOAL_MB and all(run["rows"] == args.cells for run in runs)
            print(
                f"CLI: peak RSS {peak:.0f} MB (goal < {GOAL_MB:.0f} MB); growth over "
                f"{args.repeats} runs {growth:+.0f} MB"
            )
        if not args.skip_widget:
            session = run_widget(export, model, args.repeats, args.batch_size, work)
            runs = session["runs"]
            peak = max(run["peak_mb"] for run in runs)
            # run 1 is cold (imports torch, loads the model): growth is counted from run 2
            warm = runs[1:] if len(runs) > 2 else runs
            growth_live = warm[-1]["rss_after_trim_mb"] - warm[0]["rss_after_trim_mb"]
            growth_peak = warm[-1]["peak_mb"] - warm[0]["peak_mb"]
            session.update(peak_mb=peak, growth_live_mb=growth_live, growth_peak_mb=growth_peak)
            figures["widget"] = session
            ok &= peak < GOAL_MB and all(run["cells"] == args.cells for run in runs)
            ok &= growth_live < LEAK_TOLERANCE_MB and growth_peak < LEAK_TOLERANCE_MB
            print(
                f"widget: napari started {session['rss_napari_started_mb']:.0f} MB; export open "
                f"({session['layer_data_mb']:.0f} MB of layers, {session['open_seconds']:.0f} s) "
                f"{session['rss_export_open_mb']:.0f} MB"
            )
            for run in runs:
                print(
                    f"  run {run['run']}: {run['cells']} cells in {run['seconds']:.0f} s, peak "
                    f"{run['peak_mb']:.0f} MB, after the run {run['rss_after_mb']:.0f} MB "
                    f"({run['rss_after_trim_mb']:.0f} MB after malloc_trim)"
                )
            print(
                f"widget: peak RSS {peak:.0f} MB (goal < {GOAL_MB:.0f} MB); growth over the "
                f"warm runs {warm[0]['run']}-{warm[-1]['run']}: {growth_live:+.0f} MB live "
                f"(after malloc_trim), {growth_peak:+.0f} MB peak"
            )
        figures["within_goal"] = bool(ok)
        print("within the goal (peak < 1.5 GB, no growth):", "yes" if ok else "NO")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
