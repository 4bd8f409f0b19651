"""Pretrain a ResNet18 on synthetic cells from randomised instruments (domain randomisation).

Every chunk of cells is drawn fresh from the simulator with its own instruments
(``core.synth.randomised_optics``: pixel size, defocus, blur, photons, bit depth, gradients,
debris...) and jittered biology (``biology_jitter``), so the network sees each cell once and
never one fixed instrument or one fixed class boundary. Inputs are prepared as in training:
at the canonical pixel size (``--pixel-size``) for most cells, and, for ``--unknown-fraction``
of them, resized whole as when an export does not say its pixel size. The crop size varies
between chunks too.

The result is written as the package's pretrained weights (fp16, about 22 MB), which
``TrainConfig(pretrained="synthetic")`` fine-tunes. The benchmark domains of
``benchmarks/quality.py`` are never used here (validation uses other randomised cells).

``--hold-out FAMILY`` leaves one family of variation (:data:`MECHANISM_FAMILIES`) out of the
pretraining: every randomised instrument gets that family's fields reset to
:meth:`Optics.default`'s values (validation cells too), so the network never sees the family
vary. ``benchmarks/mechanism_holdout.py`` uses it to ask whether the pretraining's coverage of
a family is what protects the final model against it. The hold-out is recorded in the weights'
metadata (``hold_out``).

``--randconv P`` adds random convolutions (``core.training.augment.RandomConvolution``,
RandConv) to the augmentation, on each cell with probability ``P``: a random linear filter
that changes local contrast and edges (even their sign) while keeping the cell's shape, for
the differences between instruments that no parametric family of the simulator covers.

Usage::

    python benchmarks/pretrain.py --cells 48000 --out src/napari_deparray_ctc/core/model/pretrained/synthetic_resnet18.pt
    python benchmarks/pretrain.py --quick      # 600 cells, a smoke run
    python benchmarks/pretrain.py --cells 6000 --hold-out focus --out /tmp/no_focus.pt
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

#: Families of variation of the randomised instruments, by the :class:`Optics` fields each
#: covers (``--hold-out`` resets a family's fields to :meth:`Optics.default`'s values).
MECHANISM_FAMILIES: dict[str, tuple[str, ...]] = {
    "illumination": ("illumination_gradient", "illumination_angle_deg", "vignetting"),
    "focus": (
        "defocus_um",
        "rim_strength",
        "rim_width_um",
        "halo_strength",
        "halo_width_um",
        "absorption",
        "psf_sigma_um",
    ),
}


def held_out_sampler(family: str | None):
    """The pretraining's instrument sampler with ``family``'s fields fixed at the defaults.

    Parameters
    ----------
    family
        A key of :data:`MECHANISM_FAMILIES`, or None / ``"none"`` for the plain
        ``randomised_optics``.

    Returns
    -------
    Callable[[np.random.Generator], Optics]
    """
    from napari_deparray_ctc.core.synth import Optics, randomised_optics

    if family in (None, "none"):
        return randomised_optics
    default = Optics.default()
    fixed = {name: getattr(default, name) for name in MECHANISM_FAMILIES[family]}

    def sampler(rng: np.random.Generator) -> Optics:
        return randomised_optics(rng).replace(**fixed)

    return sampler


def make_chunk(n: int, seed: int, args, rng: np.random.Generator):
    """(prepared images, labels) of ``n`` fresh randomised cells."""
    import torch

    from napari_deparray_ctc.core.inference.preprocess import DEFAULT_NORMALISATION, prepare_batch
    from napari_deparray_ctc.core.synth import synth_cells

    crop = int(rng.choice([48, 56, 64, 72, 80, 96]))
    cells = synth_cells(
        n,
        ctc_fraction=0.5,
        seed=seed,
        image_size=crop,
        n_samples=max(1, n // 25),
        optics_sampler=held_out_sampler(getattr(args, "hold_out", None)),
        biology_jitter=1.0,
    )
    spec = {**DEFAULT_NORMALISATION, "pixel_size_um": args.pixel_size}
    known = rng.random(n) >= args.unknown_fraction
    sizes = [c.pixel_size_um if k else None for c, k in zip(cells, known, strict=True)]
    x = torch.cat(
        [
            prepare_batch(
                [c.channels["BF"] for c in cells[i : i + 256]],
                args.size,
                spec,
                pixel_sizes=sizes[i : i + 256],
            )
            for i in range(0, n, 256)
        ]
    )
    y = torch.tensor([1.0 if c.label == "CTC" else 0.0 for c in cells])
    return x, y


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=48000)
    parser.add_argument("--chunk", type=int, default=2000)
    parser.add_argument("--val-cells", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--pixel-size", type=float, default=0.55)
    parser.add_argument("--unknown-fraction", type=float, default=0.3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="/tmp/synthetic_resnet18.pt")
    parser.add_argument(
        "--hold-out",
        choices=("none", *MECHANISM_FAMILIES),
        default="none",
        help="family of variation left out of the pretraining (fields fixed at the defaults)",
    )
    parser.add_argument(
        "--randconv",
        type=float,
        default=0.0,
        help="probability of a random convolution per cell (0: none, the shipped recipe)",
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.cells, args.chunk, args.val_cells = 600, 300, 200

    import torch

    from napari_deparray_ctc.core.evaluation.metrics import pr_auc, roc_auc
    from napari_deparray_ctc.core.model.network import build_network
    from napari_deparray_ctc.core.model.pretrained import save_weights
    from napari_deparray_ctc.core.training.augment import augment_batch, build_augmentation
    from napari_deparray_ctc.core.training.fit import predict_logits

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    network = build_network("resnet18")
    # random convolutions first, then the three families, clamped (as training composes them)
    transform = build_augmentation("all", random_convolution=args.randconv)
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-4, fused=True)
    chunks = math.ceil(args.cells / args.chunk)
    total_steps = chunks * math.ceil(args.chunk / args.batch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=args.lr, total_steps=total_steps, pct_start=0.05
    )
    criterion = torch.nn.BCEWithLogitsLoss()
    x_val, y_val = make_chunk(args.val_cells, args.seed + 999_999, args, rng)
    started = time.perf_counter()
    log = []
    for c in range(chunks):
        t0 = time.perf_counter()
        x, y = make_chunk(args.chunk, args.seed * 1000 + c, args, rng)
        made = time.perf_counter() - t0
        network.train()
        order = torch.randperm(len(y))
        loss_sum = 0.0
        for start in range(0, len(y), args.batch):
            idx = order[start : start + args.batch]
            if len(idx) < 2:
                continue
            xb = augment_batch(x[idx], transform)
            optimiser.zero_grad(set_to_none=True)
            loss = criterion(network(xb).reshape(-1), y[idx])
            loss.backward()
            optimiser.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(idx)
        logits = predict_logits(network, x_val, "cpu")
        probs = 1 / (1 + np.exp(-logits))
        record = {
            "chunk": c + 1,
            "cells_seen": (c + 1) * args.chunk,
            "train_loss": loss_sum / len(y),
            "val_pr_auc": pr_auc(y_val.numpy(), probs),
            "val_roc_auc": roc_auc(y_val.numpy(), probs),
            "synth_s": made,
            "elapsed_s": time.perf_counter() - started,
        }
        log.append(record)
        print(json.dumps(record), flush=True)
    meta = {
        "arch": "resnet18",
        "image_size": args.size,
        "pixel_size_um": args.pixel_size,
        "cells": chunks * args.chunk,
        "hold_out": args.hold_out,
        "randconv": args.randconv,
        "command": "python benchmarks/pretrain.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "final_val_pr_auc": log[-1]["val_pr_auc"],
        "final_val_roc_auc": log[-1]["val_roc_auc"],
        "seconds": time.perf_counter() - started,
    }
    save_weights(Path(args.out), network, meta)
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
