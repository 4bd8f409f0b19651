"""How long does napari's UI freeze while the plugin's widgets work? (largest event-loop gap)

A real napari window (run under Xvfb on a headless machine) holds a synthetic export opened
with the plugin's reader. A ``QTimer`` probe ticks every 10 ms on the UI thread and records
the gaps between ticks; a gap much longer than 10 ms is the UI frozen. Each phase of a fresh
session is probed in turn, as a user meets it:

1. idle (the noise floor of a busy machine);
2. docking "Train classifier" (it builds Qt only: torch is imported by the first worker that
   needs it);
3. docking "Classify cells" and choosing a model file (it is read at once, off the UI thread,
   torch with it);
4. the first classification of the session, then a second one;
5. a short training run (the widget's default torch threads).

A second fresh session runs the user's own sequence (issue 19), at a user's pace: dock
"Train classifier", one second later dock "Classify cells", one second later type a model path
in it (key by key, then Enter), and click *Run* half a second later, while the model file is
still being checked. The stall of each step is the largest gap from that action to the next
(the last one: until the classification's results are shown).

Every sequence runs twice, each time in a fresh process: once as the plugin runs
(``preload``: torch's libraries mapped with the interpreter lock released, see
``core/runtime.py``) and once without that preload (``DEPARRAY_CTC_PRELOAD=0``), and the two
are printed side by side.

Usage::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_ui_stalls.py
    python benchmarks/bench_ui_stalls.py --cells 500 --repeats 2 --json stalls.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PHASES = (
    "idle",
    "dock Train classifier",
    "dock Classify cells + choose model",
    "first classification",
    "second classification",
    "training (2 epochs)",
)
USER_PHASES = (
    "user: dock Train classifier",
    "user: dock Classify cells",
    "user: type the model path",
    "user: Run 0.5 s later (first classification)",
)


def save_model_file(model: Path) -> None:
    """An untrained ResNet18 model file, written by another process (torch stays unloaded)."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from napari_deparray_ctc.core.model.loaded import build_network, save_model;"
            "save_model(sys.argv[1], build_network('resnet18'), {'arch': 'resnet18', "
            "'threshold': 0.5, 'image_size': 64})",
            str(model),
        ],
        check=True,
    )


