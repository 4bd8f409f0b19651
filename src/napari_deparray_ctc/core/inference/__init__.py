"""The inference stage: preprocessing, classification, saliency, counts, the shift check and the cells to label next.

Modules:

- ``preprocess``: normalise, scale, pad and resize a crop for the network
- ``classify``: streaming classification (Predictions), evaluate
- ``explain``: saliency maps
- ``counts``: per-sample counts and their 95 % interval
- ``shift``: the training cells' feature summary and the shift warning
- ``suggest``: the cells to label next

The names below are imported on first use (``core.faces``), so importing one torch-free
module of this package never imports torch.
"""

from __future__ import annotations

from napari_deparray_ctc.core.faces import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        "Predictions": "classify",
        "evaluate": "classify",
        "prepare_batch": "preprocess",
        "saliency_maps": "explain",
        "shift_check": "shift",
        "suggest_cells": "suggest",
        "sample_counts": "counts",
    },
)
