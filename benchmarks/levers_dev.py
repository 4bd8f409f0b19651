"""Transfer levers on or off, on development data only (issue 20): the morphology stack
(item 4) and the flat-field correction (item 3).

Development data: the product's own generator (``core.synth``), default optics for training and
the held-out folds (*in-domain*), ``Optics.shifted()`` for a second test export (*shifted*), as
``ablation.py`` draws them. The independent evaluator (``benchmarks/independent_sim``) is never
used here: this is where the default is chosen, and ``transfer_eval.py`` then reports it.

``--lever morphology``: per seed and group k-fold (``--folds``), the model is trained **once**
with ``morphology=True`` and scored twice on the same networks:

* *stack*: as trained (the regression on the network's out-of-fold logit and the shape features,
  with the calibration and threshold fitted on the cross-fitted stacked scores);
* *network only*: the same file without the stack, with the calibration and threshold the
  network alone had (stored beside the stack as ``network_only``): exactly what training with
  ``morphology=False`` stores, since the networks do not depend on the switch.

``--lever flat_field``: per fold, two trainings with the same seed and folds, ``flat_field``
off and on (each a network of its own).

The RandomForest on 21 regionprops features (``baselines.py``) runs on the same folds.
Writes ``results/levers_dev_<lever>.json`` and ``.md``.

Usage::

    python benchmarks/levers_dev.py --lever morphology --seeds 0,1,2 --threads 1
    python benchmarks/levers_dev.py --lever flat_field --seeds 0,1,2 --threads 1
    python benchmarks/levers_dev.py --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(__file__).resolve().parent / "results"

from ablation import evaluate, make_data, run_rf_fold  # noqa: E402
from baselines import regionprops_features  # noqa: E402

KEYS = ("f1", "average_precision", "precision", "recall")
#: the rows of each lever, off and on
OFF = {"morphology": "network only", "flat_field": "no flat-field"}
ON = {"morphology": "stack", "flat_field": "flat-field"}


def network_only(model):
    """The same networks without the stack, with the network's own calibration and threshold."""
    meta = dict(model.metadata)
    stack = meta.pop("morphology_stack")
    meta["morphology_stack"] = None
    meta["calibration"] = stack["network_only"]["calibration"]
    meta["threshold"] = stack["network_only"]["threshold"]
    return dataclasses.replace(model, metadata=meta)


def called(p: np.ndarray, threshold: float) -> float:
    return float(np.mean(p >= threshold)) if len(p) else float("nan")


def run_seed(args, seed: int) -> list[dict]:
    from napari_deparray_ctc.core.inference.classify import classify
    from napari_deparray_ctc.core.training import kfold_splits
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    data_args = argparse.Namespace(
        cells=args.cells,
        test_cells=args.test_cells,
        ctc_fraction=args.ctc_fraction,
        samples=args.samples,
        seed=seed,
    )
    ts, shifted_bf, shifted_y = make_data(data_args)
    folds = kfold_splits(ts.labels, ts.groups, k=args.folds, seed=seed)
    features = np.stack([regionprops_features(b) for b in ts.bf])
    shifted_features = np.stack([regionprops_features(b) for b in shifted_bf])
    overrides = {"seed": seed, "device": "cpu", "out": None}
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.threads:
        overrides["num_threads"] = args.threads
    if args.quick:
        overrides["image_size"] = 32
    rows = []
    for fold, (train_idx, test_idx) in enumerate(folds):
        t0 = time.perf_counter()
        models = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if args.lever == "morphology":
                result = train(TrainConfig(**overrides, morphology=True), ts.subset(train_idx))
                models = {OFF[args.lever]: network_only(result.model), ON[args.lever]: result.model}
                stack = result.model.metadata["morphology_stack"]
                extra = {"stack_coef": dict(zip(stack["inputs"], stack["coef"], strict=True))}
            else:
                for switch, name in ((False, OFF[args.lever]), (True, ON[args.lever])):
                    config = TrainConfig(**overrides, flat_field=switch)
                    models[name] = train(config, ts.subset(train_idx)).model
                extra = {}
        test = ts.subset(test_idx)
        row = {"seed": seed, "fold": fold, "train_s": time.perf_counter() - t0, **extra}
        for name, model in models.items():
            p_in = np.asarray(classify(test.bf, model, batch_size=128).p_ctc)
            p_sh = np.asarray(classify(shifted_bf, model, batch_size=128).p_ctc)
            row[name] = {
                "in_domain": evaluate(p_in, test.labels, model.threshold)
                | {"called": called(p_in, model.threshold)},
                "shifted": evaluate(p_sh, shifted_y, model.threshold)
                | {"called": called(p_sh, model.threshold)},
            }
        rf = run_rf_fold(features, ts, train_idx, test_idx, shifted_features, shifted_y, seed)
        row["RandomForest (regionprops)"] = {"in_domain": rf["in_domain"], "shifted": rf["shifted"]}
        rows.append(row)
        print(
            f"seed {seed} fold {fold}: "
            + "; ".join(
                f"{n} in {row[n]['in_domain']['f1']:.3f} sh {row[n]['shifted']['f1']:.3f}"
                for n in (OFF[args.lever], ON[args.lever], "RandomForest (regionprops)")
            )
            + f" ({row['train_s']:.0f} s)",
            flush=True,
        )
    return rows


