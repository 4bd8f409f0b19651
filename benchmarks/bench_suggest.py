"""Active learning on synthetic cells: +40 suggested cells per round against +40 random ones.

A pool of ``--pool`` unlabelled reference cells (8 samples, 20 % CTC) and ``--test`` held-out
cells. Both arms start from the same ``--start`` random labelled cells; each round trains a
model from scratch on the labelled cells (``TrainConfig`` with ``--size`` px, ``--epochs``,
``--folds``, one thread), scores it on the test cells (F1 at its stored threshold, PR-AUC),
then labels ``--step`` more: those of ``core.suggest.suggest_cells`` (uncertain and diverse),
or random ones (optionally also ``uncertain``: the least certain only, no diversity). Repeated
``--repeats`` times with other starting sets. Prints F1 and PR-AUC against the number of
labels for each arm (mean over repeats) and writes the learning curve as a PNG.

Usage::

    python benchmarks/bench_suggest.py [--rounds 5] [--repeats 2] [--arms suggested,random]
        [--png benchmarks/results/learning_curve.png] [--json benchmarks/results/bench_suggest.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from explain_adapt_data import (
    HERE,
    common_arguments,
    domain_cells,
    one_thread,
    training_set,
    write_json,
)


def pick(arm: str, model, pool, unlabelled: list[int], step: int, rng) -> list[int]:
    """The next ``step`` pool indices to label."""
    from napari_deparray_ctc.core.inference.suggest import (
        _logit,
        cell_embeddings,
        select_uncertain_diverse,
    )

    if arm == "random":
        return [int(i) for i in rng.choice(unlabelled, size=step, replace=False)]
    p, features = cell_embeddings([pool[i].channels["BF"] for i in unlabelled], model)
    if arm == "uncertain":
        margin = np.abs(_logit(p) - _logit(np.array([model.threshold]))[0])
        return [unlabelled[i] for i in np.argsort(margin)[:step]]
    return [unlabelled[i] for i in select_uncertain_diverse(p, features, model.threshold, step)]


def plot(path: Path, curves: dict, labels: list[int]) -> None:
    """F1 and PR-AUC against the number of labels (mean ± sd over repeats)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(fig)
    for k, metric in enumerate(("f1", "pr_auc")):
        ax = fig.add_subplot(1, 2, k + 1)
        for arm, runs in curves.items():
            values = np.array([[r[metric] for r in run] for run in runs])
            ax.errorbar(
                labels, values.mean(0), yerr=values.std(0), marker="o", capsize=3, label=arm
            )
        ax.set(
            xlabel="labelled cells",
            ylabel="F1 at the stored threshold" if metric == "f1" else "PR-AUC",
            title=f"{'F1' if metric == 'f1' else 'PR-AUC'} on held-out cells",
        )
        ax.grid(alpha=0.3)
        ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print(f"learning curve written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_arguments(parser)
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--start", type=int, default=40)
    parser.add_argument("--step", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--arms", default="suggested,random")
    parser.add_argument("--png", type=Path, default=HERE / "results" / "learning_curve.png")
    args = parser.parse_args()
    one_thread()
    from napari_deparray_ctc.core.evaluation.metrics import classification_metrics
    from napari_deparray_ctc.core.inference.classify import classify
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    start_clock = time.perf_counter()
    pool = domain_cells("reference", args.pool, seed=5000, ctc_fraction=0.2, n_samples=8)
    test = domain_cells("reference", args.test, seed=6000, ctc_fraction=0.2, n_samples=4)
    test_bf, test_y = [c.channels["BF"] for c in test], [c.label for c in test]
    arms = args.arms.split(",")
    curves: dict[str, list[list[dict]]] = {arm: [] for arm in arms}
    labels = [args.start + r * args.step for r in range(args.rounds + 1)]

    def fit(indices: list[int], seed: int):
        config = TrainConfig(
            image_size=args.size,
            epochs=args.epochs,
            folds=args.folds,
            ensemble=False,
            num_threads=1,
            seed=seed,
        )
        model = train(config, data=training_set([pool[i] for i in indices])).model
        p = classify(test_bf, model).p_ctc
        m = classification_metrics(test_y, p, model.threshold)
        return model, {"f1": m["f1"], "pr_auc": m["average_precision"]}

    for rep in range(args.repeats):
        rng = np.random.default_rng(rep)
        y = np.array([c.label == "CTC" for c in pool])
        while True:  # a starting set with at least 3 cells of each class
            first = [int(i) for i in rng.choice(len(pool), size=args.start, replace=False)]
            if 3 <= y[first].sum() <= args.start - 3:
                break
        model0, score0 = fit(first, rep)
        for arm in arms:
            arm_rng = np.random.default_rng([rep, 1])
            labelled, model, run = list(first), model0, [score0]
            for _ in range(args.rounds):
                unlabelled = sorted(set(range(len(pool))) - set(labelled))
                labelled += pick(arm, model, pool, unlabelled, args.step, arm_rng)
                model, score = fit(labelled, rep)
                run.append(score)
                print(
                    f"  repeat {rep + 1} {arm:<10} {len(labelled):>4} labels: F1 {score['f1']:.3f}, "
                    f"PR-AUC {score['pr_auc']:.3f}, {int(y[labelled].sum())} CTC labelled "
                    f"({time.perf_counter() - start_clock:.0f} s)",
                    flush=True,
                )
            curves[arm].append(run)
    print(
        f"\nmean over {args.repeats} repeats ({args.size} px, {args.epochs} epochs, {args.folds} fold(s)):"
    )
    header = "".join(f"{arm + ' F1':>16}{arm + ' AP':>16}" for arm in arms)
    print(f"{'labels':>7}{header}")
    for j, n in enumerate(labels):
        row = "".join(
            f"{np.mean([run[j]['f1'] for run in curves[arm]]):>16.3f}"
            f"{np.mean([run[j]['pr_auc'] for run in curves[arm]]):>16.3f}"
            for arm in arms
        )
        print(f"{n:>7}{row}")
    plot(args.png, curves, labels)
    print(f"total {time.perf_counter() - start_clock:.0f} s")
    write_json(
        args.json,
        {"labels": labels, "curves": curves, "args": {k: str(v) for k, v in vars(args).items()}},
    )


if __name__ == "__main__":
    main()
