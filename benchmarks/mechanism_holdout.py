"""Mechanism hold-out: pretrain without one family of variation, then test on it.

Issue 20, item 1. Does the pretraining's coverage of a family of variation (the fields of
``pretrain.MECHANISM_FAMILIES``: illumination, focus) protect the final model against that
family on an instrument it never saw?

1. Three weight files are pretrained at the same (reduced) scale and seed with
   ``benchmarks/pretrain.py``: nothing held out, illumination held out, focus held out (a
   held-out family's fields stay at :meth:`Optics.default`'s values in every pretraining
   instrument).
2. For each seed and weight file the product's default model (``TrainConfig`` defaults,
   ``pretrained=<weight file>``) is trained on cells of the product's default instrument
   (:meth:`Optics.default`).
3. Each model is tested, at its stored threshold, on: fresh cells of the default instrument
   (in-domain), and for each family F a "F-only" export whose instruments are drawn by
   ``randomised_optics`` with every field outside F reset to the defaults (so only F varies;
   several instruments per export). Within a seed all three weight files see the same cells.

The diagonal (family held out of the pretraining, tested on that family) against the rest
of the table answers the question. Everything is the product's own generator (development
data); the independent evaluator (``benchmarks/independent_sim``) is not used.

Usage::

    python benchmarks/mechanism_holdout.py                 # 3 x 6000-cell pretraining, seeds 0-2
    python benchmarks/mechanism_holdout.py --quick         # smoke run (300-cell pretraining, 1 seed)
    python benchmarks/mechanism_holdout.py --reuse         # keep weight files already written

Results: ``benchmarks/results/mechanism_holdout.json`` and ``.md`` (``--quick``: ``/tmp``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pretrain
from dev_models import default_pool, evaluate, train_default

HOLD_OUTS = ("none", *pretrain.MECHANISM_FAMILIES)
TEST_SETS = ("in_domain", *(f"{f}_only" for f in pretrain.MECHANISM_FAMILIES))
RESULTS = Path(__file__).resolve().parent / "results"


def family_only_sampler(family: str):
    """Instruments where only ``family``'s fields vary (``randomised_optics``'s draws).

    Parameters
    ----------
    family
        A key of ``pretrain.MECHANISM_FAMILIES``.

    Returns
    -------
    Callable[[np.random.Generator], Optics]
    """
    from napari_deparray_ctc.core.synth import Optics, randomised_optics

    default = Optics.default()
    fields = pretrain.MECHANISM_FAMILIES[family]

    def sampler(rng: np.random.Generator) -> Optics:
        drawn = randomised_optics(rng)
        return default.replace(**{name: getattr(drawn, name) for name in fields})

    return sampler


def pretrain_weights(hold_out: str, args, out_dir: Path) -> dict:
    """Pretrain (or reuse) the weight file for ``hold_out``; its metadata and timing."""
    import torch

    path = out_dir / f"pretrain_holdout_{hold_out}.pt"
    argv = [
        "--cells",
        str(args.cells),
        "--chunk",
        str(args.chunk),
        "--val-cells",
        str(args.val_cells),
        "--threads",
        "1",
        "--seed",
        str(args.pretrain_seed),
        "--hold-out",
        hold_out,
        "--out",
        str(path),
    ]
    reused = args.reuse and path.is_file()
    started = time.perf_counter()
    if not reused:
        print(f"pretraining hold-out {hold_out}: {' '.join(argv)}", flush=True)
        pretrain.main(argv)
    meta = torch.load(path, map_location="cpu", weights_only=True)["metadata"]
    return {
        "path": str(path),
        "argv": argv,
        "reused": reused,
        "wall_s": None if reused else time.perf_counter() - started,
        "metadata": meta,
    }


def test_sets(seed: int, n: int) -> dict[str, list]:
    """The seed's test exports (the same cells for every weight file)."""
    from napari_deparray_ctc.core.synth import Optics, synth_cells

    sets = {
        "in_domain": synth_cells(
            n, ctc_fraction=0.12, seed=seed + 777, optics=Optics.default(), n_samples=3
        )
    }
    for family in pretrain.MECHANISM_FAMILIES:
        sets[f"{family}_only"] = synth_cells(
            n,
            ctc_fraction=0.12,
            seed=seed + 777,
            optics_sampler=family_only_sampler(family),
            n_samples=8,
        )
    return sets


