"""Training: :class:`TrainConfig`, :func:`train` and :func:`cross_validate`.

Design choices (each measured or argued; see also ``core.data`` for DAPI strategies)
-----------------------------------------------------------------------------------
* **Defaults live here only** (:class:`TrainConfig`); widgets and the CLI read them.
* **Class imbalance: weighted loss.** ``BCEWithLogitsLoss(pos_weight = n_WBC / n_CTC)`` over
  the training samples. A balanced sampler would show the few CTCs (often 1–20 %) many times
  per epoch, so an epoch grows by up to 5–50 × in CPU time or repeats the same few images,
  which over-fits them; the weighted loss sees every sample once per epoch and gives the
  same expected gradient balance. The probability scale it produces is shifted, which does
  not matter because the decision threshold is chosen on validation anyway.
* **Validation split** is stratified by class, and by sample/patient group when groups are
  known (``core.data.split_train_val``). Validation is bright-field only, never augmented.
* **Model selection / early stopping** on the validation F1 at its best threshold
  (``core.metrics.best_threshold``); equal F1 is broken by a lower validation loss (so a set
  that reaches F1 = 1 early still keeps the better calibrated epoch). Training stops after
  ``patience`` epochs without improvement; the best epoch's weights and threshold are kept.
* **Optimiser**: AdamW with cosine learning-rate decay per batch (no tuning needed for short
  CPU runs), fused where torch supports it (a fused CPU step of ResNet18 takes ~40 ms instead
  of ~230 ms, which matters for small batches); BatchNorm batches of size 1 are avoided by
  merging a 1-sample tail batch.
* **Reproducibility**: seeds are set for torch (inside ``torch.random.fork_rng``, so the
  caller's global RNG state is untouched), the shuffling generator and the split; on CPU
  ``torch.use_deterministic_algorithms(True, warn_only=True)``: the same seed gives the same
  weights. Data are prepared in the main process (``num_workers = 0``).
* **Speed on a 2-core CPU**: every image is normalised and resized once up front; batches
  are gathered from those tensors and augmented per sample on the fly (~0.8 ms per 64 px
  image for all three families); no DataLoader process overhead.
* **GPU**: automatic mixed precision (``torch.autocast`` float16 + ``GradScaler``).
* **Cancel** (``should_stop()`` is checked before every batch, so a cancel takes effect
  within one batch): the best model so far is returned. If no epoch has finished yet, the
  current weights are evaluated on the validation set (threshold chosen there as usual) and
  returned, so the caller always gets a usable model. ``config.out`` is only ever written
  atomically with a complete model: after each improving epoch (so it always holds the best
  model so far, even if the process is killed) and once more at the end with final metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_deparray_ctc.core.data import (
    DAPI_STRATEGIES,
    MIN_PER_CLASS,
    TrainingDataError,
    TrainingSet,
    check_training_set,
    kfold_splits,
    load_training_set,
    split_train_val,
)
from napari_deparray_ctc.core.model import (
    ARCHITECTURES,
    CLASS_NAMES,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NORMALISATION,
    FORMAT_VERSION,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    LoadedModel,
)

__all__ = [
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainingDataError",
    "config_field_defaults",
    "cross_validate",
    "default_config",
    "train",
]


@dataclass
class TrainConfig:
    """All training settings, with their defaults (written once, here).

    Attributes
    ----------
    arch
        ``"resnet18"`` | ``"resnet34"`` | ``"resnet50"``.
    epochs
        Maximum number of epochs.
    image_size
        Network input side in pixels.
    batch_size
        Training batch size.
    lr
        Peak learning rate (AdamW, cosine decay).
    weight_decay
        AdamW weight decay.
    augment
        Subset of ``("geometric", "photometric", "noise")``.
    dapi_strategy
        ``"none"`` | ``"substitute"`` | ``"blend"`` | ``"aux_nucleus"`` (see ``core.data``).
        The default ``"substitute"`` is the seed paper's method; the benchmark ablation
        (``benchmarks/``) is what should confirm or change it.
    val_fraction
        Fraction of cells (or groups) held out for validation.
    seed
        Seed of initialisation, split, shuffling and augmentation.
    patience
        Epochs without validation-F1 improvement before stopping.
    device
        ``None`` = auto (cuda > mps > cpu), or a device string.
    pretrained
        ``None`` (random init), ``"auto"`` (ImageNet weights from the local torch cache if
        present) or a path to weights.
    out
        Model file to write (atomically; best model so far), or ``None``.
    num_threads
        torch intra-op threads during training (``None`` = leave as is).
    data_paths
        Export folders/files to read when ``train`` gets no ``data`` (CLI).
    channel_map
        Channel map file/spec for reading ``data_paths``.
    aux_weight
        Weight of the auxiliary nucleus loss (``dapi_strategy="aux_nucleus"`` only).
    min_per_class
        Fewest labelled cells per class accepted.
    """

    arch: str = "resnet18"
    epochs: int = 20
    image_size: int = DEFAULT_IMAGE_SIZE
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: tuple[str, ...] = ("geometric", "photometric", "noise")
    dapi_strategy: str = "substitute"
    val_fraction: float = 0.2
    seed: int = 0
    patience: int = 5
    device: str | None = None
    pretrained: str | None = None
    out: str | None = None
    num_threads: int | None = None
    data_paths: tuple[str, ...] = ()
    channel_map: str | None = None
    aux_weight: float = 0.5
    min_per_class: int = MIN_PER_CLASS

    def validated(self) -> TrainConfig:
        """A checked copy with normalised fields (augment as a canonical tuple, paths as str).

        Raises
        ------
        ValueError
            A setting is out of range; the message names the setting.
        """
        from napari_deparray_ctc.core.augment import check_families

        cfg = dataclasses.replace(self)
        if cfg.arch not in ARCHITECTURES:
            raise ValueError(f"arch {cfg.arch!r} unknown; choose one of {', '.join(ARCHITECTURES)}")
        _check_int("epochs", cfg.epochs, 1)
        _check_int("image_size", cfg.image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        _check_int("batch_size", cfg.batch_size, 2)
        _check_int("patience", cfg.patience, 1)
        _check_int("seed", cfg.seed, 0)
        _check_int("min_per_class", cfg.min_per_class, 1)
        if cfg.num_threads is not None:
            _check_int("num_threads", cfg.num_threads, 1)
        for name in ("lr", "weight_decay", "aux_weight"):
            value = getattr(cfg, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if cfg.lr <= 0:
            raise ValueError(f"lr must be > 0, got {cfg.lr!r}")
        if not 0.0 < float(cfg.val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, got {cfg.val_fraction!r}")
        cfg.augment = check_families(cfg.augment)
        if cfg.dapi_strategy not in DAPI_STRATEGIES:
            raise ValueError(
                f"dapi_strategy {cfg.dapi_strategy!r} unknown; choose one of "
                f"{', '.join(DAPI_STRATEGIES)}"
            )
        if isinstance(cfg.data_paths, (str, os.PathLike)):
            cfg.data_paths = (cfg.data_paths,)
        cfg.data_paths = tuple(os.fspath(p) for p in cfg.data_paths)
        if cfg.out is not None:
            cfg.out = os.fspath(cfg.out)
            folder = os.path.dirname(os.path.abspath(cfg.out))
            if not os.path.isdir(folder):
                raise ValueError(
                    f"{cfg.out}: the folder {folder} for the model file does not exist"
                )
            if os.path.isdir(cfg.out):
                raise ValueError(f"{cfg.out}: is a folder; give a model file name such as model.pt")
        if cfg.pretrained is not None:
            cfg.pretrained = os.fspath(cfg.pretrained)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of all fields (stored in the model metadata as ``train_config``)."""
        out = dataclasses.asdict(self)
        out["augment"] = list(self.augment)
        out["data_paths"] = [os.fspath(p) for p in self.data_paths]
        for key in ("out", "pretrained", "channel_map"):
            if out[key] is not None:
                out[key] = os.fspath(out[key])
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in names}
        for key in ("augment", "data_paths"):
            if key in kwargs and kwargs[key] is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")


