"""Adapting to a new hospital: fine-tune from an existing model vs the model as it was vs scratch.

The base model (``explain_adapt_data.base_model``: default pipeline, 600 cells of the
*reference* instrument) meets a shifted instrument (``--domain``, default ``hospital_b``).
A lab labels ``--labelled`` cells of that instrument (25 % CTC). Three models are scored on
``--test`` held-out cells of the same instrument (other samples, other seeds):

* **as it was**: the base model, unchanged (its stored threshold);
* **fine-tuned**: ``train --init-from base.pt`` on the labelled cells (TrainConfig defaults
  but the learning rate), once per learning rate of ``--finetune-lrs`` (``deparray-ctc
  train --init-from`` uses the first unless ``--lr`` is given);
* **head only** (with ``--head-lr``): fine-tuning of the last layer only
  (``TrainConfig.train_layers="head"``), the other weights frozen;
* **from scratch**: the same training on the labelled cells from random weights;
* **every fold from network 0** (with ``--first-member``): fine-tuning as it was before fold
  *i* started from network *i* of the base ensemble, every fold from its first network
  (``build_network``'s ``member`` forced to 0), at the first learning rate, so the two rules
  are compared on the same labelled cells in one run.

Repeated ``--repeats`` times with different labelled cells; prints F1 (at each model's stored
threshold) and PR-AUC, mean ± sd, side by side.

Usage::

    python benchmarks/bench_finetune.py [--domain hospital_b] [--labelled 80] [--test 400]
        [--repeats 3] [--json benchmarks/results/bench_finetune.json]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
from explain_adapt_data import (
    base_model,
    common_arguments,
    domain_cells,
    mean_sd,
    one_thread,
    training_set,
    write_json,
)


def score(model, cells) -> dict:
    """F1 at the model's threshold and PR-AUC on labelled cells."""
    from napari_deparray_ctc.core.evaluation.metrics import classification_metrics
    from napari_deparray_ctc.core.inference.classify import classify

    p = classify([c.channels["BF"] for c in cells], model).p_ctc
    m = classification_metrics([c.label for c in cells], p, model.threshold)
    return {"f1": m["f1"], "pr_auc": m["average_precision"]}


@contextlib.contextmanager
def first_network_only(active: bool):
    """While active, every fold of a fine-tuning starts from the start ensemble's first
    network (the rule before fold i started from network i)."""
    from napari_deparray_ctc.core.model import network

    original = network.build_network
    if active:
        network.build_network = lambda arch, pretrained=None, member=0: original(
            arch, pretrained, 0
        )
    try:
        yield
    finally:
        network.build_network = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_arguments(parser)
    parser.add_argument("--domain", default="hospital_b")
    parser.add_argument("--labelled", type=int, default=80)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--finetune-lrs", default="1e-4,1e-3", help="learning rates of fine-tuning (comma list)"
    )
    parser.add_argument(
        "--head-lr",
        type=float,
        default=None,
        help="also fine-tune only the last layer (TrainConfig.train_layers='head') at this rate",
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every training")
    parser.add_argument(
        "--first-member",
        action="store_true",
        help="also fine-tune with every fold starting from the base ensemble's first network",
    )
    args = parser.parse_args()
    one_thread()
    from napari_deparray_ctc.core.model.loaded import load_model
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    base_path = base_model(args.cache)
    base = load_model(base_path, device="cpu")
    test = domain_cells(args.domain, args.test, seed=9000, ctc_fraction=0.2, n_samples=2)
    as_it_was = score(base, test)
    print(
        f"domain {args.domain}: {args.labelled} labelled cells (25 % CTC), {args.test} held-out "
        f"test cells; base model trained on the reference instrument"
    )
    lrs = [float(v) for v in args.finetune_lrs.split(",")]
    arms = [(f"fine-tuned lr {lr:g}", str(base_path), lr, "all") for lr in lrs]
    if args.head_lr is not None:
        arms.append((f"head only lr {args.head_lr:g}", str(base_path), args.head_lr, "head"))
    if args.first_member:
        arms.append((f"every fold from network 0, lr {lrs[0]:g}", str(base_path), lrs[0], "first"))
    arms.append(("from scratch", None, TrainConfig().lr, "all"))
    results: dict[str, list[dict]] = {"as it was": [], **{arm[0]: [] for arm in arms}}
    overrides = {"epochs": args.epochs} if args.epochs is not None else {}
    for r in range(args.repeats):
        labelled = domain_cells(args.domain, args.labelled, seed=100 + r, ctc_fraction=0.25)
        data = training_set(labelled)
        results["as it was"].append(as_it_was)
        for name, start, lr, layers in arms:
            t0 = time.perf_counter()
            config = TrainConfig(
                num_threads=1,
                seed=r,
                pretrained=start,
                lr=lr,
                train_layers="all" if layers == "first" else layers,
                **overrides,
            )
            with first_network_only(layers == "first"):
                model = train(config, data=data).model
            results[name].append(score(model, test))
            print(
                f"  repeat {r + 1}: {name:<20} F1 {results[name][-1]['f1']:.3f}, PR-AUC "
                f"{results[name][-1]['pr_auc']:.3f} ({time.perf_counter() - t0:.0f} s)"
            )
    print(
        f"\n{'model':<22}{'F1':>16}{'PR-AUC':>16}   (mean ± sd over {args.repeats} labelled sets)"
    )
    for name, rows in results.items():
        print(
            f"{name:<22}{mean_sd([x['f1'] for x in rows]):>16}"
            f"{mean_sd([x['pr_auc'] for x in rows]):>16}"
        )
    scratch = np.array([x["pr_auc"] for x in results["from scratch"]])
    for name, *_ in arms[:-1]:
        if not results[name]:
            continue
        fine = np.array([x["pr_auc"] for x in results[name]])
        print(
            f"{name}: PR-AUC minus as-it-was {fine.mean() - as_it_was['pr_auc']:+.3f}, minus "
            f"scratch {(fine - scratch).mean():+.3f} (paired, {int(np.sum(fine > scratch))}/"
            f"{len(fine)} repeats better)"
        )
    write_json(args.json, {"args": {k: str(v) for k, v in vars(args).items()}, "results": results})


if __name__ == "__main__":
    main()
