"""``deparray-ctc explain``: a saliency map for every cell of DATA (``core.explain``)."""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

from napari_deparray_ctc.cli import options
from napari_deparray_ctc.cli.data import (
    CliError,
    StreamedCells,
    check_device,
    check_paths_exist,
    load_cli_model,
    no_cells_error,
)
from napari_deparray_ctc.cli.output import StderrProgress, skip_warning

HELP = "write a saliency map of every cell of DATA"
DESCRIPTION = """
For every cell of DATA write OUT/<cell_id>_saliency.tif: a float32 map with the bright-field
image's shape, >= 0 and summing to 1, of where the model's CTC score came from (integrated
gradients from a blank-field baseline; see docs/explain_adapt.md).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``deparray-ctc explain``."""
    options.add_data_argument(p, "cells to explain")
    p.add_argument("--model", required=True, help="model file written by 'train'")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the maps (created)")
    p.add_argument(
        "--steps", type=int, default=None, help="integrated-gradient steps (default: 16)"
    )
    options.add_inference_options(p, batch_size=16, batch_help="cells per chunk")
    options.add_channel_map_option(p)


def map_file_name(cell_id: str) -> str:
    """``<cell_id>_saliency.tif`` with characters that a file name cannot hold replaced."""
    safe = re.sub(r"[\\/:*?\"<>|\x00-\x1f]", "_", str(cell_id)).strip(" .") or "cell"
    return f"{safe}_saliency.tif"


def run(args: argparse.Namespace) -> int:
    """Compute and write the maps, batch by batch."""
    import tifffile

    from napari_deparray_ctc.core.atomic import atomic_write
    from napari_deparray_ctc.core.inference.explain import DEFAULT_STEPS, saliency_maps

    check_paths_exist(args.data)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(out, "exists and is not a folder")
    if not out.parent.is_dir():
        raise CliError(out, f"the folder {out.parent} does not exist")
    steps = DEFAULT_STEPS if args.steps is None else args.steps
    if steps < 1 or args.batch_size < 1:
        raise CliError("--steps and --batch-size must be at least 1")
    options.apply_threads(args.threads)
    check_device(args.device)
    model = load_cli_model(args.model, args.device)
    stream = StreamedCells(args.data, channel_map=args.channel_map)
    total = stream.count()
    out.mkdir(exist_ok=True)
    bar = StderrProgress("explain", total=total)
    names: dict[str, int] = {}  # file name -> cells that had it (two cells, one id: keep both)
    pending: list = []
    done = 0

    def flush() -> None:
        nonlocal done
        ids = stream.cell_ids[done : done + len(pending)]
        for cell_id, saliency in zip(ids, saliency_maps(pending, model, steps=steps), strict=True):
            name = map_file_name(cell_id)
            names[name] = names.get(name, 0) + 1
            if names[name] > 1:
                name = name.replace("_saliency.tif", f"_{names[name]}_saliency.tif")
            buffer = io.BytesIO()
            tifffile.imwrite(buffer, saliency, photometric="minisblack")
            with atomic_write(out / name, "wb") as handle:
                handle.write(buffer.getvalue())
        done += len(pending)
        pending.clear()
        bar.update(done)

    for image in stream.images():
        pending.append(image)
        if len(pending) == args.batch_size:
            flush()
    if pending:
        flush()
    bar.close()
    if not done:
        skip_warning(stream.skipped)  # the reasons, then the error
        raise no_cells_error(args.data, stream.skipped)
    skip_warning(stream.skipped)
    print(f"{done} saliency maps written to {out}")
    return 0
