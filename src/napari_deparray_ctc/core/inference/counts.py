"""Per-sample CTC counts with a 95 % interval for the number of true CTCs.

A clinician wants "how many tumour cells does this patient have", not a list of cells. For
each sample (patient) :func:`sample_counts` gives

* ``n_cells`` and ``n_called_ctc`` (cells with ``p_ctc >= threshold``);
* ``expected_ctc``: the sum of the calibrated P(CTC) of its cells;
* ``ctc_low`` / ``ctc_high``: a 95 % interval for the number of true CTCs, the union of two
  intervals that fail in different ways (``docs/explain_adapt.md`` derives them and
  ``benchmarks/bench_counts.py`` measures their coverage):

  1. **From the calibrated probabilities** (``"probabilities"``): if each cell ``i`` is a CTC
     with probability ``p_i``, independently, the number of CTCs follows the
     Poisson-binomial distribution of the ``p_i``; its 2.5 % and 97.5 % quantiles are exact
     (computed by convolution). Sharp when the calibration holds; too narrow when the cells
     differ from the calibration cells (another CTC prevalence, another instrument).
  2. **From the validation error rates** (``"error_rates"``): the number of calls ``k`` at
     the validation threshold among ``n`` cells, when ``T`` of them are CTCs, is
     ``Binomial(T, recall) + Binomial(n - T, fpr)``; recall and the false-positive rate
     come from the model's validation confusion matrix (the cells the stored precision and
     recall rest on) with Jeffreys Beta posteriors, so a small validation set widens the
     interval. The posterior of ``T`` given ``k`` under a flat prior gives the interval: the
     classical correction of a count for a test's sensitivity and specificity (Rogan &
     Gladen 1978), with the rates' uncertainty integrated out. It does not depend on the CTC
     prevalence (precision does), so a patient with no CTC whose calls are all false
     positives gets an interval that starts at 0.

  The reported interval runs from the lower of the two lows to the higher of the two highs.
  A model file without validation counts gives interval 1 only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from napari_deparray_ctc.core.constants import is_called_ctc

__all__ = [
    "NOT_CALIBRATED",
    "SUMMARY_COLUMNS",
    "calibration_status",
    "count_interval",
    "error_rate_interval",
    "poisson_binomial_interval",
    "sample_counts",
    "validation_confusion",
    "write_sample_counts",
]

#: Columns of ``deparray-ctc classify --summary`` (one row per sample).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "sample",
    "n_cells",
    "n_called_ctc",
    "expected_ctc",
    "ctc_low",
    "ctc_high",
    "threshold",
    "calibration",
)
#: The ``calibration`` of a count whose cells look unlike the cells the model was calibrated on
#: (the shift check fired): its calibrated P(CTC), threshold and interval may not hold.
NOT_CALIBRATED = "NOT CALIBRATED for this instrument"
#: Monte-Carlo draws of (recall, false-positive rate) for the error-rate interval.
_RATE_DRAWS = 400
#: above this many (T, j) pairs per draw the error-rate likelihood uses the normal approximation
_EXACT_CELLS = 200_000


def poisson_binomial_pmf(p: Sequence[float]) -> np.ndarray:
    """Distribution of the number of successes of independent Bernoulli(``p_i``) trials.

    Exact convolution, one cell at a time; the support is cut where less than 1e-15 of the
    mass lies beyond it, so 10,000 cells cost a fraction of a second.
    """
    q = np.clip(np.asarray(p, dtype=np.float64).ravel(), 0.0, 1.0)
    sure = int(np.sum(q >= 1.0))
    q = q[(q > 0.0) & (q < 1.0)]
    mean, var = float(q.sum()), float(np.sum(q * (1 - q)))
    length = int(min(len(q), math.ceil(mean + 12 * math.sqrt(var) + 12))) + 1
    pmf = np.zeros(length)
    pmf[0] = 1.0
    top = 0
    for value in q:
        top = min(top + 1, length - 1)
        pmf[1 : top + 1] = pmf[1 : top + 1] * (1 - value) + pmf[:top] * value
        pmf[0] *= 1 - value
    return np.concatenate([np.zeros(sure), pmf / pmf.sum()])


def _quantiles(pmf: np.ndarray, level: float) -> tuple[int, int]:
    cdf = np.cumsum(pmf)
    tail = (1.0 - level) / 2
    low = int(np.searchsorted(cdf, tail - 1e-12))
    high = int(np.searchsorted(cdf, 1.0 - tail - 1e-12))
    return low, min(high, len(pmf) - 1)


def poisson_binomial_interval(p: Sequence[float], level: float = 0.95) -> tuple[int, int]:
    """Central ``level`` interval of the number of CTCs when each cell is one with prob. ``p``."""
    if len(p) == 0:
        return 0, 0
    return _quantiles(poisson_binomial_pmf(p), level)


def validation_confusion(meta: Mapping[str, Any]) -> dict[str, int] | None:
    """``{"tp", "fp", "fn", "tn", "threshold"}`` of the model's validation cells, or ``None``.

    Read from ``metadata["metrics"]["confusion_matrix"]``; otherwise rebuilt from the stored
    precision, recall and per-class counts (``n_ctc``, ``n_wbc``).
    """
    metrics = meta.get("metrics") or {}
    threshold = metrics.get("threshold", meta.get("threshold"))
    if not isinstance(threshold, (int, float)):
        return None
    cm = metrics.get("confusion_matrix")
    if isinstance(cm, Mapping) and all(
        isinstance(cm.get(k), int) for k in ("tp", "fp", "fn", "tn")
    ):
        out = {k: int(cm[k]) for k in ("tp", "fp", "fn", "tn")}
    else:
        n_ctc, n_wbc = metrics.get("n_ctc"), metrics.get("n_wbc")
        precision, recall = metrics.get("precision"), metrics.get("recall")
        if not all(isinstance(v, (int, float)) for v in (n_ctc, n_wbc, precision, recall)):
            return None
        tp = round(recall * n_ctc)
        fp = round(tp * (1 - precision) / precision) if precision > 0 else None
        if fp is None or fp > n_wbc:
            return None
        out = {"tp": tp, "fn": int(n_ctc) - tp, "fp": fp, "tn": int(n_wbc) - fp}
    if out["tp"] + out["fn"] == 0 or out["fp"] + out["tn"] == 0:
        return None
    out["threshold"] = float(threshold)
    return out


def _log_binom(j: np.ndarray, m: np.ndarray, q: np.ndarray, log_fact: np.ndarray) -> np.ndarray:
    """log Binomial(j; m, q), ``-inf`` outside ``0 <= j <= m`` (broadcasting)."""
    valid = (j >= 0) & (j <= m)
    jj, mm = np.where(valid, j, 0), np.where(valid, m, 0)
    out = (
        log_fact[mm] - log_fact[jj] - log_fact[mm - jj] + jj * np.log(q) + (mm - jj) * np.log1p(-q)
    )
    return np.where(valid, out, -np.inf)


def error_rate_interval(
    n_cells: int, n_called: int, confusion: Mapping[str, int], level: float = 0.95, seed: int = 0
) -> tuple[int, int]:
    """Interval for the true count from the number of calls and the validation error rates.

    Parameters
    ----------
    n_cells, n_called
        Cells of the sample, and those called CTC at the validation threshold.
    confusion
        The validation confusion counts (:func:`validation_confusion`).
    level
        Coverage of the central interval.
    seed
        Seed of the Monte-Carlo draws of the rates (fixed: the same input, the same interval).
    """
    from scipy.special import gammaln
    from scipy.stats import beta, norm

    n, k = int(n_cells), int(n_called)
    if n == 0:
        return 0, 0
    rng = np.random.default_rng(seed)
    recall = beta.rvs(
        confusion["tp"] + 0.5, confusion["fn"] + 0.5, size=_RATE_DRAWS, random_state=rng
    )
    fpr = beta.rvs(confusion["fp"] + 0.5, confusion["tn"] + 0.5, size=_RATE_DRAWS, random_state=rng)
    useful = recall > fpr  # a draw where calls do not track CTCs says nothing about T
    recall, fpr = recall[useful], fpr[useful]
    if len(recall) == 0:
        return 0, n
    # T beyond this has negligible likelihood for every plausible recall
    t_max = min(
        n, math.ceil((k + 8 * math.sqrt(k + 1) + 8) / max(np.quantile(recall, 0.001), 1e-3))
    )
    posterior = np.zeros(t_max + 1)
    t = np.arange(t_max + 1)
    log_fact = gammaln(np.arange(n + 2, dtype=np.float64) + 1)
    exact = (t_max + 1) * (k + 1) <= _EXACT_CELLS
    step = max(1, _EXACT_CELLS // max((t_max + 1) * (k + 1), 1)) if exact else _RATE_DRAWS
    for start in range(0, len(recall), step):
        r, f = recall[start : start + step], fpr[start : start + step]
        if exact:
            # sum over j, the true positives among the k calls: (T, j, draw)
            j = np.arange(k + 1)[None, :, None]
            tt = t[:, None, None]
            log_like = _log_binom(j, tt, r[None, None], log_fact) + _log_binom(
                k - j, n - tt, f[None, None], log_fact
            )
            posterior += np.exp(log_like).sum(axis=(1, 2))
        else:  # many cells: calls are normal to within a continuity correction
            tt = t[:, None]
            mu = tt * r[None] + (n - tt) * f[None]
            sd = np.sqrt(tt * r * (1 - r) + (n - tt) * f * (1 - f)) + 1e-9
            like = norm.cdf((k + 0.5 - mu) / sd) - norm.cdf((k - 0.5 - mu) / sd)
            posterior += like.sum(axis=1)
    if not posterior.sum() > 0:
        return 0, n
    return _quantiles(posterior / posterior.sum(), level)


def count_interval(
    p_ctc: Sequence[float],
    confusion: Mapping[str, int] | None,
    level: float = 0.95,
) -> tuple[int, int]:
    """The reported interval: union of the probability and error-rate intervals."""
    p = np.asarray(p_ctc, dtype=np.float64)
    low, high = poisson_binomial_interval(p, level)
    if confusion is not None:
        k = int(np.sum(p >= confusion["threshold"]))
        low2, high2 = error_rate_interval(len(p), k, confusion, level)
        low, high = min(low, low2), max(high, high2)
    return int(low), int(high)


def calibration_status(model_metadata: Mapping[str, Any], shifted: bool) -> str:
    """What the counts of a run are calibrated for, in words (the ``calibration`` column).

    Parameters
    ----------
    model_metadata
        The model's metadata (a site model carries ``site_profile``).
    shifted
        Whether the shift check (``core.inference.shift``) fired on the cells counted.

    Returns
    -------
    str
        :data:`NOT_CALIBRATED` when ``shifted``; otherwise ``"site: NAME"`` for a site model
        and ``"training instrument"`` for a model as training wrote it.
    """
    if shifted:
        return NOT_CALIBRATED
    site = model_metadata.get("site_profile")
    if isinstance(site, Mapping):
        return f"site: {site.get('data_name') or 'calibrated site'}"
    return "training instrument"


def sample_counts(
    sample_ids: Sequence[str | None],
    p_ctc: Sequence[float],
    threshold: float,
    model_metadata: Mapping[str, Any],
    default_sample: str = "all cells",
    level: float = 0.95,
    *,
    shifted: bool = False,
) -> list[dict[str, Any]]:
    """One row per sample: cells, calls, expected and interval of the true CTC count.

    Parameters
    ----------
    sample_ids
        The sample (patient) of each cell; ``None`` where unknown (those cells form the
        sample ``default_sample``, e.g. the export's name).
    p_ctc
        Calibrated P(CTC) per cell, aligned.
    threshold
        The threshold of ``n_called_ctc`` (the interval does not depend on it: it uses the
        calls at the validation threshold, where the error rates were measured).
    model_metadata
        The model's metadata (``LoadedModel.metadata``), for its validation counts.
    default_sample
        Name of the sample of cells without one.
    level
        Coverage of the interval.
    shifted
        The shift check fired on these cells: every row's ``calibration`` says
        :data:`NOT_CALIBRATED` (see :func:`calibration_status`).

    Returns
    -------
    list of dict
        Keys :data:`SUMMARY_COLUMNS`, in order of first appearance of each sample.
    """
    p = np.asarray(p_ctc, dtype=np.float64)
    if len(sample_ids) != len(p):
        raise ValueError(f"{len(sample_ids)} sample ids given for {len(p)} probabilities")
    names = [default_sample if s is None or str(s) == "" else str(s) for s in sample_ids]
    confusion = validation_confusion(model_metadata)
    status = calibration_status(model_metadata, shifted)
    rows = []
    for sample in dict.fromkeys(names):
        mask = np.array([name == sample for name in names])
        ps = p[mask]
        low, high = count_interval(ps, confusion, level)
        rows.append(
            {
                "sample": sample,
                "n_cells": int(mask.sum()),
                "n_called_ctc": int(np.sum(is_called_ctc(ps, threshold))),
                "expected_ctc": float(ps.sum()),
                "ctc_low": low,
                "ctc_high": high,
                "threshold": float(threshold),
                "calibration": status,
            }
        )
    return rows


def write_sample_counts(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> int:
    """Write :func:`sample_counts` rows as a CSV, atomically.

    Through the one CSV writer (``core.annotations.csv_safe``): a sample name a spreadsheet
    would run as a formula is escaped.

    Parameters
    ----------
    path
        Destination CSV file; its folder must exist.
    rows
        Rows of :func:`sample_counts` (keys :data:`SUMMARY_COLUMNS`).

    Returns
    -------
    int
        Number of rows written.
    """
    from napari_deparray_ctc.core.annotations.csv_safe import write_csv

    return write_csv(
        path,
        SUMMARY_COLUMNS,
        (
            {
                **{k: row[k] for k in SUMMARY_COLUMNS},
                "sample": str(row["sample"]),
                "expected_ctc": f"{float(row['expected_ctc']):.2f}",
                "threshold": f"{float(row['threshold']):.4f}",
            }
            for row in rows
        ),
    )
