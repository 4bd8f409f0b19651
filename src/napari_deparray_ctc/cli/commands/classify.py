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
    sample_names,
)
from napari_deparray_ctc.cli.output import info, warn

HELP = "classify every cell of DATA, write a CSV"
DESCRIPTION = """
Classify every cell of DATA from its bright-field image and write
cell_id,path,p_ctc,label,threshold,annotation to a CSV (atomically).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``deparray-ctc classify``."""
    options.add_data_argument(p, "cells to classify")
    p.add_argument("--model", required=True, help="model file written by 'train'")
    p.add_argument("--out", required=True, metavar="CSV", help="CSV file to write")
    p.add_argument(
        "--summary",
        default=None,
        metavar="CSV",
        help="also write one row per sample: sample,n_cells,n_called_ctc,expected_ctc,"
        "ctc_low,ctc_high,threshold,calibration (ctc_low..ctc_high: 95 %% interval of the "
        "number of true CTCs; the sample is the cells' sample id, or the export's name; "
        "calibration: 'training instrument', 'site: NAME', or 'NOT CALIBRATED for this "
        "instrument' when the cells look unlike those the model was calibrated on)",
    )
    options.add_inference_options(p)
    options.add_pixel_size_option(p)
    p.add_argument(
        "--adapt",
        action="store_true",
        help="re-estimate the network's BatchNorm statistics on DATA first (helps when the "
        "cells come from another instrument; needs a few hundred cells)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="average each cell's P(CTC) over its 8 rotations and reflections (8x slower)",
    )
    options.add_channel_map_option(p)


def write_predictions(out: Path, stream, predictions, calibration: str | None = None) -> None:
    """The one cell table (``core.cell_table``) for streamed cells and their predictions;
    ``calibration``: what the calls are calibrated for (``counts.calibration_status``)."""
    from napari_deparray_ctc.core.annotations.cell_table import cell_rows, write_cell_table

    write_cell_table(
        out,
        cell_rows(
            stream.cell_ids,
            stream.cell_paths,
            predictions.p_ctc,
            predictions.threshold,
            calibration=calibration,
        ),
    )


class ShiftTap:
    """Collects shift features of the streamed BF images (every cell, cheap: ~1 ms each)."""

    def __init__(self) -> None:
        self.features: list = []

    def __call__(self, image) -> None:
        from napari_deparray_ctc.core.inference.shift import image_features

        try:
            self.features.append(image_features([image])[0])
        except ValueError:  # not a 2-D image: classify names it
            pass

    def warn_if_shifted(self, metadata: dict) -> bool:
        """One warning line when the cells look unlike the model's training cells (or, for a
        site model, unlike the cells of the site it was calibrated for); returns whether it
        was given."""
        import numpy as np

        from napari_deparray_ctc.core.inference.shift import reference_summary, shift_warning

        if self.features and reference_summary(metadata)[0] is not None:
            message = shift_warning(np.array(self.features, dtype=np.float64), metadata)
            if message:
                warn(message)
                return True
        return False


def write_summary(
    path: Path, paths, stream, predictions, metadata: dict, shifted: bool = False
) -> list[dict]:
    """The per-sample counts CSV (``core.counts``); returns its rows. ``shifted``: the shift
    check fired, and every row says the counts are not calibrated for this instrument."""
    from napari_deparray_ctc.core.inference.counts import sample_counts, write_sample_counts

    rows = sample_counts(
        sample_names(paths, stream),
        predictions.p_ctc,
        predictions.threshold,
        metadata,
        shifted=shifted,
    )
    write_sample_counts(path, rows)
    return rows


def run(args: argparse.Namespace) -> int:
    """Classify, write the CSV, print the counts."""
    check_paths_exist(args.data)
    check_out_folder(Path(args.out))
    if args.summary:
        check_out_folder(Path(args.summary))
    if not os.path.isfile(args.model):
        raise CliError(args.model, "model file not found")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, not {args.batch_size}")
    options.check_pixel_size(args.pixel_size)
    options.apply_threads(args.threads)
    tap = ShiftTap()
    stream, predictions, model = classify_paths(
        args.data,
        args.model,
        args.batch_size,
        args.device,
        "classify",
        args.channel_map,
        classify_options={"pixel_size": args.pixel_size, "adapt": args.adapt, "tta": args.tta},
        on_image=tap,
    )
    site = model.site_profile
    if site is not None:
        counts = site.get("n_labelled") or {}
        info(
            f"site model: calibrated for {site.get('data_name') or 'a site'} on "
            f"{site.get('created', '?')} from {counts.get('CTC', '?')} CTC + "
            f"{counts.get('WBC', '?')} WBC labelled cells"
        )
    from napari_deparray_ctc.core.inference.counts import NOT_CALIBRATED, calibration_status

    shifted = tap.warn_if_shifted(model.metadata)
    write_predictions(
        Path(args.out), stream, predictions, calibration_status(model.metadata, shifted)
    )
    mark = f"{NOT_CALIBRATED}: " if shifted else ""
    labels = predictions.labels
    n_ctc = sum(1 for label in labels if label == "CTC")
    print(
        f"{mark}{len(labels)} cells: {n_ctc} CTC, {len(labels) - n_ctc} WBC "
        f"(threshold {predictions.threshold:.3f}); results written to {args.out}"
    )
    if args.summary:
        rows = write_summary(
            Path(args.summary), args.data, stream, predictions, model.metadata, shifted
        )
        if shifted:
            print(f"{mark}the counts and intervals below may be far off")
        for row in rows:
            print(
                f"  {row['sample']}: {row['n_called_ctc']} called CTC of {row['n_cells']} cells; "
                f"expected {row['expected_ctc']:.1f} CTC, 95 % interval "
                f"{row['ctc_low']}-{row['ctc_high']}"
            )
        print(f"per-sample counts written to {args.summary}")
    return 0
