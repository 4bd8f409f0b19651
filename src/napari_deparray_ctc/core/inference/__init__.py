"""The inference stage: preprocessing, classification, saliency, counts, the shift check and the cells to label next.

Its modules: ``preprocess`` (normalise, scale, pad and resize a crop for the network);
``classify`` (streaming classification (Predictions), evaluate); ``explain`` (saliency maps);
``counts`` (per-sample counts and their 95 % interval); ``shift`` (the training cells' feature
summary and the shift warning); ``suggest`` (the cells to label next). Its names are imported on
first use (:mod:`..faces`), so a torch-free module of it never imports torch.
"""

from __future__ import annotations

from napari_deparray_ctc.core.faces import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    """
    classify: Predictions evaluate
    preprocess: prepare_batch
    explain: saliency_maps
    shift: shift_check
    suggest: suggest_cells
    counts: sample_counts
    """,
)
