"""``deparray-ctc suggest``: the cells to label next, uncertain and diverse (``core.suggest``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_deparray_ctc.cli import options
from napari_deparray_ctc.cli.data import (
    CliError,
    StreamedCells,
    check_device,
    check_out_folder,
    check_paths_exist,
    load_cli_model,
    no_cells_error,
)
from napari_deparray_ctc.cli.output import StderrProgress, skip_warning
from napari_deparray_ctc.core.constants import is_class_label

#: Columns of ``suggest --out``.
SUGGEST_COLUMNS = ("rank", "cell_id", "path", "p_ctc")


HELP = "list the cells to label next (uncertain and diverse)"
DESCRIPTION = """
List the N cells of DATA that a person should label next: cells whose call is uncertain, and
different from each other (not N near-duplicates). Cells that already have a label are left out
unless --include-labelled is given.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``deparray-ctc suggest``."""
    options.add_data_argument(p, "candidate cells")
    p.add_argument("--model", required=True, help="model file written by 'train'")
    p.add_argument("--n", type=int, default=20, help="how many cells (default: 20)")
    p.add_argument(
        "--out", default=None, metavar="CSV", help="also write rank,cell_id,path,p_ctc here"
    )
    p.add_argument(
        "--include-labelled", action="store_true", help="also suggest cells that have a label"
    )
    p.add_argument(
        "--for",
        dest="purpose",
        choices=("labelling", "calibration"),
        default="labelling",
        help="labelling (default): uncertain and diverse cells, to train on; calibration: "
        "half the top-ranked cells (where the rare CTCs are, whatever the threshold), half "
        "spread over the ranks below: the most informative labels for 'deparray-ctc calibrate'",
    )
    options.add_inference_options(p)
    options.add_channel_map_option(p)


def write_suggestions(path: Path, rows: list[dict]) -> None:
    """The suggestions as a CSV, atomically, through the one CSV writer (formula-like cell ids
    escaped: ``core.annotations.csv_safe``)."""
    from napari_deparray_ctc.core.annotations.csv_safe import write_csv

    write_csv(
        path,
        SUGGEST_COLUMNS,
        ({**row, "cell_id": str(row["cell_id"]), "p_ctc": f"{row['p_ctc']:.4f}"} for row in rows),
    )


def run(args: argparse.Namespace) -> int:
    """Embed every cell, pick the suggestions, print (and write) them."""
    from napari_deparray_ctc.core.inference.suggest import (
        cell_embeddings,
        select_for_calibration,
        select_uncertain_diverse,
    )

    check_paths_exist(args.data)
    if args.n < 1 or args.batch_size < 1:
        raise CliError("--n and --batch-size must be at least 1")
    if args.out:
        check_out_folder(Path(args.out))
    options.apply_threads(args.threads)
    check_device(args.device)
    model = load_cli_model(args.model, args.device)
    stream = StreamedCells(args.data, channel_map=args.channel_map)
    bar = StderrProgress("suggest", total=stream.count())

    def counted():
        for i, image in enumerate(stream.images(), start=1):
            yield image
            bar.update(i)

    p, features = cell_embeddings(counted(), model, args.batch_size, stream.pixel_sizes)
    bar.close()
    if not stream.cell_ids:
        skip_warning(stream.skipped)  # the reasons, then the error
        raise no_cells_error(args.data, stream.skipped)
    skip_warning(stream.skipped)
    keep = [
        i
        for i, label in enumerate(stream.labels)
        if args.include_labelled or not is_class_label(label)
    ]
    if not keep:
        raise CliError(
            ", ".join(args.data),
            "every cell already has a label; add --include-labelled to rank them anyway",
        )
    if args.purpose == "calibration":
        picked = select_for_calibration(p[keep], args.n)
    else:
        picked = select_uncertain_diverse(p[keep], features[keep], model.threshold, args.n)
    rows = [
        {
            "rank": rank,
            "cell_id": stream.cell_ids[keep[i]],
            "path": stream.cell_paths[keep[i]],
            "p_ctc": float(p[keep[i]]),
        }
        for rank, i in enumerate(picked, start=1)
    ]
    left_out = len(stream.cell_ids) - len(keep)
    print(
        f"{len(rows)} cells to label next, of {len(keep)} candidates"
        + (f" ({left_out} labelled cells left out)" if left_out else "")
        + f"; threshold {model.threshold:.3f}:"
    )
    for row in rows:
        print(f"  {row['rank']:>3}  {row['cell_id']}  P(CTC) {row['p_ctc']:.3f}")
    if args.out:
        write_suggestions(Path(args.out), rows)
        print(f"suggestions written to {args.out}")
    return 0
