"""``deparray-ctc train``: train a BF-only classifier (BF + DAPI in training)."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_deparray_ctc.cli import options
from napari_deparray_ctc.cli.data import (
    check_out_folder,
    check_paths_exist,
    naming_data,
    read_training_set,
)
from napari_deparray_ctc.cli.output import print_metrics, train_progress_printer, warn


def register(sub) -> None:
    """Add the command to the subparsers."""
    p = sub.add_parser(
        "train",
        help="train a BF-only classifier (BF + DAPI in training)",
        description="Train a ResNet on the labelled cells of DATA (bright-field, with DAPI "
        "images added in training only) and write the model file atomically.",
        add_help=False,
    )
    p.add_argument("-h", "--help", action=options.HelpWithTrainDefaults, help="show this help")
    options.add_data_argument(p, "labelled cells to train on")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.pt)")
    options.add_channel_map_option(p)
    options.add_train_options(p)
    p.set_defaults(func=run)


def print_training_summary(result) -> None:
    """What training did: split, best epoch, validation metrics and any warning."""
    summary = result.model.metadata.get("data_summary") or {}
    if summary:
        split = summary.get("split", "?")
        print(
            f"trained on {summary.get('n_train', '?')} cells, validated on "
            f"{summary.get('n_val', '?')} ({split} split); best epoch "
            f"{result.metrics.get('best_epoch', '?')} of {len(result.history)}"
        )
    print_metrics(result.metrics, "validation metrics (best epoch; optimistic, see evaluate):")
    if result.stopped_early:
        print("stopped early (no better validation score within the patience)")
    warning = getattr(result, "warning", None)
    if warning:
        warn(warning)


def run(args: argparse.Namespace) -> int:
    """Train and say where the model went."""
    check_paths_exist(args.data)
    out = Path(args.out)
    check_out_folder(out)
    overrides = options.train_overrides(args)
    options.apply_threads(overrides.get("num_threads"))
    from napari_deparray_ctc.core.train import train

    config = options.make_config(overrides, out=str(out))
    on_progress, close = train_progress_printer()
    with naming_data(args.data):
        data = read_training_set(args.data, args.channel_map)
        try:
            result = train(config, data=data, progress=on_progress)
        finally:
            close()
    print_training_summary(result)
    print(f"model written to {result.out_path or out}")
    return 0
