"""Real bright-field sanity check: what a model trained on synthetic cells calls real cells.

Not an accuracy figure: neither set is DEPArray data (``../shared/real-cells/README.md``).

* **Jurkat** (imaging flow cytometry, Blasi et al. 2016, 40 x 40 px bright-field tiles): a
  leukaemic T-cell line, leukocyte lineage, so few should be called CTC. The pixel size is not
  in the files; the check is run with it unknown (tiles resized whole) and with assumed pixel
  sizes (``--jurkat-pixel-sizes``), since a 40 px tile of an imaging flow cytometer shows a
  much smaller field than a 64 px DEPArray-like crop.
* **ATOM** (Meng et al. 2018, 128 x 128 px): MCF7 and MB231 breast-cancer lines against PBMC
  and THP1; a smoke test only (each class was imaged in its own acquisition).

The model is ``--model`` or, by default, one trained here on ``--train-cells`` synthetic
reference cells with the current ``TrainConfig`` defaults. Prints, per set, the fraction called
CTC at the model's threshold and the median P(CTC); ``--json`` writes them.

Usage::

    python benchmarks/real_cells_check.py [--model M.pt] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
DEFAULT_REAL = Path(__file__).resolve().parents[2] / "shared" / "real-cells"


def atom_images(folder: Path) -> dict[str, list[np.ndarray]]:
    from PIL import Image

    out: dict[str, list[np.ndarray]] = {}
    for path in sorted(folder.glob("*.jpg")):
        kind = path.stem.split("_")[0]
        out.setdefault(kind, []).append(np.asarray(Image.open(path).convert("L"), dtype=np.uint8))
    return out


def train_default(cells: int, seed: int, threads: int):
    from quality import _as_set

    from napari_deparray_ctc.core.synth import DOMAINS, synth_cells
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    ref = DOMAINS["reference"]
    ts = _as_set(synth_cells(cells, 0.25, seed=seed, optics=ref.optics, n_samples=6))
    return train(TrainConfig(num_threads=threads, device="cpu", seed=seed), ts).model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--real", default=str(DEFAULT_REAL))
    parser.add_argument("--train-cells", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jurkat-pixel-sizes", default="0.33,0.5")
    parser.add_argument("--adapt", action="store_true", help="also with BatchNorm re-estimation")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch
    from realism_check import load_jurkat_tiles

    from napari_deparray_ctc.core.inference.classify import classify
    from napari_deparray_ctc.core.model.loaded import load_model

    torch.set_num_threads(args.threads)
    real = Path(args.real)
    t0 = time.perf_counter()
    model = (
        load_model(args.model, device="cpu")
        if args.model
        else train_default(args.train_cells, args.seed, args.threads)
    )
    trained_s = time.perf_counter() - t0
    bf, _ = load_jurkat_tiles(real)
    sets = {
        "Jurkat (leukocyte line)": (
            list(bf),
            [None] + [float(s) for s in args.jurkat_pixel_sizes.split(",")],
        )
    }
    for kind, images in atom_images(real / "atom-meng2018").items():
        sets[f"ATOM {kind}"] = (images, [None])
    rows = []
    for name, (images, sizes) in sets.items():
        for size in sizes:
            for adapt in (False, True) if args.adapt else (False,):
                p = classify(images, model, pixel_size=size, adapt=adapt).p_ctc
                rows.append(
                    {
                        "set": name,
                        "cells": len(images),
                        "pixel_size_um": size,
                        "adapt": adapt,
                        "called_ctc": float(np.mean(p >= model.threshold)),
                        "median_p_ctc": float(np.median(p)),
                    }
                )
    print(
        f"model: {args.model or f'trained here on {args.train_cells} synthetic cells ({trained_s:.0f} s)'}"
        f"; threshold {model.threshold:.3f}; trained pixel size "
        f"{model.normalisation.get('pixel_size_um')}"
    )
    print(
        f"{'set':26s} {'cells':>5s} {'pixel um':>9s} {'adapt':>5s} {'called CTC':>10s} {'median P':>8s}"
    )
    for r in rows:
        size = "unknown" if r["pixel_size_um"] is None else f"{r['pixel_size_um']:.2f}"
        print(
            f"{r['set']:26s} {r['cells']:5d} {size:>9s} {r['adapt']!s:>5s} "
            f"{r['called_ctc']:10.1%} {r['median_p_ctc']:8.3f}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "model": args.model, "threshold": model.threshold}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
