"""``deparray-ctc calibrate``: a model calibrated for a site from a few of its labelled cells.

The work is ``core.inference.site_calibration.calibrate_to_site``; this reads DATA (labels
from class folders, a labels.csv, or the annotation sidecar that napari writes; cells
without one are used too), refuses early when too few cells carry a label, and writes the
site model atomically.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from napari_deparray_ctc.cli import options
from napari_deparray_ctc.cli.data import (
    CliError,
    StreamedCells,
    StreamLabels,
    check_device,
    check_out_folder,
    check_paths_exist,
    join,
    load_cli_model,
    no_cells_error,
)
from napari_deparray_ctc.cli.output import StderrProgress, skip_warning, warn

HELP = "calibrate a model for a site (instrument) from a few labelled cells"
DESCRIPTION = """
Refit a model's probability calibration (Platt) and threshold for a new site from the cells of
DATA that carry a label (about 10-20 are enough: at least --min-per-class of each class); the
other cells of DATA are used too (for the threshold, --adapt and the site's shift check). The
network's weights are not changed. Writes a site model: the model with the site's calibration,
threshold and a site profile (see 'deparray-ctc info'). 'deparray-ctc suggest --for calibration'
lists the cells worth labelling first.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``deparray-ctc calibrate``."""
    p.add_argument("model", metavar="MODEL", help="model file written by 'train'")
    options.add_data_argument(p, "the site's cells, some of them labelled")
    p.add_argument("--out", required=True, metavar="SITE_MODEL", help="site model file to write")
    p.add_argument(
        "--adapt",
        action="store_true",
        help="also re-estimate the network's BatchNorm statistics on all cells of DATA, as "
        "'classify --adapt' does, and keep them in the site model",
    )
    p.add_argument(
        "--prior",
        choices=("labelled", "estimate"),
        default="labelled",
        help="labelled (default): calibrate on the labelled cells as they are (right when they "
        "were picked by their score, e.g. by 'suggest --for calibration', or at random); "
        "estimate: re-estimate the share of CTCs from all cells (when the labelled cells were "
        "picked by class, e.g. ten of each)",
    )
    p.add_argument(
        "--min-per-class",
        type=int,
        default=None,
        metavar="N",
        help="fewest labelled cells of each class (default: 5)",
    )
    options.add_pixel_size_option(p)
    options.add_inference_options(p)
    options.add_channel_map_option(p)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    """Check, calibrate, write the site model, print what changed."""
    from napari_deparray_ctc.core.inference.site_calibration import (
        MIN_PER_CLASS,
        calibrate_to_site,
        check_site_labels,
    )
    from napari_deparray_ctc.core.model.loaded import save_model

    check_paths_exist(args.data)
    out = Path(args.out)
    check_out_folder(out)
    if not os.path.isfile(args.model):
        raise CliError(args.model, "model file not found")
    if _same_file(args.model, args.out):
        raise CliError(
            args.out,
            "is the model being calibrated; write the site model to another file, so the "
            "model stays as it is for other sites",
        )
    min_per_class = MIN_PER_CLASS if args.min_per_class is None else args.min_per_class
    if min_per_class < 1 or args.batch_size < 1:
        raise CliError("--min-per-class and --batch-size must be at least 1")
    options.check_pixel_size(args.pixel_size)
    where = join(args.data)
    # the labels are in the headers, class folders, labels.csv and sidecars: refuse before
    # reading any pixel when too few cells carry one
    check_site_labels(StreamLabels.discovered(args.data, args.channel_map), min_per_class, where)
    options.apply_threads(args.threads)
    check_device(args.device)
    model = load_cli_model(args.model, args.device)
    stream = StreamedCells(args.data, channel_map=args.channel_map)
    bar = StderrProgress("calibrate", total=stream.count())
    labels = StreamLabels(stream, args.data)
    site = calibrate_to_site(
        model,
        stream.images(),
        labels,
        cell_ids=stream.cell_ids,
        pixel_size=stream.pixel_sizes if args.pixel_size is None else args.pixel_size,
        groups=stream.groups,
        adapt=args.adapt,
        prior=args.prior,
        min_per_class=min_per_class,
        data_name=where,
        source=args.model,
        batch_size=args.batch_size,
        progress=lambda done, total=None: bar.update(done, total or stream.total),
    )
    bar.close()
    if not stream.cell_ids:
        skip_warning(stream.skipped)
        raise no_cells_error(args.data, stream.skipped)
    skip_warning(stream.skipped)
    model_meta = model.metadata
    save_model(out, site.network, site.metadata)
    profile = site.metadata["site_profile"]
    counts, figures = profile["n_labelled"], profile["figures"]
    calibration = site.metadata["calibration"]
    print(
        f"calibrated {args.model} for {where} on {counts['CTC'] + counts['WBC']} labelled cells "
        f"({counts['CTC']} CTC, {counts['WBC']} WBC) of {profile['n_cells']}"
        + (", BatchNorm statistics re-estimated on the site's cells" if args.adapt else "")
    )
    if figures.get("kept_model_calibration"):
        how = "the model's own calibration kept"
    elif calibration:
        sign = "-" if calibration["b"] < 0 else "+"
        how = f"P(CTC) = sigmoid({calibration['a']:.3f} x logit {sign} {abs(calibration['b']):.3f})"
    else:
        how = "no calibration"
    print(
        f"  {how}; threshold {site.threshold:.3f} (the model's: "
        f"{float(model_meta.get('threshold', 0.5)):.3f})"
    )
    print(
        f"  cells called CTC: {figures['called_ctc_site']} of {profile['n_cells']} (with the "
        f"model's calibration and threshold: {figures['called_ctc_model']}); expected CTC "
        f"share {profile['prior']['ctc_fraction']:.1%}"
    )
    auc = figures.get("roc_auc")
    print(
        f"  labelled cells: ROC-AUC {'n/a' if auc is None else f'{auc:.3f}'}; log-loss "
        f"{figures['log_loss_model']:.3f} with the model's calibration, "
        f"{figures['log_loss_site_loo']:.3f} with the site's (leave-one-out)"
    )
    if profile.get("warning"):
        warn(profile["warning"])
    print(f"site model written to {args.out} (deparray-ctc info {args.out} shows its profile)")
    return 0
