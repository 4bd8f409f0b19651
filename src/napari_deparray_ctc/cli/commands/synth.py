"""``deparray-ctc synth``: write a synthetic DEPArray-like export."""

from __future__ import annotations

import argparse

from napari_deparray_ctc.cli import options
from napari_deparray_ctc.cli.data import CliError
from napari_deparray_ctc.core.constants import LAYOUTS

HELP = "write a synthetic DEPArray-like export"
DESCRIPTION = """
Write synthetic DEPArray-like single-cell TIFFs (BF, DAPI, PE, APC) and labels.csv; the same
arguments give byte-identical files.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``deparray-ctc synth``."""
    p.add_argument("out", metavar="OUT", help="output folder (new or empty)")
    options.add_cell_counts(p, 100, "number of cells")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--layout", choices=LAYOUTS, default="multipage", help="export layout (default: multipage)"
    )
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    p.add_argument(
        "--shifted", action="store_true", help="use the shifted ('other hospital') optics"
    )
    p.add_argument("--image-size", type=int, default=64, help="image size in pixels (default: 64)")
    p.add_argument(
        "--samples", type=int, default=1, help="number of samples (patients) (default: 1)"
    )


def run(args: argparse.Namespace) -> int:
    """Write the export and say where."""
    if args.cells < 1:
        raise CliError(f"--cells must be at least 1, not {args.cells}")
    if args.samples < 1:
        raise CliError(f"--samples must be at least 1, not {args.samples}")
    from napari_deparray_ctc.core.synth import Optics, write_export

    optics = Optics.shifted() if args.shifted else Optics.default()
    try:
        out = write_export(
            args.out,
            n_cells=args.cells,
            ctc_fraction=args.ctc_fraction,
            seed=args.seed,
            layout=args.layout,
            optics=optics,
            overwrite=args.overwrite,
            image_size=args.image_size,
            n_samples=args.samples,
        )
    except FileExistsError as exc:
        if "not a folder" in str(exc):
            raise CliError(args.out, "exists and is not a folder") from None
        raise CliError(
            args.out, "the folder is not empty; choose a new folder, or add --overwrite"
        ) from None
    except ValueError as exc:
        raise CliError(args.out, " ".join(str(exc).split())) from None
    domain = "shifted" if args.shifted else "default"
    print(
        f"wrote {args.cells} synthetic cells ({args.layout} layout, {domain} optics, "
        f"seed {args.seed}) to {out}"
    )
    return 0
