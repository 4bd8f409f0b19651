"""Compare pretrained starts on development data and real cells only (issue 20): e.g. the
shipped recipe against the same recipe with random convolutions (``pretrain.py --randconv``).

Nothing here uses the independent evaluator (``benchmarks/independent_sim``): this is where a
start is chosen; ``transfer_eval.py --add-levers`` then reports it.

For each weight file given with ``--weights NAME=PATH`` (``NAME=synthetic`` for the shipped
file):

* **real cells, frozen features** (``../shared/real-cells/jurkat-cell-cycle-blasi2016``, bright
  field only, never a CTC accuracy): the network's pooled features with a logistic head
  (``imagenet_probe.py``'s head and stratified 5-fold cross-validation) on the three pairs its
  README calls not trivial; PR-AUC;
* **the product's generator**: per seed, ``train`` with the CLI defaults but this start, on 480
  default-optics cells (25 % CTC, pixel size declared); scored at the stored threshold on
  fresh default-optics cells (12 % CTC), on its shifted preset and on a blur beyond the
  pretraining ranges (``test_time_dev.py``'s domains);
* **real false positives**: the share of Jurkat imaging-flow cells (a leukocyte line) and of the
  ATOM sets that each trained model calls CTC (``transfer_eval.real_fp``).

Writes ``results/pretraining_dev.{json,md}``.

Usage::

    python benchmarks/pretraining_dev.py --weights shipped=synthetic \\
        --weights randconv=/tmp/pretrain_randconv.pt --seeds 0,1,2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"

from dev_models import default_pool, evaluate, train_default  # noqa: E402
from imagenet_probe import PAIRS, cv_scores, resnet_features, summary  # noqa: E402
from test_time_dev import domains  # noqa: E402
from transfer_eval import jurkat_phase, real_fp  # noqa: E402

#: the development test instruments (names of ``test_time_dev.domains``)
DEV_DOMAINS = (
    "default optics (label shift only)",
    "shifted preset (inside pretraining ranges)",
    "blur 1.5 um (range 0.25-1.0)",
)


def real_probe(weights: dict[str, str], seeds: list[int]) -> dict:
    """PR-AUC of frozen features + logistic head on the Jurkat cell-cycle pairs."""
    out: dict = {}
    for a, b in PAIRS:
        neg, pos = jurkat_phase(a)[0], jurkat_phase(b)[0]
        n = min(len(neg), len(pos), 400)
        images = list(neg[:n]) + list(pos[:n])
        y = np.array([0] * n + [1] * n)
        for name, path in weights.items():
            x = resnet_features(images, path)
            out.setdefault(name, {})[f"{a} vs {b}"] = summary(cv_scores(x, y, seeds))
        print(f"real probe {a} vs {b}: " + ", ".join(
            f"{k} {v[f'{a} vs {b}']['mean']:.3f}" for k, v in out.items()), flush=True)  # fmt: skip
    return out


def dev_seed(weights: dict[str, str], seed: int, threads: int) -> dict:
    from napari_deparray_ctc.core.model.loaded import save_model
    from napari_deparray_ctc.core.synth import synth_cells

    ts = default_pool(seed)
    all_domains = domains()
    tests = {
        name: synth_cells(400, ctc_fraction=0.12, seed=seed + 777, optics=all_domains[name],
                          n_samples=3)
        for name in DEV_DOMAINS
    }  # fmt: skip
    out: dict = {}
    for name, path in weights.items():
        t0 = time.perf_counter()
        model = train_default(ts, seed, threads, pretrained=path)
        row: dict = {"train_s": time.perf_counter() - t0}
        row.update({domain: evaluate(model, cells) for domain, cells in tests.items()})
        with tempfile.TemporaryDirectory() as tmp:
            save_model(Path(tmp) / "m.pt", model)
            row["real_fp"] = real_fp(Path(tmp) / "m.pt")
        out[name] = row
        print(f"seed {seed} {name}: " + "; ".join(
            f"{d[:14]} F1 {row[d]['f1']:.2f} AP {row[d]['pr_auc']:.2f}"
            for d in DEV_DOMAINS) + f"; Jurkat called CTC "
            f"{row['real_fp']['Jurkat IFC (leukocyte line)']['called_ctc']:.2f}", flush=True)  # fmt: skip
    return out


def _cell(values) -> str:
    values = np.asarray(values, dtype=float)
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.3f} ± {sd:.3f}"


def report(record: dict) -> str:
    names = list(record["weights"])
    lines = [
        "# Pretrained starts compared on development data and real cells (issue 20)",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine']}; {record['minutes']:.1f} min. Development data and real "
        "cells only; the independent evaluator is never used.",
        "",
        "Weights: " + "; ".join(f"`{k}` = {v}" for k, v in record["weights"].items()),
        "",
        "## Real cells: frozen features + logistic head (Jurkat cell cycle, PR-AUC, "
        "5-fold CV × seeds; never a CTC accuracy)",
        "",
        "| start | " + " | ".join(f"{a} vs {b}" for a, b in PAIRS) + " |",
        "|---|" + "---|" * len(PAIRS),
    ]
    for name in names:
        cells = [record["real_probe"][name][f"{a} vs {b}"] for a, b in PAIRS]
        lines.append(
            f"| {name} | " + " | ".join(f"{c['mean']:.3f} ± {c['sd']:.3f}" for c in cells) + " |"
        )
    lines += [
        "",
        "## The product's generator: `train` defaults with this start (one model per seed)",
        "",
        "| start | "
        + " | ".join(f"F1 {d} | PR-AUC {d}" for d in DEV_DOMAINS)
        + " | Jurkat IFC called CTC | ATOM THP1 called CTC |",
        "|---|" + "---|" * (2 * len(DEV_DOMAINS) + 2),
    ]
    for name in names:
        rows = [s[name] for s in record["seeds"]]
        cells = []
        for d in DEV_DOMAINS:
            cells += [_cell([r[d]["f1"] for r in rows]),
                      _cell([r[d]["pr_auc"] for r in rows])]  # fmt: skip
        cells.append(
            _cell([r["real_fp"]["Jurkat IFC (leukocyte line)"]["called_ctc"] for r in rows])
        )
        cells.append(_cell([r["real_fp"]["ATOM THP1"]["called_ctc"] for r in rows]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Seeds: {record['settings']['seeds']}; 400 test cells per domain, 12 % CTC.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", action="append", required=True, help="NAME=PATH")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "pretraining_dev"))
    parser.add_argument("--skip-real-probe", action="store_true")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    weights = dict(w.split("=", 1) for w in args.weights)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    record: dict = {
        "command": "python benchmarks/pretraining_dev.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)",
        "weights": weights,
        "settings": vars(args),
        "real_probe": {} if args.skip_real_probe else real_probe(weights, seeds),
        "seeds": [],
    }
    for seed in seeds:
        record["seeds"].append(dev_seed(weights, seed, args.threads))
        record["minutes"] = (time.perf_counter() - started) / 60
        Path(args.out).with_suffix(".json").write_text(json.dumps(record, indent=1))
    record["minutes"] = (time.perf_counter() - started) / 60
    Path(args.out).with_suffix(".json").write_text(json.dumps(record, indent=1))
    if record["real_probe"]:
        Path(args.out).with_suffix(".md").write_text(report(record))
        print(report(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
