"""What a training run reports while it runs (:class:`TrainProgress`) and returns
(:class:`TrainResult`): shared by ``train`` and ``crossfit`` without importing either."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainProgress:
    """Progress report passed to the ``progress`` callable.

    ``phase`` is ``"batch"`` after each training batch, ``"epoch_end"`` after each
    validation, and ``"done"`` once at the end. ``fold``/``folds`` (1-based) say which
    cross-fitting fold (or which :func:`cross_validate` fold) is training; ``epoch``,
    ``batch`` and their totals count within that fold.

    ``step``/``steps`` count over the **whole run**, every fold together: ``steps`` is the
    number of training batches planned (every fold, every epoch) and ``step`` those done or
    skipped so far (a fold that stops early skips the rest of its batches, so ``step`` jumps
    ahead; it never goes back, and is ``steps`` at ``"done"`` unless cancelled). One progress
    bar from 0 to ``steps`` spans the run; ``None`` when the caller does not know them. In
    :func:`cross_validate` they count the outer folds' batches (estimated from the first).
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
    step: int | None = None
    steps: int | None = None


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    model
        The trained model (eval mode; calibration and threshold in its metadata).
    metrics
        Out-of-fold metrics of every labelled cell at the stored threshold (``core.metrics.
        classification_metrics`` plus ``n_val``, ``trivial``, ``p_value``, ``best_epoch``...).
    history
        One dict per epoch and fold: fold, epoch, train_loss, val_loss, val_calibrated_loss,
        val_pr_auc, val_f1, val_threshold, lr, seconds.
    stopped_early
        ``True`` when every fold stopped on patience.
    cancelled
        ``True`` when ``should_stop()`` ended training.
    out_path
        Where the model was written, if ``config.out``.
    learned
        ``False`` when the model did not beat chance and the trivial calls on held-out cells.
    warning
        One sentence for the user when something is wrong with the result, else ``None``.
    oof
        The out-of-fold predictions: ``{"logits", "y", "fold"}`` lists over the labelled
        cells that were held out (for benchmarks; not stored in the model file).
    """

    model: Any
    metrics: dict
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    cancelled: bool = False
    out_path: str | None = None
    learned: bool = True
    warning: str | None = None
    oof: dict | None = None
