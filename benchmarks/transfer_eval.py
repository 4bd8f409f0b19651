"""Transfer evaluation on data no training has seen (issue 20): an independent second instrument.

The product's own quality benchmark (``quality.py``) tests on domains drawn by the package's
generator, whose ranges the shipped pretraining covered. Here the test instrument comes from
``benchmarks/independent_sim`` (its own cell shapes, wave-optics bright-field, sensor and
noise; no shared code or ranges), and real cells give proxies. Evaluation only: nothing here
may tune a default, an augmentation range or the pretraining.

Per seed (same splits for every model):

* training instrument: ``deparray-ctc synth`` (the product's generator, default optics),
  ``--train-cells`` cells; a held-out export of the same instrument (other seed) is the
  in-domain test;
* ``deparray-ctc train`` with the CLI defaults (``--threads`` and ``--seed`` only);
* the new instrument (``--b-test-cells``, ``--b-ctc`` CTCs): the same cells written twice,
  pixel size declared (OME PhysicalSizeX) and not declared; ``classify`` as is and ``--adapt``;
* site calibration on 10/20/40 cells picked by ``suggest`` from a separate labelled pool of
  the new instrument (``deparray-ctc calibrate``; "not available" if the command is missing);
* ``train --init-from MODEL`` on 60 pool cells vs ``train`` (defaults) on the same 60;
* baselines on the same splits: RandomForest on regionprops (``baselines.py``), trained on
  the training instrument and on the 60 pool cells; a plain ResNet18 (random weights, no
  augmentation, one split, no calibration), as ``quality.py`` defines it;
* real proxies: a default model trained on a Jurkat cell-cycle pair (real BF, ``--jurkat-pair``)
  vs the RF on the same split (never a CTC accuracy), and the fraction of real Jurkat IFC
  and ATOM cells that the synthetic-trained model calls CTC.

Writes ``results/transfer_eval.json`` (after every step) and ``results/transfer_eval.md``.

Usage::

    python benchmarks/transfer_eval.py --quick            # smoke run, a few minutes
    nohup python benchmarks/transfer_eval.py > /tmp/transfer_eval.log 2>&1 &
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REPO = HERE.parent
RESULTS = HERE / "results"
REAL = REPO.parent / "shared" / "real-cells"
BIN = Path(sys.executable).parent / "deparray-ctc"
TILE = 40


# ------------------------------------------------------------------------------ helpers
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(BIN), *map(str, args)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log(
        f"  $ deparray-ctc {' '.join(map(str, args))}  ({time.perf_counter() - t0:.0f} s, rc {proc.returncode})"
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def has_command(name: str) -> bool:
    proc = subprocess.run([str(BIN), "--help"], capture_output=True, text=True)
    return f" {name} " in proc.stdout or f"\n    {name}" in proc.stdout


def suggest_has_for() -> bool:
    proc = subprocess.run([str(BIN), "suggest", "--help"], capture_output=True, text=True)
    return "--for" in proc.stdout


def labels_of(export: Path) -> dict[str, str]:
    with open(export / "labels.csv") as h:
        return {r["cell_id"]: r["label"] for r in csv.DictReader(h)}


def best_threshold_f1(y: np.ndarray, p: np.ndarray) -> float:
    """The F1 at the best threshold for these labels: what the ranking allows (an oracle, for
    reporting only; no product setting is ever taken from it)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, p)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def scores(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    called = p >= threshold
    return {
        "f1": float(f1_score(y, called, zero_division=0)),
        "best_f1": best_threshold_f1(y, p),
        "pr_auc": float(average_precision_score(y, p)),
        "roc_auc": float(roc_auc_score(y, p)),
        "called_ctc": float(called.mean()),
        "true_ctc": float(y.mean()),
        "threshold": float(threshold),
        "n": int(y.size),
    }


def classify_cli(model: Path, export: Path, out_csv: Path, *extra: str) -> dict:
    cli("classify", export, "--model", model, "--out", out_csv, "--threads", "1", *extra)
    return scored_csv(out_csv, export)


def scored_csv(out_csv: Path, export: Path) -> dict:
    """:func:`scores` of a ``classify --out`` CSV against the export's labels."""
    truth = labels_of(export)
    ys, ps, thr = [], [], None
    with open(out_csv) as h:
        for r in csv.DictReader(h):
            ys.append(1 if truth[r["cell_id"]] == "CTC" else 0)
            ps.append(float(r["p_ctc"]))
            thr = float(r["threshold"])
    return {**scores(np.array(ys), np.array(ps), thr), "csv": Path(out_csv).name}


def kept_csvs(seed_result: dict) -> list[tuple[tuple[str, ...], str, str]]:
    """(path into a seed's result, kept ``classify --out`` CSV, export it scored) of every row
    scored through the CLI: what ``--add-best-f1`` re-reads."""
    rows = [
        (("default", "in_domain"), "c_in.csv", "indomain_test"),
        (("default", "b_declared"), "c_bd.csv", "b_declared"),
        (("default", "b_undeclared"), "c_bu.csv", "b_undeclared"),
        (("default", "b_declared_adapt"), "c_bda.csv", "b_declared"),
        (("default", "b_undeclared_adapt"), "c_bua.csv", "b_undeclared"),
        (("calibration", "uncalibrated_same_commit"), "c_uncal.csv", "b_declared"),
        (("finetune60", "b_declared"), "c_ft.csv", "b_declared"),
        (("scratch60", "b_declared"), "c_scr.csv", "b_declared"),
        (("finetune60_members", "b_declared"), "c_ft_members.csv", "b_declared"),
        (("ceiling", "b_declared"), "c_ceiling.csv", "b_declared"),
        (("finetune60_current", "finetuned"), "c_ft_current.csv", "b_declared"),
        (("finetune60_current", "scratch"), "c_scr_current.csv", "b_declared"),
    ]
    for key in seed_result.get("calibration") or {}:
        if key.split("_")[0].isdigit():
            rows.append((("calibration", key), f"c_site{key}.csv", "b_declared"))
        elif key.startswith("byclass"):
            rows.append((("calibration", key), f"c_site_{key}.csv", "b_declared"))
    for key, _flags, _name in LEVERS:
        if key in seed_result:
            rows += [
                ((key, "in_domain"), f"c_{key}_in.csv", "indomain_test"),
                ((key, "b_declared"), f"c_{key}_bd.csv", "b_declared"),
                ((key, "b_undeclared"), f"c_{key}_bu.csv", "b_undeclared"),
                ((key, "calibrated20"), f"c_{key}_site20.csv", "b_declared"),
            ]
    return rows


def add_best_f1(args, out: Path) -> None:
    """``--add-best-f1``: the best-threshold F1 of every CLI-scored row, from the kept CSVs."""
    record = json.loads(out.with_suffix(".json").read_text())
    for res in record["seeds"]:
        w = Path(args.work) / f"seed{res['seed']}"
        for path, name, export in kept_csvs(res):
            entry = _get(res, *path)
            if isinstance(entry, dict) and "f1" in entry and (w / name).is_file():
                again = scored_csv(w / name, w / export)
                if abs(again["f1"] - entry["f1"]) > 1e-9:  # the CSV is not the one scored
                    raise SystemExit(f"{w / name}: F1 {again['f1']} differs from the JSON's")
                entry.update(best_f1=again["best_f1"], csv=name)
    record["command"] += " ; then python benchmarks/transfer_eval.py --add-best-f1"
    print(write_report(record, out))


def subset_export(src: Path, ids: list[str], dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    keep = set(ids)
    with open(src / "labels.csv") as h:
        rows = [r for r in csv.DictReader(h) if r["cell_id"] in keep]
    for f in src.iterdir():
        stem = f.name.split(".")[0]
        if stem in keep:
            shutil.copy2(f, dst / f.name)
    with open(dst / "labels.csv", "w", newline="") as h:
        w = csv.DictWriter(h, fieldnames=["cell_id", "label", "sample"])
        w.writeheader()
        w.writerows(rows)
    return dst


def bf_set(export: Path):
    from napari_deparray_ctc.core.training import load_training_set

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_training_set(str(export))


def y_of(ts) -> np.ndarray:
    return np.array([1 if v == "CTC" else 0 for v in ts.labels])


# ------------------------------------------------------------------------------ baselines
def rf_eval(train_ts, tests: dict, seed: int) -> dict:
    from baselines import regionprops_features, run_random_forest

    x_train = np.stack([regionprops_features(b) for b in train_ts.bf])
    x_tests = [np.stack([regionprops_features(b) for b in ts.bf]) for ts in tests.values()]
    probs, thr = run_random_forest(x_train, y_of(train_ts), x_tests, seed)
    return {
        name: scores(y_of(ts), p, thr) for (name, ts), p in zip(tests.items(), probs, strict=True)
    }


def plain_eval(train_ts, tests: dict, seed: int, threads: int, epochs: int | None) -> dict:
    from quality import parse_config

    from napari_deparray_ctc.core.inference.classify import classify
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    over = dict(parse_config("plain")["overrides"])
    extra = {"epochs": epochs} if epochs else {}
    cfg = TrainConfig(
        **{**over, **extra, "num_threads": threads, "device": "cpu", "seed": seed, "out": None}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = train(cfg, data=train_ts).model
    out = {}
    for name, ts in tests.items():
        p = classify(ts.bf, model, batch_size=128, pixel_size=ts.pixel_sizes).p_ctc
        out[name] = scores(y_of(ts), np.asarray(p), model.threshold)
    return out


# ------------------------------------------------------------------------------ real proxies
def _tiles(path: Path) -> np.ndarray:
    import tifffile

    a = tifffile.imread(path).astype(np.float64)
    rows, cols = a.shape[0] // TILE, a.shape[1] // TILE
    a = a[: rows * TILE, : cols * TILE]
    return a.reshape(rows, TILE, cols, TILE).transpose(0, 2, 1, 3).reshape(-1, TILE, TILE)


def jurkat_phase(name: str) -> tuple[np.ndarray, np.ndarray]:
    folder = REAL / "jurkat-cell-cycle-blasi2016" / name
    bf = np.concatenate([_tiles(p) for p in sorted(folder.glob("Ch3_*.tif"))])
    dna = np.concatenate([_tiles(p) for p in sorted(folder.glob("Ch4_*.tif"))])
    keep = bf.reshape(len(bf), -1).std(axis=1) > 0
    return bf[keep].astype(np.uint16), dna[keep].astype(np.uint16)


def jurkat_pair_eval(
    pair: tuple[str, str], n_train: int, seed: int, threads: int, epochs: int | None
) -> dict:
    """Default pipeline and RF trained on real BF tiles of a cell-cycle pair (pos = pair[1])."""
    from napari_deparray_ctc.core.inference.classify import classify
    from napari_deparray_ctc.core.training.train import TrainConfig, train
    from napari_deparray_ctc.core.training.training_set import TrainingSet

    rng = np.random.default_rng(seed)
    tr, te = {"bf": [], "dapi": [], "y": []}, {"bf": [], "y": []}
    for cls, name in enumerate(pair):
        bf, dna = jurkat_phase(name)
        idx = rng.permutation(len(bf))
        a, b = idx[:n_train], idx[n_train : 2 * n_train]
        tr["bf"] += list(bf[a])
        tr["dapi"] += list(dna[a])
        tr["y"] += [cls] * len(a)
        te["bf"] += list(bf[b])
        te["y"] += [cls] * len(b)
    lab = lambda v: "CTC" if v else "WBC"  # noqa: E731
    ts = TrainingSet(bf=tr["bf"], labels=[lab(v) for v in tr["y"]], dapi=tr["dapi"])
    test = TrainingSet(bf=te["bf"], labels=[lab(v) for v in te["y"]])
    extra = {"epochs": epochs} if epochs else {}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = train(
            TrainConfig(num_threads=threads, device="cpu", seed=seed, **extra), data=ts
        ).model
    p = np.asarray(classify(test.bf, model, batch_size=128).p_ctc)
    out = {
        "default": scores(np.array(te["y"]), p, model.threshold),
        "train_s": time.perf_counter() - t0,
    }
    out["rf"] = rf_eval(ts, {"test": test}, seed)["test"]
    return out


def real_fp(model_path: Path) -> dict:
    """Fraction of real non-DEPArray cells called CTC (pixel size unknown, as the files say)."""
    from PIL import Image

    from napari_deparray_ctc.core.inference.classify import classify
    from napari_deparray_ctc.core.model.loaded import load_model

    model = load_model(str(model_path), device="cpu")
    sets: dict[str, list[np.ndarray]] = {}
    jur = REAL / "jurkat-ifc-blasi2016"
    tiles = np.concatenate([_tiles(p) for p in sorted(jur.glob("Ch3_*.tif"))])
    tiles = tiles[tiles.reshape(len(tiles), -1).std(axis=1) > 0]
    sets["Jurkat IFC (leukocyte line)"] = list(tiles.astype(np.uint16))
    for path in sorted((REAL / "atom-meng2018").glob("*.jpg")):
        sets.setdefault(f"ATOM {path.stem.split('_')[0]}", []).append(
            np.asarray(Image.open(path).convert("L"), dtype=np.uint8)
        )
    out = {}
    for name, images in sets.items():
        p = np.asarray(classify(images, model, batch_size=128).p_ctc)
        out[name] = {"called_ctc": float(np.mean(p >= model.threshold)), "n": len(images)}
    return out


def relabelled_copy(src: Path, keep_labels: set[str], dst: Path) -> Path:
    """All cells of ``src`` (hard links), labels.csv keeping only the labels of ``keep_labels``."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "labels.csv":
            try:
                os.link(f, dst / f.name)
            except OSError:
                shutil.copy2(f, dst / f.name)
    with open(src / "labels.csv") as h:
        rows = list(csv.DictReader(h))
    with open(dst / "labels.csv", "w", newline="") as h:
        w = csv.DictWriter(h, fieldnames=["cell_id", "label", "sample"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "label": r["label"] if r["cell_id"] in keep_labels else ""})
    return dst


def suggested(unlabelled: Path, model: Path, k: int, out_csv: Path, extra: list[str]) -> list[str]:
    """The ids of the ``k`` cells ``deparray-ctc suggest`` lists for ``model`` (``extra``: its
    options, e.g. ``--for calibration``)."""
    cli("suggest", unlabelled, "--model", model, "--n", k, "--out", out_csv, "--threads", "1",
        *extra)  # fmt: skip
    with open(out_csv) as h:
        return [r["cell_id"] for r in csv.DictReader(h)]


def calibration_step(args, w: Path, model: Path, pool_dir: Path, b_decl: Path) -> dict:
    """Site calibration as a lab would do it, scored on the new instrument's test cells.

    The pool (all its cells, no labels) goes to ``suggest --for calibration``; the first
    10/20/40 suggested cells get their true labels; ``calibrate MODEL POOL`` (the pool's other
    cells unlabelled, as the command expects) writes the site model, with and without
    ``--adapt``. The uncalibrated model is scored again at the same commit for the difference.
    """
    cal: dict = {}
    if not has_command("calibrate"):
        cal["status"] = "not available: 'deparray-ctc calibrate' does not exist at this commit"
        return cal
    try:
        truth = labels_of(pool_dir)
        unlabelled = relabelled_copy(pool_dir, set(), w / "pool_unlabelled")
        extra = ["--for", "calibration"] if suggest_has_for() else []
        cal["suggest_mode"] = "--for calibration" if extra else "plain suggest (no --for option)"
        cal["uncalibrated_same_commit"] = classify_cli(model, b_decl, w / "c_uncal.csv")
        for k in args.cal_ns:  # one suggestion per budget, as a lab asking for k cells would
            picked = suggested(unlabelled, model, k, w / f"suggest{k}.csv", extra)
            n_ctc = sum(1 for c in picked if truth[c] == "CTC")
            folder = relabelled_copy(pool_dir, set(picked), w / f"cal{k}")
            for variant, flags in (("", []), ("_adapt", ["--adapt"])):
                key = f"{k}{variant}"
                site = w / f"site{key}.pt"
                try:
                    cli("calibrate", model, folder, "--out", site, "--threads", "1", *flags)
                    cal[key] = classify_cli(site, b_decl, w / f"c_site{key}.csv")
                except Exception as exc:
                    cal[key] = {"status": f"failed: {str(exc)[-400:]}"}
                cal[key]["ctc_in_picked"] = n_ctc
                cal[key]["picked"] = k
        # the documented alternative: cells picked by class (k/2 of each, at random), --prior estimate
        rng = np.random.default_rng(int(w.name.removeprefix("seed") or 0) + 777)
        ctc = sorted(c for c, v in truth.items() if v == "CTC")
        wbc = sorted(c for c, v in truth.items() if v == "WBC")
        for k in args.cal_ns:
            half = k // 2
            picked = list(rng.choice(ctc, min(half, len(ctc)), replace=False))
            picked += list(rng.choice(wbc, half, replace=False))
            folder = relabelled_copy(pool_dir, set(picked), w / f"calcls{k}")
            key = f"byclass{k}"
            site = w / f"site_{key}.pt"
            try:
                cli("calibrate", model, folder, "--out", site, "--threads", "1",
                    "--prior", "estimate")  # fmt: skip
                cal[key] = classify_cli(site, b_decl, w / f"c_site_{key}.csv")
            except Exception as exc:
                cal[key] = {"status": f"failed: {str(exc)[-400:]}"}
            cal[key]["picked"] = k
        cal["status"] = "ok"
    except Exception as exc:  # report, keep the rest of the run
        cal["status"] = f"failed: {str(exc)[-600:]}"
    return cal


#: the transfer levers measured by --add-levers: (key, `deparray-ctc train` flags, row name);
#: ``{weights}`` in a flag is replaced by ``--lever-weights`` (a pretrained start to compare)
LEVERS = (
    ("lever_morphology", ("--morphology", "on"), "`train --morphology on` (shape-feature stack)"),
    ("lever_flat_field", ("--flat-field", "on"), "`train --flat-field on` (flat-field correction)"),
    (
        "lever_randconv_start",
        ("--pretrained", "{weights}"),
        "`train --pretrained` a start pretrained with random convolutions "
        "(`pretrain.py --randconv 0.5`)",
    ),
    (
        "lever_randconv_train",
        ("--randconv", "on"),
        "`train --randconv on` (random convolutions in training; the default since 2026-12-07)",
    ),
    (
        "lever_style_noise",
        ("--style-noise", "on"),
        "`train --style-noise on` (feature-statistics noise, DSU)",
    ),
)


def finetune_step(args, w: Path, seed: int) -> dict:
    """``train --init-from`` the kept default model on the kept 60 pool cells, as the package
    fine-tunes now (``--add-finetune``: fold i starts from network i of the start ensemble since
    dcff056; the ``finetune60`` row was measured when every fold started from network 0)."""
    model = w / "finetuned_members.pt"
    cli("train", w / "ft60", "--init-from", w / "model.pt", "--out", model, "--seed", seed,
        "--threads", args.threads, *(["--epochs", args.epochs] if args.epochs else []))  # fmt: skip
    n_ctc = sum(1 for label in labels_of(w / "ft60").values() if label == "CTC")
    return {
        "b_declared": classify_cli(model, w / "b_declared", w / "c_ft_members.csv"),
        "n_ctc": n_ctc,
    }


def ceiling_step(args, w: Path, seed: int) -> dict:
    """What the new instrument allows when a lab has many labelled cells of its own: a model
    trained with the CLI defaults on ``--train-cells`` labelled cells of the new instrument (a
    fresh draw, seed ``40000 + seed``, disjoint from the test cells and the pool), and the
    RandomForest on the same cells, both scored on the kept test cells. A reference for the
    transfer rows, not a setting: nothing is chosen from it."""
    from independent_sim import simulate_cells, write_export

    cells = simulate_cells(args.train_cells, args.b_ctc, 40000 + seed, "instrument_b", 4, "T")
    own = write_export(cells, w / "b_train", True)
    model = w / "ceiling.pt"
    cli("train", own, "--out", model, "--seed", seed, "--threads", args.threads,
        *(["--epochs", args.epochs] if args.epochs else []))  # fmt: skip
    rf = rf_eval(bf_set(own), {"b_declared": bf_set(w / "b_declared")}, seed)
    return {
        "b_declared": classify_cli(model, w / "b_declared", w / "c_ceiling.csv"),
        "rf_b_declared": rf["b_declared"],
        "n_cells": args.train_cells,
        "n_ctc": sum(1 for c in cells if c.label == "CTC"),
    }


def current_default_finetune_step(args, w: Path, seed: int) -> dict:
    """Fine-tuning and training from scratch on the kept 60 pool cells with the package as it
    is now (``--add-finetune-current``): ``train --init-from`` the kept model of the current
    default (``lever_randconv_train.pt``, from ``--add-levers``), and ``train`` with the
    defaults on the same 60 cells, same seed; both scored on the kept test cells."""
    start = w / "lever_randconv_train.pt"
    if not start.exists():
        raise SystemExit(f"{start} is missing: run --add-levers --levers lever_randconv_train")
    ep = ["--epochs", args.epochs] if args.epochs else []
    tuned, scratch = w / "ft60_current.pt", w / "scratch60_current.pt"
    cli("train", w / "ft60", "--init-from", start, "--out", tuned, "--seed", seed,
        "--threads", args.threads, *ep)  # fmt: skip
    cli("train", w / "ft60", "--out", scratch, "--seed", seed, "--threads", args.threads, *ep)
    return {
        "finetuned": classify_cli(tuned, w / "b_declared", w / "c_ft_current.csv"),
        "scratch": classify_cli(scratch, w / "b_declared", w / "c_scr_current.csv"),
    }


def lever_flags(flags: tuple[str, ...], weights: str | None) -> tuple[str, ...]:
    """A lever's train flags with ``{weights}`` filled in (``--lever-weights``)."""
    if any("{weights}" in f for f in flags) and not weights:
        raise SystemExit("this lever needs --lever-weights PATH (a pretrained start)")
    return tuple(f.replace("{weights}", str(weights)) for f in flags)


def lever_step(args, w: Path, seed: int, flags: tuple[str, ...], key: str) -> dict:
    """One lever on the kept exports of a seed: train with it (CLI defaults otherwise), score
    in-domain and on the new instrument, then calibrate on the 20 cells ``suggest`` picks."""
    ev: dict = {}
    model = w / f"{key}.pt"
    cli("train", w / "train", "--out", model, "--seed", seed, "--threads", args.threads,
        *flags, *(["--epochs", args.epochs] if args.epochs else []))  # fmt: skip
    ev["in_domain"] = classify_cli(model, w / "indomain_test", w / f"c_{key}_in.csv")
    ev["b_declared"] = classify_cli(model, w / "b_declared", w / f"c_{key}_bd.csv")
    ev["b_undeclared"] = classify_cli(model, w / "b_undeclared", w / f"c_{key}_bu.csv")
    truth = labels_of(w / "b_pool")
    unlabelled = w / "pool_unlabelled"
    if not unlabelled.exists():
        relabelled_copy(w / "b_pool", set(), unlabelled)
    picked = suggested(unlabelled, model, 20, w / f"suggest20_{key}.csv", ["--for", "calibration"])
    folder = relabelled_copy(w / "b_pool", set(picked), w / f"cal20_{key}")
    site = w / f"site20_{key}.pt"
    cli("calibrate", model, folder, "--out", site, "--threads", "1")
    ev["calibrated20"] = classify_cli(site, w / "b_declared", w / f"c_{key}_site20.csv")
    ev["calibrated20"]["ctc_in_picked"] = sum(1 for c in picked if truth[c] == "CTC")
    return ev


# ------------------------------------------------------------------------------ one seed
def run_seed(args, seed: int, work: Path, record: dict, flush) -> None:
    from independent_sim import simulate_cells, write_export

    w = work / f"seed{seed}"
    if w.exists():
        shutil.rmtree(w)
    w.mkdir(parents=True)
    res: dict = {"seed": seed, "timing_s": {}}
    record["seeds"].append(res)
    clock = time.perf_counter

    def timed(key, t0):
        res["timing_s"][key] = round(clock() - t0, 1)
        flush()

    t0 = clock()
    train_dir, indom_dir = w / "train", w / "indomain_test"
    cli(
        "synth",
        train_dir,
        "--cells",
        args.train_cells,
        "--ctc-fraction",
        args.train_ctc,
        "--samples",
        args.train_samples,
        "--seed",
        seed,
    )
    cli(
        "synth",
        indom_dir,
        "--cells",
        args.test_cells,
        "--ctc-fraction",
        args.train_ctc,
        "--samples",
        3,
        "--seed",
        10000 + seed,
    )
    b_cells = simulate_cells(args.b_test_cells, args.b_ctc, 20000 + seed, "instrument_b", 4, "B")
    b_decl = write_export(b_cells, w / "b_declared", True)
    b_undecl = write_export(b_cells, w / "b_undeclared", False)
    pool = simulate_cells(args.b_pool_cells, args.b_ctc, 30000 + seed, "instrument_b", 4, "P")
    pool_dir = write_export(pool, w / "b_pool", True)
    timed("data", t0)

    # ---- the default model, CLI defaults
    t0 = clock()
    model = w / "model.pt"
    cli(
        "train",
        train_dir,
        "--out",
        model,
        "--seed",
        seed,
        "--threads",
        args.threads,
        *(["--epochs", args.epochs] if args.epochs else []),
    )
    timed("train_default", t0)
    t0 = clock()
    ev: dict = {}
    res["default"] = ev
    ev["in_domain"] = classify_cli(model, indom_dir, w / "c_in.csv")
    ev["b_declared"] = classify_cli(model, b_decl, w / "c_bd.csv")
    ev["b_undeclared"] = classify_cli(model, b_undecl, w / "c_bu.csv")
    ev["b_declared_adapt"] = classify_cli(model, b_decl, w / "c_bda.csv", "--adapt")
    ev["b_undeclared_adapt"] = classify_cli(model, b_undecl, w / "c_bua.csv", "--adapt")
    timed("classify_default", t0)
    log(
        f"seed {seed} default: "
        + ", ".join(f"{k} F1 {v['f1']:.3f} called {v['called_ctc']:.2f}" for k, v in ev.items())
    )

    # ---- site calibration on suggested cells
    t0 = clock()
    res["calibration"] = calibration_step(args, w, model, pool_dir, b_decl)
    timed("calibration", t0)

    # ---- fine-tune vs scratch on 60 pool cells (stratified random)
    t0 = clock()
    rng = np.random.default_rng(seed)
    ctc = [c.cell_id for c in pool if c.label == "CTC"]
    wbc = [c.cell_id for c in pool if c.label == "WBC"]
    k_ctc = max(2, round(args.finetune_n * args.b_ctc))
    picked = list(rng.choice(ctc, k_ctc, replace=False)) + list(
        rng.choice(wbc, args.finetune_n - k_ctc, replace=False)
    )
    sub60 = subset_export(pool_dir, picked, w / "ft60")
    ft, scr = w / "finetuned.pt", w / "scratch60.pt"
    ep = ["--epochs", args.epochs] if args.epochs else []
    cli(
        "train",
        sub60,
        "--init-from",
        model,
        "--out",
        ft,
        "--seed",
        seed,
        "--threads",
        args.threads,
        *ep,
    )
    cli("train", sub60, "--out", scr, "--seed", seed, "--threads", args.threads, *ep)
    res["finetune60"] = {"b_declared": classify_cli(ft, b_decl, w / "c_ft.csv"), "n_ctc": k_ctc}
    res["scratch60"] = {"b_declared": classify_cli(scr, b_decl, w / "c_scr.csv"), "n_ctc": k_ctc}
    timed("finetune_scratch", t0)

    # ---- baselines, same splits
    t0 = clock()
    train_ts, indom_ts = bf_set(train_dir), bf_set(indom_dir)
    bd_ts, bu_ts, sub_ts = bf_set(b_decl), bf_set(b_undecl), bf_set(sub60)
    rf = rf_eval(train_ts, {"in_domain": indom_ts, "b_declared": bd_ts}, seed)
    rf["b_undeclared"] = rf["b_declared"]  # same pixels: features are in pixels
    res["rf"] = rf
    res["rf_on_60"] = rf_eval(sub_ts, {"b_declared": bd_ts}, seed)
    timed("rf", t0)
    t0 = clock()
    res["plain"] = plain_eval(
        train_ts,
        {"in_domain": indom_ts, "b_declared": bd_ts, "b_undeclared": bu_ts},
        seed,
        args.threads,
        args.epochs,
    )
    timed("plain", t0)

    # ---- real proxies
    t0 = clock()
    try:
        res["real_fp"] = real_fp(model)
    except Exception as exc:
        res["real_fp"] = {"status": f"failed: {exc}"}
    timed("real_fp", t0)
    t0 = clock()
    try:
        res["jurkat_pair"] = jurkat_pair_eval(
            tuple(args.jurkat_pair.split(",")), args.jurkat_train, seed, args.threads, args.epochs
        )
    except Exception as exc:
        res["jurkat_pair"] = {"status": f"failed: {exc}"}
    timed("jurkat_pair", t0)
    if not args.keep:
        shutil.rmtree(w, ignore_errors=True)


# ------------------------------------------------------------------------------ report
def _pm(values) -> str:
    v = np.asarray([x for x in values if x is not None], float)
    if v.size == 0:
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1) if v.size > 1 else 0.0:.3f}"


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def table_rows(seeds: list[dict]) -> list[tuple[str, list]]:
    """(row name, path into a seed's result) for the main table."""
    rows = [
        (
            "in-domain (held-out cells of the training instrument) — default",
            ("default", "in_domain"),
        ),
        ("in-domain — RandomForest (regionprops)", ("rf", "in_domain")),
        ("in-domain — plain ResNet18", ("plain", "in_domain")),
        ("new instrument, pixel size declared — default", ("default", "b_declared")),
        ("new instrument, pixel size NOT declared — default", ("default", "b_undeclared")),
        (
            "new instrument, declared — default + `classify --adapt`",
            ("default", "b_declared_adapt"),
        ),
        (
            "new instrument, not declared — default + `classify --adapt`",
            ("default", "b_undeclared_adapt"),
        ),
    ]
    cal_keys = sorted(
        {k for s in seeds for k in (s.get("calibration") or {}) if k.split("_")[0].isdigit()},
        key=lambda k: (k.endswith("_adapt"), int(k.split("_")[0])),
    )
    if cal_keys:
        rows.append(
            (
                "new instrument, declared — default, scored again at the calibration commit",
                ("calibration", "uncalibrated_same_commit"),
            )
        )
    for k in cal_keys:
        n, adapt = k.split("_")[0], k.endswith("_adapt")
        rows.append(
            (
                f"new instrument, declared — `calibrate`{' --adapt' if adapt else ''} on {n} "
                "cells picked by `suggest --for calibration`",
                ("calibration", k),
            )
        )
    by_class = sorted(
        {k for s in seeds for k in (s.get("calibration") or {}) if k.startswith("byclass")},
        key=lambda k: int(k.removeprefix("byclass")),
    )
    for k in by_class:
        n = int(k.removeprefix("byclass"))
        rows.append(
            (
                f"new instrument, declared — `calibrate --prior estimate` on {n // 2} CTC + "
                f"{n // 2} WBC picked at random by class",
                ("calibration", k),
            )
        )
    for key, _flags, name in LEVERS:
        if any(key in s for s in seeds):
            rows += [
                (f"in-domain — {name}", (key, "in_domain")),
                (f"new instrument, declared — {name}", (key, "b_declared")),
                (f"new instrument, not declared — {name}", (key, "b_undeclared")),
                (
                    f"new instrument, declared — {name}, `calibrate` on 20 cells picked by "
                    "`suggest --for calibration`",
                    (key, "calibrated20"),
                ),
            ]
    rows += [
        (
            "new instrument, declared — fine-tuned on 60 of its cells (`train --init-from`)",
            ("finetune60", "b_declared"),
        ),
        (
            "new instrument, declared — fine-tuned on the same 60, fold i from network i of the "
            "start (`train --init-from` since dcff056)",
            ("finetune60_members", "b_declared"),
        ),
        (
            "new instrument, declared — `train` on the same 60 with defaults (shipped pretraining, no --init-from)",
            ("scratch60", "b_declared"),
        ),
        (
            "new instrument, declared — current default (random convolutions): fine-tuned on "
            "the same 60 (`train --init-from` its model)",
            ("finetune60_current", "finetuned"),
        ),
        (
            "new instrument, declared — current default (random convolutions): `train` on the "
            "same 60",
            ("finetune60_current", "scratch"),
        ),
        (
            "new instrument, declared — RandomForest trained on the training instrument",
            ("rf", "b_declared"),
        ),
        (
            "new instrument, declared — RandomForest trained on the same 60",
            ("rf_on_60", "b_declared"),
        ),
        ("new instrument, declared — plain ResNet18", ("plain", "b_declared")),
        ("new instrument, not declared — plain ResNet18", ("plain", "b_undeclared")),
        (
            "reference, not a transfer: new instrument, declared — `train` (defaults) on as many "
            "labelled cells of the new instrument as the training instrument had",
            ("ceiling", "b_declared"),
        ),
        (
            "reference, not a transfer: new instrument — RandomForest on those same cells",
            ("ceiling", "rf_b_declared"),
        ),
    ]
    return rows


def write_report(record: dict, out: Path) -> str:
    from napari_deparray_ctc.core.atomic import atomic_write

    seeds = record["seeds"]
    n = len(seeds)
    lines = [
        "# Transfer evaluation on an independent simulated instrument (issue 20)",
        "",
        f"Command: `{record['command']}`  ",
        f"Commit measured: `{record['commit']}` ({record['commit_subject']}); pixel-size scale-rule fix "
        f"landed: {record['scale_rule_landed']}; uncommitted changes measured: "
        f"{record.get('working_tree_changes_measured')}  ",
        f"Machine: {record['machine']}; wall time {record.get('total_s', 0) / 60:.1f} min; "
        f"seeds: {[s['seed'] for s in seeds]} (mean ± sd over {n} seed(s))"
        + ("" if record.get("complete") else " — **PARTIAL: the run did not finish**"),
        "",
        f"Training instrument: `deparray-ctc synth` default optics, {record['settings']['train_cells']} cells "
        f"({record['settings']['train_ctc']:.0%} CTC, {record['settings']['train_samples']} samples), "
        f"`deparray-ctc train` with CLI defaults. New instrument: `benchmarks/independent_sim` "
        f"(`instrument_b`: 0.65 µm/px, 96 px crops, 10-bit), {record['settings']['b_test_cells']} test cells, "
        f"{record['settings']['b_ctc']:.0%} CTC; calibration / fine-tuning cells from a separate pool of "
        f"{record['settings']['b_pool_cells']} cells. Scores at each model's stored threshold.",
        "",
        "| evaluation | F1 | PR-AUC | called CTC | true CTC | F1 at the best threshold |",
        "|---|---|---|---|---|---|",
    ]
    for name, path in table_rows(seeds):
        vals = [_get(s, *path) for s in seeds]
        vals = [v for v in vals if isinstance(v, dict) and "f1" in v]
        if not vals:
            continue
        lines.append(
            f"| {name} | {_pm([v['f1'] for v in vals])} | {_pm([v['pr_auc'] for v in vals])} | "
            f"{_pm([v['called_ctc'] for v in vals])} | {_pm([v['true_ctc'] for v in vals])} | "
            f"{_pm([v.get('best_f1') for v in vals])} |"
        )
    lines += [
        "",
        "F1 at the best threshold: the F1 of the threshold chosen on the test cells' own "
        "labels, an oracle that shows what the ranking allows (no setting is taken from it; "
        "n/a: scored outside the CLI).",
    ]
    statuses = {s["seed"]: _get(s, "calibration", "status") for s in seeds}
    if all(v == "ok" for v in statuses.values()):
        lines += ["", "Site calibration (`deparray-ctc calibrate`), per budget:"]
    else:
        lines += ["", f"Site calibration (`deparray-ctc calibrate`): {statuses}"]
    keys = sorted(
        {k for s in seeds for k in (s.get("calibration") or {}) if k.split("_")[0].isdigit()},
        key=lambda k: (k.endswith("_adapt"), int(k.split("_")[0])),
    )
    for k in keys:
        got = [_get(s, "calibration", k) for s in seeds]
        got = [g for g in got if isinstance(g, dict)]
        refused = [g for g in got if "f1" not in g]
        lines.append(
            f"- `calibrate{' --adapt' if k.endswith('_adapt') else ''}` on "
            f"{k.split('_')[0]} suggested cells: true CTCs among them per seed "
            f"{[g.get('ctc_in_picked') for g in got]}; refused in {len(refused)} of {len(got)} "
            "seed(s)"
            + (f" ({refused[0]['status'].split('error: ')[-1].strip()[:160]})" if refused else "")
        )
    if record.get("calibration_commit"):
        lines += [
            f"(calibration rows added afterwards with `--add-calibration` at commit "
            f"`{record['calibration_commit']['commit']}`, on the same kept models and exports)"
        ]
    if record.get("finetune_current_commit"):
        lines += [
            "",
            "(the two 'current default' rows added afterwards with `--add-finetune-current` at "
            f"commit `{record['finetune_current_commit']['commit']}`: the kept model of the "
            "current default (random convolutions in training) fine-tuned on the same kept 60 "
            "cells, and `train` with the current defaults on them, same seeds)",
        ]
    if record.get("ceiling_commit"):
        lines += [
            "",
            "(the two 'reference' rows added afterwards with `--add-ceiling` at commit "
            f"`{record['ceiling_commit']['commit']}`: {record['settings']['train_cells']} "
            "labelled cells of the new instrument drawn afresh (seed 40000 + seed, apart from "
            "the test cells and the pool), `train` with the CLI defaults and the forest on "
            "them, scored on the same test cells: what the new instrument allows with a lab's "
            "own labels, not a transfer and not a setting)",
        ]
    if record.get("finetune_commit"):
        lines += [
            "",
            "(the row 'fold i from network i' added afterwards with `--add-finetune` at commit "
            f"`{record['finetune_commit']['commit']}`: the kept default model fine-tuned on the "
            "same kept 60 cells with the same seed; the row above it was measured when every "
            "fold started from the start ensemble's first network)",
        ]
    if record.get("lever_commit"):
        picked = {
            key: [s[key]["calibrated20"].get("ctc_in_picked") for s in seeds if key in s]
            for key, _flags, _name in LEVERS
            if any(key in s for s in seeds)
        }
        commits = record.get("lever_commits") or {
            k: record["lever_commit"]["commit"] for k in picked
        }
        lines += [
            "",
            "(lever rows added afterwards with `--add-levers`, at commit(s) "
            + "; ".join(f"{k.removeprefix('lever_')} `{c[:10]}`" for k, c in commits.items())
            + ": trained on the same kept training exports with the same seeds, scored on the "
            "same test exports; true CTCs among the 20 suggested calibration cells per seed: "
            + "; ".join(f"{k.removeprefix('lever_')} {v}" for k, v in picked.items())
            + ")",
        ]
        weights = record.get("lever_weights")
        if weights:
            lines += [
                "",
                f"(the random-convolution start: `{weights['command']}`, {weights['cells']} "
                f"cells, SHA-256 `{weights['sha256'][:16]}…`; not shipped)",
            ]
    lines += [""]
    jp = [
        s.get("jurkat_pair")
        for s in seeds
        if isinstance(s.get("jurkat_pair"), dict) and "default" in s["jurkat_pair"]
    ]
    if jp:
        pair = record["settings"]["jurkat_pair"]
        lines += [
            f"**Real-cell proxy (never a CTC accuracy)**: Jurkat cell cycle, {pair.replace(',', ' (negative) vs ')} "
            f"(positive), bright-field only, {record['settings']['jurkat_train']} training cells per class, as many "
            "test cells per class:",
            "",
            "| pipeline | F1 | PR-AUC | ROC-AUC |",
            "|---|---|---|---|",
            f"| default pipeline trained on real BF | {_pm([j['default']['f1'] for j in jp])} | "
            f"{_pm([j['default']['pr_auc'] for j in jp])} | {_pm([j['default']['roc_auc'] for j in jp])} |",
            f"| RandomForest (regionprops) | {_pm([j['rf']['f1'] for j in jp])} | "
            f"{_pm([j['rf']['pr_auc'] for j in jp])} | {_pm([j['rf']['roc_auc'] for j in jp])} |",
            "",
        ]
    fp = [
        s.get("real_fp")
        for s in seeds
        if isinstance(s.get("real_fp"), dict) and "status" not in s["real_fp"]
    ]
    lever_fp = {
        key: [s[f"{key}_real_fp"] for s in seeds if isinstance(s.get(f"{key}_real_fp"), dict)]
        for key, _f, _n in LEVERS
    }
    lever_fp = {key: found for key, found in lever_fp.items() if found}
    if fp:
        lines += [
            "**Real cells called CTC by the synthetic-trained default model** (pixel size unknown, as the "
            "files say; not DEPArray; a false-positive proxy):",
            "",
            "| set | cells | called CTC |" + "".join(f" {key} |" for key in lever_fp),
            "|---|---|---|" + "---|" * len(lever_fp),
        ]
        for name in fp[0]:
            lines.append(
                f"| {name} | {fp[0][name]['n']} | {_pm([f[name]['called_ctc'] for f in fp])} |"
                + "".join(
                    f" {_pm([f[name]['called_ctc'] for f in found])} |"
                    for found in lever_fp.values()
                )
            )
        if lever_fp:
            lines.append(
                "(lever columns: the lever's kept model of each seed, added with "
                "`--add-real-fp LEVER`)"
            )
        lines.append("")

    def scored(entry: dict | None) -> dict:
        """The figures of a scored row, without the name of its CSV."""
        return {k: v for k, v in (entry or {}).get("b_declared", {}).items() if k != "csv"}

    same = [
        s["seed"]
        for s in seeds
        if s.get("finetune60") and scored(s["finetune60"]) == scored(s.get("scratch60"))
    ]
    lines += [
        "Notes:",
        "",
        "- `train --init-from MODEL` started from the first network of MODEL's 3-fold ensemble "
        "when the `finetune60` row was measured (fold i starts from network i since dcff056: "
        "the `--add-finetune` row). Where that network's selected epoch was 0 (the shipped "
        "pretrained start), fine-tuning started from the shipped weights, exactly as `train` "
        f"without `--init-from` does: the two rows were identical in seed(s) {same}.",
        "- Calibration is monotone, so a site model's PR-AUC can differ from the model's only "
        "through ties: `classify --out` writes P(CTC) with 6 decimals, and a site calibration "
        "that pushes every P(CTC) below 1e-6 (an estimated CTC share of 0 %) loses the ranking.",
        "- The RandomForest's features are in pixels and the plain ResNet resizes every crop whole "
        "(no pixel-size rule), so their declared and not-declared figures are the same by "
        "construction.",
        "- The plain ResNet uses the F1-best threshold of one validation split and no calibration "
        "(as in `quality.py`); the default uses its stored calibrated threshold.",
        "- The new instrument's cells (test, pool) were never used to choose any product setting. "
        "The simulator's parameters were fixed after one look at a montage of its cells (CTC "
        "median size lowered from 16.5 to 15 µm, more monocyte-like WBCs, to make the classes "
        "overlap) and before any model was scored on it; they were not changed after.",
        "",
    ]
    tim = {}
    for s in seeds:
        for k, v in s["timing_s"].items():
            tim.setdefault(k, []).append(v)
    lines += [
        "Timing per seed (s): " + ", ".join(f"{k} {np.mean(v):.0f}" for k, v in tim.items()),
        "",
    ]
    text = "\n".join(lines) + "\n"
    with atomic_write(out.with_suffix(".md"), "w") as h:
        h.write(text)
    with atomic_write(out.with_suffix(".json"), "w") as h:
        json.dump(record, h, indent=1)
    return text


# ------------------------------------------------------------------------------ main
def weights_record(path: Path) -> dict:
    """Where a pretrained start came from: its file, SHA-256 and the command in its metadata."""
    import hashlib

    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    meta = payload.get("metadata") or {}
    return {
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "command": meta.get("command"),
        "cells": meta.get("cells"),
        "randconv": meta.get("randconv"),
    }


def add_steps(args, record: dict, out: Path, commit_key: str, steps: list) -> None:
    """Run ``steps`` (key, function of (work folder, seed)) on the kept work folders of an
    earlier run and add their results to its JSON and markdown (``--add-*`` modes)."""
    old = json.loads(out.with_suffix(".json").read_text())
    measured = {
        "commit": record["commit"],
        "package_path": record["package_path"],
        "working_tree_changes": record["working_tree_changes_measured"],
    }
    if commit_key == "lever_commit":  # levers may be added at different commits
        if "lever_commits" not in old and old.get("lever_commit"):
            earlier = old["lever_commit"]["commit"]
            old["lever_commits"] = {
                k: earlier for k, _f, _n in LEVERS if any(k in s for s in old["seeds"])
            }
        for key, _step in steps:
            old.setdefault("lever_commits", {})[key] = measured["commit"]
        if record.get("lever_weights"):
            old["lever_weights"] = record["lever_weights"]
    old[commit_key] = measured
    for res in old["seeds"]:
        w = Path(args.work) / f"seed{res['seed']}"
        for key, step in steps:
            log(f"{key}, seed {res['seed']}")
            t0 = time.perf_counter()
            res[key] = step(w, res["seed"])
            res["timing_s"][key] = round(time.perf_counter() - t0, 1)
            old["total_s"] = old.get("total_s", 0.0) + time.perf_counter() - t0
            write_report(old, out)
    old["command"] += " ; then " + record["command"]
    print(write_report(old, out))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--train-cells", type=int, default=480)
    p.add_argument("--train-ctc", type=float, default=0.25)
    p.add_argument("--train-samples", type=int, default=6)
    p.add_argument("--test-cells", type=int, default=300)
    p.add_argument("--b-test-cells", type=int, default=400)
    p.add_argument("--b-pool-cells", type=int, default=200)
    p.add_argument("--b-ctc", type=float, default=0.12)
    p.add_argument("--finetune-n", type=int, default=60)
    p.add_argument("--cal-ns", default="10,20,40")
    p.add_argument("--jurkat-pair", default="S_phase,G2")
    p.add_argument("--jurkat-train", type=int, default=200)
    p.add_argument("--epochs", type=int, default=None, help="override epochs (smoke runs only)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="/tmp/transfer_eval_work")
    p.add_argument("--out", default=str(RESULTS / "transfer_eval"))
    p.add_argument("--keep", action="store_true", help="keep the exports and models")
    p.add_argument("--quick", action="store_true", help="smoke run: a few cells, 1 epoch")
    p.add_argument(
        "--append",
        action="store_true",
        help="add --seeds to the seeds already in --out's JSON (same settings and commit; "
        "the wall time adds up)",
    )
    p.add_argument(
        "--add-calibration",
        action="store_true",
        help="only run the site-calibration step on the kept work folders (--keep) of an earlier "
        "run and add it to its JSON/markdown (when 'calibrate' landed after that run)",
    )
    p.add_argument(
        "--add-levers",
        action="store_true",
        help="only train and score the transfer levers (--morphology on, --flat-field on) on "
        "the kept work folders (--keep) of an earlier run and add them to its JSON/markdown",
    )
    p.add_argument(
        "--add-finetune",
        action="store_true",
        help="only fine-tune the kept default model on the kept 60 cells again (--keep), as "
        "the package fine-tunes now, and add that row to its JSON/markdown",
    )
    p.add_argument(
        "--add-finetune-current",
        action="store_true",
        help="only fine-tune the kept model of the current default (lever_randconv_train, "
        "after --add-levers) on the kept 60 cells, and train on them from the shipped start, "
        "with the package as it is now; add both rows",
    )
    p.add_argument(
        "--add-real-fp",
        default=None,
        metavar="LEVER",
        help="only score the real-cell false-positive proxy with the kept model of LEVER "
        "(after --add-levers) and add it beside the default's",
    )
    p.add_argument(
        "--add-ceiling",
        action="store_true",
        help="only train a default model (and the forest) on --train-cells labelled cells of "
        "the new instrument itself and score it on the kept test cells (--keep): what the new "
        "instrument allows with a lab's own labels, a reference row, not a setting",
    )
    p.add_argument(
        "--add-best-f1",
        action="store_true",
        help="only add the F1 at the best threshold (what the ranking allows) of every row "
        "scored through the CLI, re-read from the kept CSVs of an earlier run (--keep)",
    )
    p.add_argument(
        "--levers",
        default=None,
        help="with --add-levers: the lever keys to run, comma-separated (default: all of "
        + ", ".join(k for k, _f, _n in LEVERS)
        + ")",
    )
    p.add_argument(
        "--lever-weights",
        default=None,
        metavar="PATH",
        help="the pretrained start of lever_randconv_start (from benchmarks/pretrain.py)",
    )
    p.add_argument(
        "--clean-src",
        default=None,
        metavar="COMMIT",
        help="measure the package as committed at COMMIT (git archive into the work folder, put "
        "first on PYTHONPATH for this process and every CLI call), not the working tree, which "
        "others may be editing",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.train_cells, args.test_cells = "0", 60, 40
        args.b_test_cells, args.b_pool_cells, args.finetune_n = 50, 60, 30
        args.cal_ns, args.jurkat_train, args.epochs = "5,10", 30, 1
        if args.out == str(RESULTS / "transfer_eval"):
            args.out = "/tmp/transfer_eval_quick"
    args.cal_ns = [int(v) for v in args.cal_ns.split(",")]
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD")
    if args.clean_src:
        commit = git("rev-parse", args.clean_src)
        src = Path(args.work) / f"src_{commit[:10]}"
        if not (src / "src").exists():
            src.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(
                ["git", "archive", commit], cwd=REPO, capture_output=True, check=True
            )
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
        os.environ["PYTHONPATH"] = str(src / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
        sys.path.insert(0, str(src / "src"))

    import torch

    torch.set_num_threads(args.threads)
    import napari_deparray_ctc

    package = Path(napari_deparray_ctc.__file__).resolve().parent
    in_tree = REPO in package.parents
    record = {
        "command": "python benchmarks/transfer_eval.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": commit,
        "commit_subject": git("log", "-1", "--format=%s", commit)[:120],
        "scale_rule_landed": bool(git("log", "--oneline", "-i", "--grep=scale rule", commit)),
        "package_path": str(package),
        "working_tree_changes_measured": (
            git("status", "--porcelain", "src").splitlines()
            if in_tree
            else "none: clean archive of the commit"
        ),
        "calibrate_available": has_command("calibrate"),
        "settings": {k: v for k, v in vars(args).items()},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} thread(s)",
        "seeds": [],
        "complete": False,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def flush():
        record["total_s"] = time.perf_counter() - started
        write_report(record, out)

    if args.add_best_f1:
        add_best_f1(args, out)
        return 0
    if args.add_finetune_current:
        steps = [
            ("finetune60_current", lambda w, seed: current_default_finetune_step(args, w, seed))
        ]
        add_steps(args, record, out, "finetune_current_commit", steps)
        return 0
    if args.add_real_fp:
        key = args.add_real_fp
        if key not in {k for k, _f, _n in LEVERS}:
            raise SystemExit(f"unknown lever {key!r}")
        steps = [(f"{key}_real_fp", lambda w, _seed: real_fp(w / f"{key}.pt"))]
        add_steps(args, record, out, "real_fp_commit", steps)
        return 0
    if args.add_ceiling:
        steps = [("ceiling", lambda w, seed: ceiling_step(args, w, seed))]
        add_steps(args, record, out, "ceiling_commit", steps)
        return 0
    if args.add_finetune:
        steps = [("finetune60_members", lambda w, seed: finetune_step(args, w, seed))]
        add_steps(args, record, out, "finetune_commit", steps)
        return 0
    if args.add_calibration or args.add_levers:
        if args.add_calibration:
            steps = [
                ("calibration", lambda w, _seed: calibration_step(
                    args, w, w / "model.pt", w / "b_pool", w / "b_declared"))
            ]  # fmt: skip
        else:
            chosen = args.levers.split(",") if args.levers else [k for k, _f, _n in LEVERS]
            unknown = sorted(set(chosen) - {k for k, _f, _n in LEVERS})
            if unknown:
                raise SystemExit(f"unknown lever(s) {unknown}")
            steps = [
                (key, lambda w, seed, flags=flags, key=key: lever_step(
                    args, w, seed, lever_flags(flags, args.lever_weights), key))
                for key, flags, _name in LEVERS
                if key in chosen
            ]  # fmt: skip
            if args.lever_weights:
                record["lever_weights"] = weights_record(Path(args.lever_weights))
        add_steps(args, record, out, "calibration_commit" if args.add_calibration else
                  "lever_commit", steps)  # fmt: skip
        return 0
    if args.append:
        old = json.loads(out.with_suffix(".json").read_text())
        same = (
            "train_cells",
            "train_ctc",
            "train_samples",
            "test_cells",
            "b_test_cells",
            "b_pool_cells",
            "b_ctc",
            "finetune_n",
            "jurkat_pair",
            "jurkat_train",
            "epochs",
        )
        changed = [k for k in same if old["settings"].get(k) != record["settings"].get(k)]
        if changed or old["commit"] != record["commit"]:
            raise SystemExit(f"--append: settings {changed} or commit differ from {out}.json")
        done = {s["seed"] for s in old["seeds"]}
        record["seeds"] = old["seeds"]
        record["command"] = old["command"] + " ; then " + record["command"]
        offset = old.get("total_s", 0.0)
        started -= offset
        if any(int(s) in done for s in args.seeds.split(",")):
            raise SystemExit(f"--append: seeds {done} are already in {out}.json")
    log(f"commit {record['commit'][:10]}; calibrate available: {record['calibrate_available']}")
    for seed in [int(s) for s in args.seeds.split(",")]:
        log(f"=== seed {seed}")
        run_seed(args, seed, Path(args.work), record, flush)
        flush()
    record["complete"] = True
    flush()
    text = write_report(record, out)
    print(text)
    log(f"total {record['total_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
