"""Quality ablation on the package's synthetic data, with a held-out shifted-optics domain.

What it runs
------------
* **Training pool**: ``--cells`` synthetic cells (``Optics.default()``, ``--ctc-fraction``
  CTCs, ``--samples`` samples/patients with per-sample optics jitter), BF + DAPI.
* **Shifted test set**: ``--test-cells`` cells drawn with ``Optics.shifted()`` (another
  instrument: other illumination, stronger defocus, weaker rim, more halo, fewer photons,
  other camera), never seen in training; classified from bright-field only.
* **k-fold** (``--folds``, group k-fold by sample so no sample is on both sides): for each
  fold and configuration, ``core.train`` trains on the other folds (its own internal,
  group-stratified validation split picks the epoch and the decision threshold), then
  ``core.classify`` scores the held-out fold (*in-domain*) and the whole shifted set
  (*shifted*) with the threshold stored in the model. Every configuration sees the same
  folds and the same seed.
* **Configurations**: the default pipeline (whatever ``TrainConfig``'s defaults are); no
  augmentation vs each family vs all three; each DAPI strategy; ResNet18/34/50 (the larger
  networks optionally on fewer folds, ``--big-folds``); and two baselines: a plain
  no-augmentation, no-DAPI ResNet (same architecture, same training loop) and a scikit-learn
  RandomForest on scikit-image ``regionprops`` features of the BF image (Otsu segmentation
  of the deviation from background; shape and intensity features), with its threshold chosen
  on out-of-bag predictions to maximise F1 (as the ResNet's is chosen on validation).

Every configuration not named in ``--epochs`` etc. keeps ``TrainConfig``'s defaults; the
overrides used for the budget (epochs, image size, threads) are the same for every ResNet and
are written into the report.

Results go to ``benchmarks/results/ablation.json`` (every run, every fold, all metrics) and
``benchmarks/results/ablation.md`` (mean ± sd tables, the acceptance check and notes). The
JSON is rewritten after each run; ``--resume`` skips runs already in it (same settings).

Usage::

    python benchmarks/ablation.py            # full run (see --help for the budget knobs)
    python benchmarks/ablation.py --quick    # smoke run: tiny data, 1 epoch, 2 folds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def make_data(args: argparse.Namespace):
    """(training pool as TrainingSet, shifted test BF images, shifted test labels)."""
    from napari_deparray_ctc.core.synth import Optics, synth_cells
    from napari_deparray_ctc.core.training import TrainingSet

    pool = synth_cells(
        args.cells,
        ctc_fraction=args.ctc_fraction,
        seed=args.seed,
        optics=Optics.default(),
        image_size=64,
        n_samples=args.samples,
    )
    test = synth_cells(
        args.test_cells,
        ctc_fraction=args.ctc_fraction,
        seed=args.seed + 10_000,
        optics=Optics.shifted(),
        image_size=64,
        n_samples=max(1, args.samples // 2),
    )
    ts = TrainingSet(
        bf=[c.channels["BF"] for c in pool],
        labels=[c.label for c in pool],
        dapi=[c.channels["DAPI"] for c in pool],
        cell_ids=[c.cell_id for c in pool],
        groups=[c.sample for c in pool],
    )
    return ts, [c.channels["BF"] for c in test], [c.label for c in test]


# the RandomForest / regionprops baseline: one copy, in baselines.py
from baselines import regionprops_features, run_random_forest  # noqa: E402

# --------------------------------------------------------------------------------------------
# configurations
# --------------------------------------------------------------------------------------------


def configurations(defaults: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    """Named configurations: ``{"name", "group", "overrides" | "kind": "rf"}``."""
    default_aug = tuple(defaults["augment"])
    default_dapi = defaults["dapi_strategy"]
    default_arch = defaults["arch"]
    configs: list[dict[str, Any]] = [
        {"name": "default", "group": "default", "overrides": {}},
        {
            "name": "baseline: plain ResNet (no aug, no DAPI)",
            "group": "baseline",
            "overrides": {"augment": (), "dapi_strategy": "none"},
        },
        {"name": "baseline: RandomForest on regionprops", "group": "baseline", "kind": "rf"},
    ]
    if not quick:
        configs += _ablation_configs()
    # run order: headline comparisons first, so a time budget cuts the least informative runs
    first = ("default", "baseline", "augment: none", "DAPI: none")
    for order, config in enumerate(configs):
        config["priority"] = (0 if config["name"].startswith(first) else 1, order)
    # identical settings share one set of runs (e.g. "augment: all" may equal "default")
    for config in configs:
        if config.get("kind") == "rf":
            config["key"] = "rf"
            continue
        merged = {"augment": default_aug, "dapi_strategy": default_dapi, "arch": default_arch}
        merged.update(config["overrides"])
        merged["augment"] = tuple(merged["augment"])
        augment = ",".join(merged["augment"]) or "none"
        config["key"] = f"{merged['arch']}|{augment}|{merged['dapi_strategy']}"
        config["settings"] = merged
    return configs


def _ablation_configs() -> list[dict[str, Any]]:
    from napari_deparray_ctc.core.constants import DAPI_STRATEGIES
    from napari_deparray_ctc.core.training.augment import FAMILIES

    configs: list[dict[str, Any]] = []
    aug_sets = [(), *[(f,) for f in FAMILIES], tuple(FAMILIES)]
    for aug in aug_sets:
        name = "augment: " + ("+".join(aug) if aug else "none")
        configs.append({"name": name, "group": "augmentation", "overrides": {"augment": aug}})
    for strategy in DAPI_STRATEGIES:
        configs.append(
            {
                "name": f"DAPI: {strategy}",
                "group": "dapi",
                "overrides": {"dapi_strategy": strategy},
            }
        )
    for arch in ("resnet18", "resnet34", "resnet50"):
        configs.append({"name": f"arch: {arch}", "group": "arch", "overrides": {"arch": arch}})
    return configs


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


def evaluate(p: np.ndarray, labels: list[str], threshold: float) -> dict:
    from napari_deparray_ctc.core.evaluation.metrics import classification_metrics

    m = classification_metrics(labels, p, threshold)
    return {
        k: m[k] for k in ("precision", "recall", "f1", "average_precision", "accuracy", "threshold")
    } | {"confusion_matrix": m["confusion_matrix"]["matrix"]}


def run_resnet_fold(settings, base_overrides, ts, train_idx, test_idx, shifted_bf, shifted_y):
    from napari_deparray_ctc.core.inference.classify import classify
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    config = TrainConfig(**{**base_overrides, **settings, "out": None})
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(config, data=ts.subset(train_idx))
    train_s = time.perf_counter() - t0
    model = result.model
    test = ts.subset(test_idx)
    t1 = time.perf_counter()
    p_in = np.asarray(classify(test.bf, model, batch_size=128).p_ctc)
    p_sh = np.asarray(classify(shifted_bf, model, batch_size=128).p_ctc)
    classify_s = time.perf_counter() - t1
    return {
        "in_domain": evaluate(p_in, test.labels, model.threshold),
        "shifted": evaluate(p_sh, shifted_y, model.threshold),
        "train_s": train_s,
        "classify_s": classify_s,
        "epochs_run": len(result.history),
        "stopped_early": bool(result.stopped_early),
        "val_f1": (result.metrics or {}).get("f1"),
        "threshold": model.threshold,
    }


def run_rf_fold(features, ts, train_idx, test_idx, shifted_features, shifted_y, seed):
    y = np.array([1 if v == "CTC" else 0 for v in ts.labels])
    t0 = time.perf_counter()
    (p_in, p_sh), threshold = run_random_forest(
        features[train_idx], y[train_idx], [features[test_idx], shifted_features], seed
    )
    dt = time.perf_counter() - t0
    test_labels = [ts.labels[i] for i in test_idx]
    return {
        "in_domain": evaluate(p_in, test_labels, threshold),
        "shifted": evaluate(p_sh, shifted_y, threshold),
        "train_s": dt,
        "classify_s": 0.0,
        "threshold": threshold,
    }


def summarise(folds: list[dict]) -> dict:
    from napari_deparray_ctc.core.evaluation.metrics import summarise_folds

    keys = ("precision", "recall", "f1", "average_precision")
    return {
        "in_domain": summarise_folds([f["in_domain"] for f in folds], keys),
        "shifted": summarise_folds([f["shifted"] for f in folds], keys),
        "train_s_mean": float(np.mean([f["train_s"] for f in folds])),
        "n_folds": len(folds),
    }


def _pm(summary: dict, domain: str, key: str) -> str:
    s = summary[domain]
    if key not in s["mean"]:
        return "n/a"
    return f"{s['mean'][key]:.3f} ± {s['sd'][key]:.3f}"


def write_markdown(report: dict, path: Path) -> str:
    lines = ["# Quality ablation (synthetic data, held-out shifted-optics domain)", ""]
    s = report["settings"]
    lines += [
        f"Command: `{report['command']}`",
        "",
        f"- training pool: {s['cells']} cells ({s['ctc_fraction']:.0%} CTC), {s['samples']} "
        f"samples, `Optics.default()`; shifted test: {s['test_cells']} cells, `Optics.shifted()`, "
        "BF only",
        f"- {s['folds']}-fold group k-fold by sample (ResNet34/50: {s['big_folds']} folds); "
        "metrics on the held-out fold (in-domain) and on the whole shifted set, at the threshold "
        "stored in each model (chosen on the internal validation split)",
        f"- TrainConfig defaults: `{json.dumps(report['train_config_defaults'])}`",
        f"- budget overrides applied to every ResNet: `{json.dumps(report['base_overrides'])}`",
        f"- machine: {report['machine']}; total wall time {report['total_s'] / 60:.1f} min",
        "",
        "| configuration | settings | folds | F1 shifted | AP shifted | F1 in-domain | "
        "AP in-domain | train s/fold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["table"]:
        summary = row["summary"]
        lines.append(
            f"| {row['name']} | {row['key'].replace('|', ' / ')} | {summary['n_folds']} | "
            f"{_pm(summary, 'shifted', 'f1')} | {_pm(summary, 'shifted', 'average_precision')} | "
            f"{_pm(summary, 'in_domain', 'f1')} | "
            f"{_pm(summary, 'in_domain', 'average_precision')} | {summary['train_s_mean']:.0f} |"
        )
    lines += ["", "## Acceptance: default pipeline vs baselines on the shifted domain", ""]
    for check in report.get("acceptance", []):
        lines.append(
            f"- vs {check['baseline']}: F1 {check['default_f1']:.3f} vs {check['baseline_f1']:.3f}"
            f", margin {check['margin']:+.3f}, larger sd {check['sd']:.3f} -> "
            f"**{'PASS' if check['passed'] else 'FAIL'}**"
        )
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    text = "\n".join(lines) + "\n"
    from napari_deparray_ctc.core.atomic import atomic_write

    with atomic_write(path, "w") as handle:
        handle.write(text)
    return text


def acceptance(table: list[dict]) -> list[dict]:
    by_name = {row["name"]: row for row in table}
    default = by_name.get("default")
    if default is None:
        return []
    out = []
    d = default["summary"]["shifted"]
    for row in table:
        if not row["name"].startswith("baseline"):
            continue
        b = row["summary"]["shifted"]
        margin = d["mean"]["f1"] - b["mean"]["f1"]
        sd = max(d["sd"]["f1"], b["sd"]["f1"])
        out.append(
            {
                "baseline": row["name"],
                "default_f1": d["mean"]["f1"],
                "baseline_f1": b["mean"]["f1"],
                "margin": margin,
                "sd": sd,
                "passed": bool(margin > sd),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny and fast")
    parser.add_argument("--cells", type=int, default=600)
    parser.add_argument("--test-cells", type=int, default=400)
    parser.add_argument("--ctc-fraction", type=float, default=0.2)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--big-folds", type=int, default=None, help="folds for resnet34/50")
    parser.add_argument("--epochs", type=int, default=None, help="override TrainConfig.epochs")
    parser.add_argument("--size", type=int, default=None, help="override TrainConfig.image_size")
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated config groups (default, baseline, augmentation, dapi, arch) or "
        "exact configuration names to run (e.g. to split the work over two processes)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="do not train: combine the runs of these JSON files (same settings) into --out",
    )
    parser.add_argument("--out", default=str(RESULTS_DIR / "ablation"), help="path stem")
    parser.add_argument("--resume", action="store_true", help="skip runs already in the JSON")
    parser.add_argument(
        "--budget-min",
        type=float,
        default=None,
        help="stop starting new configurations after this many minutes (they are reported "
        "as not run); configurations run in priority order",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.cells, args.test_cells, args.samples, args.folds = 120, 80, 4, 2
        args.epochs = args.epochs or 1
        args.size = args.size or 32
        if args.out == str(RESULTS_DIR / "ablation"):
            args.out = str(RESULTS_DIR / "ablation_quick")
    big_folds = args.big_folds or args.folds

    import torch

    from napari_deparray_ctc.core.training import kfold_splits
    from napari_deparray_ctc.core.training.train import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    defaults = {
        f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        for f in dataclasses.fields(TrainConfig)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    base_overrides: dict[str, Any] = {"seed": args.seed, "device": "cpu"}
    for option, field in (("epochs", "epochs"), ("size", "image_size"), ("patience", "patience")):
        if getattr(args, option) is not None:
            base_overrides[field] = getattr(args, option)
    if args.threads:
        base_overrides["num_threads"] = args.threads

    json_path = Path(args.out + ".json")
    md_path = Path(args.out + ".md")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    settings = {
        k: getattr(args, k)
        for k in ("cells", "test_cells", "ctc_fraction", "samples", "folds", "seed")
    } | {"big_folds": big_folds}
    runs: dict[str, list[dict]] = {}
    if args.resume and json_path.is_file():
        previous = json.loads(json_path.read_text())
        if previous.get("settings") == settings and previous.get("base_overrides") == {
            k: list(v) if isinstance(v, tuple) else v for k, v in base_overrides.items()
        }:
            runs = previous.get("runs", {})
            print(f"resuming: {len(runs)} configuration(s) already done")

    merged_seconds = 0.0
    merged_notes: list[str] = []
    if args.merge:
        wanted_overrides = {
            k: list(v) if isinstance(v, tuple) else v for k, v in base_overrides.items()
        }
        for name in args.merge:
            part = json.loads(Path(name).read_text())
            if part.get("settings") != settings or part.get("base_overrides") != wanted_overrides:
                raise SystemExit(f"{name}: other settings than this command; not merged")
            for key, value in part.get("runs", {}).items():
                runs.setdefault(key, value)
            merged_seconds = max(merged_seconds, float(part.get("total_s", 0.0)))
            merged_notes.append(
                f"{name}: `{part.get('command')}` ({float(part.get('total_s', 0)) / 60:.1f} min)"
            )

    t_start = time.perf_counter() - merged_seconds
    if not args.merge:
        print(f"synthesising {args.cells} + {args.test_cells} cells...", flush=True)
        ts, shifted_bf, shifted_y = make_data(args)
        folds = kfold_splits(ts.labels, ts.groups, k=args.folds, seed=args.seed)
    configs = configurations(defaults, args.quick)
    if args.only:
        wanted = set(args.only.split(","))
        configs = [c for c in configs if c["group"] in wanted or c["name"] in wanted]
    print(f"{len(configs)} configurations, {args.folds} folds; defaults: {defaults}", flush=True)

    features = shifted_features = None
    command = "python benchmarks/ablation.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"

    def save(table=None, notes=None):
        report = {
            "command": command.strip(),
            "settings": settings,
            "train_config_defaults": {
                k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()
            },
            "base_overrides": {
                k: list(v) if isinstance(v, tuple) else v for k, v in base_overrides.items()
            },
            "machine": machine,
            "total_s": time.perf_counter() - t_start,
            "runs": runs,
            "table": table or [],
            "acceptance": acceptance(table or []),
            "notes": notes or [],
        }
        from napari_deparray_ctc.core.atomic import atomic_write

        with atomic_write(json_path, "w") as handle:
            json.dump(report, handle, indent=1)
        return report

    skipped_for_budget: list[str] = []
    for config in sorted(configs, key=lambda c: c["priority"]):
        key = config["key"]
        elapsed_min = (time.perf_counter() - t_start) / 60
        if key not in runs and args.merge:
            skipped_for_budget.append(config["name"])
            continue
        if key not in runs and args.budget_min is not None and elapsed_min > args.budget_min:
            skipped_for_budget.append(config["name"])
            print(f"[{config['name']}] not run: time budget of {args.budget_min} min used up")
            continue
        if key in runs:
            print(f"[{config['name']}] same settings as an earlier run ({key}); reused", flush=True)
            continue
        arch = config.get("settings", {}).get("arch", "")
        n_folds = big_folds if arch in ("resnet34", "resnet50") else args.folds
        fold_results = []
        for f, (train_idx, test_idx) in enumerate(folds[:n_folds]):
            t0 = time.perf_counter()
            if config.get("kind") == "rf":
                if features is None:
                    features = np.stack([regionprops_features(b) for b in ts.bf])
                    shifted_features = np.stack([regionprops_features(b) for b in shifted_bf])
                r = run_rf_fold(
                    features, ts, train_idx, test_idx, shifted_features, shifted_y, args.seed
                )
            else:
                r = run_resnet_fold(
                    config["settings"],
                    base_overrides,
                    ts,
                    train_idx,
                    test_idx,
                    shifted_bf,
                    shifted_y,
                )
            fold_results.append(r)
            print(
                f"[{config['name']}] fold {f + 1}/{n_folds}: F1 in-domain "
                f"{r['in_domain']['f1']:.3f}, shifted {r['shifted']['f1']:.3f} "
                f"(AP {r['shifted']['average_precision']:.3f}) in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        runs[key] = fold_results
        save()

    table = []
    for config in configs:
        if config["key"] not in runs:
            continue
        table.append(
            {
                "name": config["name"],
                "group": config["group"],
                "key": config["key"],
                "summary": summarise(runs[config["key"]]),
            }
        )
    notes = []
    if merged_notes:
        notes.append("merged from runs in parallel processes: " + "; ".join(merged_notes))
    if skipped_for_budget:
        notes.append(
            f"not run (time budget {args.budget_min} min): {', '.join(skipped_for_budget)}"
        )
    report = save(table, notes)
    text = write_markdown(report, md_path)
    print("\n" + text)
    print(f"written {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