def run_seed(seed: int, weights: dict, args) -> dict:
    """Train one model per weight file on the default instrument and test it."""
    ts = default_pool(seed, args.pool_cells)
    sets = test_sets(seed, args.test_cells)
    out = {}
    for hold_out, info in weights.items():
        t0 = time.perf_counter()
        model = train_default(ts, seed, pretrained=info["path"])
        trained = time.perf_counter() - t0
        row = {name: evaluate(model, cells) for name, cells in sets.items()}
        row["threshold"] = float(model.threshold)
        row["train_s"] = trained
        out[hold_out] = row
        print(f"seed {seed} hold-out {hold_out}: {json.dumps(row)}", flush=True)
    return out


def summarise(per_seed: dict) -> dict:
    """Mean and sd over seeds of every (hold-out, test set, metric)."""
    summary = {}
    for hold_out in HOLD_OUTS:
        rows = [r[hold_out] for r in per_seed.values() if hold_out in r]
        if not rows:
            continue
        summary[hold_out] = {
            name: {
                metric: {
                    "mean": float(np.mean([r[name][metric] for r in rows])),
                    "sd": float(np.std([r[name][metric] for r in rows], ddof=1))
                    if len(rows) > 1
                    else None,
                }
                for metric in ("f1", "pr_auc", "called")
            }
            for name in TEST_SETS
        }
        summary[hold_out]["n_seeds"] = len(rows)
    return summary


def diagonal(per_seed: dict) -> dict:
    """Per family F: the change of F-only PR-AUC and F1 against no hold-out, paired by seed.

    ``held_out`` is the model pretrained without F (the diagonal), ``others`` the models
    pretrained without another family; mean and sd over seeds of the paired differences.
    """
    out = {}
    for family in pretrain.MECHANISM_FAMILIES:
        name = f"{family}_only"
        entry = {}
        for hold_out in HOLD_OUTS[1:]:
            rows = [r for r in per_seed.values() if hold_out in r and "none" in r]
            entry[hold_out] = {}
            for metric in ("pr_auc", "f1"):
                d = [r[hold_out][name][metric] - r["none"][name][metric] for r in rows]
                entry[hold_out][metric] = {
                    "mean": float(np.mean(d)) if d else None,
                    "sd": float(np.std(d, ddof=1)) if len(d) > 1 else None,
                }
        out[name] = entry
    return out


def _cell(stat: dict) -> str:
    if stat["sd"] is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} ± {stat['sd']:.3f}"


def _signed(stat: dict) -> str:
    if stat["sd"] is None:
        return f"{stat['mean']:+.3f}"
    return f"{stat['mean']:+.3f} ± {stat['sd']:.3f}"


