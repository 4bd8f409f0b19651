"""Which cells to ask a lab to label for a site calibration: a development check (issue 20).

Compares two rules of ``suggest --for calibration`` on the **product's own** shifted instrument
(``deparray-ctc synth --shifted``, the "hospital_b" optics of ``core/synth``), never on the
independent simulator that ``transfer_eval.py`` reports: this is where the rule may be chosen.

* ``by_called_class`` (the rule before commit 067e387): half the picks among the cells the
  stored threshold calls CTC, half among those it calls WBC, each side spread from the
  threshold outwards, denser near it;
* ``by_rank`` (the rule after): half the top-ranked cells, half spread evenly over the ranks
  below; the threshold plays no part.

Per seed: a model trained with ``deparray-ctc train`` defaults on the product's default
optics (``--model-dir`` may point at models trained that way already, ``seed{N}/model.pt``), a
pool of ``--pool-cells`` shifted cells to pick from and a test export of ``--test-cells``
shifted cells (other seeds). For each rule and budget: the true CTCs among the picks, and
F1 / called fraction on the test cells after ``deparray-ctc calibrate`` on the picked labels
(the pool's other cells unlabelled). Run::

    python benchmarks/calibration_picks_dev.py --model-dir /tmp/transfer_eval_work \\
        --clean-src HEAD --json benchmarks/results/calibration_picks_dev.json

``--domain absorbing`` draws the pool and the test cells from an instrument of the same
generator where the default model over-calls (absorbing cells, absorption 0.3 against the
pretraining range 0-0.08; ``test_time_dev.py --domains all``: 32 % called at 12 % true), so
calibration has something to correct. On the product's shifted preset it has not: the model's
own call rate is right there and every site fit was dropped. Decision rule for that run, written
before it (the commit of this text): if, over 3 seeds, ``calibrate`` on the 10 cells that
``suggest --for calibration`` lists gives a lower mean F1 than the uncalibrated model while 20
cells give a higher one, ``calibrate`` warns, in words, whenever it calibrates from fewer than
20 labelled cells; otherwise it stays silent.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REPO = HERE.parent

import transfer_eval as te  # noqa: E402  (the same CLI helpers and scoring)


def by_called_class(p: np.ndarray, threshold: float, n: int) -> list[int]:
    """The rule before 067e387 (``select_for_calibration`` then), kept here to compare."""
    logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))
    d = logit - np.log(threshold / (1 - threshold))
    sides = [np.flatnonzero(d >= 0), np.flatnonzero(d < 0)]
    n_ctc = min(len(sides[0]), -(-n // 2))
    n_wbc = min(len(sides[1]), n - n_ctc)
    n_ctc = min(len(sides[0]), n - n_wbc)
    out: list[int] = []
    for members, k in zip(sides, (n_ctc, n_wbc), strict=True):
        order = members[np.argsort(np.abs(d[members]), kind="stable")]
        used: set[int] = set()
        for j in range(k):
            rank = min(int(((j + 0.5) / k) ** 2 * len(order)), len(order) - 1)
            while rank in used:
                rank = (rank + 1) % len(order)
            used.add(rank)
            out.append(int(order[rank]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--model-dir", default=None, help="seed{N}/model.pt trained on default optics")
    ap.add_argument("--train-cells", type=int, default=480)
    ap.add_argument("--pool-cells", type=int, default=200)
    ap.add_argument("--test-cells", type=int, default=400)
    ap.add_argument("--ctc-fraction", type=float, default=0.12)
    ap.add_argument("--budgets", default="10,20,40")
    ap.add_argument("--work", default="/tmp/calibration_picks_dev")
    ap.add_argument("--clean-src", default=None, metavar="COMMIT")
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--domain",
        choices=("shifted", "absorbing"),
        default="shifted",
        help="the new instrument: the product's shifted preset, or absorbing cells",
    )
    args = ap.parse_args(argv)
    budgets = [int(v) for v in args.budgets.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "rev-parse", args.clean_src or "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    if args.clean_src:
        src = work / f"src_{commit[:10]}"
        if not (src / "src").exists():
            src.mkdir(parents=True)
            archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True)
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
        os.environ["PYTHONPATH"] = f"{src / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
        sys.path.insert(0, str(src / "src"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    record: dict = {"command": " ".join(["python", *sys.argv]), "commit": commit, "seeds": {}}
    for seed in [int(s) for s in args.seeds.split(",")]:
        w = work / f"seed{seed}"
        w.mkdir(exist_ok=True)
        model = Path(args.model_dir) / f"seed{seed}" / "model.pt" if args.model_dir else None
        if model is None or not model.exists():
            model = w / "model.pt"
            if not model.exists():
                te.cli("synth", w / "train", "--cells", args.train_cells, "--ctc-fraction",
                       0.25, "--samples", 6, "--seed", seed, "--layout", "perchannel",
                       "--overwrite")  # fmt: skip
                te.cli("train", w / "train", "--out", model, "--threads", 1, "--seed", seed)
        for name, cells, offset in (("pool", args.pool_cells, 100), ("test", args.test_cells, 200)):
            if args.domain == "absorbing":
                name = f"{name}_absorbing"
            if not (w / name / "labels.csv").exists() and args.domain == "absorbing":
                from napari_deparray_ctc.core.synth import Optics
                from napari_deparray_ctc.core.synth.export import write_export

                write_export(w / name, cells, args.ctc_fraction, seed + offset, "perchannel",
                             optics=Optics.default().replace(absorption=0.3),
                             overwrite=True)  # fmt: skip
            elif not (w / name / "labels.csv").exists():
                te.cli("synth", w / name, "--cells", cells, "--ctc-fraction", args.ctc_fraction,
                       "--seed", seed + offset, "--shifted", "--layout", "perchannel",
                       "--overwrite")  # fmt: skip
        pool_dir, test_dir = (
            (w / "pool_absorbing", w / "test_absorbing")
            if args.domain == "absorbing"
            else (w / "pool", w / "test")
        )
        tag = "_absorbing" if args.domain == "absorbing" else ""
        result: dict = {"uncalibrated": te.classify_cli(model, test_dir, w / f"c_test{tag}.csv")}
        pool = te.classify_cli(model, pool_dir, w / f"c_pool{tag}.csv")
        truth = te.labels_of(pool_dir)
        with open(w / f"c_pool{tag}.csv") as h:
            rows = list(csv.DictReader(h))
        ids = [r["cell_id"] for r in rows]
        p = np.array([float(r["p_ctc"]) for r in rows])
        result["pool_uncalibrated"] = pool
        from napari_deparray_ctc.core.inference.suggest import select_for_calibration

        rules = {
            "by_called_class": lambda n, p=p, t=pool["threshold"]: by_called_class(p, t, n),
            "by_rank": lambda n, p=p: select_for_calibration(p, n),
        }
        for rule, pick in rules.items():
            for k in budgets:
                picked = [ids[i] for i in pick(k)]
                n_ctc = sum(truth[c] == "CTC" for c in picked)
                folder = te.relabelled_copy(pool_dir, set(picked), w / f"cal_{rule}{k}{tag}")
                site = w / f"site_{rule}{k}{tag}.pt"
                entry: dict = {"picked": k, "ctc_in_picked": n_ctc}
                try:
                    te.cli("calibrate", model, folder, "--out", site, "--threads", "1")
                    entry.update(te.classify_cli(site, test_dir, w / f"c_{rule}{k}{tag}.csv"))
                except RuntimeError as exc:
                    entry["status"] = "refused: " + str(exc).strip().splitlines()[-1][-300:]
                result[f"{rule}{k}"] = entry
                te.log(f"seed {seed} {rule} {k}: {entry.get('ctc_in_picked')} CTC picked, "
                       f"F1 {entry.get('f1', 'refused')}")  # fmt: skip
        record["seeds"][seed] = result
    record["total_s"] = time.perf_counter() - t0
    print(json.dumps(summary(record, budgets), indent=1))
    record["summary"] = summary(record, budgets)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


def summary(record: dict, budgets: list[int]) -> dict:
    """Mean ± sd over seeds; refused calibrations count as refusals, not as F1 0."""
    out: dict = {}
    seeds = list(record["seeds"].values())
    for key in ["uncalibrated"] + [
        f"{r}{k}" for r in ("by_called_class", "by_rank") for k in budgets
    ]:
        entries = [s[key] for s in seeds if key in s]
        f1 = [e["f1"] for e in entries if "f1" in e]
        out[key] = {
            "ctc_in_picked": [e.get("ctc_in_picked") for e in entries],
            "refused": sum("status" in e for e in entries),
            "f1": f"{np.mean(f1):.3f} ± {np.std(f1):.3f}" if f1 else "-",
            "called_ctc": [round(e["called_ctc"], 3) for e in entries if "called_ctc" in e],
        }
    return out


if __name__ == "__main__":
    raise SystemExit(main())
