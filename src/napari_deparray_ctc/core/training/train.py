"""Training: :class:`TrainConfig`, :func:`train` and :func:`cross_validate`.

:func:`train` **cross-fits** (``TrainConfig.folds``, stratified by class and grouped by sample
when samples are known): one network per fold is trained on the other folds and selected on
its own fold (``core.fit``), so every labelled cell gets an out-of-fold prediction. From those
predictions over the whole labelled set come

* the **calibration** of the logit (``core.calibration``), stored in the model file, so
  ``LoadedModel.predict_proba`` and ``classify(...).p_ctc`` are calibrated P(CTC);
* the **threshold**, and its spread across folds (``metadata["threshold_sd"]``);
* the **metrics** in the model file (``metadata["metrics"]``, with the per-class cell counts
  ``n_val`` they rest on), honest except for the choice of each fold's epoch;
* the **check that the model learned something**: its out-of-fold scores must rank CTCs
  above WBCs beyond chance (one-sided Mann-Whitney test) and beat the trivial calls
  ("everything CTC", "everything WBC"); otherwise ``TrainResult.learned`` is ``False`` and
  ``TrainResult.warning`` says so in one sentence, in the model file too.

The model is the **ensemble** of the fold networks (their mean logit), or with
``ensemble=False`` the fold network with the best held-out score. Defaults live here only
(:class:`TrainConfig`); each field carries its UI range and help text in its metadata
(:func:`config_field_defaults`, :meth:`TrainConfig.field_specs`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_deparray_ctc.core.constants import (
    ARCHITECTURES,
    AUGMENT_FAMILIES,
    DAPI_STRATEGIES,
    DEFAULT_IMAGE_SIZE,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
)
from napari_deparray_ctc.core.errors import TrainingDataError
from napari_deparray_ctc.core.training.outcome import TrainProgress, TrainResult
from napari_deparray_ctc.core.training.training_set import (
    MIN_PER_CLASS,
    TrainingSet,
    check_training_set,
    load_training_set,
)

__all__ = [
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainingDataError",
    "config_field_defaults",
    "cross_validate",
    "fine_tuning_settings",
    "train",
]

_DAPI_HELP = (
    "How DAPI images enter training; classification always reads bright-field only. "
    "none: bright-field only. substitute: each DAPI image is an extra training image with "
    "its cell's label (the seed paper's method). blend: an extra image mixing the cell's "
    "bright-field with a little of its DAPI, which shows where the nucleus is. aux_nucleus: "
    "the network also learns to draw the nucleus from bright-field (a training-only task)."
)


def _setting(default: Any, help: str, **ui: Any) -> Any:
    """A dataclass field with its UI metadata (``min``, ``max``, ``step``, ``choices``, ``help``)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults need a factory")
    return field(default=default, metadata={"help": help, **ui})


