"""``deparray-ctc demo``: the main job on synthetic cells (``core.demo``), or in napari (--gui)."""

from __future__ import annotations

import argparse

from napari_deparray_ctc.cli import options
from napari_deparray_ctc.cli.data import CliError
from napari_deparray_ctc.cli.output import (
    PROG,
    StderrProgress,
    format_duration,
    info,
    print_metrics,
    train_progress_printer,
)
from napari_deparray_ctc.core.demo import DEMO_EPOCHS, DEMO_SINGLE_THREAD_CPUS

HELP = "synthesise, train, classify a shifted-optics export, print metrics"
DESCRIPTION = f"""
The main job on synthetic data: writes a labelled synthetic export (default optics) and a
held-out export with SHIFTED optics (another instrument), trains the default pipeline
(TrainConfig defaults, but {DEMO_EPOCHS} epochs unless --epochs is given, and one torch thread
on machines with <= {DEMO_SINGLE_THREAD_CPUS} CPUs unless --threads is given), classifies the
shifted export from bright-field only and prints the metrics and where the files are. Files go
to a new folder in your user cache unless --out is given.
"""
ADD_HELP = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``deparray-ctc demo``."""
    p.add_argument("-h", "--help", action=options.HelpWithTrainDefaults, help="show this help")
    p.add_argument(
        "--out",
        default=None,
        help="new or empty folder for all files (default: a new folder in the user cache)",
    )
    p.add_argument("--gui", action="store_true", help="run the demo in napari instead")
    options.add_cell_counts(p, 600, "training cells")
    p.add_argument(
        "--test-cells", type=int, default=300, help="shifted-optics test cells (default: 300)"
    )
    p.add_argument("--samples", type=int, default=4, help="training samples (default: 4)")
    options.add_train_options(p)
    p.train_default_overrides = {"epochs": DEMO_EPOCHS}  # type: ignore[attr-defined]


def _run_gui(args: argparse.Namespace) -> int:
    try:
        import napari  # noqa: F401  (checked here for a clear message)
        from napari_deparray_ctc.napari.demo_gui import launch_demo_gui
    except ImportError:
        raise CliError(
            "demo --gui needs napari with a Qt binding; install it with "
            "pip install -e '.[napari]' (or run the demo without --gui)"
        ) from None
    try:
        return int(launch_demo_gui(args.out) or 0)
    except FileExistsError as exc:
        raise CliError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """Run the demo and print what it did and where the files are."""
    if args.gui:
        return _run_gui(args)
    for name in ("cells", "test_cells", "samples"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1")
    from napari_deparray_ctc.core.demo import demo_threads, run_demo

    overrides = options.train_overrides(args)
    if "num_threads" not in overrides and demo_threads() is not None:
        overrides["num_threads"] = demo_threads()
    options.apply_threads(overrides.get("num_threads"))
    overrides.setdefault("epochs", DEMO_EPOCHS)
    config = options.make_config(overrides)
    on_progress, close = train_progress_printer()
    bar = StderrProgress("classify", total=args.test_cells)

    def step(text: str) -> None:
        if text.startswith("[3/4]"):
            close()
        info(text)

    try:
        result = run_demo(
            args.out,
            config,
            n_cells=args.cells,
            n_test_cells=args.test_cells,
            n_samples=args.samples,
            ctc_fraction=args.ctc_fraction,
            on_step=step,
            progress=on_progress,
            classify_progress=lambda done, total=None: bar.update(done, total),
        )
    except FileExistsError as exc:
        raise CliError(f"{exc}; choose another --out") from None
    bar.close()
    from napari_deparray_ctc.cli.commands.train import print_training_summary

    print_training_summary(result.train_result)
    print_metrics(
        result.metrics,
        "held-out SHIFTED-optics domain (BF only, threshold stored in the model):",
    )
    paths = result.paths
    print(
        f"  called CTC: {result.n_called_ctc} of {result.n_cells} cells "
        f"(true CTC: {result.metrics['n_ctc']})"
    )
    print(f"files in {paths.folder}:")
    print(f"  training export       {paths.train_export}")
    print(f"  shifted test export   {paths.test_export}")
    print(f"  model                 {paths.model}")
    print(f"  predictions (CSV)     {paths.predictions}")
    print(f"  report (HTML)         {paths.report}")
    print(f"done in {format_duration(result.seconds)} (min:s)")
    print(
        f"next: napari {paths.test_export}   or   {PROG} classify YOUR_EXPORT "
        f"--model {paths.model} --out results.csv"
    )
    return 0
