"""What the plugin keeps in a layer, typed: one view over ``layer.metadata["deparray"]``.

The reader writes the dictionary (its keys are a contract, see ``docs/ARCHITECTURE.md``);
everything else in the adapter reads and changes it through :class:`LayerInfo`, so each key is
spelt once and a plain layer (no DEPArray metadata) reads as empty lists instead of ``KeyError``.

>>> info = LayerInfo.of(layer)          # never None: empty for a plain layer
>>> info.cell_ids, info.channel, info.label_of(3)
>>> info.set_predictions([...], threshold=0.4, model_path="m.pt")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_deparray_ctc.core.constants import is_class_label

__all__ = ["METADATA_KEY", "OVERLAY_KEY", "LayerInfo", "is_plugin_overlay", "mark_plugin_overlay"]

#: the key of the plugin's dictionary in ``layer.metadata``
METADATA_KEY = "deparray"
#: the key that marks a layer the plugin made for display (never a cell to classify)
OVERLAY_KEY = "deparray_overlay"


def mark_plugin_overlay(layer: Any, kind: str) -> None:
    """Mark ``layer`` as one the plugin shows (e.g. ``"saliency"``): never offered as cells."""
    layer.metadata[OVERLAY_KEY] = kind


def is_plugin_overlay(layer: Any) -> bool:
    """Whether the plugin made ``layer`` for display (see :func:`mark_plugin_overlay`)."""
    return bool((getattr(layer, "metadata", None) or {}).get(OVERLAY_KEY))


def _item(values: Sequence[Any], index: int) -> Any:
    return values[index] if 0 <= index < len(values) else None


class LayerInfo:
    """Typed access to one layer's DEPArray metadata (a live view: changes go to the layer).

    Parameters
    ----------
    meta
        The layer's ``metadata["deparray"]`` dictionary (``None``: a plain layer, read-only
        empty view).
    """

    def __init__(self, meta: dict | None) -> None:
        self._meta = meta if isinstance(meta, dict) else None

    @classmethod
    def of(cls, layer: Any) -> LayerInfo:
        """The view of ``layer`` (empty, :attr:`present` ``False``, for a plain layer)."""
        metadata = getattr(layer, "metadata", None) or {}
        return cls(metadata.get(METADATA_KEY))

    @property
    def present(self) -> bool:
        """Whether the layer carries DEPArray metadata (opened by the reader, or adopted)."""
        return self._meta is not None

    def _get(self, key: str, default: Any = None) -> Any:
        return default if self._meta is None else self._meta.get(key, default)

    def _set(self, key: str, value: Any) -> None:
        if self._meta is None:
            raise ValueError("this layer carries no DEPArray metadata")
        self._meta[key] = value

    # -- what the reader wrote ------------------------------------------------------------

    @property
    def channel(self) -> str | None:
        """The canonical channel (``"BF"``, ``"DAPI"``...), ``None`` when unknown."""
        return self._get("channel")

    @property
    def cell_ids(self) -> list[str]:
        """The cells' ids, in layer order."""
        return [str(c) for c in self._get("cell_ids") or []]

    @property
    def n_cells(self) -> int:
        """How many cells the metadata lists."""
        return len(self._get("cell_ids") or [])

    @property
    def paths(self) -> list[str | None]:
        """Each cell's source file (``None`` when unknown)."""
        return list(self._get("paths") or [])

    @property
    def groups(self) -> list[str | None]:
        """Each cell's sample or patient (``None`` when unknown)."""
        return list(self._get("groups") or [])

    @property
    def pixel_size_um(self) -> float | None:
        """The pixel size the export declares, in µm (``None`` when it does not)."""
        value = self._get("pixel_size_um")
        return None if value is None else float(value)

    @property
    def annotations_path(self) -> str | None:
        """The annotation sidecar the reader applied (``None`` when none)."""
        return self._get("annotations_path")

    @property
    def generated_ids(self) -> bool:
        """The ids were made up for a plain layer (no file names)."""
        return bool(self._get("generated_ids", False))

    # -- per cell ---------------------------------------------------------------------------

    @property
    def labels(self) -> list[str | None]:
        """Each cell's annotation (``"CTC"``, ``"WBC"`` or ``None``)."""
        raw = list(self._get("labels") or [])
        return [label if is_class_label(label) else None for label in raw]

    @labels.setter
    def labels(self, values: Sequence[str | None]) -> None:
        self._set("labels", list(values))

    # one cell: read from the stored list in place (the list properties copy it, so a loop
    # over cells that used them would be quadratic)

    def label_of(self, index: int) -> str | None:
        """The annotation of cell ``index``."""
        label = _item(self._get("labels") or [], index)
        return label if is_class_label(label) else None

    def path_of(self, index: int) -> str | None:
        """The source file of cell ``index``."""
        return _item(self._get("paths") or [], index)

    def group_of(self, index: int) -> str | None:
        """The sample of cell ``index``."""
        return _item(self._get("groups") or [], index)

    def id_of(self, index: int) -> str | None:
        """The id of cell ``index`` (``None`` out of range)."""
        cell_id = _item(self._get("cell_ids") or [], index)
        return None if cell_id is None else str(cell_id)

    def index_of(self, cell_id: str) -> int | None:
        """The index of ``cell_id`` in the layer (``None`` when it does not hold it)."""
        ids = self.cell_ids
        return ids.index(cell_id) if cell_id in ids else None

    # -- what a classification writes -------------------------------------------------------

    @property
    def predictions(self) -> list[float | None] | None:
        """P(CTC) per cell from the last classification of this layer (``None``: none)."""
        return self._get("predictions")

    @property
    def predictions_threshold(self) -> float | None:
        """The threshold the stored predictions were called at."""
        return self._get("predictions_threshold")

    @property
    def predictions_calibration(self) -> str | None:
        """What the stored predictions' calls are calibrated for, in words."""
        return self._get("predictions_calibration")

    def set_predictions(
        self,
        predictions: Sequence[float | None],
        threshold: float,
        model_path: str,
        calibration: str | None = None,
    ) -> None:
        """Store a classification's P(CTC) per cell, its threshold, its model file and what
        its calls are calibrated for (``core.counts.calibration_status``)."""
        self._set("predictions", list(predictions))
        self._set("predictions_threshold", float(threshold))
        self._set("predictions_model", model_path)
        self._set("predictions_calibration", calibration)
