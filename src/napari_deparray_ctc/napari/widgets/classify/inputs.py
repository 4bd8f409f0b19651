"""What the "Classify cells" widget runs with: the inputs, the cell choices, the last model.

Nothing here imports Qt, napari or torch. The last model used is remembered by
``napari/settings.py``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CONFIG_DIR_ENV",
    "ClassifyInputs",
    "Target",
    "choose_target",
    "classify_targets",
    "config_dir",
    "exports_without_bf",
    "last_model_path",
    "remember_model_path",
]

# where the last model is remembered: the adapter's settings (re-exported for callers)
from napari_deparray_ctc.napari.settings import (
    CONFIG_DIR_ENV,
    config_dir,
    last_model_path,
    remember_model_path,
)


@dataclass(frozen=True)
class Target:
    """One choice of the widget's "Cells" list: an export's BF layer, or the plain layers."""

    label: str
    layer_names: tuple[str, ...]
    plain: bool = False  # plain image layers from other readers, not an export


def classify_targets(layers: Sequence[Any]) -> list[Target]:
    """What can be classified: each BF layer (one export each), newest first, then the plain
    2-D image layers from other readers together (one cell each).

    Parameters
    ----------
    layers
        The viewer's image layers (objects with ``name``, ``data``, ``metadata``, ``rgb``).
    """
    from napari_deparray_ctc.napari.cells import cell_count, layer_channel
    from napari_deparray_ctc.napari.layer_info import is_plugin_overlay

    targets: list[Target] = []
    plain: list[str] = []
    for layer in reversed(list(layers)):
        if is_plugin_overlay(layer):
            continue  # the plugin's own layers (saliency) are never cells
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
                plain=True,
            )
        )
    return targets


def choose_target(
    targets: Sequence[Target],
    previous: tuple[str, ...] | None,
    offered_before: Collection[tuple[str, ...]],
    user_choice: tuple[str, ...] | None,
) -> tuple[str, ...] | None:
    """Which "Cells" entry to select after the list changed (the one rule).

    A choice the user made stays while its layers are there. Otherwise a newly opened export
    becomes the choice; otherwise the previous entry stays, unless it is plain layers while
    an export is open; otherwise the newest export (or the plain layers). Plain layers, the
    plugin's own among them, never take a choice over by themselves.

    Parameters
    ----------
    targets
        The entries now offered (:func:`classify_targets`).
    previous
        The entry selected before the change.
    offered_before
        The entries offered before the change.
    user_choice
        The entry the user picked (``None``: none, or it was chosen automatically).
    """
    offered = [t.layer_names for t in targets]
    exports = [t.layer_names for t in targets if not t.plain]
    new_exports = [names for names in exports if names not in offered_before]
    if user_choice is not None and user_choice in offered:
        return user_choice
    if new_exports and offered_before:
        return new_exports[0]
    if previous is not None and previous in offered and (not exports or previous in exports):
        return previous
    return exports[0] if exports else (offered[0] if offered else None)


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
    device
        ``None`` for automatic choice (cuda > mps > cpu), or a torch device string.
    """

    model_path: str = ""
    layer_names: tuple[str, ...] | None = None
    batch_size: int = 64
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
        if self.layer_names is None or len(self.layer_names) == 0:
            return "Choose the cells to classify: open an export, or pick it under 'Cells'."
        if self.layer_names is not None:
            if available_layers is not None:
                missing = [name for name in self.layer_names if name not in available_layers]
                if missing:
                    return f"layer {missing[0]!r} is no longer in the viewer"
        return None