def _user_child(args: argparse.Namespace) -> dict[str, float]:
    """The user's sequence in a fresh session: dock Train, dock Classify, type, Run."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    import napari
    from napari_deparray_ctc.core.synth import write_export

    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-user-"))
    os.environ.setdefault("DEPARRAY_CTC_CONFIG_DIR", str(tmp / "settings"))
    export = write_export(
        tmp / "export", args.cells, ctc_fraction=0.3, seed=0, layout="stack", n_samples=2
    )
    model = tmp / "model.pt"
    save_model_file(model)
    viewer = napari.Viewer(show=os.environ.get("QT_QPA_PLATFORM") != "offscreen")
    viewer.open(str(export), plugin="napari-deparray-ctc")
    probe(1.0)
    stalls: dict[str, float] = {}
    box: dict = {}

    def step(name: str, action, then_seconds: float | None = None, until=None) -> None:
        from qtpy.QtCore import QTimer

        results: list[float] = []

        def run_and_probe() -> None:
            action()
            results.append(probe(seconds=then_seconds, until=until))

        QTimer.singleShot(0, run_and_probe)
        outer = probe(until=lambda: bool(results))
        stalls[name] = max(outer, results[0] if results else 0.0)

    def dock(name: str, key: str) -> None:
        box[key] = viewer.window.add_plugin_dock_widget("napari-deparray-ctc", name)[1]

    step("user: dock Train classifier", lambda: dock("Train classifier", "train"), 1.0)
    step("user: dock Classify cells", lambda: dock("Classify cells", "classify"), 1.0)
    classify = box["classify"]

    def type_path() -> None:
        edit = classify.model_box.edit
        edit.setFocus()
        edit.clear()
        QTest.keyClicks(edit, str(model))
        QTest.keyClick(edit, Qt.Key.Key_Return)

    step("user: type the model path", type_path, 0.5)
    step(
        "user: Run 0.5 s later (first classification)",
        classify.run_button.click,
        until=lambda: not classify.is_running and classify.results is not None,
    )
    if classify.results is None:
        raise SystemExit(f"classification failed: {classify.status_label.text()}")
    stalls["user: model checked before Run"] = float(not classify.model_box.is_checking)
    viewer.close()
    return stalls


def probe(seconds: float | None = None, until=None, interval_ms: int = 10) -> float:
    """Run the event loop with an ``interval_ms`` timer; the largest gap between ticks (ms)."""
    from qtpy.QtCore import QEventLoop, QTimer

    ticks: list[float] = [time.perf_counter()]
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
    ticks.append(time.perf_counter())
    return float(np.max(np.diff(ticks)) * 1000.0)


def _child(args: argparse.Namespace) -> dict[str, float]:
    """One fresh session: every phase, in order (torch not imported before)."""
    import napari
    from napari_deparray_ctc.core.synth import write_export

    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    os.environ.setdefault("DEPARRAY_CTC_CONFIG_DIR", str(tmp / "settings"))
    export = write_export(
        tmp / "export", args.cells, ctc_fraction=0.3, seed=0, layout="stack", n_samples=2
    )
    viewer = napari.Viewer(show=os.environ.get("QT_QPA_PLATFORM") != "offscreen")
    viewer.open(str(export), plugin="napari-deparray-ctc")
    stalls: dict[str, float] = {}
    probe(1.0)
    stalls["idle"] = probe(args.idle_seconds)

    def timed(name: str, action, until) -> None:
        results: list[float] = []

        def run_and_probe() -> None:
            action()
            results.append(probe(until=until))

        # the action runs inside the probed loop, so its own UI-thread time counts too
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, run_and_probe)
        outer = probe(until=lambda: bool(results))
        stalls[name] = max(outer, results[0] if results else 0.0)

    train_box: dict = {}

    def dock_train() -> None:
        _dock, widget = viewer.window.add_plugin_dock_widget(
            "napari-deparray-ctc", "Train classifier"
        )
        train_box["widget"] = widget

    timed("dock Train classifier", dock_train, lambda: True)
    classify_box: dict = {}
    model = tmp / "model.pt"
    save_model_file(model)

    def dock_classify() -> None:
        _dock, widget = viewer.window.add_plugin_dock_widget(
            "napari-deparray-ctc", "Classify cells"
        )
        widget.set_model_path(model)
        classify_box["widget"] = widget

    timed(
        "dock Classify cells + choose model",
        dock_classify,
        lambda: not classify_box["widget"].model_box.is_checking,
    )
    classify = classify_box["widget"]
    for name in ("first classification", "second classification"):
        timed(name, classify.run, lambda: not classify.is_running)
        if classify.results is None:
            raise SystemExit(f"classification failed: {classify.status_label.text()}")
    train = train_box["widget"]
    train.settings.epochs_spin.setValue(2)
    train.settings.size_spin.setValue(48)
    train.settings.out_edit.setText(str(tmp / "trained.pt"))
    train.settings.dapi_strategy_combo.setCurrentText("none")
    timed("training (2 epochs)", train.start, lambda: not train.is_running)
    if train.last_outcome is None:
        raise SystemExit(f"training failed: {train.last_message}")
    viewer.close()
    return stalls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=500, help="cells in the export (500)")
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=1, help="fresh sessions per setting (1)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--sequences",
        default="phases,user",
        help="comma-separated: phases (the phases above), user (the user's sequence)",
    )
    parser.add_argument(
        "--settings", default="preload,no preload", help="comma-separated: preload, no preload"
    )
    parser.add_argument("--child", choices=("phases", "user"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = _child(args) if args.child == "phases" else _user_child(args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    sequences = [s.strip() for s in args.sequences.split(",") if s.strip()]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    load_at_start = os.getloadavg()
    figures: dict[str, dict[str, list[dict[str, float]]]] = {
        seq: {setting: [] for setting in settings} for seq in sequences
    }
    for _ in range(args.repeats):
        for sequence in sequences:
            for setting in settings:
                env = {**os.environ, "DEPARRAY_CTC_PRELOAD": "1" if setting == "preload" else "0"}
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    sequence,
                    "--cells",
                    str(args.cells),
                ]
                command += ["--idle-seconds", str(args.idle_seconds)]
                done = subprocess.run(
                    command, env=env, capture_output=True, text=True, timeout=1800
                )
                line = next(
                    (ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None
                )
                if done.returncode or line is None:
                    print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
                    return 1
                figures[sequence][setting].append(json.loads(line[7:]))
                print(sequence, setting, line[7:], flush=True)
    load = "/".join(f"{x:.2f}" for x in load_at_start)
    print(
        f"largest UI stall (ms), {args.cells} cells, {os.cpu_count()} CPUs, "
        f"{args.repeats} session(s) each: median [min-max]; load average {load} at the "
        f"start, {'/'.join(f'{x:.2f}' for x in os.getloadavg())} at the end"
    )
    print(f"{'phase':<48}" + "".join(f"{s:>22}" for s in settings))
    for sequence in sequences:
        for phase in PHASES if sequence == "phases" else USER_PHASES:
            cells = []
            for setting in settings:
                values = [run[phase] for run in figures[sequence][setting]]
                cells.append(
                    f"{np.median(values):.0f} [{min(values):.0f}-{max(values):.0f}]".rjust(22)
                )
            print(f"{phase:<48}" + "".join(cells))
    if args.json:
        report = {
            "command": "python benchmarks/bench_ui_stalls.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "load_average": os.getloadavg(),
            "figures": figures,
        }
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
