"""Annotations: class names and labels.csv, the autosaved annotation sidecars, and the one per-cell CSV.

Modules:

- ``labels``: class names, labels.csv
- ``sidecars``: annotation sidecars: location, merge, read-only fallback
- ``cell_table``: the one per-cell CSV (CLI, Export CSV, the napari writer)

The names below are imported on first use (``core.faces``), so importing one torch-free
module of this package never imports torch.
"""

from __future__ import annotations

from napari_deparray_ctc.core.faces import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        "canonical_label": "labels",
        "read_labels_csv": "labels",
        "write_labels_csv": "labels",
        "AnnotationStore": "sidecars",
        "apply_sidecar": "sidecars",
        "write_cell_table": "cell_table",
        "read_cell_table": "cell_table",
        "cell_rows": "cell_table",
    },
)