@dataclass
class TrainProgress:
    """Progress report passed to the ``progress`` callable.

    ``phase`` is ``"batch"`` after each training batch, ``"epoch_end"`` after each
    validation, and ``"done"`` once at the end. ``fold``/``folds`` are set during
    :func:`cross_validate` (1-based fold number), otherwise ``None``.
    """

    epoch: int
    epochs: int
    batch: int
    batches: int
    phase: str
    train_loss: float | None = None
    val_loss: float | None = None
    val_f1: float | None = None
    best_f1: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None
    fold: int | None = None
    folds: int | None = None


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    model
        The best model (by validation F1), eval mode, threshold in its metadata.
    metrics
        Validation metrics of that model at its threshold: precision, recall, f1,
        threshold, confusion_matrix, pr_curve, average_precision, best_epoch, ... Note: the
        threshold and the epoch were chosen on this same validation set, so these figures
        are optimistic; use held-out data or :func:`cross_validate` for an unbiased estimate.
    history
        One dict per finished epoch: epoch, train_loss, val_loss, val_f1, val_threshold,
        lr, seconds.
    stopped_early
        ``True`` when patience ran out.
    cancelled
        ``True`` when ``should_stop()`` ended training.
    out_path
        Where the model was written, if ``config.out``.
    """

    model: LoadedModel
    metrics: dict
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    cancelled: bool = False
    out_path: str | None = None


# --------------------------------------------------------------------------------------------
# runtime context: threads, determinism, RNG isolation
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _torch_session(seed: int, device: str, num_threads: int | None) -> Iterator[None]:
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    dev = torch.device(device)
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    try:
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        if dev.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        if num_threads is not None:
            torch.set_num_threads(old_threads)


def _batches(order, batch_size: int) -> list:
    """Split a permutation into batches; a 1-sample tail joins the previous batch."""
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and chunks[-1].numel() == 1:
        import torch

        chunks[-2] = torch.cat([chunks[-2], chunks[-1]])
        chunks.pop()
    return chunks


def _adamw(params, lr: float, weight_decay: float):
    """AdamW, fused when this torch/device supports it (6x faster steps on CPU, same maths)."""
    import torch

    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # pragma: no cover - old torch / device
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _predict(network, images, device, batch_size: int = 256) -> np.ndarray:
    """Logits of a prepared tensor stack, eval mode, no gradient (AMP on CUDA)."""
    import torch

    network.eval()
    out = []
    dev = torch.device(device)
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(dev, non_blocking=True)
            with torch.autocast(
                device_type="cuda", dtype=torch.float16, enabled=dev.type == "cuda"
            ):
                logits = network(x)
            out.append(logits.float().reshape(-1).cpu())
    network.train()
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def _weighted_bce(logits: np.ndarray, y: np.ndarray, pos_weight: float) -> float:
    """Mean weighted BCE from logits (numerically stable), as torch computes it."""
    log_sig = -np.logaddexp(0.0, -logits)
    log_one_minus = -np.logaddexp(0.0, logits)
    loss = -(pos_weight * y * log_sig + (1 - y) * log_one_minus)
    return float(loss.mean()) if loss.size else float("nan")


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -logits))


class _NucleusHead:
    """Auxiliary head for ``dapi_strategy="aux_nucleus"`` (training only, never saved).

    A forward hook on ``network.layer2`` (stride 8) captures the feature map; a small conv
    head predicts the coarse DAPI image from it. The hook is removed by :meth:`close`.
    """

    def __init__(self, network, device):
        import torch
        from torch import nn

        channels = network.layer2[-1].conv1.in_channels  # block output width
        self.module = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 1, 1),
        ).to(device)
        self.features: torch.Tensor | None = None
        self._handle = network.layer2.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.features = output

    def loss(self, nucleus):
        import torch
        import torch.nn.functional as F

        assert self.features is not None
        pred = self.module(self.features).float()
        target = F.interpolate(nucleus, size=pred.shape[-2:], mode="area")
        valid = ~torch.isnan(target).flatten(1).any(dim=1)
        if not bool(valid.any()):
            return pred.sum() * 0.0
        return F.mse_loss(pred[valid], target[valid])

    def close(self) -> None:
        self._handle.remove()
        self.features = None


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def _as_training_set(config: TrainConfig, data: TrainingSet | None) -> TrainingSet:
    if data is not None:
        if not isinstance(data, TrainingSet):
            raise TypeError(f"data must be a TrainingSet, got {type(data).__name__}")
        return data
    if not config.data_paths:
        raise TrainingDataError("no training data: pass data or set config.data_paths")
    return load_training_set(list(config.data_paths), channel_map=config.channel_map)


def train(
    config: TrainConfig,
    data: TrainingSet | None = None,
    progress: Callable[[TrainProgress], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a BF-only CTC classifier.

    Parameters
    ----------
    config
        Settings (see :class:`TrainConfig`).
    data
        The cells; ``None`` reads ``config.data_paths`` with ``core.io``.
    progress
        Called with a :class:`TrainProgress` after every batch, every epoch and at the end.
    should_stop
        Called before every batch; returning ``True`` cancels (the best model so far is
        returned, ``result.cancelled`` is ``True``).

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingDataError
        Unusable data (one class, too few cells, NaN images, ...), before any training.
    ValueError
        An invalid setting (named in the message).
    """
    config = config.validated()
    ts_all = _as_training_set(config, data)
    ts = check_training_set(ts_all, min_per_class=config.min_per_class)
    train_idx, val_idx = split_train_val(ts.labels, ts.groups, config.val_fraction, config.seed)
    summary = _data_summary(ts_all, ts, train_idx, val_idx)
    return _fit(config, ts, train_idx, val_idx, summary, progress, should_stop)