def table(rows: list[dict], lever: str) -> str:
    off, on = OFF[lever], ON[lever]
    names = (off, on, "RandomForest (regionprops)")
    lines = [
        "| pipeline | F1 in-domain | PR-AUC in-domain | F1 shifted | PR-AUC shifted | "
        "called CTC shifted |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        cells = []
        for domain, key in (
            ("in_domain", "f1"),
            ("in_domain", "average_precision"),
            ("shifted", "f1"),
            ("shifted", "average_precision"),
            ("shifted", "called"),
        ):
            values = [r[name][domain].get(key) for r in rows]
            values = [v for v in values if v is not None]
            cells.append(
                f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else "–"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    diffs = {
        (domain, key): [r[on][domain][key] - r[off][domain][key] for r in rows]
        for domain in ("in_domain", "shifted")
        for key in ("f1", "average_precision")
    }
    lines.append("")
    same = " (same networks)" if lever == "morphology" else " (same seed and folds)"
    lines.append(f"Paired difference, {on} − {off}{same}, mean ± sd over folds:")
    for (domain, key), values in diffs.items():
        lines.append(
            f"- {domain} {key}: {np.mean(values):+.3f} ± {np.std(values, ddof=1):.3f} "
            f"({on} better in {sum(v > 0 for v in values)} of {len(values)})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lever", choices=tuple(OFF), default="morphology")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cells", type=int, default=600)
    parser.add_argument("--test-cells", type=int, default=300)
    parser.add_argument("--ctc-fraction", type=float, default=0.2)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="path stem (default results/levers_dev_LEVER)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny, 1 epoch")
    args = parser.parse_args(argv)
    args.out = args.out or str(RESULTS / f"levers_dev_{args.lever}")
    if args.quick:
        args.cells, args.test_cells, args.samples, args.folds, args.epochs = 80, 40, 4, 2, 1
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows += run_seed(args, seed)
        report = {
            "command": "python benchmarks/levers_dev.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "data": "development only: core.synth default optics (in-domain folds) and "
            "Optics.shifted() (shifted); never the independent evaluator",
            "rows": rows,
            "total_s": time.perf_counter() - start,
        }
        Path(args.out + ".json").write_text(json.dumps(report, indent=1))
        Path(args.out + ".md").write_text(
            f"# Lever {args.lever} on development data (issue 20)\n\n"
            f"Command: `{report['command']}`; {report['data']}.\n"
            f"Mean ± sd over {len(rows)} held-out folds (seeds × folds); "
            f"{report['total_s'] / 60:.1f} min.\n\n" + table(rows, args.lever) + "\n"
        )
    print(Path(args.out + ".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
