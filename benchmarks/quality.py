"""Multi-domain quality benchmark: is a model trustworthy in-domain and on other instruments?

Protocol
--------
* **Training domain**: a pool of ``--cells`` synthetic cells of the ``reference`` instrument
  (``core.synth.DOMAINS``), ``--ctc-fraction`` CTCs, in ``--samples`` samples (patients).
* **Outer group k-fold by sample** (``--folds``) and ``--seeds`` seeds: each configuration
  trains on the other folds (with its own procedure: cross-fitting, selection, calibration,
  threshold) and is scored on the held-out fold (*in-domain*) and on ``--test-cells`` cells of
  every shifted domain (``hospital_b``, ``defocus``, ``fine_pixels``, ``low_light_8bit``,
  ``uneven_background``; each seed draws its own test cells). Every configuration sees the same
  folds, seeds and test cells.
* **Scores** at the threshold stored in the model: F1, PR-AUC (average precision), ROC-AUC,
  ECE (10 bins), and the stored threshold itself (its spread over folds and seeds). Also
  whether training said it learned something, and the epochs it kept.
* **Configurations** (``--configs``): ``default`` (``TrainConfig()`` as it is), ``rf``
  (RandomForest on regionprops, ``benchmarks/baselines.py``), ``plain`` (a plain ResNet18
  from random weights: no augmentation, no DAPI, one validation split, no calibration, the
  F1-best threshold on that split), and ablations named
  ``key=value[,key=value]`` of ``TrainConfig`` fields (e.g. ``pretrained=synthetic``,
  ``dapi_strategy=aux_nucleus``). ``--variants`` adds inference-time variants of each
  trained ResNet: ``adapt`` (BatchNorm re-estimation on each test set), ``tta`` (8-fold
  test-time augmentation), ``single`` (one member of an ensemble), and ``f1`` / ``half_f1``
  (that threshold rule on the same out-of-fold scores).
* **Noise labels** (``--noise-check``): the default trained once on permuted labels must say
  that it learned nothing.

Results: ``<out>.json`` (every run, rewritten after each) and ``<out>.md`` (mean ± sd tables,
the targets of issue 12 and whether they are met). ``--quick`` is a smoke run for CI.

Usage::

    python benchmarks/quality.py                                  # default + rf + plain
    python benchmarks/quality.py --configs default,pretrained=None --variants adapt,tta
    python benchmarks/quality.py --quick
"""

from __future__ import annotations

import argparse
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
RESULTS = Path(__file__).resolve().parent / "results"
SHIFTED = ("hospital_b", "defocus", "fine_pixels", "low_light_8bit", "uneven_background")


# ------------------------------------------------------------------------------------ data
def _as_set(cells):
    from napari_deparray_ctc.core.training.training_set import TrainingSet

    return TrainingSet(
        bf=[c.channels["BF"] for c in cells],
        labels=[c.label for c in cells],
        dapi=[c.channels["DAPI"] for c in cells],
        cell_ids=[c.cell_id for c in cells],
        groups=[c.sample for c in cells],
        pixel_sizes=[c.pixel_size_um for c in cells],
    )


