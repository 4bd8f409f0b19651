"""Warn when the cells being classified look unlike the model's training cells.

At training time :func:`training_feature_summary` condenses the training cells' bright-field
images into a few numbers stored in the model file (``metadata["feature_summary"]``, under
1 kB): the mean and covariance of eight image features, and the 99th percentile of the
training cells' own Mahalanobis distance to that mean. At classification time
:func:`shift_check` computes the same features for the new cells and counts the share of them
outside that 99 % envelope; :func:`shift_warning` turns it into one sentence when the share is
far above what new samples of the training instrument show.

The features are read from the image the network sees (intensity-normalised, padded to a
square, resampled to a 64 px grid), so a plain change of gain or offset, which the
normalisation removes, does not count as a shift. Each is robust and aimed at one way that
instruments differ: ``noise`` (robust sd of the residual after a 3 x 3 median, in the
background ring), ``sharpness`` (mean absolute Laplacian of Gaussian), ``background`` (median
of the border ring), ``tilt`` (slope of a plane fitted to the border ring: illumination
gradient), ``vignetting`` (corners against edge midpoints), ``cell_area`` (share of pixels
that differ from the background: pixel size, magnification), ``contrast`` (sd of the central
disk) and ``dark`` (share of pixels at the bottom of the range). Scale-like features are
logged. The covariance is shrunk (Ledoit-Wolf) so 20 cells are enough to store one.

A model calibrated for a site (``core.inference.site_calibration``) carries a second summary,
of that site's cells, in ``metadata["site_profile"]["feature_summary"]``: its shift check is
made against the site (:func:`reference_summary`), since those are the cells its calibration
and threshold rest on, and the sentence says so.

The firing rule (:data:`FIRE_FRACTION`, :data:`MIN_CELLS`) is calibrated in
``benchmarks/bench_shift.py`` on new in-domain samples and on the shifted synthetic domains
(``core.synth.DOMAINS``); ``docs/explain_adapt.md`` gives the figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "FEATURE_NAMES",
    "FIRE_FRACTION",
    "MEAN_SHIFT_LIMIT",
    "MIN_CELLS",
    "REMEDIES",
    "feature_summary_from_features",
    "image_features",
    "reference_summary",
    "shift_check",
    "shift_warning",
    "training_feature_summary",
]

#: The features, in column order.
FEATURE_NAMES: tuple[str, ...] = (
    "noise",
    "sharpness",
    "background",
    "tilt",
    "vignetting",
    "cell_area",
    "contrast",
    "dark",
)
#: Warn when more than this share of the cells lies outside the training cells' 99 % envelope
#: (new in-domain samples: a few per cent; see ``benchmarks/bench_shift.py``).
FIRE_FRACTION = 0.25
#: Warn when the new cells' mean features are shifted by more than this (root mean square over
#: the features, in units of the spread expected for a new sample of the training instrument).
MEAN_SHIFT_LIMIT = 2.0
#: Fewest cells to judge a shift on.
MIN_CELLS = 20
#: At most this many cells (evenly spaced) are read for a summary or a check.
MAX_CELLS = 2000
#: Floor of the between-sample spread, as a share of the within-sample sd.
MIN_BETWEEN_SD = 0.25
#: Between-sample spread assumed when training had fewer than three samples.
NO_GROUPS_BETWEEN_SD = 0.5
#: Quantile of the training cells' distances that defines the envelope.
ENVELOPE_QUANTILE = 0.99
_GRID = 64
_VERSION = 1


def _rings() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:_GRID, 0:_GRID].astype(np.float64)
    c = (_GRID - 1) / 2
    border = np.minimum.reduce([yy, xx, _GRID - 1 - yy, _GRID - 1 - xx]) < 6
    corner = border & (np.abs(yy - c) > 20) & (np.abs(xx - c) > 20)
    edge_mid = border & ((np.abs(yy - c) < 8) | (np.abs(xx - c) < 8))
    centre = (yy - c) ** 2 + (xx - c) ** 2 < 20**2
    return {
        "border": border,
        "corner": corner,
        "edge_mid": edge_mid,
        "centre": centre,
        "yy": (yy - c) / _GRID,
        "xx": (xx - c) / _GRID,
    }


_MASKS = _rings()


def _features_one(img: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    from napari_deparray_ctc.core.inference.preprocess import normalise_image, pad_to_square

    arr = np.asarray(img)
    if arr.ndim > 2:
        arr = np.squeeze(arr)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"an image of shape {arr.shape} is not a 2-D bright-field image")
    x = pad_to_square(normalise_image(arr))
    if x.shape[0] != _GRID:
        x = ndi.zoom(x, _GRID / x.shape[0], order=1, grid_mode=True, mode="nearest")[:_GRID, :_GRID]
    x = x.astype(np.float64)
    m = _MASKS
    ring = x[m["border"]]
    background = float(np.median(ring))
    # robust sd of horizontal neighbour differences in the background ring (/ sqrt 2)
    diff = (x[:, 1:] - x[:, :-1])[m["border"][:, 1:] & m["border"][:, :-1]]
    noise = 1.4826 / np.sqrt(2.0) * float(np.median(np.abs(diff - np.median(diff))))
    sharp = float(np.mean(np.abs(ndi.gaussian_laplace(x, 1.0))))
    design = np.stack([np.ones(ring.size), m["yy"][m["border"]], m["xx"][m["border"]]], axis=1)
    coef, *_ = np.linalg.lstsq(design, ring, rcond=None)
    tilt = float(np.hypot(coef[1], coef[2]))
    vignetting = float(np.median(x[m["edge_mid"]]) - np.median(x[m["corner"]]))
    smooth = ndi.gaussian_filter(x, 1.0)
    area = float(np.mean(np.abs(smooth - background) > 0.15))
    contrast = float(np.std(x[m["centre"]]))
    dark = float(np.mean(x < 0.02))
    eps = 1e-3
    return np.array(
        [
            np.log(noise + eps),
            np.log(sharp + eps),
            background,
            np.log(tilt + eps),
            vignetting,
            np.log(area + eps),
            np.log(contrast + eps),
            np.log(dark + eps),
        ]
    )


def image_features(images: Iterable[np.ndarray]) -> np.ndarray:
    """The :data:`FEATURE_NAMES` of each BF image: ``float64`` array ``(N, 8)``."""
    rows = [_features_one(img) for img in images]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))


def _is_features(value: Any) -> bool:
    """A ``float64`` array ``(N, 8)``: features, not images."""
    return (
        isinstance(value, np.ndarray)
        and value.ndim == 2
        and value.dtype == np.float64
        and value.shape[1] == len(FEATURE_NAMES)
    )


def _as_features(images_or_features: Any) -> np.ndarray:
    if _is_features(images_or_features):
        return images_or_features
    return image_features(images_or_features)


def _mahalanobis_sq(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    d = features - mean
    return np.einsum("ij,jk,ik->i", d, precision, d)


def _subsample(n: int) -> np.ndarray:
    """At most :data:`MAX_CELLS` evenly spaced indices (deterministic)."""
    if n <= MAX_CELLS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, MAX_CELLS).round().astype(int))


def training_feature_summary(
    images: Sequence[np.ndarray], groups: Sequence[Any] | None = None
) -> dict[str, Any]:
    """A compact, JSON-safe summary of the training cells' image features.

    Parameters
    ----------
    images
        The training cells' 2-D BF images (any size, dtype); at most :data:`MAX_CELLS`
        evenly spaced ones are read.
    groups
        The cells' sample (patient) ids, aligned, or ``None``. With three or more samples,
        how much the samples' mean features differ is measured and tolerated in new samples;
        otherwise a fixed allowance (:data:`NO_GROUPS_BETWEEN_SD`) is used.

    Returns
    -------
    dict
        ``version``, ``names``, ``n_cells``, ``n_groups``, ``mean``, ``sd`` (within
        samples), ``between_sd`` (of sample means), ``covariance`` (Ledoit-Wolf shrunk) and
        ``d2_envelope`` (the :data:`ENVELOPE_QUANTILE` of the training cells' squared
        Mahalanobis distances). Store it as ``metadata["feature_summary"]``.
    """
    images = list(images)
    keep = _subsample(len(images))
    features = image_features([images[i] for i in keep])
    kept_groups = None if groups is None else [groups[i] for i in keep]
    summary = feature_summary_from_features(features, kept_groups)
    summary["n_cells"] = len(images)
    return summary


def feature_summary_from_features(
    features: np.ndarray, groups: Sequence[Any] | None = None
) -> dict[str, Any]:
    """The summary of :func:`training_feature_summary` from :func:`image_features` rows.

    For cells whose features were computed as they streamed past (at most
    :data:`MAX_CELLS` evenly spaced rows are used).

    Parameters
    ----------
    features
        ``float64`` array ``(N, 8)``.
    groups
        The cells' sample ids, aligned with the rows, or ``None``.

    Returns
    -------
    dict
        As :func:`training_feature_summary`; ``n_cells`` is ``N``.

    Raises
    ------
    ValueError
        Fewer than two rows.
    """
    from sklearn.covariance import LedoitWolf

    features = np.asarray(features, dtype=np.float64).reshape(-1, len(FEATURE_NAMES))
    n_all = len(features)
    keep = _subsample(n_all)
    features = features[keep]
    if len(features) < 2:
        raise ValueError("a feature summary needs at least two images")
    lw = LedoitWolf().fit(features)
    d2 = _mahalanobis_sq(features, lw.location_, np.linalg.pinv(lw.covariance_))
    labels = None if groups is None else np.array([str(groups[i]) for i in keep])
    if labels is not None and len(labels) and all(g in ("None", "") for g in labels):
        labels = None
    names = [] if labels is None else [g for g in np.unique(labels) if np.sum(labels == g) >= 2]
    if len(names) >= 3:
        within = np.sqrt(np.mean([features[labels == g].var(axis=0, ddof=1) for g in names], 0))
        means = np.array([features[labels == g].mean(axis=0) for g in names])
        per_group = len(features) / len(names)
        between = np.sqrt(np.maximum(means.var(axis=0, ddof=1) - within**2 / per_group, 0.0))
        between = np.maximum(between, MIN_BETWEEN_SD * within)
    else:
        within = features.std(axis=0, ddof=1)
        between = NO_GROUPS_BETWEEN_SD * within
    return {
        "version": _VERSION,
        "names": list(FEATURE_NAMES),
        "n_cells": n_all,
        "n_groups": len(names),
        "mean": [float(v) for v in lw.location_],
        "sd": [float(v) for v in np.maximum(within, 1e-6)],
        "between_sd": [float(v) for v in np.maximum(between, 1e-6)],
        "covariance": [[float(v) for v in row] for row in lw.covariance_],
        "d2_envelope": float(np.quantile(d2, ENVELOPE_QUANTILE)),
    }


def _usable(summary: Any) -> bool:
    return (
        isinstance(summary, Mapping)
        and summary.get("version") == _VERSION
        and list(summary.get("names") or []) == list(FEATURE_NAMES)
    )


def reference_summary(metadata: Mapping[str, Any]) -> tuple[dict | None, str]:
    """The feature summary new cells are compared with, and what it describes.

    Returns
    -------
    (dict or None, str)
        The site profile's summary and ``"site"`` for a model calibrated for a site (when
        that summary is usable), else the training cells' summary and ``"training"``.
    """
    profile = metadata.get("site_profile")
    if isinstance(profile, Mapping) and _usable(profile.get("feature_summary")):
        return dict(profile["feature_summary"]), "site"
    summary = metadata.get("feature_summary")
    return (dict(summary) if _usable(summary) else None), "training"


#: What a shift warning tells the user to use: the command line names its commands, the napari
#: widget its own controls (``remedy`` of :func:`shift_check`).
REMEDIES: dict[str, dict[str, str]] = {
    "cli": {
        "calibrate": "deparray-ctc calibrate",
        "fine_tune": "deparray-ctc train --init-from",
    },
    "napari": {
        "calibrate": "'Calibrate to this instrument', in this dock",
        "fine_tune": "'Train classifier' with 'Start from the current model'",
    },
}


def shift_check(
    images_or_features: Any, metadata: Mapping[str, Any], remedy: str = "cli"
) -> dict[str, Any] | None:
    """How far new cells lie from the model's training cells, and whether to warn.

    Two statistics, each with its own calibrated limit:

    * ``mean_shift``: the root mean square over the features of the new cells' mean shift,
      each in units of the spread expected for a new sample of the training instrument
      (``sqrt(between_sd**2 + sd**2 / n)``); catches a whole sample that is shifted a
      little (defocus, another pixel size). Fires above :data:`MEAN_SHIFT_LIMIT`.
    * ``fraction_outside``: the share of the new cells beyond the envelope of 99 % of the
      training cells (Mahalanobis distance); catches cells that are each far off. Fires above
      :data:`FIRE_FRACTION`.

    Parameters
    ----------
    images_or_features
        The new cells' 2-D BF images (a list, or a stack ``(N, Y, X)``; at most
        :data:`MAX_CELLS` evenly spaced ones are read), or their :func:`image_features`
        (a ``float64`` array ``(N, 8)``).
    metadata
        The model's metadata; ``None`` is returned when it holds no usable
        ``feature_summary`` (a model from before this check, or from another version).
    remedy
        Whose words the warning's advice uses: ``"cli"`` (the commands) or ``"napari"``
        (the widgets' controls); see :data:`REMEDIES`.

    Returns
    -------
    dict or None
        ``n_cells``, ``mean_shift``, ``fraction_outside``, ``fire`` (bool), ``features``
        (``(name, shift in training sd)`` pairs, largest first), ``against``
        (``"training"``, or ``"site"`` for a model calibrated for a site, whose site
        profile's cells are the reference: :func:`reference_summary`) and ``warning`` (the
        sentence of :func:`shift_warning`, or ``None``).
    """
    summary, against = reference_summary(metadata)
    if summary is None:
        return None
    if isinstance(images_or_features, np.ndarray) and images_or_features.ndim == 3:
        images_or_features = list(images_or_features)
    if not _is_features(images_or_features):
        images = list(images_or_features)
        images_or_features = [images[i] for i in _subsample(len(images))]
    features = _as_features(images_or_features)
    if len(features) > MAX_CELLS:
        features = features[_subsample(len(features))]
    n = len(features)
    if n == 0:
        return {
            "n_cells": 0,
            "mean_shift": 0.0,
            "fraction_outside": 0.0,
            "fire": False,
            "features": [],
            "against": against,
            "warning": None,
        }
    mean = np.asarray(summary["mean"], dtype=np.float64)
    sd = np.asarray(summary["sd"], dtype=np.float64)
    between = np.asarray(summary["between_sd"], dtype=np.float64)
    precision = np.linalg.pinv(np.asarray(summary["covariance"], dtype=np.float64))
    shift = features.mean(axis=0) - mean
    z = shift / np.sqrt(between**2 + sd**2 / n)
    mean_shift = float(np.sqrt(np.mean(z**2)))
    d2 = _mahalanobis_sq(features, mean, precision)
    outside = float(np.mean(d2 > float(summary["d2_envelope"])))
    in_sd = shift / sd
    ranked = sorted(
        zip(FEATURE_NAMES, (float(v) for v in in_sd), strict=True), key=lambda t: -abs(t[1])
    )
    fire = n >= MIN_CELLS and (mean_shift > MEAN_SHIFT_LIMIT or outside > FIRE_FRACTION)
    result: dict[str, Any] = {
        "n_cells": n,
        "mean_shift": mean_shift,
        "fraction_outside": outside,
        "fire": bool(fire),
        "features": ranked,
        "against": against,
        "warning": None,
    }
    if fire and against == "site":
        differ = ", ".join(f"{name} {value:+.1f}" for name, value in ranked[:3])
        profile = metadata.get("site_profile") or {}
        where = profile.get("data_name") or "its site"
        result["warning"] = (
            f"These {n} cells look unlike the {summary['n_cells']} cells of the site this "
            f"model was calibrated for ({where}, on {profile.get('created', '?')}): their "
            f"mean image features are {mean_shift:.1f} times as far from that site's as "
            f"samples of one instrument are from each other (below {MEAN_SHIFT_LIMIT:g}), "
            f"and {outside:.0%} of them lie outside the range of 99 % of the site's cells. "
            f"They differ most in {differ} (in sd of the site's cells). The site calibration "
            "(P(CTC) and threshold) may not hold for them: calibrate the model for this "
            f"instrument ({REMEDIES[remedy]['calibrate']}) or check the calls by eye."
        )
    elif fire:
        differ = ", ".join(f"{name} {value:+.1f}" for name, value in ranked[:3])
        result["warning"] = (
            f"These {n} cells look unlike the {summary['n_cells']} cells this model was "
            f"trained on: their mean image features are {mean_shift:.1f} times as far from "
            "the training cells' as samples from the training instrument are from each other "
            f"(such samples: below {MEAN_SHIFT_LIMIT:g}), and {outside:.0%} of them lie "
            "outside the range of 99 % of the training cells (such samples: a few per cent). "
            f"They differ most in {differ} (in sd of the training cells). Check the calls by "
            "eye, calibrate the model for this instrument from a few of its labelled cells "
            f"({REMEDIES[remedy]['calibrate']}), or fine-tune it on them "
            f"({REMEDIES[remedy]['fine_tune']})."
        )
    return result


def shift_warning(
    images_or_features: Any, metadata: Mapping[str, Any], remedy: str = "cli"
) -> str | None:
    """One sentence when the cells look unlike the model's training cells, else ``None``.

    See :func:`shift_check` for the arguments and the figures behind the sentence.
    """
    result = shift_check(images_or_features, metadata, remedy)
    return None if result is None else result["warning"]
