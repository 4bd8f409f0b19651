"""Training throughput: ``core.train`` vs a plain PyTorch training loop, side by side.

Both sides train the same network (``core.model.build_network``: one-channel ResNet, one
logit) on the same cells, with the same train/validation split, batch size, optimiser
(AdamW, same lr and weight decay), weighted BCE loss and number of epochs, and both run one
validation pass per epoch. Each side's clock covers everything from the raw 16-bit images to
the trained network: normalising/resizing the images once, building the network, the epochs
and the validation passes. ``core.train`` runs with ``folds=1`` (one network on one split, like
the plain loop; its default cross-fitting trains one network per fold) and additionally
scores and calibrates each epoch on validation, keeps the best epoch's weights, chooses the
threshold and builds the model metadata; that overhead is part of what the ratio measures. DAPI strategy ``none`` on both sides (a strategy that adds samples would
change the work, not the speed).

Measured twice: augmentation off, and all three families on (the plain loop applies the same
``core.augment.build_augmentation`` transform per sample). Repetitions alternate between the
two sides and the best time of each is kept.

Usage::

    python benchmarks/bench_train.py [--arch resnet18] [--cells 320] [--epochs 2] [--size 64]
        [--batch-size 32] [--threads 1] [--repeats 2] [--json OUT.json]

Prints samples/s (training samples x epochs / wall time) for each side and the ratio
core / plain.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings


def plain_training(bf, labels, train_idx, val_idx, args, augment: tuple[str, ...]) -> float:
    """A textbook PyTorch loop doing the same job; returns wall seconds."""
    import torch

    from napari_deparray_ctc.core.model.loaded import build_network, prepare_batch
    from napari_deparray_ctc.core.training.augment import augment_batch, build_augmentation

    t0 = time.perf_counter()
    torch.manual_seed(0)
    x = prepare_batch(bf, image_size=args.size)
    y = torch.tensor([1.0 if v == "CTC" else 0.0 for v in labels])
    x_train, y_train = x[train_idx], y[train_idx]
    x_val = x[val_idx]
    network = build_network(args.arch)
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=args.wd)
    pos_weight = (y_train == 0).sum() / (y_train == 1).sum().clamp(min=1)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    transform = build_augmentation(augment) if augment else None
    generator = torch.Generator().manual_seed(0)
    for _ in range(args.epochs):
        network.train()
        order = torch.randperm(len(x_train), generator=generator)
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            if len(idx) < 2:
                continue
            xb = x_train[idx]
            if transform is not None:
                xb = augment_batch(xb, transform)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(network(xb).reshape(-1), y_train[idx])
            loss.backward()
            optimiser.step()
        network.eval()
        with torch.inference_mode():
            torch.cat(
                [
                    torch.sigmoid(network(x_val[i : i + 256]).reshape(-1))
                    for i in range(0, len(x_val), 256)
                ]
            )
    return time.perf_counter() - t0


def core_training(ts, args, augment: tuple[str, ...]) -> tuple[float, int]:
    """core.train with the same settings; returns (wall seconds, training samples)."""
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    config = TrainConfig(
        arch=args.arch,
        epochs=args.epochs,
        image_size=args.size,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.wd,
        augment=augment,
        dapi_strategy="none",
        val_fraction=args.val_fraction,
        folds=1,  # one network on one split, as the plain loop (cross-fitting trains k)
        seed=0,
        patience=args.epochs + 1,
        device="cpu",
        num_threads=args.threads,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(config, data=ts)
    dt = time.perf_counter() - t0
    assert len(result.history) == args.epochs, "core.train stopped early; raise --epochs/patience"
    return dt, int(result.model.metadata["data_summary"]["n_train"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--cells", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--wd", type=float, default=1e-4)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch

    from napari_deparray_ctc.core.synth import synth_cells
    from napari_deparray_ctc.core.training import TrainingSet, split_train_val

    torch.set_num_threads(args.threads)
    cells = synth_cells(args.cells, 0.2, seed=5, image_size=64)
    bf = [c.channels["BF"] for c in cells]
    labels = [c.label for c in cells]
    ts = TrainingSet(bf=bf, labels=labels)
    train_idx, val_idx = split_train_val(labels, None, args.val_fraction, seed=0)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); {args.arch} at {args.size} px, "
        f"{len(train_idx)} training + {len(val_idx)} validation cells, batch {args.batch_size}, "
        f"{args.epochs} epochs, best of {args.repeats}"
    )
    results = {"settings": vars(args), "cases": []}
    for augment in ((), ("geometric", "photometric", "noise")):
        plain_s, core_s = [], []
        n_train = len(train_idx)
        for _ in range(args.repeats):
            plain_s.append(plain_training(bf, labels, train_idx, val_idx, args, augment))
            dt, n_train = core_training(ts, args, augment)
            core_s.append(dt)
        samples = n_train * args.epochs
        plain_sps, core_sps = samples / min(plain_s), samples / min(core_s)
        name = "all three families" if augment else "off"
        case = {
            "augment": list(augment),
            "plain_samples_per_s": plain_sps,
            "core_samples_per_s": core_sps,
            "core_vs_plain": core_sps / plain_sps,
            "plain_s": plain_s,
            "core_s": core_s,
        }
        results["cases"].append(case)
        print(
            f"augmentation {name:<18}: plain loop {plain_sps:7.1f} samples/s, "
            f"core.train {core_sps:7.1f} samples/s -> ratio {core_sps / plain_sps:.3f}x"
        )
    if args.json:
        from napari_deparray_ctc.core.atomic import atomic_write

        with atomic_write(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
