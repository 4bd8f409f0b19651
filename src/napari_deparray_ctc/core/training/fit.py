"""Fitting one network: the training loop, model selection and early stopping.

``core.train`` calls :func:`fit_network` once per fold. Design choices (measured in
``benchmarks/quality.py``, see ``docs/quality.md``):

* **Class imbalance: weighted loss.** ``BCEWithLogitsLoss(pos_weight = n_WBC / n_CTC)``: every
  sample is seen once per epoch (a balanced sampler would repeat the few CTCs), with the same
  expected gradient balance. The probability scale it produces is shifted; the calibration
  fitted afterwards (``core.calibration``) removes that.
* **Model selection on a proper score.** After every epoch the network scores the held-out
  cells; the epoch kept is the one with the lowest *calibrated* validation log-loss (the
  log-loss after a two-parameter Platt fit on those cells). Unlike F1 at a free threshold,
  this cannot prefer an untrained network: calling everything CTC has the log-loss of the
  class prior, the worst a calibrated model can do. Unlike the raw log-loss, it does not stop
  training merely because the scores grow more confident, which calibration undoes anyway.
  Training stops after ``patience`` epochs without improvement. When starting from
  pretrained weights, the starting network is a candidate too (epoch 0): fine-tuning never
  ends worse than where it started.
* **Optimiser**: AdamW with cosine learning-rate decay per batch, fused where torch supports
  it; a 1-sample tail batch joins the previous one (BatchNorm needs two).
* **BatchNorm statistics** used at evaluation are the plain average over the last epoch's
  batches (reset at each epoch, ``momentum=None``), not torch's running average with
  momentum 0.1, which with a few batches per epoch (a few dozen cells) still remembers its
  initial values and makes the evaluated network output nonsense.
* ``train_layers="head"`` trains only the last layer (``fc``) of a pretrained network, whose
  BatchNorm statistics stay as they were (a linear probe: quick, and hard to over-fit).
* **Reproducibility**: seeds for torch (inside ``torch.random.fork_rng``, so the caller's RNG
  is untouched), shuffling and augmentation; on CPU ``torch.use_deterministic_algorithms(True,
  warn_only=True)``. Data stay in the main process.
* **GPU**: automatic mixed precision (``torch.autocast`` float16 + ``GradScaler``).
* **Cancel**: ``should_stop()`` is checked before every batch; the best epoch so far is kept,
  and if no epoch has finished the current weights are scored and kept.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FitOutcome", "fit_network", "predict_logits", "torch_session", "weighted_bce"]


@contextlib.contextmanager
def torch_session(seed: int, device: str, num_threads: int | None) -> Iterator[None]:
    """Threads, determinism and a seeded RNG for one training run; all restored afterwards."""
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


def n_batches(n_samples: int, batch_size: int) -> int:
    """Batches per epoch for ``n_samples`` (see :func:`_batches`)."""
    full = math.ceil(n_samples / batch_size)
    return full - 1 if full > 1 and n_samples % batch_size == 1 else full


def _adamw(params, lr: float, weight_decay: float):
    """AdamW, fused when this torch/device supports it (6x faster steps on CPU, same maths)."""
    import torch

    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # pragma: no cover - old torch / device
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def predict_logits(network, images, device, batch_size: int = 256) -> np.ndarray:
    """Logits of a prepared tensor stack, eval mode, no gradient (AMP on CUDA)."""
    import torch

    was_training = network.training
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
    network.train(was_training)
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def weighted_bce(logits: np.ndarray, y: np.ndarray, pos_weight: float = 1.0) -> float:
    """Mean weighted BCE from logits (numerically stable), as torch computes it."""
    log_sig = -np.logaddexp(0.0, -logits)
    log_one_minus = -np.logaddexp(0.0, logits)
    loss = -(pos_weight * y * log_sig + (1 - y) * log_one_minus)
    return float(loss.mean()) if loss.size else float("nan")


def validation_scores(logits: np.ndarray, y: np.ndarray, pos_weight: float) -> dict[str, float]:
    """Everything an epoch is judged by: calibrated log-loss, raw loss, PR-AUC, F1."""
    from napari_deparray_ctc.core.evaluation.metrics import best_threshold, pr_auc
    from napari_deparray_ctc.core.training.calibration import apply_calibration, fit_calibration

    p = apply_calibration(fit_calibration(logits, y, "platt"), logits)
    eps = 1e-7
    p = np.clip(p, eps, 1 - eps)
    calibrated = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    threshold, f1 = best_threshold(y, p)
    return {
        "val_calibrated_loss": calibrated,
        "val_loss": weighted_bce(logits, y, pos_weight),
        "val_pr_auc": pr_auc(y, p),
        "val_f1": f1,
        "val_threshold": threshold,
    }


class NucleusHead:
    """Auxiliary head for ``dapi_strategy="aux_nucleus"`` (training only, never saved).

    A forward hook on ``network.layer2`` (stride 8) captures the feature map; a small conv
    head predicts the coarse DAPI image from it. The hook is removed by :meth:`close`.
    """

    def __init__(self, network, device):
        import torch
        from torch import nn

        channels = network.layer2[-1].conv1.in_channels  # block output width
        self.module = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, 1, 1)
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


@dataclass
class FitOutcome:
    """What :func:`fit_network` returns.

    Attributes
    ----------
    network
        The network with the selected epoch's weights, eval mode.
    val_logits
        Its logits on the held-out cells (aligned with the validation data).
    best_epoch
        The selected epoch (0 = the starting weights).
    history
        One dict per epoch: epoch, train_loss, the :func:`validation_scores`, lr, seconds.
    cancelled, stopped_early
        Why training ended before ``epochs``.
    pos_weight
        The class weight of the loss.
    """

    network: Any
    val_logits: np.ndarray
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    cancelled: bool = False
    stopped_early: bool = False
    pos_weight: float = 1.0


@dataclass
class Schedule:
    """How a fit reports progress: its place among all the steps of a run."""

    steps_before: int = 0
    steps_total: int = 0
    started: float = field(default_factory=time.perf_counter)


def fit_network(
    config,
    network,
    train_data,
    val_data,
    report: Callable[..., Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    schedule: Schedule | None = None,
    on_epoch: Callable[[FitOutcome], Any] | None = None,
    dist=None,
) -> FitOutcome:
    """Train ``network`` on ``train_data`` and keep its best epoch on ``val_data``.

    Parameters
    ----------
    config
        A validated ``TrainConfig`` (epochs, batch size, lr, augmentation, DAPI strategy,
        patience, device, aux weight).
    network
        The network to train (on ``config.device``); ``network.pretrained_source`` not
        ``None`` makes the starting weights a candidate (epoch 0).
    train_data, val_data
        ``core.samples.PreparedData`` of the training and held-out cells.
    report
        Called with ``TrainProgress`` keyword arguments after each batch and epoch.
    should_stop
        Checked before every batch; ``True`` cancels.
    schedule
        Steps done before this fit and in the whole run (for the ETA).
    on_epoch
        Called with the outcome so far after every improving epoch.
    dist
        A ``core.distributed.DistContext`` when running under torchrun (see that module),
        else ``None``.

    Returns
    -------
    FitOutcome
    """
    import torch

    from napari_deparray_ctc.core.training.augment import (
        RANDOM_CONVOLUTION_P,
        augment_batch,
        build_augmentation,
        is_identity,
    )
    from napari_deparray_ctc.core.training.distributed import DistContext
    from napari_deparray_ctc.core.training.samples import SampleBank
    from napari_deparray_ctc.core.training.style_noise import StyleNoise

    ctx = dist or DistContext(device=config.device)
    dev = torch.device(config.device)
    use_amp = dev.type == "cuda"
    schedule = schedule or Schedule()
    bank = SampleBank(train_data, config.dapi_strategy)
    labels = bank.labels
    n_pos = float(labels.sum())
    pos_weight = (float(len(labels)) - n_pos) / max(n_pos, 1.0)
    criterion = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=dev))
    aux = NucleusHead(network, dev) if bank.strategy == "aux_nucleus" else None
    style = StyleNoise(network) if getattr(config, "style_noise", False) else None
    frozen = getattr(config, "train_layers", "all") == "head"
    for name, param in network.named_parameters():
        param.requires_grad_(not frozen or name.startswith("fc."))
    params = [p for p in network.parameters() if p.requires_grad]
    params += list(aux.module.parameters()) if aux else []
    optimiser = _adamw(params, config.lr, config.weight_decay)
    order_rng = torch.Generator().manual_seed(int(config.seed))
    per_epoch = n_batches(len(bank), config.batch_size)
    total = config.epochs * per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    transform = build_augmentation(
        config.augment,
        RANDOM_CONVOLUTION_P if getattr(config, "random_convolution", False) else 0.0,
    )
    augmenting = not is_identity(transform)
    y_val = val_data.y.numpy().astype(np.float64)
    outcome = FitOutcome(network=network, val_logits=np.zeros(0), best_epoch=-1)
    outcome.pos_weight = pos_weight
    best: dict[str, Any] | None = None
    bad_epochs = 0
    steps = 0

    def progress(**kwargs: Any) -> None:
        if report is None or not ctx.is_main:
            return
        done = schedule.steps_before + steps
        elapsed = time.perf_counter() - schedule.started
        remaining = max(schedule.steps_total - done, 0)
        eta = elapsed / done * remaining if done else None
        report(elapsed_s=elapsed, eta_s=eta, **kwargs)

    def judge(epoch: int, train_loss: float | None, started: float) -> bool:
        nonlocal best, bad_epochs
        ctx.sync_buffers(network)  # every rank judges with rank 0's BatchNorm statistics
        logits = ctx.gather_logits(lambda x: predict_logits(network, x, dev), val_data.bf)
        scores = validation_scores(logits, y_val, pos_weight)
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            **scores,
            "lr": float(optimiser.param_groups[0]["lr"]),
            "seconds": time.perf_counter() - started,
        }
        outcome.history.append(record)
        improved = best is None or scores["val_calibrated_loss"] < best["score"] - 1e-4
        if improved:
            best = {
                "epoch": epoch,
                "score": scores["val_calibrated_loss"],
                "logits": logits,
                "state": {k: v.detach().clone() for k, v in network.state_dict().items()},
            }
            bad_epochs = 0
        else:
            bad_epochs += 1
        return improved

    def select() -> None:
        assert best is not None
        outcome.best_epoch = best["epoch"]
        outcome.val_logits = best["logits"]

    trainer = ctx.wrap(network)  # DistributedDataParallel under torchrun
    network.train()
    if getattr(network, "pretrained_source", None) is not None:
        judge(0, None, time.perf_counter())
        bad_epochs = 0
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        network.train()
        for m in norms:
            if frozen:  # a frozen backbone keeps its statistics
                m.eval()
            else:  # BatchNorm statistics: the average over this epoch's batches
                m.reset_running_stats()
                m.momentum = None
        batches = _batches(torch.randperm(len(bank), generator=order_rng), config.batch_size)
        loss_sum, seen = 0.0, 0
        if ctx.active:  # each rank needs two samples of a batch (BatchNorm)
            batches = [b for b in batches if len(b) >= 2 * ctx.world]
        for b, indices in enumerate(batches, start=1):
            if ctx.any(should_stop is not None and should_stop()):
                outcome.cancelled = True
                break
            x, y, nucleus = bank.batch(ctx.share(indices, labels))
            if augmenting:
                if nucleus is not None:
                    x, nucleus = augment_batch(x, transform, nucleus)
                else:
                    x = augment_batch(x, transform)
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                loss = criterion(trainer(x).reshape(-1).float(), y)
                if aux is not None:
                    loss = loss + config.aux_weight * aux.loss(nucleus.to(dev))
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            scheduler.step()
            steps += 1
            loss_sum += float(loss.detach()) * len(indices)
            seen += len(indices)
            progress(
                epoch=epoch,
                epochs=config.epochs,
                batch=b,
                batches=len(batches),
                phase="batch",
                train_loss=loss_sum / seen,
            )
        train_loss = loss_sum / seen if seen else None
        if outcome.cancelled:
            if best is None:  # nothing judged yet: the current weights are all there is
                judge(epoch, train_loss, started)
            break
        improved = judge(epoch, train_loss, started)
        last = outcome.history[-1]
        progress(
            epoch=epoch,
            epochs=config.epochs,
            batch=len(batches),
            batches=len(batches),
            phase="epoch_end",
            train_loss=train_loss,
            val_loss=last["val_loss"],
            val_f1=last["val_f1"],
        )
        if improved and on_epoch is not None:
            select()
            current = {k: v.detach().clone() for k, v in network.state_dict().items()}
            network.load_state_dict(best["state"])
            on_epoch(outcome)
            network.load_state_dict(current)
        if bad_epochs >= config.patience:
            outcome.stopped_early = True
            break
    if aux is not None:
        aux.close()
    if style is not None:
        style.close()
    assert best is not None
    network.load_state_dict(best["state"])
    network.eval()
    select()
    return outcome
