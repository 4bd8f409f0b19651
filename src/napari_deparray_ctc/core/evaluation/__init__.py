"""The evaluation stage: metrics with CTC as the positive class, and the HTML report.

Modules:

- ``metrics``: scikit-learn metrics, PR curves, thresholds
- ``report``: the self-contained HTML report

The names below are imported on first use (PEP 562), so importing one torch-free
module of this package never imports torch.
"""

from __future__ import annotations

import importlib

_FACE = {
    "classification_metrics": "metrics",
    "build_report": "report",
    "write_report": "report",
}

__all__ = sorted(_FACE)


def __getattr__(name: str):
    if name in _FACE:
        return getattr(importlib.import_module(f"{__name__}.{_FACE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
