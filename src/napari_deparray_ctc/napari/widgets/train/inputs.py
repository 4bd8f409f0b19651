"""What the "Train classifier" widget runs with, and where its model file goes.

Nothing here imports Qt or napari, so the inputs, their validation and the "never replace a
model with a worse one" rule are tested without a display.

* :class:`TrainInputs` is one dataclass whose defaults are read from
  :class:`napari_deparray_ctc.core.train.TrainConfig` (written once, there), mapped to a
  ``TrainConfig`` by :meth:`TrainInputs.to_config`.
* :func:`in_progress_path` is where training writes its best-so-far model while it runs
  (beside the chosen file, so the final rename is atomic); the chosen file itself is only
  replaced at the end, by :func:`decide_model_destination`.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "AUGMENT_FAMILIES",
    "ModelDestination",
    "TrainInputs",
    "config_defaults",
    "decide_model_destination",
    "default_ui_threads",
    "in_progress_path",
    "is_not_worse",
    "stored_val_f1",
    "stored_val_metrics",
]

#: the three augmentation families of the core contract (docs/ARCHITECTURE.md), spelled out so
#: that building the widget does not import torch (``core.augment`` does); a test checks that
#: they equal ``core.augment.FAMILIES``
AUGMENT_FAMILIES: tuple[str, ...] = ("geometric", "photometric", "noise")

#: model files (filter for the file dialog)
MODEL_FILE_FILTER = "Model files (*.pt *.pth);;All files (*)"


def config_defaults() -> dict[str, Any]:
    """Default value of every :class:`~napari_deparray_ctc.core.train.TrainConfig` field.

    Returns
    -------
    dict
        ``field name -> default`` (fields without a default are left out).
    """
    from napari_deparray_ctc.core.train import TrainConfig

    out: dict[str, Any] = {}
    for f in fields(TrainConfig):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def _default(name: str) -> Any:
    return config_defaults()[name]


def default_ui_threads() -> int:
    """Torch threads while napari is open: all cores but one, so the UI keeps a core.

    See ``benchmarks/bench_train_ui.py`` for the measurement behind this choice.
    """
    return max(1, (os.cpu_count() or 2) - 1)


def _choices() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    from napari_deparray_ctc.core.data import DAPI_STRATEGIES
    from napari_deparray_ctc.core.model import ARCHITECTURES

    return tuple(ARCHITECTURES), AUGMENT_FAMILIES, tuple(DAPI_STRATEGIES)


@dataclass
class TrainInputs:
    """Inputs of one training run from the widget.

    Attributes
    ----------
    bf_layer
        Name of the BF layer holding the annotated cells.
    dapi_layer
        Name of the DAPI layer paired with it, or ``None`` (needed unless
        ``dapi_strategy == "none"``).
    arch, epochs, image_size, batch_size, augment, dapi_strategy, val_fraction, seed
        As in ``TrainConfig`` (same defaults).
    out
        The model file to write.
    overwrite_if_worse
        Replace an existing model file even when its stored validation F1 is higher.
    num_threads
        Torch intra-op threads during training (default: all cores but one, see
        :func:`default_ui_threads`).
    """

    bf_layer: str | None = None
    dapi_layer: str | None = None
    arch: str = field(default_factory=lambda: _default("arch"))
    epochs: int = field(default_factory=lambda: _default("epochs"))
    image_size: int = field(default_factory=lambda: _default("image_size"))
    batch_size: int = field(default_factory=lambda: _default("batch_size"))
    augment: tuple[str, ...] = field(default_factory=lambda: tuple(_default("augment")))
    dapi_strategy: str = field(default_factory=lambda: _default("dapi_strategy"))
    val_fraction: float = field(default_factory=lambda: _default("val_fraction"))
    seed: int = field(default_factory=lambda: _default("seed"))
    out: str = ""
    overwrite_if_worse: bool = False
    num_threads: int | None = field(default_factory=default_ui_threads)

    def validation_error(self) -> str | None:
        """Why these inputs cannot run, or ``None`` when they can.

        Layer pairing and class counts are checked by the widget on the layers; this
        checks the values themselves and the output file.

        Returns
        -------
        str or None
            A sentence for the user, naming the file or value at fault.
        """
        archs, families, strategies = _choices()
        if not self.bf_layer:
            return "Choose the BF layer holding the annotated cells."
        if self.arch not in archs:
            return f"Unknown architecture {self.arch!r}; choose one of {', '.join(archs)}."
        if not isinstance(self.epochs, int) or self.epochs < 1:
            return f"Epochs must be a whole number of at least 1, not {self.epochs!r}."
        if not isinstance(self.image_size, int) or not 16 <= self.image_size <= 1024:
            return f"Image size must be between 16 and 1024 pixels, not {self.image_size!r}."
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            return f"Batch size must be at least 1, not {self.batch_size!r}."
        unknown = [a for a in self.augment if a not in families]
        if unknown:
            return f"Unknown augmentation {', '.join(unknown)}; choose among {', '.join(families)}."
        if self.dapi_strategy not in strategies:
            return (
                f"Unknown DAPI strategy {self.dapi_strategy!r}; choose one of "
                f"{', '.join(strategies)}."
            )
        if self.dapi_strategy != "none" and not self.dapi_layer:
            return (
                f"DAPI strategy {self.dapi_strategy!r} needs a DAPI layer: choose one, or set "
                "the strategy to 'none'."
            )
        if (
            not isinstance(self.val_fraction, int | float)
            or math.isnan(self.val_fraction)
            or not 0.05 <= self.val_fraction <= 0.5
        ):
            return f"Validation fraction must be between 0.05 and 0.5, not {self.val_fraction!r}."
        if not isinstance(self.seed, int) or self.seed < 0:
            return f"Seed must be a whole number >= 0, not {self.seed!r}."
        if self.num_threads is not None and self.num_threads < 1:
            return f"Threads must be at least 1, not {self.num_threads!r}."
        return self.output_error()

    def output_error(self) -> str | None:
        """Why the output model file cannot be written, or ``None``."""
        if not str(self.out).strip():
            return "Choose the output model file (e.g. my_model.pt)."
        path = Path(self.out).expanduser()
        if path.is_dir():
            return f"{path}: is a folder; choose a file name such as {path / 'model.pt'}."
        if not path.parent.is_dir():
            return f"{path}: the folder {path.parent} does not exist."
        if not os.access(path.parent, os.W_OK):
            return f"{path}: the folder {path.parent} is not writable."
        return None

    def to_config(self, out: str | os.PathLike | None = None, **overrides: Any):
        """The core ``TrainConfig`` for these inputs.

        Parameters
        ----------
        out
            Where training writes its best-so-far model (default: :func:`in_progress_path`
            of :attr:`out`, never the chosen file itself).
        **overrides
            Other ``TrainConfig`` fields (e.g. ``device``, ``patience``).

        Returns
        -------
        napari_deparray_ctc.core.train.TrainConfig
        """
        from napari_deparray_ctc.core.train import TrainConfig

        names = {f.name for f in fields(TrainConfig)}
        values: dict[str, Any] = {
            "arch": self.arch,
            "epochs": int(self.epochs),
            "image_size": int(self.image_size),
            "batch_size": int(self.batch_size),
            "augment": tuple(self.augment),
            "dapi_strategy": self.dapi_strategy,
            "val_fraction": float(self.val_fraction),
            "seed": int(self.seed),
            "num_threads": self.num_threads,
            "out": os.fspath(out) if out is not None else os.fspath(in_progress_path(self.out)),
        }
        values.update(overrides)
        unknown = sorted(set(values) - names)
        if unknown:
            raise TypeError(f"TrainConfig has no field(s) {', '.join(unknown)}")
        return TrainConfig(**values)


def in_progress_path(out: str | os.PathLike) -> Path:
    """Where the best-so-far model is written during training (beside ``out``).

    ``model.pt`` -> ``model.in-progress.pt`` in the same folder, so moving it onto ``out``
    at the end is an atomic rename, and a crash mid-training leaves the chosen file as it
    was (and the best model so far recoverable).
    """
    out = Path(out).expanduser()
    suffix = out.suffix or ".pt"
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}.in-progress{suffix}")


def _finite_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def stored_val_metrics(path: str | os.PathLike) -> tuple[float | None, float | None]:
    """Validation F1 and loss stored in a model file (``metadata["metrics"]``).

    Returns
    -------
    (f1, val_loss)
        Either is ``None`` when the file does not hold it.

    Raises
    ------
    napari_deparray_ctc.core.model.ModelFileError
        When the file is not a readable model file.
    """
    from napari_deparray_ctc.core.model import load_model

    metrics = load_model(path, device="cpu").metadata.get("metrics") or {}
    return _finite_or_none(metrics.get("f1")), _finite_or_none(metrics.get("val_loss"))


def stored_val_f1(path: str | os.PathLike) -> float | None:
    """Validation F1 stored in a model file's metadata (``metadata["metrics"]["f1"]``).

    Returns
    -------
    float or None
        ``None`` when the file holds no F1.

    Raises
    ------
    napari_deparray_ctc.core.model.ModelFileError
        When the file is not a readable model file.
    """
    return stored_val_metrics(path)[0]


def is_not_worse(
    new_f1: float | None,
    old_f1: float | None,
    new_val_loss: float | None = None,
    old_val_loss: float | None = None,
) -> bool:
    """Whether a new model is at least as good as an old one, as training itself judges.

    Higher validation F1 wins; equal F1 is broken by the lower validation loss (the same
    rule ``core.train`` uses to pick the best epoch). Unknown figures never count as worse
    on the old side, and always count as worse on the new side.
    """
    if old_f1 is None:
        return True
    if new_f1 is None:
        return False
    if new_f1 > old_f1 + 1e-9:
        return True
    if new_f1 < old_f1 - 1e-9:
        return False
    if new_val_loss is None or old_val_loss is None:
        return True
    return new_val_loss <= old_val_loss


@dataclass
class ModelDestination:
    """Where a newly trained model goes, and what to tell the user.

    Attributes
    ----------
    path
        The file to move the new model to.
    replaces
        ``True`` when ``path`` is the chosen file and a previous model there is replaced.
    kept_previous
        ``True`` when the chosen file holds a better (or unreadable) model that is kept.
    message
        One or two sentences for the user.
    """

    path: Path
    replaces: bool
    kept_previous: bool
    message: str


def _sibling(out: Path) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    suffix = out.suffix or ".pt"
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    candidate = out.with_name(f"{stem}-{stamp}{suffix}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = out.with_name(f"{stem}-{stamp}-{n}{suffix}")
    return candidate


def decide_model_destination(
    out: str | os.PathLike,
    new_f1: float | None,
    overwrite_if_worse: bool = False,
    new_val_loss: float | None = None,
) -> ModelDestination:
    """Decide where a finished (or stopped) training's best model is written.

    The chosen file is replaced when it does not exist, when the user ticked "overwrite
    even if worse", or when the new model is not worse than the one in the existing file
    (see :func:`is_not_worse`: validation F1 stored in the file's metadata, ties broken by
    validation loss). Otherwise the new model goes next to it, as
    ``<stem>-<YYYYmmdd-HHMMSS><suffix>``, and the existing file is left byte for byte
    intact. An existing file that is not a readable model is never replaced unasked.

    Parameters
    ----------
    out
        The model file the user chose.
    new_f1
        Validation F1 of the new model.
    overwrite_if_worse
        The user's "overwrite even if worse".
    new_val_loss
        Validation loss of the new model (breaks a tie in F1).

    Returns
    -------
    ModelDestination
    """
    from napari_deparray_ctc.core.model import ModelFileError

    out = Path(out).expanduser()
    new_text = "n/a" if new_f1 is None else f"{new_f1:.3f}"
    if not out.exists():
        return ModelDestination(out, False, False, f"Model saved to {out} (val F1 {new_text}).")
    if overwrite_if_worse:
        return ModelDestination(
            out,
            True,
            False,
            f"Model saved to {out} (val F1 {new_text}), replacing the previous one.",
        )
    try:
        old_f1, old_val_loss = stored_val_metrics(out)
    except ModelFileError as exc:
        sibling = _sibling(out)
        return ModelDestination(
            sibling,
            False,
            True,
            f"{out} is not a readable model file ({exc.reason}), so it was left untouched; "
            f"the new model (val F1 {new_text}) was saved as {sibling.name}. Tick "
            "'Overwrite even if worse' to replace it.",
        )
    if is_not_worse(new_f1, old_f1, new_val_loss, old_val_loss):
        old_text = "n/a" if old_f1 is None else f"{old_f1:.3f}"
        return ModelDestination(
            out,
            True,
            False,
            f"Model saved to {out} (val F1 {new_text}), replacing the previous one "
            f"(val F1 {old_text}).",
        )
    sibling = _sibling(out)
    if new_f1 is not None and abs(new_f1 - old_f1) <= 1e-9:
        why = f"ties with {out.name} on val F1 ({old_f1:.3f}) but has a higher validation loss"
    else:
        why = f"is worse than {out.name} (val F1 {old_f1:.3f})"
    return ModelDestination(
        sibling,
        False,
        True,
        f"The new model (val F1 {new_text}) {why}, so {out.name} was kept and the new model "
        f"was saved as {sibling.name}. Tick 'Overwrite even if worse' to replace it.",
    )
