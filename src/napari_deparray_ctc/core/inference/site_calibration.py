"""Calibrate a trained model for a site (an instrument) from a few of its labelled cells.

A model carries the probability calibration and the threshold of its training instrument.
On another instrument the network's scores move (contrast, focus, noise), so the same
threshold can call most cells CTC (issue 20). :func:`calibrate_to_site` refits, for the
new instrument, what can be refitted from a handful of labels without touching the
network's weights:

1. optionally (``adapt``) the BatchNorm statistics, re-estimated on the export's cells with
   or without a label (the test-time adaptation of ``classify --adapt``, stored in the site
   model so that every later classification uses it);
2. the Platt calibration ``P = sigmoid(a * logit + b)`` (``core.training.calibration``),
   fitted on the network's logits of the **labelled** cells. Two numbers: about 10-20 labels
   are enough. Platt models P(CTC | logit), so cells picked for labelling *by their score*
   (``suggest --for calibration``) leave it unbiased;
3. optionally (``prior="estimate"``) the share of CTCs at the site, when the labelled cells
   were picked *by class* (say ten of each, which says nothing about how rare CTCs are): the
   intercept is then moved to the share that the calibrated P(CTC) of all the export's cells
   implies, by the EM re-estimation of Saerens, Latinne & Decaestecker (2002);
4. the threshold, by the model's own rule (``threshold_rule``: ``half_f1`` or ``f1``) on the
   calibrated P(CTC) of **all** the export's cells: the F1 that calling the cells above a
   threshold is expected to give is ``2 S_k / (S_k + k + S)`` (``k`` cells called, ``S_k``
   the sum of their P(CTC), ``S`` that of all cells), which rests on every cell of the site,
   not only on the few labels;
5. never a worse calibration: with labels picked by score or at random, a site fit that loses
   to the model's own calibration on the labelled cells (left-one-out log-loss) is dropped and
   the model's calibration and threshold are kept, with a warning. Labels picked by class
   (``prior="estimate"``) cannot judge that: their mix of classes is the picker's, not the
   site's, so there the site fit is kept.

The result is a model file like any other (same format, same reader; an older version reads
it too and uses its calibration, threshold and statistics) with a *site profile* in
``metadata["site_profile"]``: the cells used (ids and counts per class), when, the model it
came from (file name, SHA-256, date, its calibration and threshold), the prior, whether the
statistics were adapted, in-sample figures of the labelled cells, and the image-feature
summary of the site's cells (``core.inference.shift``), which ``classify`` then checks new
cells against.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_deparray_ctc.core.constants import CLASS_NAMES, is_class_label
from napari_deparray_ctc.core.errors import DeparrayError
from napari_deparray_ctc.core.model.file_format import SITE_PROFILE_VERSION

__all__ = [
    "MIN_PER_CLASS",
    "PRIORS",
    "SITE_PROFILE_VERSION",
    "SiteCalibrationError",
    "calibrate_to_site",
    "calibration_start",
    "check_site_labels",
    "estimate_prior",
    "expected_f1_threshold",
    "site_label_counts",
]

#: Fewest labelled cells of each class that a site calibration needs.
MIN_PER_CLASS = 5
#: How the share of CTCs at the site is set: as among the labelled cells, or estimated.
PRIORS: tuple[str, ...] = ("labelled", "estimate")
#: Most labelled cell ids of each class listed in the profile.
MAX_LISTED_IDS = 500


class SiteCalibrationError(DeparrayError):
    """The cells cannot calibrate the model (too few labels, one class, no cells)."""


def site_label_counts(labels: Iterable[Any]) -> dict[str, int]:
    """``{"CTC": n, "WBC": m, "unlabelled": u}`` of a list of labels (``None``: no label)."""
    counts = {CLASS_NAMES[1]: 0, CLASS_NAMES[0]: 0, "unlabelled": 0}
    for label in labels:
        if is_class_label(label):
            counts[str(label)] += 1
        else:
            counts["unlabelled"] += 1
    return counts


def check_site_labels(
    labels: Iterable[Any], min_per_class: int = MIN_PER_CLASS, where: str = "this export"
) -> dict[str, int]:
    """The label counts, or :class:`SiteCalibrationError` saying what is missing.

    Parameters
    ----------
    labels
        ``"CTC"``, ``"WBC"`` or ``None`` per cell.
    min_per_class
        Fewest labelled cells of each class.
    where
        How the message names the cells (``"this export"``, a path...).

    Returns
    -------
    dict
        As :func:`site_label_counts`.
    """
    counts = site_label_counts(labels)
    n_ctc, n_wbc = counts["CTC"], counts["WBC"]
    if n_ctc < min_per_class or n_wbc < min_per_class:
        others = counts["unlabelled"]
        rest = f" (and {others} cells without a label)" if others else ""
        raise SiteCalibrationError(
            None,
            f"calibration needs at least {min_per_class} CTC and {min_per_class} WBC cells "
            f"with a label; {where} has {n_ctc} CTC and {n_wbc} WBC{rest}. Label more cells "
            "of the missing class: 'Suggest cells to confirm' in napari's 'Calibrate to this instrument', "
            "or deparray-ctc suggest --for calibration, picks useful ones",
        )
    return counts


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _logit(p: float) -> float:
    q = min(max(float(p), 1e-9), 1 - 1e-9)
    return math.log(q) - math.log1p(-q)


def estimate_prior(
    p_ctc: Sequence[float], labelled_fraction: float, max_iter: int = 200, tol: float = 1e-7
) -> float:
    """The share of CTCs among cells whose P(CTC) was calibrated at another share (EM).

    Saerens, Latinne & Decaestecker (2002): with ``p`` calibrated where the CTC share is
    ``labelled_fraction``, the share ``q`` of the new cells is the fixed point of
    ``q = mean(p')`` with ``p' = w1 p / (w1 p + w0 (1 - p))``, ``w1 = q / labelled_fraction``,
    ``w0 = (1 - q) / (1 - labelled_fraction)``.

    Returns
    -------
    float
        The estimated share, in (0, 1).
    """
    p = np.clip(np.asarray(p_ctc, dtype=np.float64), 1e-9, 1 - 1e-9)
    base = min(max(float(labelled_fraction), 1e-6), 1 - 1e-6)
    if p.size == 0:
        return base
    q = float(np.mean(p))
    for _ in range(max_iter):
        w1, w0 = q / base, (1 - q) / (1 - base)
        adjusted = w1 * p / (w1 * p + w0 * (1 - p))
        new = float(np.clip(np.mean(adjusted), 1e-6, 1 - 1e-6))
        if abs(new - q) < tol:
            q = new
            break
        q = new
    return q


def expected_f1_threshold(p_ctc: Sequence[float], rule: str = "half_f1") -> tuple[float, float]:
    """Threshold from calibrated P(CTC) of unlabelled cells: the expected-F1 curve.

    Calling the ``k`` cells of highest P(CTC) is expected to give ``TP = S_k``,
    ``FP = k - S_k`` and ``FN = S - S_k``, so ``F1_k = 2 S_k / (S_k + k + S)``.

    Parameters
    ----------
    p_ctc
        Calibrated P(CTC) of the site's cells.
    rule
        ``"half_f1"``: half the best expected F1 (the F1-optimal threshold of calibrated
        scores); ``"f1"``: the P(CTC) of the last cell called at the best expected F1.

    Returns
    -------
    (float, float)
        The threshold and the best expected F1.
    """
    p = np.sort(np.clip(np.asarray(p_ctc, dtype=np.float64), 0.0, 1.0))[::-1]
    total = float(p.sum())
    if p.size == 0 or total <= 0:
        return 0.5, 0.0
    s_k = np.cumsum(p)
    k = np.arange(1, p.size + 1)
    f1 = 2 * s_k / (s_k + k + total)
    best = int(np.argmax(f1))
    best_f1 = float(f1[best])
    if rule == "f1":
        return float(p[best]), best_f1
    return 0.5 * best_f1, best_f1


def _sha256(path: Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def _loo_log_loss(z: np.ndarray, y: np.ndarray) -> float:
    """Leave-one-out log-loss of a Platt calibration fitted on the other labelled cells."""
    from napari_deparray_ctc.core.training.calibration import apply_calibration, fit_calibration

    p = np.empty(len(z))
    for i in range(len(z)):
        rest = np.arange(len(z)) != i
        p[i] = apply_calibration(fit_calibration(z[rest], y[rest], "platt"), z[i : i + 1])[0]
    return _log_loss(y, p)


def calibration_start(model_path: str | os.PathLike, metadata: Any) -> Path:
    """The model a new site calibration should start from.

    Calibrating a site model again (more cells confirmed since) would chain site models
    (``m.site-x.site-x.pt``). When ``model_path`` is a site model and the model it was calibrated
    from lies beside it, unchanged (the SHA-256 its profile recorded), that model is the start;
    otherwise ``model_path`` itself.

    Parameters
    ----------
    model_path
        The model chosen for the calibration.
    metadata
        Its metadata (``LoadedModel.metadata``).

    Returns
    -------
    Path
        The file to calibrate.
    """
    chosen = Path(model_path)
    profile = metadata.get("site_profile") if isinstance(metadata, dict) else None
    source = profile.get("source_model") if isinstance(profile, dict) else None
    name = source.get("file") if isinstance(source, dict) else None
    digest = source.get("sha256") if isinstance(source, dict) else None
    if not isinstance(name, str) or not isinstance(digest, str) or Path(name).name != name:
        return chosen
    candidate = chosen.with_name(name)
    if candidate == chosen or not candidate.is_file():
        return chosen
    return candidate if _sha256(candidate) == digest else chosen


def calibrate_to_site(
    model: Any,
    images: Iterable[np.ndarray],
    labels: Sequence[Any],
    *,
    cell_ids: Sequence[str] | None = None,
    pixel_size: float | Sequence[float | None] | None = None,
    groups: Sequence[Any] | None = None,
    adapt: bool = False,
    adapt_cells: int = 2048,
    prior: str = "labelled",
    min_per_class: int = MIN_PER_CLASS,
    data_name: str | None = None,
    source: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str | None = None,
    progress: Callable[[int, int | None], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
):
    """Refit a model's calibration and threshold (and optionally its BatchNorm statistics)
    for a site, from the export's cells of which only some carry a label.

    Parameters
    ----------
    model
        A :class:`~napari_deparray_ctc.core.model.loaded.LoadedModel` or a model file path
        (a path is recorded in the profile with its SHA-256).
    images
        The site's 2-D BF images, labelled or not; consumed once, lazily.
    labels
        ``"CTC"``, ``"WBC"`` or ``None`` per image, aligned. Read after the images have
        streamed past, so a list that grows as they do (the command line's) works.
    cell_ids
        Aligned ids (default ``cell-00000``...), listed in the profile for the labelled cells.
    pixel_size
        One pixel size (µm) or one per image, as for ``classify`` (the same scale rule).
    groups
        Aligned sample ids (for the site's feature summary), or ``None``.
    adapt
        Re-estimate the BatchNorm statistics on the first ``adapt_cells`` cells first (as
        ``classify --adapt``) and keep them in the site model.
    adapt_cells
        Most cells used to adapt.
    prior
        ``"labelled"`` (default): P(CTC) is calibrated on the labelled cells as they are,
        right when they were picked by their score or at random. ``"estimate"``: the share of
        CTCs at the site is re-estimated from every cell's P(CTC) (for labelled cells picked
        by class).
    min_per_class
        Fewest labelled cells of each class (:data:`MIN_PER_CLASS`).
    data_name
        What the export is called in the profile and in messages (its folder name).
    source
        The file ``model`` was loaded from, when ``model`` is a loaded model (recorded in
        the profile with its SHA-256); a path given as ``model`` is recorded by itself.
    batch_size
        Images per forward pass.
    device
        As for ``classify``.
    progress
        Called as ``progress(done, total)`` after every batch (``total`` ``None`` when
        ``images`` has no length).
    should_stop
        Called before every batch; ``True`` stops, and ``None`` is returned.

    Returns
    -------
    LoadedModel or None
        The site model: the same network (with adapted statistics if ``adapt``), the site's
        calibration and threshold, and ``metadata["site_profile"]``; ``None`` when stopped.
        Save it with ``core.model.loaded.save_model``.

    Raises
    ------
    SiteCalibrationError
        Too few labelled cells of a class (the message gives the counts), no cell at all,
        or labels that do not match the images.
    ValueError
        An unknown ``prior``, or an image that is not 2-D.
    """
    from napari_deparray_ctc.core.evaluation.metrics import roc_auc
    from napari_deparray_ctc.core.inference.classify import (
        open_stream,
        predict_batches,
        prepared_stream,
    )
    from napari_deparray_ctc.core.inference.shift import (
        feature_summary_from_features,
        image_features,
    )
    from napari_deparray_ctc.core.model.loaded import LoadedModel
    from napari_deparray_ctc.core.training.calibration import apply_calibration, fit_calibration

    if prior not in PRIORS:
        raise ValueError(f"the prior {prior} is not known; choose one of {', '.join(PRIORS)}")
    where = data_name or "this export"
    source_path = Path(model) if isinstance(model, (str, os.PathLike)) else None
    if source is not None:
        source_path = Path(source)
    loaded, total = open_stream(images, model, device, batch_size)
    if total is not None and len(labels) == total:
        check_site_labels(labels, min_per_class, where)  # before any pixel is read

    features: list[np.ndarray] = []

    def tapped(source: Iterable[np.ndarray]):
        for image in source:
            try:
                features.append(image_features([image])[0])
            except ValueError:  # not a 2-D image: prepare_batch names it
                pass
            yield image

    site, batches = prepared_stream(
        tapped(images),
        loaded,
        batch_size,
        pixel_size=pixel_size,
        adapt=adapt,
        adapt_cells=adapt_cells,
    )
    logits, done, cancelled = predict_batches(
        batches, site.predict_logits, total, progress=progress, should_stop=should_stop
    )
    if cancelled:
        return None
    if done == 0:
        raise SiteCalibrationError(None, f"{where} holds no cell to calibrate on")
    z_all = np.concatenate(logits)
    labels = list(labels)
    if len(labels) != done:
        raise SiteCalibrationError(None, f"{len(labels)} labels were given for {done} cells")
    ids = [f"cell-{i:05d}" for i in range(done)] if cell_ids is None else list(cell_ids)
    if len(ids) != done:
        raise SiteCalibrationError(None, f"{len(ids)} cell ids were given for {done} cells")
    counts = check_site_labels(labels, min_per_class, where)

    labelled = np.array([is_class_label(v) for v in labels], dtype=bool)
    y = np.array([1 if v == CLASS_NAMES[1] else 0 for v in labels], dtype=np.int64)[labelled]
    z = z_all[labelled]
    calibration = fit_calibration(z, y, "platt")
    labelled_fraction = float(y.mean())
    p_all = apply_calibration(calibration, z_all)
    if prior == "estimate":
        share = estimate_prior(p_all, labelled_fraction)
        shift = _logit(share) - _logit(labelled_fraction)
        calibration = {**calibration, "b": float(calibration["b"]) + shift}
        p_all = apply_calibration(calibration, z_all)
    else:
        share = float(np.mean(p_all))
    rule = str(loaded.metadata.get("threshold_rule") or "half_f1")
    rule = rule if rule in ("f1", "half_f1") else "half_f1"
    threshold, expected_f1 = expected_f1_threshold(p_all, rule)

    old_calibration = loaded.calibration
    auc = roc_auc(y, _sigmoid(z)) if 0 < y.sum() < len(y) else None
    figures = {
        "roc_auc": auc,
        "log_loss_model": _log_loss(y, apply_calibration(old_calibration, z)),
        "log_loss_site_loo": _loo_log_loss(z, y),
        "expected_f1": expected_f1,
        "called_ctc_model": int(
            np.sum(apply_calibration(old_calibration, z_all) >= loaded.threshold)
        ),
        "called_ctc_site": int(np.sum(p_all >= threshold)),
    }
    warnings_: list[str] = []
    # Never a worse calibration: the site fit must beat the model's own on labelled cells it
    # did not see (left-one-out). That test is fair only when the labels were picked by score
    # or at random. Cells picked by class (prior="estimate") are a case-control sample: their
    # mix of classes is the picker's, not the site's, so their log-loss rewards whichever
    # calibration predicts that mix (an over-calling model, for ten of each class), while the
    # intercept that matters comes from all the site's cells (the prior estimate).
    figures["guard"] = "labelled cells" if prior != "estimate" else "not applicable (by class)"
    kept_model_calibration = (
        prior != "estimate" and figures["log_loss_site_loo"] > figures["log_loss_model"]
    )
    if kept_model_calibration:
        # never a worse calibration: the site fit lost on cells it did not see
        calibration = dict(old_calibration) if old_calibration else None
        threshold = float(loaded.threshold)
        p_all = apply_calibration(calibration, z_all)
        share = float(np.mean(p_all))
        figures["called_ctc_site"] = int(np.sum(p_all >= threshold))
        warnings_.append(
            "On these labelled cells a site calibration does not beat the model's own "
            f"(log-loss {figures['log_loss_site_loo']:.3f} left-one-out against "
            f"{figures['log_loss_model']:.3f}), so the site model keeps the model's "
            "calibration and threshold. Label more cells ('Suggest cells to confirm' in napari, or "
            "deparray-ctc suggest --for calibration) and calibrate again."
        )
    figures["kept_model_calibration"] = bool(kept_model_calibration)
    if auc is not None and auc < 0.7:
        warnings_.append(
            f"At this site the network separates the labelled CTCs from the WBCs poorly "
            f"(ROC-AUC {auc:.2f}; 0.5 is chance): a calibration cannot fix that. Check the "
            "labels, or fine-tune the model on this site's cells ('Start from the current "
            "model' in napari's 'Train classifier', or deparray-ctc train --init-from)."
        )
    warning = " ".join(warnings_) or None
    summary = None
    if len(features) >= 2:
        group_list = None
        if groups is not None and len(groups) == len(features):
            group_list = list(groups)
        summary = feature_summary_from_features(np.array(features), group_list)

    source_meta = loaded.metadata
    previous = source_meta.get("site_profile")
    profile = {
        "version": SITE_PROFILE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data_name": data_name,
        "n_cells": int(done),
        "n_labelled": {"CTC": counts["CTC"], "WBC": counts["WBC"]},
        "cell_ids": {
            name: [str(ids[i]) for i in np.flatnonzero(labelled) if labels[i] == name][
                :MAX_LISTED_IDS
            ]
            for name in ("CTC", "WBC")
        },
        "source_model": {
            "file": None if source_path is None else source_path.name,
            "sha256": None if source_path is None else _sha256(source_path),
            "created": source_meta.get("created"),
            "threshold": float(loaded.threshold),
            "calibration": old_calibration,
            "was_site_model": isinstance(previous, dict),
        },
        "adapted": {"n_cells": int(min(adapt_cells, done))} if adapt else None,
        "prior": {
            "method": prior,
            "labelled_ctc_fraction": labelled_fraction,
            "ctc_fraction": float(share),
        },
        "threshold_rule": rule,
        "figures": figures,
        "warning": warning,
        "feature_summary": summary,
    }
    metadata = {
        **source_meta,
        "calibration": (
            source_meta.get("calibration")
            if kept_model_calibration
            else {**calibration, "n_cells": int(labelled.sum())}
        ),
        "threshold": float(min(max(threshold, 0.0), 1.0)),
        "site_profile": profile,
    }
    return LoadedModel(network=site.network, metadata=metadata, device=site.device)