def make_data(args: argparse.Namespace, seed: int) -> tuple[Any, dict[str, Any]]:
    """(training pool of the reference domain, {domain: test set}) for one seed."""
    from napari_deparray_ctc.core.synth import DOMAINS, synth_cells

    ref = DOMAINS["reference"]
    pool = synth_cells(
        args.cells,
        args.ctc_fraction,
        seed=seed,
        optics=ref.optics,
        image_size=ref.image_size,
        n_samples=args.samples,
    )
    tests = {}
    for j, name in enumerate(args.domains):
        d = DOMAINS[name]
        tests[name] = _as_set(
            synth_cells(
                args.test_cells,
                args.ctc_fraction,
                seed=seed * 100 + 50 + j,
                optics=d.optics,
                image_size=d.image_size,
                n_samples=max(1, args.samples // 2),
            )
        )
    return _as_set(pool), tests


# ------------------------------------------------------------------------------------ scoring
def score(y_labels, p: np.ndarray, threshold: float) -> dict:
    from napari_deparray_ctc.core.evaluation.metrics import classification_metrics

    m = classification_metrics(y_labels, p, threshold)
    keys = ("f1", "precision", "recall", "average_precision", "roc_auc", "ece", "log_loss")
    return {k: float(m[k]) for k in keys}


def _oof_threshold(result, rule: str) -> float:
    from napari_deparray_ctc.core.training.calibration import apply_calibration, choose_threshold

    oof = result.oof
    p = apply_calibration(result.model.calibration, np.asarray(oof["logits"]))
    return choose_threshold(np.asarray(oof["y"]), p, rule)[0]


def evaluate_model(model, tests: dict, variants: list[str], result=None) -> dict:
    """{variant: {domain: scores}} for one trained model."""
    from napari_deparray_ctc.core.inference.classify import classify
    from napari_deparray_ctc.core.model.loaded import LoadedModel

    out: dict[str, dict] = {}
    for variant in ["plain", *variants]:
        m, kwargs, threshold = model, {}, model.threshold
        if variant == "adapt":
            kwargs["adapt"] = True
        elif variant == "tta":
            kwargs["tta"] = True
        elif variant == "single":
            members = getattr(model.network, "members", None)
            if members is None:
                continue
            m = LoadedModel(network=members[0], metadata=model.metadata, device=model.device)
        elif variant in ("f1", "half_f1"):  # the other threshold rule on the same scores
            if result is None or result.oof is None:
                continue
            threshold = _oof_threshold(result, variant)
        out[variant] = {}
        for name, ts in tests.items():
            p = classify(ts.bf, m, batch_size=128, pixel_size=ts.pixel_sizes, **kwargs).p_ctc
            out[variant][name] = {**score(ts.labels, p, threshold), "threshold": threshold}
    return out


# ------------------------------------------------------------------------------------ configs
def parse_config(name: str) -> dict:
    """``default``, ``rf``, ``plain`` or ``key=value[,key=value...]`` TrainConfig overrides."""
    if name in ("default", "rf"):
        return {"name": name, "kind": name, "overrides": {}}
    if name == "plain":
        return {
            "name": "plain",
            "kind": "resnet",
            "overrides": {
                "augment": (),
                "dapi_strategy": "none",
                "folds": 1,
                "calibration": "none",
                "threshold_rule": "f1",  # its probabilities are not calibrated
                "pretrained": None,
                "pixel_size_um": None,
                "ensemble": False,
                "lr": 1e-3,
            },
        }
    overrides: dict[str, Any] = {}
    for part in name.split(";"):
        key, _, value = part.partition("=")
        overrides[key.strip()] = _value(key.strip(), value.strip())
    return {"name": name, "kind": "resnet", "overrides": overrides}


def _value(key: str, text: str) -> Any:
    if text in ("None", "none") and key not in ("dapi_strategy", "calibration", "augment"):
        return None
    if key == "augment":
        return () if text in ("", "none") else tuple(text.split("+"))
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    return text


def train_resnet(config_spec: dict, base: dict, ts) -> tuple[Any, float]:
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    config = TrainConfig(**{**base, **config_spec["overrides"], "out": None})
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(config, data=ts)
    return result, time.perf_counter() - t0


def run_rf(pool, train_idx, tests: dict, seed: int) -> dict:
    from baselines import regionprops_features, run_random_forest

    train = pool.subset(train_idx)
    x_train = np.stack([regionprops_features(b) for b in train.bf])
    y_train = np.array([1 if v == "CTC" else 0 for v in train.labels])
    x_tests = [np.stack([regionprops_features(b) for b in ts.bf]) for ts in tests.values()]
    probs, threshold = run_random_forest(x_train, y_train, x_tests, seed)
    return {
        "plain": {
            name: {**score(ts.labels, p, threshold), "threshold": threshold}
            for (name, ts), p in zip(tests.items(), probs, strict=True)
        }
    }


# ------------------------------------------------------------------------------------ report
def _stats(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _pm(values: list[float]) -> str:
    mean, sd = _stats(values)
    return "n/a" if np.isnan(mean) else f"{mean:.3f} ± {sd:.3f}"


def summarise(runs: list[dict], domains: list[str]) -> list[dict]:
    """One row per (configuration, variant) with the per-run values of every figure."""
    rows: dict[tuple[str, str], dict] = {}
    for run in runs:
        for variant, per_domain in run["scores"].items():
            key = (run["config"], variant)
            row = rows.setdefault(key, {"config": run["config"], "variant": variant, "runs": []})
            shifted = [per_domain[d] for d in domains if d != "in_domain"]
            row["runs"].append(
                {
                    "run": (run["seed"], run["fold"]),
                    "in_f1": per_domain["in_domain"]["f1"],
                    "in_ap": per_domain["in_domain"]["average_precision"],
                    "in_ece": per_domain["in_domain"]["ece"],
                    "shift_f1": float(np.mean([s["f1"] for s in shifted])),
                    "shift_min_f1": float(np.min([s["f1"] for s in shifted])),
                    "shift_ap": float(np.mean([s["average_precision"] for s in shifted])),
                    "shift_ece": float(np.mean([s["ece"] for s in shifted])),
                    "threshold": per_domain["in_domain"]["threshold"],
                    "per_domain_f1": {d: per_domain[d]["f1"] for d in domains},
                    "learned": run.get("learned"),
                    "train_s": run.get("train_s"),
                    "best_epochs": run.get("best_epochs"),
                }
            )
    return list(rows.values())


def targets(rows: list[dict], domains: list[str]) -> list[str]:
    """The targets of issue 12 for the default configuration, each PASS / MISS in words."""
    by = {(r["config"], r["variant"]): r for r in rows}
    default, rf = by.get(("default", "plain")), by.get(("rf", "plain"))
    lines: list[str] = []
    if default is None:
        return lines
    d = {r["run"]: r for r in default["runs"]}
    if rf is not None:
        f = {r["run"]: r for r in rf["runs"]}
        common = sorted(set(d) & set(f))
        diff = [d[k]["in_f1"] - f[k]["in_f1"] for k in common]
        mean, sd = _stats(diff)
        ok = mean >= 0.05 and mean > 2 * sd
        lines.append(
            f"in-domain F1 >= RF + 0.05, outside 2 sd: difference {mean:+.3f} ± {sd:.3f} over "
            f"{len(diff)} paired runs -> {'PASS' if ok else 'MISS'}"
        )
        worst = []
        for dom in domains:
            if dom == "in_domain":
                continue
            gap = [d[k]["per_domain_f1"][dom] - f[k]["per_domain_f1"][dom] for k in common]
            worst.append((float(np.mean(gap)), dom))
        low = min(worst)
        lines.append(
            f"no shifted domain below the RF (mean F1 difference per domain): worst {low[1]} "
            f"{low[0]:+.3f} -> {'PASS' if low[0] >= 0 else 'MISS'}"
        )
    checks = (
        ("in-domain PR-AUC >= 0.85", [r["in_ap"] for r in default["runs"]], 0.85, True),
        ("shifted mean F1 >= 0.70", [r["shift_f1"] for r in default["runs"]], 0.70, True),
        ("in-domain ECE <= 0.05", [r["in_ece"] for r in default["runs"]], 0.05, False),
    )
    for text, values, goal, above in checks:
        mean, sd = _stats(values)
        ok = mean >= goal if above else mean <= goal
        lines.append(f"{text}: {mean:.3f} ± {sd:.3f} -> {'PASS' if ok else 'MISS'}")
    mean, sd = _stats([r["threshold"] for r in default["runs"]])
    lines.append(
        f"stored threshold sd over folds and seeds <= 0.05: {mean:.3f} ± {sd:.3f} -> "
        f"{'PASS' if sd <= 0.05 else 'MISS'}"
    )
    chance = [r for r in default["runs"] if r["learned"] and r["in_ap"] is not None]
    lines.append(
        f"runs that said they learned: {len(chance)} of {len(default['runs'])}; "
        f"epochs kept: {[r['best_epochs'] for r in default['runs']]}"
    )
    return lines


def write_report(report: dict, out: Path) -> str:
    from napari_deparray_ctc.core.atomic import atomic_write

    domains = report["domains"]
    rows = summarise(report["runs"], domains)
    s = report["settings"]
    lines = [
        "# Multi-domain quality benchmark",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- training domain: {s['cells']} `reference` cells ({s['ctc_fraction']:.0%} CTC) in "
        f"{s['samples']} samples; {s['folds']}-fold group k-fold by sample x {len(s['seeds'])} "
        f"seed(s); {s['test_cells']} test cells per shifted domain and seed",
        f"- TrainConfig defaults: `{json.dumps(report['defaults'])}`",
        f"- overrides for every ResNet: `{json.dumps(report['base'])}`",
        f"- machine: {report['machine']}; wall time {report['total_s'] / 60:.1f} min",
        "",
        "Mean ± sd over folds x seeds, at each model's stored threshold.",
        "",
        "| configuration | variant | F1 in-domain | PR-AUC in-domain | ECE in-domain | F1 shifted "
        "(mean of domains) | worst domain F1 | PR-AUC shifted | ECE shifted | threshold | "
        "train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row["runs"]
        lines.append(
            f"| {row['config']} | {row['variant']} | {_pm([x['in_f1'] for x in r])} | "
            f"{_pm([x['in_ap'] for x in r])} | {_pm([x['in_ece'] for x in r])} | "
            f"{_pm([x['shift_f1'] for x in r])} | {_pm([x['shift_min_f1'] for x in r])} | "
            f"{_pm([x['shift_ap'] for x in r])} | {_pm([x['shift_ece'] for x in r])} | "
            f"{_pm([x['threshold'] for x in r])} | {_pm([x['train_s'] for x in r])} |"
        )
    lines += [
        "",
        "F1 per domain (mean ± sd):",
        "",
        "| configuration | variant | " + " | ".join(domains) + " |",
        "|---|---|" + "---|" * len(domains),
    ]
    for row in rows:
        cells = [_pm([x["per_domain_f1"][d] for x in row["runs"]]) for d in domains]
        lines.append(f"| {row['config']} | {row['variant']} | " + " | ".join(cells) + " |")
    checks = targets(rows, domains)
    if checks:
        lines += ["", "## Targets (issue 12), default configuration", ""] + [
            f"- {c}" for c in checks
        ]
    if report.get("noise_check"):
        n = report["noise_check"]
        lines += [
            "",
            "## Pure-noise labels",
            "",
            f"- learned: {n['learned']}; warning: {n['warning']}; out-of-fold ROC-AUC "
            f"{n['roc_auc']:.3f}, p = {n['p_value']:.3g}",
        ]
    text = "\n".join(lines) + "\n"
    with atomic_write(out.with_suffix(".md"), "w") as handle:
        handle.write(text)
    with atomic_write(out.with_suffix(".json"), "w") as handle:
        json.dump(report, handle, indent=1)
    return text


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=900)
    parser.add_argument("--samples", type=int, default=9)
    parser.add_argument("--ctc-fraction", type=float, default=0.25)
    parser.add_argument("--test-cells", type=int, default=300)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--only-folds", default=None, help="comma-separated 1-based outer folds")
    parser.add_argument("--domains", default=",".join(SHIFTED))
    parser.add_argument("--configs", default="default,rf,plain")
    parser.add_argument("--variants", default="", help="adapt,tta,single,f1,half_f1")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every ResNet")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--noise-check", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "quality"))
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.cells, args.samples, args.test_cells, args.folds = 96, 4, 40, 2
        args.seeds, args.domains = "0", "hospital_b,fine_pixels,low_light_8bit"
        args.set = [*args.set, "epochs=1", "image_size=32", "folds=2"]
    args.domains = [d for d in args.domains.split(",") if d]
    seeds = [int(s) for s in args.seeds.split(",")]

    import torch

    from napari_deparray_ctc.core.training.splits import kfold_splits
    from napari_deparray_ctc.core.training.train import config_field_defaults

    torch.set_num_threads(args.threads)
    base = {"num_threads": args.threads, "device": "cpu"}
    for item in args.set:
        key, _, value = item.partition("=")
        base[key] = _value(key, value)
    configs = [parse_config(c) for c in args.configs.split(",") if c]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "command": "python benchmarks/quality.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {**vars(args), "seeds": seeds},
        "defaults": config_field_defaults(),
        "base": base,
        "domains": ["in_domain", *args.domains],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{args.threads} thread(s)",
        "runs": [],
    }
    started = time.perf_counter()
    only = None if args.only_folds is None else {int(f) for f in args.only_folds.split(",")}
    for seed in seeds:
        pool, shifted = make_data(args, seed)
        folds = kfold_splits(pool.labels, pool.groups, args.folds, seed)
        for f, (train_idx, test_idx) in enumerate(folds, start=1):
            if only is not None and f not in only:
                continue
            tests = {"in_domain": pool.subset(test_idx), **shifted}
            for spec in configs:
                t0 = time.perf_counter()
                run = {"config": spec["name"], "seed": seed, "fold": f}
                if spec["kind"] == "rf":
                    run["scores"] = run_rf(pool, train_idx, tests, seed)
                    run["train_s"] = time.perf_counter() - t0
                else:
                    seeded = {**base, "seed": seed}
                    result, seconds = train_resnet(spec, seeded, pool.subset(train_idx))
                    run["train_s"] = seconds
                    run["learned"] = result.learned
                    run["best_epochs"] = result.metrics.get("best_epochs")
                    run["threshold_sd_in_file"] = result.model.metadata.get("threshold_sd")
                    variants = [v for v in args.variants.split(",") if v]
                    run["scores"] = evaluate_model(result.model, tests, variants, result)
                run["seconds"] = time.perf_counter() - t0
                report["runs"].append(run)
                report["total_s"] = time.perf_counter() - started
                write_report(report, out)
                plain = run["scores"]["plain"]
                print(
                    f"seed {seed} fold {f} {spec['name']}: in-domain F1 "
                    f"{plain['in_domain']['f1']:.3f} AP {plain['in_domain']['average_precision']:.3f}"
                    f"; shifted F1 {np.mean([plain[d]['f1'] for d in args.domains]):.3f} "
                    f"({run['seconds']:.0f} s)",
                    flush=True,
                )
    if args.noise_check:
        report["noise_check"] = noise_check(args, base, seeds[0])
    report["total_s"] = time.perf_counter() - started
    print(write_report(report, out))
    return 0


def noise_check(args, base: dict, seed: int) -> dict:
    """Train the default on permuted labels; it must say it learned nothing."""
    pool, _ = make_data(argparse.Namespace(**{**vars(args), "domains": []}), seed)
    rng = np.random.default_rng(seed)
    pool.labels = list(rng.permutation(pool.labels))
    result, seconds = train_resnet(parse_config("default"), {**base, "seed": seed}, pool)
    return {
        "learned": result.learned,
        "warning": result.warning,
        "roc_auc": result.metrics["roc_auc"],
        "p_value": result.metrics["p_value"],
        "seconds": seconds,
    }


if __name__ == "__main__":
    raise SystemExit(main())
