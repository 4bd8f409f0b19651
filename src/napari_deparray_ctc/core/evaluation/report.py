"""A report a lab can read: one self-contained HTML page about a model on labelled cells.

:func:`write_report` writes a single ``.html`` file with every image embedded (PNG, base64),
so it can be mailed, archived or opened offline: the model card, the metrics at the
threshold, the precision-recall curve, the calibration (reliability) curve, the confusion
matrix, the per-sample counts with their 95 % intervals (``core.counts``) and, where there
are labels, montages of the most confident CTCs and of the errors (false positives, false
negatives), each cell with its saliency map (``core.explain``). Plots are drawn with
matplotlib's Agg canvas (no GUI backend, no pyplot state). Text from the data (sample names,
the export's name, the model card) is HTML-escaped; cell ids (file names) appear only inside
the montages, drawn as plain text (never as matplotlib mathtext). No CSV is written here.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_deparray_ctc.core.constants import is_called_ctc, is_class_label

__all__ = ["build_report", "write_report"]

#: Cells per montage.
MONTAGE_CELLS = 8


def _png(fig, caption: str, show_caption: bool = True) -> str:
    """The figure as an embedded PNG with its caption (the alt text, and shown below it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    text = html.escape(caption)
    below = f"<figcaption>{text}</figcaption>" if show_caption else ""
    return f'<figure><img alt="{text}" src="data:image/png;base64,{data}">{below}</figure>'


def _figure(width: float = 4.2, height: float = 3.6):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _pr_plot(y: np.ndarray, p: np.ndarray, threshold: float) -> str:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig = _figure()
    ax = fig.add_subplot()
    precision, recall, _ = precision_recall_curve(y, p)
    ax.step(recall, precision, where="post", color="#1f4e9a")
    called = is_called_ctc(p, threshold)
    tp = int(np.sum(called & (y == 1)))
    if called.any():
        ax.plot(
            tp / max(y.sum(), 1),
            tp / called.sum(),
            "o",
            color="#c0392b",
            label=f"threshold {threshold:.3f}",
        )
        ax.legend(loc="lower left")
    ax.axhline(y.mean(), ls=":", color="grey")
    ax.set(
        xlabel="recall (CTCs found)",
        ylabel="precision (calls that are CTCs)",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        title=f"precision-recall (PR-AUC {average_precision_score(y, p):.3f})",
    )
    return _png(fig, "Precision-recall curve of the CTC class; the dot is the operating point.")


def _calibration_plot(y: np.ndarray, p: np.ndarray) -> str:
    bins = np.linspace(0, 1, 11)
    index = np.clip(np.digitize(p, bins) - 1, 0, 9)
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect")
    mean_p = [p[index == b].mean() for b in range(10) if np.any(index == b)]
    frac = [y[index == b].mean() for b in range(10) if np.any(index == b)]
    counts = [int(np.sum(index == b)) for b in range(10) if np.any(index == b)]
    ax.plot(mean_p, frac, "o-", color="#1f4e9a", label="model")
    for x_, y_, n in zip(mean_p, frac, counts, strict=True):
        ax.annotate(str(n), (x_, y_), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(
        xlabel="P(CTC) (mean of the bin)",
        ylabel="share of true CTCs",
        xlim=(0, 1),
        ylim=(0, 1),
        title="calibration (cells per bin)",
    )
    ax.legend(loc="upper left")
    return _png(fig, "Calibration: predicted P(CTC) against the share of true CTCs, per bin.")


def _confusion_plot(y: np.ndarray, p: np.ndarray, threshold: float) -> str:
    called = is_called_ctc(p, threshold).astype(int)
    matrix = np.array([[np.sum((y == t) & (called == c)) for c in (0, 1)] for t in (0, 1)])
    fig = _figure(3.6, 3.2)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    for t in (0, 1):
        for c in (0, 1):
            color = "white" if matrix[t, c] > matrix.max() / 2 else "black"
            ax.text(c, t, str(matrix[t, c]), ha="center", va="center", color=color, fontsize=14)
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["WBC", "CTC"],
        yticklabels=["WBC", "CTC"],
        xlabel="called",
        ylabel="true",
        title=f"confusion at threshold {threshold:.3f}",
    )
    return _png(fig, f"Confusion matrix at the threshold {threshold:.3f}.")


def _overlay(saliency: np.ndarray) -> np.ndarray:
    """RGBA: the saliency in the inferno colours, opaque where it is high, clear where low."""
    from matplotlib import colormaps

    level = saliency / max(float(saliency.max()), 1e-12)
    rgba = colormaps["inferno"](level)
    rgba[..., 3] = 0.85 * level**0.7
    return rgba


def _montage(images, maps, captions: list[str], title: str) -> str:
    from napari_deparray_ctc.core.inference.preprocess import normalise_image

    n = len(images)
    fig = _figure(1.25 * max(n, 1), 2.9)
    for i, (img, sal, caption) in enumerate(zip(images, maps, captions, strict=True)):
        bf = normalise_image(np.squeeze(np.asarray(img)))
        top = fig.add_subplot(2, n, i + 1)
        top.imshow(bf, cmap="gray", vmin=0, vmax=1)
        # a cell id is a file name: drawn as text, never as mathtext (``$...$``)
        top.set_title(caption, fontsize=6, parse_math=False)
        bottom = fig.add_subplot(2, n, n + i + 1)
        bottom.imshow(bf, cmap="gray", vmin=0, vmax=1)
        bottom.imshow(_overlay(sal))
        for ax in (top, bottom):
            ax.set_axis_off()
    return _png(fig, title, show_caption=False)


def _table(rows: list[dict], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return "" if value is None else str(value)


_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h3 { font-size: 1em; margin: 1em 0 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc;
padding: 0.2em 0.6em; text-align: right; } th { background: #eef; }
.plots figure { display: inline-block; margin: 0 1em 0 0; vertical-align: top; }
figure { margin: 0.5em 0; } figcaption { color: #555; font-size: 0.85em; max-width: 32em; } .note { color: #555; font-size: 0.9em; }
.warning { background: #fff3cd; padding: 0.5em; border: 1px solid #e0c36a; }
"""


def build_report(
    images: Sequence[np.ndarray],
    labels: Sequence[str | None],
    p_ctc: Sequence[float],
    model,
    cell_ids: Sequence[str] | None = None,
    groups: Sequence[str | None] | None = None,
    threshold: float | None = None,
    title: str = "CTC classifier report",
    source: str = "",
    saliency_steps: int | None = None,
) -> str:
    """The report as an HTML string (see :func:`write_report`)."""
    from napari_deparray_ctc.core.evaluation.metrics import classification_metrics
    from napari_deparray_ctc.core.inference.counts import SUMMARY_COLUMNS, sample_counts
    from napari_deparray_ctc.core.inference.explain import FAST_STEPS, saliency_maps
    from napari_deparray_ctc.core.inference.shift import shift_check
    from napari_deparray_ctc.core.model.card import model_card_lines

    p = np.asarray(p_ctc, dtype=np.float64)
    n = len(p)
    ids = [f"cell-{i:05d}" for i in range(n)] if cell_ids is None else [str(c) for c in cell_ids]
    t = float(model.threshold if threshold is None else threshold)
    known = np.array([is_class_label(lab) for lab in labels])
    y = np.array([1 if lab == "CTC" else 0 for lab in labels])
    parts = [f"<h1>{html.escape(title)}</h1>"]
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts.append(
        f'<p class="note">{n} cells{" from " + html.escape(source) if source else ""}; '
        f"written {stamp}. Research software: not a medical device, not for diagnosis.</p>"
    )
    parts.append("<h2>Model</h2><ul>")
    parts += [f"<li>{html.escape(line)}</li>" for line in model_card_lines(model.metadata)]
    parts.append("</ul>")
    shift = shift_check(list(images), model.metadata)
    if shift is not None and shift["warning"]:
        parts.append(f'<p class="warning">{html.escape(shift["warning"])}</p>')

    if known.sum() and len(set(y[known])) == 2:
        yk, pk = y[known], p[known]
        metrics = classification_metrics(yk, pk, t)
        parts.append(
            f"<h2>Metrics at the threshold {t:.3f} ({int(known.sum())} labelled cells)</h2>"
        )
        keys = ("n_cells", "n_ctc", "n_wbc", "precision", "recall", "f1", "average_precision")
        parts.append(_table([{k: metrics.get(k) for k in keys}], keys))
        parts.append('<div class="plots">')
        parts += [_pr_plot(yk, pk, t), _calibration_plot(yk, pk), _confusion_plot(yk, pk, t)]
        parts.append("</div>")
    else:
        parts.append('<p class="note">No cells with both classes labelled: no metrics.</p>')

    samples = [None] * n if groups is None else list(groups)
    rows = sample_counts(
        samples,
        p,
        t,
        model.metadata,
        default_sample=source or "all cells",
        shifted=bool(shift is not None and shift["warning"]),
    )
    columns = list(SUMMARY_COLUMNS)
    if known.any():
        names = [(source or "all cells") if s is None or s == "" else str(s) for s in samples]
        for row in rows:
            row["true_ctc"] = int(
                sum(1 for i in range(n) if names[i] == row["sample"] and y[i] and known[i])
            )
        columns.append("true_ctc")
    parts.append("<h2>Counts per sample (95 % interval of the number of true CTCs)</h2>")
    parts.append(_table(rows, columns))
    parts.append(
        '<p class="note">expected_ctc is the sum of the calibrated P(CTC); the interval joins '
        "the one from the probabilities and the one from the model's validation error rates "
        "(docs/explain_adapt.md).</p>"
    )

    groups_of_cells = [("Most confident CTC calls", np.argsort(-p)[:MONTAGE_CELLS])]
    if known.any():
        called = is_called_ctc(p, t)
        fp = np.flatnonzero(known & called & (y == 0))
        fn = np.flatnonzero(known & ~called & (y == 1))
        groups_of_cells = [
            (
                "Most confident true CTCs",
                [i for i in np.argsort(-p) if known[i] and y[i]][:MONTAGE_CELLS],
            ),
            (
                "False positives (WBC called CTC), most confident first",
                fp[np.argsort(-p[fp])][:MONTAGE_CELLS],
            ),
            (
                "False negatives (CTC called WBC), most missed first",
                fn[np.argsort(p[fn])][:MONTAGE_CELLS],
            ),
        ]
    parts.append("<h2>Cells, with their saliency (bottom row: where the call came from)</h2>")
    for heading, chosen in groups_of_cells:
        chosen = [int(i) for i in chosen]
        if not chosen:
            parts.append(f"<p class='note'>{html.escape(heading)}: none.</p>")
            continue
        chosen_images = [images[i] for i in chosen]
        maps = saliency_maps(chosen_images, model, steps=saliency_steps or FAST_STEPS)
        captions = [f"{ids[i]}\nP={p[i]:.2f}" for i in chosen]
        parts.append(f"<h3>{html.escape(heading)}</h3>")
        parts.append(_montage(chosen_images, maps, captions, heading))
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


def write_report(path: str | os.PathLike, *args: Any, **kwargs: Any) -> Path:
    """Write the HTML report atomically and return its path.

    Parameters
    ----------
    path
        The ``.html`` file to write (its folder must exist).
    *args, **kwargs
        As for :func:`build_report`: ``images`` (2-D BF), ``labels`` (``"CTC"``,
        ``"WBC"`` or ``None``), ``p_ctc`` (calibrated, aligned), ``model`` (a
        ``LoadedModel``), and optionally ``cell_ids``, ``groups`` (sample ids),
        ``threshold`` (default: the model's), ``title``, ``source`` (the export's name) and
        ``saliency_steps``.
    """
    from napari_deparray_ctc.core.atomic import atomic_write

    text = build_report(*args, **kwargs)
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)
