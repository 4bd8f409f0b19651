"""The evaluation stage: metrics with CTC as the positive class, and the HTML report.

Its modules: ``metrics`` (scikit-learn metrics, PR curves, thresholds); ``report`` (the self-
contained HTML report). Its names are imported on first use (:mod:`..faces`), so a torch-free
module of it never imports torch.
"""

from __future__ import annotations

from napari_deparray_ctc.core.faces import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    """
    metrics: classification_metrics
    report: build_report write_report
    """,
)
