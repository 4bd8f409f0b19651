"""A training-time transfer lever on or off, on development instruments that move the call
(issue 20, item 3).

Levers (``--lever``), each a switch of ``train``, off by default; classification is unchanged:

* ``style_noise``: ``--style-noise on`` (``TrainConfig.style_noise``,
  ``core.training.style_noise``): while training, the per-cell channel means and sds of the
  ResNet's early feature maps are re-drawn around their own (DSU, Li et al. 2022), so the
  network leans less on the training instrument's contrast and texture;
* ``random_convolution``: ``--randconv on`` (``TrainConfig.random_convolution``): half of the
  training cells are seen through a random linear filter mixed with themselves
  (``core.training.augment.RandomConvolution``, RandConv, Xu et al. 2021), which changes local
  contrast, edges and their sign but not shape or size. As a *pretraining* lever it was judged
  before (``pretraining_dev.py``: not shipped); here it acts in every training.

Per seed: ``train`` with the CLI defaults on 480 cells of the product's default instrument
(``dev_models.default_pool``), once plain and once with the lever, same seed; both scored at
their stored thresholds on the same test cells of every instrument of
``test_time_dev.py --domains all`` (400 cells each, 12 % CTC): the default optics (label
shift only), the in-range shifted preset, seven families one at a time beyond the pretraining
ranges, and the four *collapse* instruments where the plain model's call rate moves
(absorbing cells at 0.15 and 0.3, defocus -5 um, everything at once). Development data only:
the independent evaluator (``benchmarks/independent_sim``) is never used here.

Decision rule, written before each lever's run (for ``style_noise``: commit 41041cf; for
``random_convolution``: the commit that added it here): the lever becomes the training
default only if, over 3 seeds,

(a) its mean F1 over the four collapse instruments is higher than the plain model's, and it is
    higher on at least 3 of the 4; and
(b) on every other instrument (default optics included) its mean F1 is no more than 0.02
    below the plain model's.

Otherwise the default stays off, the switch stays available, and the README says so.

Usage::

    python benchmarks/train_lever_dev.py --lever style_noise --seeds 0,1,2 --threads 1
    python benchmarks/train_lever_dev.py --lever random_convolution --seeds 0 --out /tmp/tld/a
    python benchmarks/train_lever_dev.py --lever random_convolution --merge /tmp/tld/a.json ...
    python benchmarks/train_lever_dev.py --quick
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dev_models import default_pool, dev_parser, evaluate, run_dev, save_dev_report, train_default
from explain_adapt_data import mean_sd
from test_time_dev import collapse_domains, collapse_rule, domains

RESULTS = Path(__file__).resolve().parent / "results"
#: lever -> (row name, TrainConfig overrides, train flag)
LEVERS = {
    "style_noise": ("style noise", {"style_noise": True}, "--style-noise on"),
    "random_convolution": ("random convolution", {"random_convolution": True}, "--randconv on"),
}
PLAIN = "plain"
KEYS = ("f1", "pr_auc", "called")


def arms(lever: str) -> tuple[tuple[str, dict], tuple[str, dict]]:
    """(row name, TrainConfig overrides) of the plain model and of the lever."""
    name, overrides, _flag = LEVERS[lever]
    return (PLAIN, {}), (name, overrides)


def run_seed(args, seed: int) -> list[dict]:
    from napari_deparray_ctc.core.synth import synth_cells

    ts = default_pool(seed, args.cells)
    quick = {"epochs": 2, "image_size": 32} if args.quick else {}
    models, train_s = {}, {}
    for name, overrides in arms(args.lever):
        t0 = time.perf_counter()
        models[name] = train_default(ts, seed, args.threads, **overrides, **quick)
        train_s[name] = round(time.perf_counter() - t0, 1)
    instruments = {**domains(), **collapse_domains()}
    rows = []
    for domain, optics in instruments.items():
        test = synth_cells(
            args.test_cells, ctc_fraction=0.12, seed=seed + 777, optics=optics, n_samples=3
        )
        row = {"seed": seed, "domain": domain, "train_s": train_s}
        for name, model in models.items():
            row[name] = evaluate(model, test)
        rows.append(row)
        print(
            f"seed {seed} {domain}: "
            + "; ".join(
                f"{n} F1 {row[n]['f1']:.3f} PR-AUC {row[n]['pr_auc']:.3f} "
                f"called {row[n]['called']:.2f}"
                for n, _o in arms(args.lever)
            ),
            flush=True,
        )
    return rows


def decision(rows: list[dict], lever: str) -> str:
    """The decision rule of the module docstring (``test_time_dev.collapse_rule``), in words."""
    (base, _b), (lever, _l) = arms(lever)

    def gain(name: str) -> float:
        picked = [r for r in rows if r["domain"] == name]
        return float(np.mean([r[lever]["f1"] - r[base]["f1"] for r in picked]))

    rule = collapse_rule(list(dict.fromkeys(r["domain"] for r in rows)), gain)
    return (
        f"- (a) higher mean F1 on {rule['wins']} of {rule['collapse']} collapse "
        f"instruments, mean {rule['mean_gain']:+.3f}: {'met' if rule['a'] else 'not met'}\n"
        f"- (b) largest mean-F1 loss on the other instruments {rule['worst_loss']:+.3f} "
        f"({rule['worst']}): {'met' if rule['b'] else 'not met'}\n"
        f"- **{'Adopted as the training default.' if rule['a'] and rule['b'] else 'Not adopted.'}**"
    )


def table(rows: list[dict], lever: str) -> str:
    lines = [
        "| test instrument | training | F1 | PR-AUC | called CTC (true 0.12) |",
        "|---|---|---|---|---|",
    ]
    for domain in dict.fromkeys(r["domain"] for r in rows):
        picked = [r for r in rows if r["domain"] == domain]
        for name, _o in arms(lever):
            cells = " | ".join(mean_sd([r[name][k] for r in picked]) for k in KEYS)
            lines.append(f"| {domain} | {name} | {cells} |")
        (base, _b), (on, _o) = arms(lever)
        diff = [r[on]["f1"] - r[base]["f1"] for r in picked]
        lines.append(
            f"| {domain} | difference (paired) | {np.mean(diff):+.3f} "
            f"({sum(d > 0 for d in diff)} of {len(diff)} seeds higher) | – | – |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.split("\n\n")[0], None)
    parser.add_argument("--lever", choices=tuple(LEVERS), default="style_noise")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = str(RESULTS / f"train_lever_dev_{args.lever}")
    name, _overrides, flag = LEVERS[args.lever]
    rows, minutes = run_dev(args, run_seed)
    import torch

    command = "python benchmarks/train_lever_dev.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    train_min = [sum(r["train_s"].values()) / 60 for r in rows if r["domain"] == rows[0]["domain"]]
    text = (
        f"# A training-time lever ({name}) on development instruments (issue 20)\n\n"
        f"Command: `{command}`; development data only (the product's generator); the "
        "independent evaluator is never used.  \n"
        f"Machine: {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); "
        + ("" if args.merge else f"{minutes:.1f} min; ")
        + f"training {np.mean(train_min):.1f} min per seed for both models. Mean ± sd over "
        f"{len(args.seeds.split(','))} seed(s): per seed `train` defaults on {args.cells} "
        f"default-optics cells (25 % CTC), plain and with `{flag}`; each test "
        f"instrument {args.test_cells} cells, 12 % CTC, the same cells for both.\n\n"
        + table(rows, args.lever)
        + "\n\n**Decision rule (written before the run; see the script's docstring)**:\n\n"
        + decision(rows, args.lever)
        + "\n"
    )
    save_dev_report(args, rows, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
