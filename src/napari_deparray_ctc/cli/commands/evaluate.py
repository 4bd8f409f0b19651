"""``deparray-ctc evaluate``: metrics of a model on labelled DATA, or k-fold cross-validation."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from napari_deparray_ctc.cli import options
from napari_deparray_ctc.cli.data import (
    CliError,
    check_out_folder,
    check_paths_exist,
    classify_paths,
    join,
    naming_data,
    read_training_set,
    sample_names,
)
from napari_deparray_ctc.cli.output import info, print_metrics, train_progress_printer, warn
from napari_deparray_ctc.core.constants import is_class_label

HELP = "metrics of a model on labelled DATA, or k-fold cross-validation (--cv K)"
DESCRIPTION = """
Score a model on labelled cells (--model), or train and score K folds by sample (--cv K) for an
unbiased mean ± sd.
"""
ADD_HELP = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``deparray-ctc evaluate``."""
    p.add_argument("-h", "--help", action=options.HelpWithTrainDefaults, help="show this help")
    options.add_data_argument(p, "labelled cells to score")
    p.add_argument("--model", default=None, help="model file to evaluate")
    p.add_argument(
        "--cv", type=int, default=None, metavar="K", help="train and evaluate K folds instead"
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision threshold on P(CTC) (default: the one stored in the model)",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="also write the metrics as JSON")
    p.add_argument(
        "--report",
        default=None,
        metavar="HTML",
        help="also write a self-contained HTML report (--model only): PR and calibration "
        "curves, confusion matrix, per-sample counts, montages of confident CTCs and of the "
        "errors with their saliency",
    )
    options.add_channel_map_option(p)
    options.add_train_options(p)  # used by --cv; --device/--threads also apply to --model


def write_json(path: Path, obj: Any) -> None:
    """An atomic JSON file."""
    from napari_deparray_ctc.core.atomic import atomic_write

    check_out_folder(path)
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=2)
        handle.write("\n")
    print(f"metrics written to {path}")


def write_html_report(path: Path, args, stream, predictions, model, images) -> None:
    """The HTML report of this evaluation (``core.report``)."""
    from napari_deparray_ctc.core.evaluation.report import write_report

    info(f"writing the report (saliency of {3 * 8} cells at most) ...")
    write_report(
        path,
        images,
        stream.labels,
        predictions.p_ctc,
        model,
        cell_ids=stream.cell_ids,
        groups=sample_names(args.data, stream),
        threshold=args.threshold,
        title=f"CTC classifier report: {Path(args.model).name} on {join(args.data)}",
        source=join(Path(p).name for p in args.data),
    )
    print(f"report written to {path}")


def _evaluate_model(args: argparse.Namespace) -> int:
    from napari_deparray_ctc.core.evaluation.metrics import classification_metrics

    if args.report:
        check_out_folder(Path(args.report))
    images: list = []
    stream, predictions, model = classify_paths(
        args.data,
        args.model,
        args.batch_size or 64,
        args.device,
        "evaluate",
        args.channel_map,
        on_image=images.append if args.report else None,
    )
    known = [i for i, label in enumerate(stream.labels) if is_class_label(label)]
    if not known:
        raise CliError(
            ", ".join(args.data),
            "no cell has a label (CTC/WBC); evaluation needs class folders or a labels.csv",
        )
    if len(known) < len(stream.labels):
        warn(f"{len(stream.labels) - len(known)} cell(s) without a label were not evaluated")
    y = [stream.labels[i] for i in known]
    p = predictions.p_ctc[known]
    threshold = args.threshold if args.threshold is not None else predictions.threshold
    metrics = classification_metrics(y, p, threshold=threshold)
    print_metrics(
        metrics,
        f"{len(known)} labelled cells ({metrics['n_ctc']} CTC, {metrics['n_wbc']} WBC), "
        f"model {args.model}:",
    )
    if args.json:
        write_json(Path(args.json), metrics)
    if args.report:
        write_html_report(Path(args.report), args, stream, predictions, model, images)
    return 0


def _cross_validate(args: argparse.Namespace) -> int:
    from napari_deparray_ctc.core.training.train import cross_validate

    overrides = options.train_overrides(args)
    options.apply_threads(overrides.get("num_threads"))
    config = options.make_config(overrides)
    on_progress, close = train_progress_printer(f"{args.cv}-fold CV")
    with naming_data(args.data):
        data = read_training_set(args.data, args.channel_map)
        try:
            result = cross_validate(config, data=data, k=args.cv, progress=on_progress)
        finally:
            close()
    folds = result["folds"]
    augment = ",".join(config.augment) or "none"
    print(
        f"{args.cv}-fold cross-validation ({len(folds)} folds completed; {config.arch}, "
        f"augment {augment}, DAPI {config.dapi_strategy}), held-out folds, mean ± sd:"
    )
    for key in ("precision", "recall", "f1", "average_precision", "accuracy"):
        if key in result["mean"]:
            name = "PR-AUC (AP)" if key == "average_precision" else key
            print(f"  {name:<12} {result['mean'][key]:.4f} ± {result['sd'][key]:.4f}")
    for fold in folds:
        m = fold["metrics"]
        print(
            f"  fold {fold['fold']}: F1 {m['f1']:.3f}, precision {m['precision']:.3f}, "
            f"recall {m['recall']:.3f} ({fold['n_test']} test cells)"
        )
    if args.json:
        write_json(Path(args.json), result)
    return 0


def run(args: argparse.Namespace) -> int:
    """Score a model, or cross-validate."""
    check_paths_exist(args.data)
    if args.cv is not None:
        if args.report:
            raise CliError("--report needs --model (a cross-validation has no single model)")
        if args.cv < 2:
            raise CliError(f"--cv needs at least 2 folds, not {args.cv}")
        return _cross_validate(args)
    if not args.model:
        raise CliError("evaluate needs --model MODEL (or --cv K to train and evaluate K folds)")
    if not os.path.isfile(args.model):
        raise CliError(args.model, "model file not found")
    options.apply_threads(getattr(args, "num_threads", None))
    return _evaluate_model(args)
