"""Annotations: class names and labels.csv, the autosaved annotation sidecars, and the one per-cell CSV.

Its modules: ``labels`` (class names, labels.csv); ``sidecars`` (annotation sidecars: location,
merge, read-only fallback); ``cell_table`` (the one per-cell CSV (CLI, Export CSV, the napari
writer)). Its names are imported on first use (:mod:`..faces`), so a torch-free module of it
never imports torch.
"""

from __future__ import annotations

from napari_deparray_ctc.core.faces import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    """
    labels: canonical_label read_labels_csv write_labels_csv
    sidecars: AnnotationStore apply_sidecar
    cell_table: write_cell_table read_cell_table cell_rows
    """,
)
