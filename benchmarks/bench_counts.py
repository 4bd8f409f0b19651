"""Per-sample CTC counts: does the 95 % interval cover the true count, zero-CTC patients included?

Synthetic patients of known CTC counts (``--patients`` of the reference instrument, each its
own optics jitter, and ``--shifted`` of ``hospital_b``), ``--cells`` cells each, true counts
cycling through ``COUNTS`` (several patients with **zero** CTCs). The base model
(``explain_adapt_data.base_model``) classifies them; ``core.counts`` gives the intervals.
Printed side by side: the coverage and mean width of the probability interval (Poisson-
binomial of the calibrated P), of the error-rate interval (validation recall and false-positive
rate) and of the reported union; and, for every zero-CTC patient, the expected count and the
interval.

Usage::

    python benchmarks/bench_counts.py [--patients 30] [--shifted 15] [--cells 200]
        [--json benchmarks/results/bench_counts.json]
"""

from __future__ import annotations

import argparse

import numpy as np
from explain_adapt_data import base_model, common_arguments, domain_cells, one_thread, write_json

#: true CTC counts of the patients, cycled
COUNTS = (0, 1, 3, 0, 6, 10, 2, 20, 0, 35, 5, 15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_arguments(parser)
    parser.add_argument("--patients", type=int, default=30)
    parser.add_argument("--shifted", type=int, default=15)
    parser.add_argument("--cells", type=int, default=200)
    args = parser.parse_args()
    one_thread()
    from napari_deparray_ctc.core.inference.classify import classify
    from napari_deparray_ctc.core.inference.counts import (
        error_rate_interval,
        poisson_binomial_interval,
        validation_confusion,
    )
    from napari_deparray_ctc.core.model.loaded import load_model

    model = load_model(base_model(args.cache), device="cpu")
    confusion = validation_confusion(model.metadata)
    print(f"validation counts of the model: {confusion}")
    results = {}
    for domain, n_patients in (("reference", args.patients), ("hospital_b", args.shifted)):
        rows = []
        for j in range(n_patients):
            truth = COUNTS[j % len(COUNTS)]
            cells = domain_cells(
                domain, args.cells, seed=20000 + j, ctc_fraction=truth / args.cells
            )
            assert sum(c.label == "CTC" for c in cells) == truth
            p = classify([c.channels["BF"] for c in cells], model).p_ctc
            k = int(np.sum(p >= confusion["threshold"]))
            pb = poisson_binomial_interval(p)
            er = error_rate_interval(len(p), k, confusion)
            union = (min(pb[0], er[0]), max(pb[1], er[1]))
            rows.append(
                {
                    "truth": truth,
                    "expected": float(p.sum()),
                    "called": k,
                    "probabilities": pb,
                    "error_rates": er,
                    "union": union,
                    "p_ctc": [round(float(v), 5) for v in p],
                }
            )
        results[domain] = rows
        print(f"\n{domain}: {n_patients} patients of {args.cells} cells")
        print(f"  {'interval':<14}{'coverage':>10}{'mean width':>12}")
        for key in ("probabilities", "error_rates", "union"):
            cover = np.mean([r[key][0] <= r["truth"] <= r[key][1] for r in rows])
            width = np.mean([r[key][1] - r[key][0] for r in rows])
            print(f"  {key:<14}{cover:>10.2f}{width:>12.1f}")
        print("  zero-CTC patients: expected, called, reported interval")
        for r in rows:
            if r["truth"] == 0:
                print(
                    f"    {r['expected']:6.1f} {r['called']:4d}   {r['union'][0]}-{r['union'][1]}"
                )
        errors = [r["expected"] - r["truth"] for r in rows]
        print(f"  expected minus true count: mean {np.mean(errors):+.1f}, sd {np.std(errors):.1f}")
    write_json(args.json, {"confusion": confusion, "results": results})


if __name__ == "__main__":
    main()
