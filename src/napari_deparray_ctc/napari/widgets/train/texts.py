"""What the training widget writes: durations and the validation figures (no Qt)."""

from __future__ import annotations

__all__ = ["format_seconds", "metrics_html"]


def format_seconds(seconds: float | None) -> str:
    """``m:ss`` (or ``h:mm:ss``), ``--:--`` when unknown."""
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "--:--"
    seconds = round(float(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def metrics_html(metrics: dict) -> str:
    """Precision, recall, F1, threshold and the confusion matrix as a small HTML table."""

    def fmt(key: str) -> str:
        value = metrics.get(key)
        return f"{value:.3f}" if isinstance(value, int | float) else "n/a"

    text = (
        f"<b>Validation</b>: precision {fmt('precision')}, recall {fmt('recall')}, "
        f"F1 {fmt('f1')} (CTC positive), threshold {fmt('threshold')}"
    )
    matrix = metrics.get("confusion_matrix")
    if isinstance(matrix, dict):  # core.metrics.confusion: {"matrix": [[TN, FP], [FN, TP]], ...}
        matrix = matrix.get("matrix")
    if isinstance(matrix, list | tuple) and len(matrix) == 2:
        (tn, fp), (fn, tp) = matrix
        text += (
            "<table border='1' cellspacing='0' cellpadding='3'>"
            "<tr><th></th><th>called WBC</th><th>called CTC</th></tr>"
            f"<tr><th>true WBC</th><td align='right'>{tn}</td><td align='right'>{fp}</td></tr>"
            f"<tr><th>true CTC</th><td align='right'>{fn}</td><td align='right'>{tp}</td></tr>"
            "</table>"
        )
    return text
