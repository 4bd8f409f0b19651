"""What the "Train classifier" widget runs with (no Qt, no torch at import).

:class:`TrainInputs` holds the layers, the model file and the settings; every setting's
default, range and help text come from :class:`~napari_deparray_ctc.core.training.train.TrainConfig`
(:func:`field_spec`), so the widget never restates a default or a range. The model-file
policy (in-progress file, "never replace a better model") is ``core.model_files``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_deparray_ctc.core.constants import (
    ARCHITECTURES,
    AUGMENT_FAMILIES,
    DAPI_STRATEGIES,
    background_threads,
)

__all__ = ["SETTINGS", "FieldSpec", "TrainInputs", "field_spec"]

#: the TrainConfig fields the widget shows, in order
SETTINGS = (
    "arch",
    "epochs",
    "image_size",
    "augment",
    "dapi_strategy",
    "val_fraction",
    "seed",
    "morphology",
)


@dataclass(frozen=True)
class FieldSpec:
    """A setting as the widget shows it: default, range, step, choices and tooltip."""

    name: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    help: str = ""


_CHOICES = {"arch": ARCHITECTURES, "dapi_strategy": DAPI_STRATEGIES, "augment": AUGMENT_FAMILIES}


@functools.cache  # TrainConfig's fields do not change while napari runs; a dock asks 16 times
def field_spec(name: str) -> FieldSpec:
    """The widget's view of a ``TrainConfig`` field (its default and its metadata)."""
    from napari_deparray_ctc.core.training.train import TrainConfig, config_field_defaults

    found = {f.name: f for f in dataclasses.fields(TrainConfig)}[name]
    meta = dict(found.metadata)
    return FieldSpec(
        name=name,
        default=config_field_defaults()[name],
        minimum=meta.get("min"),
        maximum=meta.get("max"),
        step=meta.get("step"),
        choices=tuple(meta.get("choices") or _CHOICES.get(name) or ()) or None,
        help=str(meta.get("help", "")),
    )


def _default(name: str) -> Any:
    return field_spec(name).default


@dataclass
class TrainInputs:
    """Inputs of one training run from the widget.

    Attributes
    ----------
    bf_layer
        Name of the BF layer holding the annotated cells.
    dapi_layer
        Name of the DAPI layer paired with it, or ``None``.
    arch, epochs, image_size, batch_size, augment, dapi_strategy, val_fraction, seed
        As in ``TrainConfig`` (same defaults).
    out
        The model file to write.
    overwrite_if_worse
        Replace an existing model file even when it is better.
    init_from
        A model file to start from (fine-tuning a lab's model), or ``None``.
    num_threads
        Torch threads during training (all cores but one: the UI keeps a core).
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
    morphology: bool = field(default_factory=lambda: _default("morphology"))
    out: str = ""
    overwrite_if_worse: bool = False
    init_from: str | None = None
    num_threads: int | None = field(default_factory=background_threads)

    def validation_error(self) -> str | None:
        """Why these inputs cannot run (a sentence naming the value at fault), or ``None``."""
        if not self.bf_layer:
            return "Choose the BF layer holding the annotated cells."
        if self.arch not in ARCHITECTURES:
            return f"Unknown architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}."
        from napari_deparray_ctc.core.training.train import setting_error

        for name, label in (
            ("epochs", "Epochs"),
            ("image_size", "Image size (pixels)"),
            ("batch_size", "Batch size"),
            ("val_fraction", "Validation fraction"),
            ("seed", "Seed"),
        ):
            error = setting_error(name, getattr(self, name), label)  # TrainConfig's ranges
            if error:
                return f"{error}."
        unknown = [a for a in self.augment if a not in AUGMENT_FAMILIES]
        if unknown:
            return f"Unknown augmentation {', '.join(unknown)}; choose among {', '.join(AUGMENT_FAMILIES)}."
        if self.dapi_strategy not in DAPI_STRATEGIES:
            return f"Unknown DAPI strategy {self.dapi_strategy!r}; choose one of {', '.join(DAPI_STRATEGIES)}."
        if self.dapi_strategy != "none" and not self.dapi_layer:
            return (
                f"DAPI strategy {self.dapi_strategy!r} needs a DAPI layer: choose one, or set "
                "the strategy to 'none'."
            )
        if self.init_from is not None and not Path(self.init_from).expanduser().is_file():
            return f"{self.init_from}: the model to start from does not exist."
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
        """The core ``TrainConfig``; it writes to ``out`` (default: the in-progress file)."""
        from napari_deparray_ctc.core.model.file_policy import in_progress_path
        from napari_deparray_ctc.core.training.train import TrainConfig

        values: dict[str, Any] = {
            "arch": self.arch,
            "epochs": int(self.epochs),
            "image_size": int(self.image_size),
            "batch_size": int(self.batch_size),
            "augment": tuple(self.augment),
            "dapi_strategy": self.dapi_strategy,
            "val_fraction": float(self.val_fraction),
            "seed": int(self.seed),
            "morphology": bool(self.morphology),
            "num_threads": self.num_threads,
            "out": os.fspath(out) if out is not None else os.fspath(in_progress_path(self.out)),
        }
        if self.init_from:
            values["pretrained"] = os.fspath(Path(self.init_from).expanduser())
        values.update(overrides)
        return TrainConfig(**values)
