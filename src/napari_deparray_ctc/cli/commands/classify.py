"""``deparray-ctc classify``: P(CTC) and a call for every cell of DATA, as a CSV."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from napari_deparray_ctc.cli import options
from napari_deparray_ctc.cli.data import (
    CliError,
    check_out_folder,
    check_paths_exist,
    classify_paths,
)


def register(sub) -> None:
    """Add the command to the subparsers."""
    p = sub.add_parser(
        "classify",
        help="classify every cell of DATA, write a CSV",
        description="Classify every cell of DATA from its bright-field image and write "
        "cell_id,path,p_ctc,label,threshold,annotation to a CSV (atomically).",
    )
    options.add_data_argument(p, "cells to classify")
    p.add_argument("--model", required=True, help="model file written by 'train'")
    p.add_argument("--out", required=True, metavar="CSV", help="CSV file to write")
    p.add_argument(
        "--batch-size", type=int, default=64, help="cells per forward pass (default: 64)"
    )
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: automatic)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    options.add_channel_map_option(p)
    p.set_defaults(func=run)


def write_predictions(out: Path, stream, predictions) -> None:
    """The one cell table (``core.cell_table``) for streamed cells and their predictions."""
    from napari_deparray_ctc.core.cell_table import cell_rows, write_cell_table

    write_cell_table(
        out,
        cell_rows(stream.cell_ids, stream.cell_paths, predictions.p_ctc, predictions.threshold),
    )


def run(args: argparse.Namespace) -> int:
    """Classify, write the CSV, print the counts."""
    check_paths_exist(args.data)
    check_out_folder(Path(args.out))
    if not os.path.isfile(args.model):
        raise CliError(args.model, "model file not found")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, not {args.batch_size}")
    options.apply_threads(args.threads)
    stream, predictions, _ = classify_paths(
        args.data, args.model, args.batch_size, args.device, "classify", args.channel_map
    )
    write_predictions(Path(args.out), stream, predictions)
    labels = predictions.labels
    n_ctc = sum(1 for label in labels if label == "CTC")
    print(
        f"{len(labels)} cells: {n_ctc} CTC, {len(labels) - n_ctc} WBC "
        f"(threshold {predictions.threshold:.3f}); results written to {args.out}"
    )
    return 0
