"""What the "Classify cells" widget runs with: the inputs, the cell choices, the last model.

Nothing here imports Qt, napari or torch. The last model used is remembered across sessions
in a small JSON file in the user's config folder (``$DEPARRAY_CTC_CONFIG_DIR`` overrides).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CONFIG_DIR_ENV",
    "ClassifyInputs",
    "Target",
    "classify_targets",
    "config_dir",
    "exports_without_bf",
    "last_model_path",
    "remember_model_path",
]

#: environment variable that overrides where widget settings are kept
CONFIG_DIR_ENV = "DEPARRAY_CTC_CONFIG_DIR"
_SETTINGS_FILE = "classify_widget.json"


@dataclass(frozen=True)
class Target:
    """One choice of the widget's "Cells" list: an export's BF layer, or the plain layers."""

    label: str
    layer_names: tuple[str, ...]


def classify_targets(layers: Sequence[Any]) -> list[Target]:
    """What can be classified: each BF layer (one export each), newest first, then the plain
    2-D image layers from other readers together (one cell each).

    Parameters
    ----------
    layers
        The viewer's image layers (objects with ``name``, ``data``, ``metadata``, ``rgb``).
    """
    from napari_deparray_ctc.napari.cells import cell_count, layer_channel

    targets: list[Target] = []
    plain: list[str] = []
    for layer in reversed(list(layers)):
        channel = layer_channel(layer)
        if channel == "BF":
            n = cell_count(layer)
            name = layer.name.split(" :: ")[0]
            targets.append(Target(f"{name}  ({n} cell{'s' if n != 1 else ''}, BF)", (layer.name,)))
        elif channel is None and (np.ndim(layer.data) == 2 or getattr(layer, "rgb", False)):
            plain.append(layer.name)
    if plain:
        targets.append(
            Target(
                f"plain image layers ({len(plain)}, one cell each, used as BF)",
                tuple(reversed(plain)),
            )
        )
    return targets


def exports_without_bf(layers: Sequence[Any]) -> str | None:
    """A sentence naming the opened exports that have no bright-field (BF) layer (the
    classifier reads BF only), or ``None`` when every export has one.

    Parameters
    ----------
    layers
        The viewer's image layers.
    """
    from napari_deparray_ctc.napari.cells import layer_channel

    channels: dict[str, list[str]] = {}
    for layer in layers:
        channel = layer_channel(layer)
        if channel is not None:
            channels.setdefault(layer.name.split(" :: ")[0], []).append(channel)
    lacking = {name: found for name, found in channels.items() if "BF" not in found}
    if not lacking:
        return None
    name, found = next(iter(lacking.items()))
    others = f" (and {len(lacking) - 1} more)" if len(lacking) > 1 else ""
    return (
        f"'{name}'{others} has no bright-field (BF) images, only {', '.join(found)}: "
        "classification needs BF, so open the export's BF images too."
    )


@dataclass
class ClassifyInputs:
    """Inputs of one classification run.

    Attributes
    ----------
    model_path
        Model file written by training (``core.model.save_model``).
    layer_names
        Names of the image layers to classify (one export's BF layer, or plain layers);
        ``None`` until the user chose.
    batch_size
        Cells per forward pass.
    threshold
        P(CTC) at or above which a cell is called CTC; ``None`` uses the threshold stored
        in the model file.
    device
        ``None`` for automatic choice (cuda > mps > cpu), or a torch device string.
    """

    model_path: str = ""
    layer_names: tuple[str, ...] | None = None
    batch_size: int = 64
    threshold: float | None = None
    device: str | None = None

    def validation_error(self, available_layers: Collection[str] | None = None) -> str | None:
        """Why these inputs cannot run, or ``None`` when they can.

        Parameters
        ----------
        available_layers
            Names of the layers in the viewer; when given, chosen layers must be among them.

        Returns
        -------
        str or None
            A sentence for the user, naming the file or layer at fault.
        """
        if not str(self.model_path).strip():
            return "Choose a model file first (a .pt file written by 'Train classifier')."
        path = Path(self.model_path).expanduser()
        if not path.exists():
            return f"{self.model_path}: model file does not exist"
        if not path.is_file():
            return f"{self.model_path}: is not a file"
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            return f"batch size must be a whole number, not {self.batch_size!r}"
        if self.batch_size < 1:
            return f"batch size must be at least 1, not {self.batch_size}"
        if self.threshold is not None:
            t = self.threshold
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
                return f"threshold must be a number between 0 and 1, not {t!r}"
            if not 0.0 <= float(t) <= 1.0:
                return f"threshold must be between 0 and 1, not {t}"
        if self.layer_names is None or len(self.layer_names) == 0:
            return "Choose the cells to classify: open an export, or pick it under 'Cells'."
        if self.layer_names is not None:
            if available_layers is not None:
                missing = [name for name in self.layer_names if name not in available_layers]
                if missing:
                    return f"layer {missing[0]!r} is no longer in the viewer"
        return None

    def to_core_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``core.classify.classify`` (besides ``images``).

        The threshold is not among them: the core stores the model's threshold in its
        ``Predictions`` and the widget relabels with :attr:`threshold` when it is set.
        """
        return {
            "model": str(Path(self.model_path).expanduser()),
            "batch_size": int(self.batch_size),
            "device": self.device,
        }


def config_dir() -> Path:
    """Folder of the widget settings (``$DEPARRAY_CTC_CONFIG_DIR`` or the user config dir)."""
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override)
    try:
        from platformdirs import user_config_dir
    except ImportError:  # pragma: no cover - platformdirs ships with napari
        return Path.home() / ".config" / "napari-deparray-ctc"
    return Path(user_config_dir("napari-deparray-ctc", appauthor=False))


def _settings_path() -> Path:
    return config_dir() / _SETTINGS_FILE


def _read_settings() -> dict[str, Any]:
    try:
        value = json.loads(_settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def last_model_path() -> str:
    """The model file used last time (``""`` when none was remembered or it is unreadable)."""
    value = _read_settings().get("last_model_path")
    return value if isinstance(value, str) else ""


def remember_model_path(path: str | os.PathLike) -> bool:
    """Remember ``path`` as the last model used (atomic write of the settings file).

    Returns
    -------
    bool
        ``False`` when the settings could not be written (the widget keeps working).
    """
    from napari_deparray_ctc.core.atomic import atomic_write

    settings = _read_settings()
    settings["last_model_path"] = os.fspath(path)
    target = _settings_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, "w") as handle:
            json.dump(settings, handle, indent=2)
    except OSError:
        return False
    return True