def _data_summary(ts_all: TrainingSet, ts: TrainingSet, train_idx, val_idx) -> dict:
    summary = ts.summary()
    summary["n_unlabelled_dropped"] = len(ts_all) - len(ts)
    summary["n_train"] = len(train_idx)
    summary["n_val"] = len(val_idx)
    y = np.asarray([v == "CTC" for v in ts.labels])
    summary["n_val_ctc"] = int(y[val_idx].sum())
    summary["n_train_ctc"] = int(y[train_idx].sum())
    if ts.groups is not None:
        val_groups = sorted({str(ts.groups[i]) for i in val_idx if ts.groups[i] is not None})
        summary["split"] = "group"
        summary["val_groups"] = val_groups[:100]
    else:
        summary["split"] = "stratified"
    return summary


def _fit(
    config: TrainConfig,
    ts: TrainingSet,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    data_summary: dict,
    progress: Callable[[TrainProgress], Any] | None,
    should_stop: Callable[[], bool] | None,
    fold: tuple[int, int] | None = None,
) -> TrainResult:
    """Train on ``ts[train_idx]``, select on ``ts[val_idx]`` (both from a checked set)."""
    import torch

    from napari_deparray_ctc.core.augment import augment_batch, build_augmentation, is_identity
    from napari_deparray_ctc.core.data import SampleBank, prepare_tensors
    from napari_deparray_ctc.core.metrics import best_threshold, classification_metrics
    from napari_deparray_ctc.core.model import (
        build_network,
        package_versions,
        save_model,
        select_device,
    )

    device = select_device(config.device)
    dev = torch.device(device)
    use_amp = dev.type == "cuda"
    start = time.perf_counter()
    fold_no, folds = fold if fold is not None else (None, None)

    def report(**kwargs: Any) -> None:
        if progress is not None:
            progress(TrainProgress(fold=fold_no, folds=folds, **kwargs))

    with _torch_session(config.seed, device, config.num_threads):
        network = build_network(config.arch, config.pretrained).to(dev)
        pretrained_source = getattr(network, "pretrained_source", None)
        train_set = ts.subset(train_idx)
        val_set = ts.subset(val_idx)
        strategy = config.dapi_strategy
        prepared = prepare_tensors(
            train_set, config.image_size, DEFAULT_NORMALISATION, with_dapi=strategy != "none"
        )
        val_data = prepare_tensors(val_set, config.image_size, DEFAULT_NORMALISATION, False)
        y_val = val_data.y.numpy().astype(np.int64)
        bank = SampleBank(prepared, strategy)
        strategy = bank.strategy  # may have fallen back to "none"
        sample_labels = bank.labels
        n_pos = float(sample_labels.sum())
        n_neg = float(len(sample_labels) - n_pos)
        pos_weight = n_neg / max(n_pos, 1.0)
        criterion = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=dev))
        aux = _NucleusHead(network, dev) if strategy == "aux_nucleus" else None
        params = list(network.parameters()) + (list(aux.module.parameters()) if aux else [])
        optimiser = _adamw(params, config.lr, config.weight_decay)
        order_rng = torch.Generator().manual_seed(config.seed)
        batches_per_epoch = len(_batches(torch.arange(len(bank)), config.batch_size))
        total_steps = config.epochs * batches_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimiser,
            lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)),
        )
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        transform = build_augmentation(config.augment)
        augmenting = not is_identity(transform)

        history: list[dict] = []
        best: dict[str, Any] | None = None
        bad_epochs = 0
        stopped_early = cancelled = False
        steps_done = 0
        out_path: str | None = None
        network.train()

        def evaluate(epoch: int, train_loss: float | None, epoch_start: float) -> bool:
            """Validate; keep the state if it improves. Returns True on improvement."""
            nonlocal best, bad_epochs
            logits = _predict(network, val_data.bf, device)
            val_loss = _weighted_bce(logits, y_val.astype(np.float64), pos_weight)
            p_val = _sigmoid(logits)
            threshold, f1 = best_threshold(y_val, p_val)
            improved = best is None or (
                f1 > best["f1"] + 1e-9
                or (abs(f1 - best["f1"]) <= 1e-9 and val_loss < best["val_loss"] * (1 - 1e-3))
            )
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_f1": f1,
                "val_threshold": threshold,
                "lr": float(optimiser.param_groups[0]["lr"]),
                "seconds": time.perf_counter() - epoch_start,
            }
            history.append(record)
            if improved:
                best = {
                    "epoch": epoch,
                    "f1": f1,
                    "val_loss": val_loss,
                    "threshold": threshold,
                    "p_val": p_val,
                    "state": {k: v.detach().clone() for k, v in network.state_dict().items()},
                }
                bad_epochs = 0
            else:
                bad_epochs += 1
            return improved

        def metadata(final: bool) -> dict:
            assert best is not None
            metrics = classification_metrics(y_val, best["p_val"], best["threshold"])
            metrics.update(
                split="validation",
                best_epoch=best["epoch"],
                val_loss=best["val_loss"],
                epochs_run=len(history),
                final=final,
            )
            return {
                "arch": config.arch,
                "image_size": config.image_size,
                "normalisation": dict(DEFAULT_NORMALISATION),
                "input_channel": "BF",
                "class_names": list(CLASS_NAMES),
                "threshold": best["threshold"],
                "train_config": config.to_dict(),
                "seed": config.seed,
                "dapi_strategy": strategy,
                "augment": list(config.augment),
                "pretrained": pretrained_source,
                "data_summary": {**data_summary, "n_train_samples": len(bank)},
                "metrics": metrics,
                "history": history,
                "device": device,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "versions": package_versions(),
                "format_version": FORMAT_VERSION,
            }

        def write(final: bool) -> None:
            nonlocal out_path
            if config.out is None:
                return
            current = {k: v.detach().clone() for k, v in network.state_dict().items()}
            network.load_state_dict(best["state"])
            save_model(config.out, network, metadata(final))
            network.load_state_dict(current)
            out_path = config.out

        for epoch in range(1, config.epochs + 1):
            epoch_start = time.perf_counter()
            order = torch.randperm(len(bank), generator=order_rng)
            batches = _batches(order, config.batch_size)
            loss_sum, seen = 0.0, 0
            for b, indices in enumerate(batches, start=1):
                if should_stop is not None and should_stop():
                    cancelled = True
                    break
                x, y, nucleus = bank.batch(indices)
                if augmenting:
                    if nucleus is not None:
                        x, nucleus = augment_batch(x, transform, nucleus)
                    else:
                        x = augment_batch(x, transform)
                x = x.to(dev, non_blocking=True)
                y = y.to(dev, non_blocking=True)
                optimiser.zero_grad(set_to_none=True)
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                    logits = network(x).reshape(-1)
                    loss = criterion(logits.float(), y)
                    if aux is not None:
                        loss = loss + config.aux_weight * aux.loss(nucleus.to(dev))
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
                scheduler.step()
                steps_done += 1
                loss_sum += float(loss.detach()) * len(indices)
                seen += len(indices)
                elapsed = time.perf_counter() - start
                remaining = total_steps - steps_done
                report(
                    epoch=epoch,
                    epochs=config.epochs,
                    batch=b,
                    batches=len(batches),
                    phase="batch",
                    train_loss=loss_sum / seen,
                    best_f1=None if best is None else best["f1"],
                    elapsed_s=elapsed,
                    eta_s=elapsed / steps_done * remaining,
                )
            train_loss = loss_sum / seen if seen else None
            if cancelled:
                if best is None:
                    # No epoch finished: the current weights are all there is; evaluate them
                    # so the caller still gets a usable model with a validated threshold.
                    evaluate(epoch, train_loss, epoch_start)
                break
            improved = evaluate(epoch, train_loss, epoch_start)
            if improved:
                write(final=False)
            elapsed = time.perf_counter() - start
            report(
                epoch=epoch,
                epochs=config.epochs,
                batch=len(batches),
                batches=len(batches),
                phase="epoch_end",
                train_loss=train_loss,
                val_loss=history[-1]["val_loss"],
                val_f1=history[-1]["val_f1"],
                best_f1=best["f1"],
                elapsed_s=elapsed,
                eta_s=elapsed / max(steps_done, 1) * (total_steps - steps_done),
            )
            if bad_epochs >= config.patience:
                stopped_early = True
                break

        if aux is not None:
            aux.close()
        assert best is not None
        network.load_state_dict(best["state"])
        network.eval()
        meta = metadata(final=True)
        write(final=True)
        model = LoadedModel(network=network, metadata=meta, device=device)
        report(
            epoch=history[-1]["epoch"] if history else 0,
            epochs=config.epochs,
            batch=0,
            batches=batches_per_epoch,
            phase="done",
            train_loss=history[-1]["train_loss"] if history else None,
            val_loss=best["val_loss"],
            val_f1=best["f1"],
            best_f1=best["f1"],
            elapsed_s=time.perf_counter() - start,
            eta_s=0.0,
        )
    return TrainResult(
        model=model,
        metrics=meta["metrics"],
        history=history,
        stopped_early=stopped_early,
        cancelled=cancelled,
        out_path=out_path,
    )


