"""File ▸ Save Selected Layer(s) on DEPArray layers: their cells' table as CSV (npe2 writer).

The columns and the writer are those of ``deparray-ctc classify`` and the classify widget's
Export CSV (``core.cell_table``): cell id, path, P(CTC), call, threshold (empty when the
cells were not classified) and the annotation. The cells of several channel layers of one
export are written once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from napari_deparray_ctc.core.annotations.cell_table import CellRow, write_cell_table
from napari_deparray_ctc.core.constants import is_class_label
from napari_deparray_ctc.core.errors import DeparrayError

__all__ = ["rows_from_layer_metadata", "write_cells_csv"]


def rows_from_layer_metadata(metadatas: Sequence[dict]) -> list[CellRow]:
    """One row per cell of the layers' ``metadata["deparray"]`` (first layer with a cell wins,
    BF layers and layers with predictions first)."""
    ordered = sorted(
        metadatas,
        key=lambda m: (m.get("channel") != "BF", not m.get("predictions")),
    )
    rows: dict[str, CellRow] = {}
    for meta in ordered:
        ids = [str(c) for c in meta.get("cell_ids") or []]
        paths = list(meta.get("paths") or [None] * len(ids))
        labels = list(meta.get("labels") or [None] * len(ids))
        predictions = meta.get("predictions") or []
        threshold = meta.get("predictions_threshold")
        calibration = meta.get("predictions_calibration")
        for i, cell_id in enumerate(ids):
            if cell_id in rows:
                continue
            p = predictions[i].get("p_ctc") if i < len(predictions) and predictions[i] else None
            rows[cell_id] = CellRow(
                cell_id=cell_id,
                path=paths[i] if i < len(paths) else None,
                p_ctc=p,
                threshold=float(threshold) if p is not None and threshold is not None else None,
                annotation=labels[i] if i < len(labels) and is_class_label(labels[i]) else None,
                calibration=str(calibration) if p is not None and calibration else None,
            )
    return list(rows.values())


def write_cells_csv(path: str, layer_data: list[tuple[Any, dict, str]]) -> list[str]:
    """npe2 writer: the cell table of the selected DEPArray layers.

    Parameters
    ----------
    path
        The file chosen in napari's save dialog (``.csv``).
    layer_data
        ``(data, attributes, layer type)`` of each selected layer.

    Returns
    -------
    list of str
        ``[path]``.

    Raises
    ------
    DeparrayError
        None of the layers is a DEPArray cell layer (the message says so).
    """
    metadatas = [
        attributes.get("metadata", {}).get("deparray")
        for _data, attributes, _kind in layer_data
        if isinstance(attributes.get("metadata", {}).get("deparray"), dict)
    ]
    if not metadatas:
        raise DeparrayError(
            path,
            "none of the selected layers holds DEPArray cells; select the layers of an export "
            "opened with the DEPArray reader",
        )
    write_cell_table(path, rows_from_layer_metadata(metadatas))
    return [os.fspath(path)]
