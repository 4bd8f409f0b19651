"""``deparray-ctc train``: train a BF-only classifier (BF + DAPI in training).

The model file follows the same policy as the widget's (``core.model.file_policy``): training
writes ``<name>.in-progress.pt`` and the finished model is moved onto ``--out`` only when it is
not worse than a model already there (``--overwrite-if-worse`` to replace it anyway);
otherwise it is saved beside it. Fine-tuning (``--init-from``) takes the starting model's
architecture and input size (``core.training.train.fine_tuning_settings``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_deparray_ctc.cli import options
from napari_deparray_ctc.cli.data import (
    CliError,
    check_out_folder,
    check_paths_exist,
    naming_data,
    read_training_set,
)
from napari_deparray_ctc.cli.output import info, print_metrics, train_progress_printer, warn

HELP = "train a BF-only classifier (BF + DAPI in training)"
DESCRIPTION = """
Train a ResNet on the labelled cells of DATA (bright-field, with DAPI images added in training
only) and write the model file atomically.
"""
ADD_HELP = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``deparray-ctc train``."""
    p.add_argument("-h", "--help", action=options.HelpWithTrainDefaults, help="show this help")
    options.add_data_argument(p, "labelled cells to train on")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.pt)")
    p.add_argument(
        "--init-from",
        default=None,
        metavar="MODEL",
        help="fine-tune: start from the weights of this model file (its architecture and input "
        "size unless --arch / --size say otherwise), e.g. a model from another site, "
        "retrained on a few labelled cells of yours",
    )
    p.add_argument(
        "--overwrite-if-worse",
        action="store_true",
        help="replace a model already at --out even when its validation figures are better "
        "(by default it is kept and the new model is saved beside it, "
        "<name>-<date>-<time>.pt); a model that learned nothing never replaces one",
    )
    p.add_argument(
        "--note",
        default=None,
        metavar="TEXT",
        help="a free-text note stored in the model card (shown by 'deparray-ctc info')",
    )
    options.add_channel_map_option(p)
    options.add_train_options(p)


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


def init_overrides(args: argparse.Namespace, overrides: dict) -> dict:
    """``--init-from``: the starting weights, and the model's architecture and input size
    (``core.training.train.fine_tuning_settings``; ``--arch``/``--size`` win)."""
    if not args.init_from:
        return overrides
    if overrides.get("pretrained"):
        raise CliError("give either --init-from or --pretrained, not both")
    from napari_deparray_ctc.cli.data import load_cli_model
    from napari_deparray_ctc.core.training.train import fine_tuning_settings

    meta = load_cli_model(args.init_from, "cpu").metadata
    return fine_tuning_settings(meta, args.init_from, overrides)


def store_card_extras(path: str, result, note: str | None) -> None:
    """The user's note, written into the model file's card (by the process that writes files)."""
    from napari_deparray_ctc.core.model.file_policy import writes_files
    from napari_deparray_ctc.core.model.loaded import save_model

    if note and writes_files():
        result.model.metadata["note"] = note
        save_model(path, result.model)


#: How the CLI's messages tell the user to replace a better model anyway.
OVERWRITE_HINT = "give --overwrite-if-worse"


def run(args: argparse.Namespace) -> int:
    """Train, place the model file by the policy, and say where it went."""
    from napari_deparray_ctc.core.model.file_policy import place_trained_model, start_model_file

    check_paths_exist(args.data)
    out = Path(args.out).expanduser()
    check_out_folder(out)
    overrides = init_overrides(args, options.train_overrides(args))
    options.apply_threads(overrides.get("num_threads"))
    from napari_deparray_ctc.core.training.train import train

    start = start_model_file(out)
    config = options.make_config(overrides, out=str(start.in_progress))
    on_progress, close = train_progress_printer()
    with naming_data(args.data):
        data = read_training_set(args.data, args.channel_map)
        try:
            result = train(config, data=data, progress=on_progress)
        finally:
            close()
    if result.out_path and Path(result.out_path).exists():
        store_card_extras(result.out_path, result, args.note)
    placed = place_trained_model(
        result, out, args.overwrite_if_worse, start.recovered, overwrite_hint=OVERWRITE_HINT
    )
    print_training_summary(result)
    if args.init_from:
        print(f"fine-tuned from {args.init_from}")
    report_placement(placed, start.recovered)
    return 0


def report_placement(placed, recovered: Path | None) -> None:
    """Say where the model went: stdout, or a warning when a model at ``--out`` was kept.

    Parameters
    ----------
    placed
        ``core.model.file_policy.place_trained_model``'s ``PlacedModel``.
    recovered
        Where a leftover of an interrupted run was moved before training, or ``None``.
    """
    if placed.destination is None:  # nothing written, or a torchrun rank other than 0
        info(placed.message)
        return
    if placed.destination.kept_previous:
        warn(placed.destination.message)
    else:
        print(placed.destination.message)
    if recovered is not None:
        print(f"a model left by an interrupted run was kept as {recovered}")
