"""Shared data and the base model of the explain / adapt / learn-actively benchmarks.

The **base model** is the default pipeline (``TrainConfig`` defaults except ``epochs``) trained
on the *reference* instrument (``core.synth.DOMAINS["reference"]``), with the training cells'
feature summary written into the model file (``core.shift.training_feature_summary``), as
training will store it. It is cached in ``--cache`` (default ``benchmarks/results/cache``), so
the benchmarks that use it (explain, counts, fine-tune) train it once.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / "results" / "cache"

#: the base model's training cells: reference optics, 4 samples, 25 % CTC
BASE_CELLS = 600
BASE_SAMPLES = 4
BASE_SEED = 11
BASE_CTC_FRACTION = 0.25
BASE_EPOCHS = 8


def one_thread() -> None:
    """One torch thread (the measurements share two cores with other work)."""
    import torch

    torch.set_num_threads(1)


def training_set(cells):
    """A ``TrainingSet`` from synthetic cells (BF, DAPI, labels, ids, samples)."""
    from napari_deparray_ctc.core.training.training_set import TrainingSet

    return TrainingSet(
        bf=[c.channels["BF"] for c in cells],
        labels=[c.label for c in cells],
        dapi=[c.channels["DAPI"] for c in cells],
        cell_ids=[c.cell_id for c in cells],
        groups=[c.sample for c in cells],
    )


def domain_cells(name: str, n: int, seed: int, ctc_fraction: float = 0.2, n_samples: int = 1):
    """``n`` synthetic cells of the benchmark domain ``name``."""
    from napari_deparray_ctc.core.synth import domain, synth_cells

    d = domain(name)
    return synth_cells(
        n,
        ctc_fraction=ctc_fraction,
        seed=seed,
        optics=d.optics,
        image_size=d.image_size,
        n_samples=n_samples,
    )


def base_cells():
    """The base model's training cells."""
    return domain_cells("reference", BASE_CELLS, BASE_SEED, BASE_CTC_FRACTION, BASE_SAMPLES)


def store_feature_summary(path: Path, cells) -> None:
    """Write the training cells' feature summary into a model file (what training will do)."""
    from napari_deparray_ctc.core.inference.shift import training_feature_summary
    from napari_deparray_ctc.core.model.loaded import load_model, save_model

    model = load_model(path, device="cpu")
    if "feature_summary" not in model.metadata:
        summary = training_feature_summary(
            [c.channels["BF"] for c in cells], [c.sample for c in cells]
        )
        save_model(path, model, {"feature_summary": summary})


def base_model(cache: Path = DEFAULT_CACHE, epochs: int = BASE_EPOCHS) -> Path:
    """The cached base model file (trained now when missing)."""
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"base_reference_{BASE_CELLS}c_{epochs}e.pt"
    cells = base_cells()
    if not path.is_file():
        start = time.perf_counter()
        print(f"training the base model ({BASE_CELLS} reference cells, {epochs} epochs) ...")
        result = train(
            TrainConfig(epochs=epochs, num_threads=1, seed=0, out=str(path)),
            data=training_set(cells),
        )
        m = result.model.metadata["metrics"]
        print(
            f"  done in {time.perf_counter() - start:.0f} s: out-of-fold F1 {m['f1']:.3f}, "
            f"PR-AUC {m['average_precision']:.3f}"
        )
    store_feature_summary(path, cells)
    return path


def common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cache`` and ``--json``."""
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="base model cache")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")


def write_json(path: Path | None, obj) -> None:
    """Write the figures as JSON when asked."""
    if path is None:
        return
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=float) + "\n")
    print(f"figures written to {path}")


def mean_sd(values) -> str:
    """``0.812 ± 0.034`` (sample sd)."""
    v = np.asarray(values, dtype=float)
    sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return f"{v.mean():.3f} ± {sd:.3f}"


if __name__ == "__main__":  # pragma: no cover - train the cache on its own
    parser = argparse.ArgumentParser(description=__doc__)
    common_arguments(parser)
    parser.add_argument("--epochs", type=int, default=BASE_EPOCHS)
    args = parser.parse_args()
    one_thread()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(base_model(args.cache, args.epochs))
