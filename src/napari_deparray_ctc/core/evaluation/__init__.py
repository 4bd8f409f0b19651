"""The evaluation stage: metrics with CTC as the positive class, and the HTML report.

Modules:

- ``metrics``: scikit-learn metrics, PR curves, thresholds
- ``report``: the self-contained HTML report

The names below are imported on first use (``core.faces``), so importing one torch-free
module of this package never imports torch.
"""

from __future__ import annotations

from napari_deparray_ctc.core.faces import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        "classification_metrics": "metrics",
        "build_report": "report",
        "write_report": "report",
    },
)