def cross_validate(
    config: TrainConfig,
    data: TrainingSet | None = None,
    k: int = 5,
    progress: Callable[[TrainProgress], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """k-fold cross-validation: train on k-1 folds, evaluate on the held-out fold.

    Each fold's training part is split again (stratified / by group) into training and
    validation for early stopping and the threshold; the held-out fold is only used for the
    reported metrics, so these are unbiased. Folds are by sample group when groups are known.
    ``config.out`` is ignored (no model file is written).

    Parameters
    ----------
    config
        Settings (see :class:`TrainConfig`).
    data
        The cells; ``None`` reads ``config.data_paths``.
    k
        Number of folds.
    progress
        As for :func:`train`; :class:`TrainProgress` carries ``fold`` and ``folds``.
    should_stop
        As for :func:`train`; a cancel ends the current fold and skips the rest.

    Returns
    -------
    dict
        JSON-safe: ``k``, ``folds`` (per fold: ``fold``, ``n_train``, ``n_val``, ``n_test``,
        ``best_epoch``, ``stopped_early``, ``metrics``), ``mean`` and ``sd`` of precision,
        recall, f1, average_precision and accuracy over the completed folds, ``summary``
        (``"0.812 ± 0.034"`` strings), ``config`` and ``cancelled``.
    """
    from napari_deparray_ctc.core.classify import classify
    from napari_deparray_ctc.core.metrics import classification_metrics, summarise_folds

    config = dataclasses.replace(config.validated(), out=None)
    ts_all = _as_training_set(config, data)
    ts = check_training_set(ts_all, min_per_class=config.min_per_class)
    folds = kfold_splits(ts.labels, ts.groups, k, config.seed)
    records: list[dict] = []
    cancelled = False
    for i, (trainval, test) in enumerate(folds, start=1):
        if should_stop is not None and should_stop():
            cancelled = True
            break
        inner = ts.subset(trainval)
        try:
            tr, va = split_train_val(
                inner.labels, inner.groups, config.val_fraction, config.seed + i
            )
        except TrainingDataError as exc:
            raise TrainingDataError(f"fold {i} of {k}: {exc}") from None
        summary = _data_summary(inner, inner, tr, va)
        fold_cfg = dataclasses.replace(config, seed=config.seed + i)
        result = _fit(fold_cfg, inner, tr, va, summary, progress, should_stop, (i, k))
        test_set = ts.subset(test)
        predictions = classify(test_set.bf, result.model, cell_ids=test_set.ids())
        metrics = classification_metrics(test_set.labels, predictions.p_ctc, result.model.threshold)
        records.append(
            {
                "fold": i,
                "n_train": len(tr),
                "n_val": len(va),
                "n_test": len(test),
                "best_epoch": result.metrics.get("best_epoch"),
                "stopped_early": result.stopped_early,
                "metrics": metrics,
            }
        )
        if result.cancelled:
            cancelled = True
            break
    stats = summarise_folds([r["metrics"] for r in records])
    return {
        "k": k,
        "folds": records,
        "mean": stats["mean"],
        "sd": stats["sd"],
        "summary": {
            key: f"{stats['mean'][key]:.3f} ± {stats['sd'][key]:.3f}" for key in stats["mean"]
        },
        "config": config.to_dict(),
        "cancelled": cancelled,
        "data_summary": ts.summary(),
    }


def default_config() -> TrainConfig:
    """A fresh :class:`TrainConfig` with every default (for widgets and the CLI)."""
    return TrainConfig()


def config_field_defaults() -> dict[str, Any]:
    """``{field: default}`` of :class:`TrainConfig` (e.g. to fill CLI help texts)."""
    return TrainConfig().to_dict()