@dataclass
class TrainConfig:
    """All training settings with their defaults, written once, here.

    Every field's metadata holds its help text (``"help"``) and, where it has one, its UI
    range (``"min"``, ``"max"``, ``"step"``) or ``"choices"``: the CLI and the widget build
    their options from it (:meth:`field_specs`).
    """

    arch: str = _setting("resnet18", "Network architecture.", choices=ARCHITECTURES)
    epochs: int = _setting(
        10,
        "Most epochs per fold (training stops earlier when the held-out score no longer improves).",
        min=1,
        max=1000,
        step=1,
    )
    image_size: int = _setting(
        DEFAULT_IMAGE_SIZE,
        "Network input side in pixels; cells are resized to it.",
        min=MIN_IMAGE_SIZE,
        max=MAX_IMAGE_SIZE,
        step=8,
    )
    batch_size: int = _setting(32, "Training batch size.", min=2, max=1024, step=2)
    lr: float = _setting(
        3e-4,
        "Peak learning rate (AdamW, cosine decay); 3e-4 fine-tunes the pretrained weights "
        "gently (1e-3 suits training from random weights).",
        min=1e-6,
        max=1.0,
    )
    weight_decay: float = _setting(1e-4, "AdamW weight decay.", min=0.0, max=1.0)
    augment: tuple[str, ...] = _setting(
        AUGMENT_FAMILIES,
        "Augmentation families: geometric (flips, rotations, small shifts), photometric "
        "(brightness, contrast, gamma, illumination gradient, blur) and noise (Gaussian, shot, "
        "speckle). They make the model hold up on other instruments.",
        choices=AUGMENT_FAMILIES,
    )
    dapi_strategy: str = _setting("none", _DAPI_HELP, choices=DAPI_STRATEGIES)
    folds: int = _setting(
        3,
        "Cross-fitting folds: each fold's network is trained on the other "
        "folds, and every labelled cell is scored by a network that did not "
        "see it; the threshold and the calibration come from those scores. "
        "1 = one validation split of 'val_fraction'.",
        min=1,
        max=10,
        step=1,
    )
    val_fraction: float = _setting(
        0.2,
        "Fraction of cells (or samples) held out for validation when folds is 1.",
        min=0.05,
        max=0.5,
        step=0.05,
    )
    seed: int = _setting(
        0,
        "Seed of initialisation, splits, shuffling and augmentation "
        "(the same seed gives the same model on a CPU).",
        min=0,
        max=2**31 - 1,
        step=1,
    )
    patience: int = _setting(
        4, "Epochs without a better held-out score before a fold stops.", min=1, max=1000, step=1
    )
    train_layers: str = _setting(
        "all",
        "Which layers training changes: all, or head (only the last layer of a pretrained "
        "network; fast, and it cannot forget what pretraining learned).",
        choices=("all", "head"),
    )
    ensemble: bool = _setting(
        True,
        "Keep every fold's network and average them (more robust on other instruments, "
        "slower to classify); off keeps the best fold's network.",
    )
    flat_field: bool = _setting(
        False,
        "Divide out the illumination plane fitted to each crop's border (a flat-field "
        "correction) before the intensity scaling, in training and classification alike.",
    )
    random_convolution: bool = _setting(
        True,
        "Show half of the training cells through a random linear filter (RandConv), which "
        "changes local contrast and edges but not shape or size, so the network leans less "
        "on the training instrument's optics; part of augmentation (none when no family is "
        "chosen); classification is unchanged.",
    )
    style_noise: bool = _setting(
        False,
        "While training, re-draw the per-cell means and spreads of the network's early "
        "feature maps (DSU), so it leans less on the training instrument's contrast and "
        "texture; classification is unchanged.",
    )
    morphology: bool = _setting(
        False,
        "Combine the network's score with explicit cell-shape features (size, elongation, "
        "outline, inner contrast, rim, texture) measured on the network's input: a logistic "
        "regression on both, fitted on the out-of-fold scores, makes the call.",
    )
    calibration: str = _setting(
        "platt",
        "How P(CTC) is calibrated on the out-of-fold scores: platt (two numbers), isotonic "
        "or none.",
        choices=("platt", "isotonic", "none"),
    )
    threshold_rule: str = _setting(
        "half_f1",
        "How the threshold is chosen on the calibrated out-of-fold P(CTC): half_f1 (half "
        "the best F1, the optimum for calibrated scores, and steadier) or f1 (best F1).",
        choices=("f1", "half_f1"),
    )
    pixel_size_um: float | None = _setting(
        0.55,
        "Canonical pixel size (µm) of the network input: cells whose pixel size is known "
        "are rescaled to it, so cell sizes mean the same on every camera. None: crops are "
        "resized whole.",
        min=0.05,
        max=5.0,
    )
    device: str | None = _setting(None, "cuda, mps or cpu; None picks the best available.")
    pretrained: str | None = _setting(
        "synthetic",
        "Starting weights: synthetic (shipped: pretrained on randomised synthetic cells), "
        "imagenet (torchvision's ImageNet weights, downloaded into the torch cache on first "
        "use; offline: the synthetic ones, with a warning), None (random), auto (ImageNet "
        "weights only if already in the local torch cache) or a model file to fine-tune.",
    )
    out: str | None = _setting(None, "Model file to write (atomically; the best model so far).")
    num_threads: int | None = _setting(
        None, "Torch CPU threads during training (None: leave as is).", min=1, max=256, step=1
    )
    data_paths: tuple[str, ...] = _setting((), "Exports to read when train() gets no data.")
    channel_map: str | None = _setting(None, "Channel map file for reading data_paths.")
    aux_weight: float = _setting(
        0.5, "Weight of the nucleus loss (dapi_strategy aux_nucleus).", min=0.0, max=10.0, step=0.1
    )
    min_per_class: int = _setting(
        MIN_PER_CLASS, "Fewest labelled cells of each class.", min=1, max=1000, step=1
    )

    def validated(self) -> TrainConfig:
        """A checked copy (augment as a canonical tuple, paths as str); ValueError naming a field."""
        from napari_deparray_ctc.core.training.augment import check_families
        from napari_deparray_ctc.core.training.calibration import CALIBRATIONS, THRESHOLD_RULES

        cfg = dataclasses.replace(self)
        if cfg.arch not in ARCHITECTURES:
            raise ValueError(
                f"arch {cfg.arch} is not known; choose one of {', '.join(ARCHITECTURES)}"
            )
        for name in ("epochs", "image_size", "batch_size", "seed", "folds", "val_fraction"):
            error = setting_error(name, getattr(cfg, name))  # the fields' own ranges
            if error:
                raise ValueError(error)
        _check_int("patience", cfg.patience, 1)
        _check_int("min_per_class", cfg.min_per_class, 1)
        if cfg.num_threads is not None:
            _check_int("num_threads", cfg.num_threads, 1)
        for name in ("lr", "weight_decay", "aux_weight"):
            value = getattr(cfg, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, not {value}")
        if cfg.lr <= 0:
            raise ValueError(f"lr must be > 0, not {cfg.lr}")
        if cfg.pixel_size_um is not None and not (
            isinstance(cfg.pixel_size_um, (int, float)) and 0 < cfg.pixel_size_um < 100
        ):
            raise ValueError(f"pixel_size_um must be a positive number, not {cfg.pixel_size_um}")
        cfg.augment = check_families(cfg.augment)
        if cfg.train_layers == "head" and cfg.pretrained is None:
            raise ValueError("train_layers head needs pretrained weights to start from")
        for name, allowed in (
            ("train_layers", ("all", "head")),
            ("dapi_strategy", DAPI_STRATEGIES),
            ("calibration", CALIBRATIONS),
            ("threshold_rule", THRESHOLD_RULES),
        ):
            if getattr(cfg, name) not in allowed:
                raise ValueError(
                    f"{name} {getattr(cfg, name)} is not known; choose one of {', '.join(allowed)}"
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

    @classmethod
    def field_specs(cls) -> dict[str, dict[str, Any]]:
        """``{field: {"default", "help", "min", "max", "step", "choices"}}`` (UI keys if set)."""
        defaults = config_field_defaults()
        return {
            f.name: {"default": defaults[f.name], **dict(f.metadata)}
            for f in dataclasses.fields(cls)
        }


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number, not {value}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, not {value}")


def setting_range(name: str) -> tuple[float | None, float | None]:
    """``(min, max)`` of a :class:`TrainConfig` field: the one copy of its allowed range
    (the widget's spin boxes and every check read it)."""
    found = {f.name: f for f in dataclasses.fields(TrainConfig)}[name]
    return found.metadata.get("min"), found.metadata.get("max")


def setting_error(name: str, value: Any, label: str | None = None) -> str | None:
    """Why ``value`` is not allowed for the :class:`TrainConfig` field ``name``, in words
    (``None`` when it is). ``label`` names the setting for the user (default: ``name``)."""
    low, high = setting_range(name)
    label = label or name
    whole = isinstance(found_default := getattr(TrainConfig, name, None), int) and not isinstance(
        found_default, bool
    )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{label} must be a number, not {value!r}"
    if whole and not isinstance(value, int):
        return f"{label} must be a whole number, not {value!r}"
    if not math.isfinite(value):
        return f"{label} must be a finite number, not {value!r}"
    if low is not None and high is not None and not low <= value <= high:
        return f"{label} must be between {low:g} and {high:g}, not {value!r}"
    if low is not None and value < low:
        return f"{label} must be at least {low:g}, not {value!r}"
    if high is not None and value > high:
        return f"{label} must be at most {high:g}, not {value!r}"
    return None


def _as_training_set(config: TrainConfig, data: TrainingSet | None) -> TrainingSet:
    if data is not None:
        if not isinstance(data, TrainingSet):
            raise TypeError(f"data must be a TrainingSet, not a {type(data).__name__}")
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
    """Train a BF-only CTC classifier (see the module docstring).

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
    from napari_deparray_ctc.core.training.crossfit import run_crossfit

    config = config.validated()
    ts_all = _as_training_set(config, data)
    ts = check_training_set(ts_all, min_per_class=config.min_per_class)
    return run_crossfit(config, ts, len(ts_all) - len(ts), progress, should_stop)


def cross_validate(
    config: TrainConfig,
    data: TrainingSet | None = None,
    k: int = 5,
    progress: Callable[[TrainProgress], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """k-fold cross-validation of the whole training procedure.

    For each outer fold, :func:`train` runs on the other folds (with its own cross-fitting,
    calibration and threshold) and the model is scored on the held-out fold, which it never
    saw in any way. Folds are by sample group when groups are known. ``config.out`` is
    ignored (no model file is written).

    Parameters
    ----------
    config
        Settings (see :class:`TrainConfig`).
    data
        The cells; ``None`` reads ``config.data_paths``.
    k
        Number of outer folds.
    progress
        As for :func:`train`; ``fold``/``folds`` count the outer folds, ``step``/``steps``
        the batches of every outer fold (its total estimated from the first fold's).
    should_stop
        As for :func:`train`; a cancel ends the current fold and skips the rest.

    Returns
    -------
    dict
        JSON-safe: ``k``, ``folds`` (per fold: ``fold``, ``n_train``, ``n_test``,
        ``threshold``, ``learned``, ``metrics``), ``mean`` and ``sd`` over the completed
        folds of precision, recall, f1, average_precision, accuracy, roc_auc and ece,
        ``summary`` (``"0.812 ± 0.034"``), ``threshold_sd``, ``config``, ``cancelled`` and
        ``data_summary``.
    """
    from napari_deparray_ctc.core.evaluation.metrics import classification_metrics, summarise_folds
    from napari_deparray_ctc.core.inference.classify import classify
    from napari_deparray_ctc.core.training.splits import kfold_splits

    config = dataclasses.replace(config.validated(), out=None)
    ts = check_training_set(_as_training_set(config, data), min_per_class=config.min_per_class)
    outer = kfold_splits(ts.labels, ts.groups, k, config.seed)
    records: list[dict] = []
    cancelled = False
    run_steps: list[int] = []  # the run's steps, estimated as k times the first fold's
    for i, (trainval, test) in enumerate(outer, start=1):
        if should_stop is not None and should_stop():
            cancelled = True
            break

        def report(p: TrainProgress, i: int = i) -> None:
            if progress is None:
                return
            step, steps = p.step, p.steps
            if step is not None and steps:
                if not run_steps:
                    run_steps.append(steps * k)
                per_fold = run_steps[0] / k
                steps = run_steps[0]
                step = min(steps, round((i - 1 + step / p.steps) * per_fold))
            progress(dataclasses.replace(p, fold=i, folds=k, step=step, steps=steps))

        inner = ts.subset(trainval)
        try:
            result = train(
                dataclasses.replace(config, seed=config.seed + i), inner, report, should_stop
            )
        except TrainingDataError as exc:
            raise TrainingDataError(f"fold {i} of {k}: {exc.reason}") from None
        test_set = ts.subset(test)
        predictions = classify(
            test_set.bf, result.model, cell_ids=test_set.ids(), pixel_size=test_set.pixel_sizes
        )
        records.append(
            {
                "fold": i,
                "n_train": len(trainval),
                "n_test": len(test),
                "threshold": result.model.threshold,
                "learned": result.learned,
                "metrics": classification_metrics(
                    test_set.labels, predictions.p_ctc, result.model.threshold
                ),
            }
        )
        if result.cancelled:
            cancelled = True
            break
    keys = ("precision", "recall", "f1", "average_precision", "accuracy", "roc_auc", "ece")
    stats = summarise_folds([r["metrics"] for r in records], keys)
    thresholds = [r["threshold"] for r in records]
    return {
        "k": k,
        "folds": records,
        "mean": stats["mean"],
        "sd": stats["sd"],
        "summary": {
            key: f"{stats['mean'][key]:.3f} ± {stats['sd'][key]:.3f}" for key in stats["mean"]
        },
        "threshold_sd": float(np.std(thresholds, ddof=1)) if len(thresholds) > 1 else 0.0,
        "config": config.to_dict(),
        "cancelled": cancelled,
        "data_summary": ts.summary(),
    }


def fine_tuning_settings(
    start_metadata: Mapping[str, Any],
    start_path: str | os.PathLike,
    given: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The :class:`TrainConfig` values for fine-tuning a model file (the one rule).

    Fine-tuning starts from the weights of a model file, so it takes that model's
    architecture and input size (a model without a stored size was trained at
    :data:`~napari_deparray_ctc.core.constants.DEFAULT_IMAGE_SIZE`), unless ``given`` sets
    them explicitly; every other setting is the caller's.

    Parameters
    ----------
    start_metadata
        The starting model's metadata (``LoadedModel.metadata``).
    start_path
        The starting model file; it becomes ``pretrained``.
    given
        Settings the user chose (``TrainConfig`` field names); they win over the model's
        ``arch`` and ``image_size``.

    Returns
    -------
    dict
        ``arch``, ``image_size``, the ``given`` settings and ``pretrained`` (the path): pass
        to ``TrainConfig(**...)`` or ``dataclasses.replace``.

    Raises
    ------
    ValueError
        ``given`` already names other starting weights (``pretrained``).
    """
    given = dict(given or {})
    if given.get("pretrained"):
        raise ValueError(
            "fine-tuning starts from the model's own weights: give either a model to start "
            "from or pretrained weights, not both"
        )
    values: dict[str, Any] = {
        "image_size": int(start_metadata.get("image_size") or DEFAULT_IMAGE_SIZE),
    }
    if start_metadata.get("arch"):
        values["arch"] = str(start_metadata["arch"])
    return {**values, **given, "pretrained": os.fspath(Path(start_path).expanduser())}


def config_field_defaults() -> dict[str, Any]:
    """``{field: default}`` of :class:`TrainConfig`: the one way to read the defaults."""
    return TrainConfig().to_dict()
