"""The development benchmarks' shared steps (issue 20): the training set they all train on,
the product's default training from a given start, and the score of a model on test cells.

Used by ``test_time_dev.py``, ``mechanism_holdout.py`` and ``pretraining_dev.py``. Development
data only: the product's own generator (``core.synth``), never the independent evaluator.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np


def seed_rows(args, run_seed, out: Path) -> list[dict]:
    """The rows of a development run: ``run_seed(args, seed)`` for each of ``args.seeds``,
    the JSON at ``out`` rewritten after each seed (unless ``args.quick``), so a partial run is
    kept; with ``args.merge``, the rows of those runs' JSON files instead (``args.seeds`` is
    then set to their seeds)."""
    rows: list[dict] = []
    if args.merge:
        for path in args.merge:
            rows += json.loads(Path(path).read_text())
        args.seeds = ",".join(str(s) for s in sorted({r["seed"] for r in rows}))
        return rows
    for seed in (int(s) for s in args.seeds.split(",")):
        rows += run_seed(args, seed)
        if not args.quick:
            out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return rows


def dev_parser(description: str, out: str | None) -> argparse.ArgumentParser:
    """The options every seeded development run shares: ``--seeds``, ``--cells`` (training
    cells), ``--test-cells``, ``--threads``, ``--quick``, ``--out`` (path stem of the results)
    and ``--merge`` (only tabulate earlier runs' JSON)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cells", type=int, default=480)
    parser.add_argument("--test-cells", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=out, help="path stem of the results")
    parser.add_argument(
        "--merge", nargs="+", metavar="JSON", help="only tabulate these runs' rows into --out"
    )
    return parser


def run_dev(args, run_seed, quick_test_cells: int = 80) -> tuple[list[dict], float]:
    """Run (or ``--merge``) a development benchmark: ``--quick`` shrinks it to one seed,
    120 training and ``quick_test_cells`` test cells; torch gets ``--threads`` threads.
    Returns the rows (:func:`seed_rows`) and the minutes it took."""
    import torch

    if args.quick:
        args.seeds, args.cells, args.test_cells = "0", 120, quick_test_cells
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows = seed_rows(args, run_seed, Path(args.out))
    return rows, (time.perf_counter() - started) / 60


def save_dev_report(args, rows: list[dict], text: str) -> None:
    """Write the rows (JSON) and the report (markdown) at ``--out``, unless ``--quick``, and
    print the report."""
    if not args.quick:
        out = Path(args.out)
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        out.with_suffix(".md").write_text(text)
    print(text)


def default_pool(seed: int, n: int = 480, image_size: int = 64, declared: bool = True):
    """``n`` cells of the product's default instrument (25 % CTC, 6 samples, ``image_size`` px
    crops) as a TrainingSet (``quality._as_set``), with their pixel size when ``declared``."""
    from quality import _as_set

    from napari_deparray_ctc.core.synth import Optics, synth_cells

    pool = synth_cells(
        n, ctc_fraction=0.25, seed=seed, optics=Optics.default(), image_size=image_size, n_samples=6
    )
    ts = _as_set(pool)
    if not declared:
        ts.pixel_sizes = None
    return ts


def train_default(ts, seed: int, threads: int = 1, **overrides):
    """The model ``train`` writes with the CLI defaults (on the CPU, ``threads`` torch threads),
    with ``overrides`` (e.g. ``pretrained=PATH``); training warnings are silenced."""
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    config = TrainConfig(
        **{"seed": seed, "device": "cpu", "out": None, "num_threads": threads, **overrides}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train(config, ts).model


def evaluate(model, cells, declared: bool = True) -> dict:
    """F1, PR-AUC and share called CTC of synthetic ``cells`` at the model's stored threshold
    (each cell's pixel size given when ``declared``)."""
    from napari_deparray_ctc.core.evaluation.metrics import classification_metrics
    from napari_deparray_ctc.core.inference.classify import classify

    p = classify(
        [c.channels["BF"] for c in cells],
        model,
        batch_size=128,
        pixel_size=[c.pixel_size_um for c in cells] if declared else None,
    ).p_ctc
    p = np.asarray(p, dtype=float)
    m = classification_metrics([c.label for c in cells], p, model.threshold)
    return {
        "f1": float(m["f1"]),
        "pr_auc": float(m["average_precision"]),
        "called": float(np.mean(p >= model.threshold)),
    }
