"""The shift warning: hit rate on the shifted synthetic domains, false alarms in-domain.

Training summaries (``core.shift.training_feature_summary``) from the base model's training
cells (600 reference cells, 4 samples), from the same cells without their sample ids, and from
800 cells of 8 samples. Test batches: ``--batches`` new samples per domain of
``core.synth.DOMAINS`` (each sample its own optics jitter, other seeds than training), of
``--sizes`` cells. Prints, per summary, domain and batch size, how often the warning fires and
the range of its two statistics; ``reference`` rows are false alarms, all others hits.

Usage::

    python benchmarks/bench_shift.py [--batches 20] [--sizes 30,100,300]
        [--json benchmarks/results/bench_shift.json]
"""

from __future__ import annotations

import argparse

import numpy as np
from explain_adapt_data import base_cells, common_arguments, domain_cells, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_arguments(parser)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--sizes", default="30,100,300")
    args = parser.parse_args()
    from napari_deparray_ctc.core.inference.shift import (
        FIRE_FRACTION,
        MEAN_SHIFT_LIMIT,
        image_features,
        shift_check,
        training_feature_summary,
    )
    from napari_deparray_ctc.core.synth import DOMAINS

    sizes = [int(v) for v in args.sizes.split(",")]
    train = base_cells()
    eight = domain_cells("reference", 800, seed=12, ctc_fraction=0.25, n_samples=8)
    bf = [c.channels["BF"] for c in train]
    summaries = {
        "600 cells, 4 samples": training_feature_summary(bf, [c.sample for c in train]),
        "600 cells, no sample ids": training_feature_summary(bf),
        "800 cells, 8 samples": training_feature_summary(
            [c.channels["BF"] for c in eight], [c.sample for c in eight]
        ),
    }
    # features of every test batch, computed once (the largest size; smaller are prefixes)
    features = {
        name: [
            image_features(
                [c.channels["BF"] for c in domain_cells(name, max(sizes), seed=30000 + b)]
            )
            for b in range(args.batches)
        ]
        for name in DOMAINS
    }
    print(
        f"limits: mean shift > {MEAN_SHIFT_LIMIT:g} or share outside > {FIRE_FRACTION:g}; "
        f"{args.batches} batches per domain and size"
    )
    results = {}
    for label, summary in summaries.items():
        meta = {"feature_summary": summary}
        print(f"\ntraining summary: {label}")
        print(
            f"  {'domain':<19}{'cells':>6}{'fires':>7}{'mean shift (min-max)':>24}{'outside':>14}"
        )
        for name, batches in features.items():
            for size in sizes:
                checks = [shift_check(f[:size], meta) for f in batches]
                fired = float(np.mean([c["fire"] for c in checks]))
                shift = [c["mean_shift"] for c in checks]
                out = [c["fraction_outside"] for c in checks]
                results[f"{label} | {name} | {size}"] = {
                    "fire_rate": fired,
                    "mean_shift": [min(shift), max(shift)],
                    "outside": [min(out), max(out)],
                }
                print(
                    f"  {name:<19}{size:>6}{fired:>7.2f}{min(shift):>12.1f}-{max(shift):<11.1f}"
                    f"{min(out):>7.2f}-{max(out):.2f}"
                )
    for label in summaries:
        hits = [
            v["fire_rate"]
            for k, v in results.items()
            if k.startswith(label) and "reference" not in k
        ]
        alarms = [
            v["fire_rate"] for k, v in results.items() if k.startswith(label) and "reference" in k
        ]
        print(
            f"{label}: hit rate on shifted domains {np.mean(hits):.2f}, false alarms in-domain {np.mean(alarms):.2f}"
        )
    write_json(args.json, results)


if __name__ == "__main__":
    main()