def write_markdown(path: Path, report: dict) -> None:
    """The results table with the run's context."""
    summary = report["summary"]
    lines = [
        "# Mechanism hold-out (issue 20, item 1)",
        "",
        "Pretrain without one family of variation, then test on it. Development data: every "
        "cell comes from the product's own generator (`core.synth`); the independent "
        "evaluator (`benchmarks/independent_sim`) is **not** used.",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}  ",
        f"Wall time: {report['wall_s'] / 60:.1f} min  ",
        f"Pretraining scale (each file, same seed {report['pretrain_seed']}): "
        f"{report['pretrain_cells']} cells in chunks of {report['pretrain_chunk']}, "
        f"{report['pretrain_val_cells']} validation cells, 1 thread (the shipped weights: "
        "48,000 cells).  ",
        f"Fine-tuning: `TrainConfig` defaults on {report['pool_cells']} cells of "
        "`Optics.default()` (25 % CTC, 6 samples); tests: "
        f"{report['test_cells']} cells each (12 % CTC); seeds {report['seeds']}.",
        "",
        "| pretraining hold-out | final val PR-AUC (pretraining) | pretraining wall |",
        "|---|---|---|",
    ]
    for hold_out, info in report["pretraining"].items():
        wall = "reused" if info["wall_s"] is None else f"{info['wall_s'] / 60:.1f} min"
        lines.append(f"| {hold_out} | {info['metadata']['final_val_pr_auc']:.3f} | {wall} |")
    lines += [
        "",
        "The pretraining validation cells are drawn with the same hold-out, so these figures "
        "are not comparable across rows as robustness figures.",
        "",
        "Mean ± sd over seeds, at each model's stored threshold. `called`: share of cells "
        "called CTC (the truth is 12 %).",
        "",
        "| pretraining hold-out | in-domain F1 | in-domain PR-AUC | illumination-only F1 "
        "| illumination-only PR-AUC | illumination-only called | focus-only F1 "
        "| focus-only PR-AUC | focus-only called |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for hold_out, row in summary.items():
        cells = [
            _cell(row["in_domain"]["f1"]),
            _cell(row["in_domain"]["pr_auc"]),
            _cell(row["illumination_only"]["f1"]),
            _cell(row["illumination_only"]["pr_auc"]),
            _cell(row["illumination_only"]["called"]),
            _cell(row["focus_only"]["f1"]),
            _cell(row["focus_only"]["pr_auc"]),
            _cell(row["focus_only"]["called"]),
        ]
        lines.append(f"| {hold_out} (n={row['n_seeds']}) | " + " | ".join(cells) + " |")
    lines += ["", "## Per seed", ""]
    lines.append(
        "| seed | hold-out | in-domain F1/PR-AUC | illum.-only F1/PR-AUC/called "
        "| focus-only F1/PR-AUC/called | threshold |"
    )
    lines.append("|---|---|---|---|---|---|")
    for seed, rows in report["per_seed"].items():
        for hold_out, r in rows.items():
            i, il, fo = r["in_domain"], r["illumination_only"], r["focus_only"]
            lines.append(
                f"| {seed} | {hold_out} | {i['f1']:.3f} / {i['pr_auc']:.3f} "
                f"| {il['f1']:.3f} / {il['pr_auc']:.3f} / {il['called']:.3f} "
                f"| {fo['f1']:.3f} / {fo['pr_auc']:.3f} / {fo['called']:.3f} "
                f"| {r['threshold']:.3f} |"
            )
    lines += [
        "",
        "## Diagonal",
        "",
        "Change against the no-hold-out pretraining on the same test cells (paired by seed, "
        "mean ± sd of the differences). The diagonal is the family held out of the "
        "pretraining tested on that family.",
        "",
        "| test set | pretraining hold-out | Δ PR-AUC | Δ F1 |",
        "|---|---|---|---|",
    ]
    for name, entry in report["diagonal"].items():
        for hold_out, d in entry.items():
            if d["pr_auc"]["mean"] is None:
                continue
            mark = " (diagonal)" if name == f"{hold_out}_only" else ""
            lines.append(
                f"| {name} | {hold_out}{mark} | {_signed(d['pr_auc'])} | {_signed(d['f1'])} |"
            )
    lines += ["", "## Reading", "", report.get("reading") or "(to be written)", ""]
    path.write_text("\n".join(lines))


def machine() -> str:
    """One line: CPU, cores, Python and torch versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores (1 torch thread), Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=6000, help="pretraining cells per file")
    parser.add_argument("--chunk", type=int, default=1500)
    parser.add_argument("--val-cells", type=int, default=500)
    parser.add_argument("--pretrain-seed", type=int, default=2024)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pool-cells", type=int, default=480, help="fine-tuning cells")
    parser.add_argument("--test-cells", type=int, default=400)
    parser.add_argument("--out-dir", default="/tmp/mechanism_holdout", help="weight files")
    parser.add_argument("--results", default=None, help="results stem (default: results/)")
    parser.add_argument("--reuse", action="store_true", help="keep existing weight files")
    parser.add_argument("--quick", action="store_true", help="smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.cells, args.chunk, args.val_cells = 300, 150, 100
        args.seeds = args.seeds[:1]
        args.pool_cells, args.test_cells = 240, 200
        args.out_dir = str(Path(args.out_dir) / "quick")
        args.results = args.results or "/tmp/mechanism_holdout/quick/mechanism_holdout"
    stem = Path(args.results) if args.results else RESULTS / "mechanism_holdout"

    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "command": "python benchmarks/mechanism_holdout.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "pretrain_cells": args.cells,
        "pretrain_chunk": args.chunk,
        "pretrain_val_cells": args.val_cells,
        "pretrain_seed": args.pretrain_seed,
        "pool_cells": args.pool_cells,
        "test_cells": args.test_cells,
        "seeds": args.seeds,
        "families": pretrain.MECHANISM_FAMILIES,
        "development_data_only": True,
        "pretraining": {},
        "per_seed": {},
    }

    def save() -> None:
        report["wall_s"] = time.perf_counter() - started
        report["summary"] = summarise(report["per_seed"])
        report["diagonal"] = diagonal(report["per_seed"])
        stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
        write_markdown(stem.with_suffix(".md"), report)

    for hold_out in HOLD_OUTS:
        report["pretraining"][hold_out] = pretrain_weights(hold_out, args, out_dir)
        info = report["pretraining"][hold_out]
        print(f"pretrained {hold_out}: wall {info['wall_s']} s", flush=True)
    for seed in args.seeds:
        report["per_seed"][str(seed)] = run_seed(seed, report["pretraining"], args)
        save()
    save()
    print(json.dumps(report["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
