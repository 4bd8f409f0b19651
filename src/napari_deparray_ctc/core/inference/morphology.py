"""Explicit cell-shape features of the network's input, for the morphology stack (issue 20).

A forest on a score of shape features reads size and shape in-domain at least as well as the
network does. :func:`morphology_features` measures such features on the very input the network
sees (a prepared batch from ``core.inference.preprocess.prepare_batch``): intensities in
[0, 1], and the geometry that the scale rule gave the crop (rescaled to the model's pixel size
where both sides know theirs, else resized whole, as in training). A size measured there
therefore means what it meant in training, in physical units where training had them.

The cell is segmented in every image of the batch at once (numpy and ``scipy.ndimage``, no
per-cell Python loop): the smoothed absolute deviation from the background (the median of the
border ring) is thresholded by Otsu's rule per image, the holes are filled, and the component
that covers most of the central disc is the cell. Measured on it (``MORPHOLOGY_FEATURES``):

* ``log_area``: log of the cell's share of the crop;
* ``eccentricity``: from the second moments of the cell's pixels (0 for a disc);
* ``boundary_ratio``: boundary pixels squared over (4 pi area), rough edges and lobes;
* ``inner_contrast`` and ``inner_sd``: the mean and sd of the inside (eroded cell) minus the
  background;
* ``rim_contrast``: the mean of the cell's boundary minus the background (the bright or dark
  rim of a bright-field cell);
* ``texture``: the mean absolute Laplacian inside the cell;
* ``offset``: the distance of the cell's centroid from the crop's centre, as a share of it.

An image without any cell (a constant crop) gives zeros. :func:`fit_morphology_stack` and
:func:`stacked_logits` (``core.training.stacking``) combine these with the network's logit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MORPHOLOGY_FEATURES", "morphology_features"]

MORPHOLOGY_FEATURES: tuple[str, ...] = (
    "log_area",
    "eccentricity",
    "boundary_ratio",
    "inner_contrast",
    "inner_sd",
    "rim_contrast",
    "texture",
    "offset",
)
_OTSU_BINS = 64
_BORDER = 3  # width (px) of the ring whose median is the background
_CENTRAL_RADIUS = 0.25  # the central disc, as a share of the crop's side


def _as_stack(batch: Any) -> np.ndarray:
    """A prepared batch ``(N, 1, S, S)`` (torch or numpy) as ``float32`` ``(N, S, S)``."""
    array = batch.detach().cpu().numpy() if hasattr(batch, "detach") else np.asarray(batch)
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 4:
        array = array[:, 0]
    if array.ndim != 3 or array.shape[1] != array.shape[2]:
        raise ValueError(f"a prepared batch (N, 1, S, S) is needed, not shape {array.shape}")
    return array


def _otsu_thresholds(values: np.ndarray) -> np.ndarray:
    """Otsu's threshold of each row of ``values`` (N, P), all rows at once."""
    n = values.shape[0]
    top = values.max(axis=1)
    top = np.where(top > 0, top, 1.0)
    bins = np.minimum((values / top[:, None] * _OTSU_BINS).astype(np.int64), _OTSU_BINS - 1)
    counts = np.bincount(
        (bins + np.arange(n)[:, None] * _OTSU_BINS).ravel(), minlength=n * _OTSU_BINS
    ).reshape(n, _OTSU_BINS)
    centres = (np.arange(_OTSU_BINS) + 0.5) / _OTSU_BINS
    weight_low = np.cumsum(counts, axis=1)
    weight_high = weight_low[:, -1:] - weight_low
    mass_low = np.cumsum(counts * centres, axis=1)
    mean_low = mass_low / np.maximum(weight_low, 1)
    mean_high = (mass_low[:, -1:] - mass_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    cut = np.argmax(between[:, :-1], axis=1)
    return (cut + 1) / _OTSU_BINS * top


def morphology_features(batch: Any) -> np.ndarray:
    """The :data:`MORPHOLOGY_FEATURES` of each image of a prepared batch.

    Parameters
    ----------
    batch
        The network's input ``(N, 1, S, S)`` (a torch tensor or an array), values in [0, 1],
        as ``core.inference.preprocess.prepare_batch`` makes it.

    Returns
    -------
    numpy.ndarray
        ``float64`` ``(N, 8)``; a row of zeros for an image in which no cell is found.

    Raises
    ------
    ValueError
        ``batch`` is not a stack of square images.
    """
    from scipy import ndimage as ndi

    x = _as_stack(batch)
    n, size, _ = x.shape
    if n == 0:
        return np.zeros((0, len(MORPHOLOGY_FEATURES)))
    ring = np.ones((size, size), dtype=bool)
    ring[_BORDER:-_BORDER, _BORDER:-_BORDER] = False
    background = np.median(x[:, ring], axis=1)
    # per-image operations over the stack: nothing connects one image to the next
    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[1] = ndi.generate_binary_structure(2, 1)
    smooth = ndi.uniform_filter(x, size=(1, 3, 3), mode="nearest")
    deviation = np.abs(smooth - background[:, None, None])
    threshold = _otsu_thresholds(deviation.reshape(n, -1))
    mask = deviation > np.maximum(threshold, 1e-6)[:, None, None]
    # fill the holes: the parts of the background that do not reach the border
    outside, n_outside = ndi.label(~mask, structure=plane)
    reaches_border = np.zeros(n_outside + 1, dtype=bool)
    reaches_border[outside[:, ring]] = True
    reaches_border[0] = True  # label 0: the mask itself
    mask |= ~reaches_border[outside]
    labels, count = ndi.label(mask, structure=plane)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    centre = (size - 1) / 2
    central = (yy - centre) ** 2 + (xx - centre) ** 2 <= (_CENTRAL_RADIUS * size) ** 2
    features = np.zeros((n, len(MORPHOLOGY_FEATURES)))
    if count == 0:
        return features
    # the component covering most of the central disc (ties: the larger one) is the cell
    in_centre = np.bincount(labels[:, central].ravel(), minlength=count + 1).astype(np.float64)
    total = np.bincount(labels.ravel(), minlength=count + 1).astype(np.float64)
    # labels are numbered in raster order over the stack: each image's exceed the last one's
    last_label = np.maximum.accumulate(labels.reshape(n, -1).max(axis=1))
    image_of = np.searchsorted(last_label, np.arange(count + 1))
    score = in_centre + total * 1e-6
    score[0] = -1.0
    best = np.full(n, -1.0)
    np.maximum.at(best, image_of[1:], score[1:])
    chosen = np.zeros(count + 1, dtype=bool)
    chosen[1:] = score[1:] == best[image_of[1:]]
    cell = chosen[labels]
    inner = ndi.binary_erosion(cell, structure=plane)
    boundary = cell & ~inner
    has_inner = inner.any(axis=(1, 2))
    inner[~has_inner] = cell[~has_inner]  # a cell too thin to erode: its inside is itself
    weights = np.stack([cell, inner, boundary], axis=1).astype(np.float32)  # (N, 3, S, S)
    rel = x - background[:, None, None]
    padded = np.pad(smooth, ((0, 0), (1, 1), (1, 1)), mode="edge")
    laplace = np.abs(
        padded[:, :-2, 1:-1]
        + padded[:, 2:, 1:-1]
        + padded[:, 1:-1, :-2]
        + padded[:, 1:-1, 2:]
        - 4 * smooth
    )
    counts = weights.sum(axis=(2, 3), dtype=np.float64)  # (N, 3): cell, inside, boundary
    area, inner_area, boundary_n = (np.maximum(counts[:, i], 1.0) for i in range(3))
    found = counts[:, 0] > 0
    inside = weights[:, 1]
    inner_mean = np.einsum("nij,nij->n", inside, rel, dtype=np.float64) / inner_area
    inner_sq = np.einsum("nij,nij->n", inside, rel * rel, dtype=np.float64) / inner_area
    texture = np.einsum("nij,nij->n", inside, laplace, dtype=np.float64) / inner_area
    rim = np.einsum("nij,nij->n", weights[:, 2], rel, dtype=np.float64) / boundary_n
    # second moments of the cell from its row and column sums
    coords = np.arange(size, dtype=np.float64)
    rows = weights[:, 0].sum(axis=2, dtype=np.float64)  # (N, S): pixels per row
    cols = weights[:, 0].sum(axis=1, dtype=np.float64)
    cy, cx = rows @ coords / area, cols @ coords / area
    syy = rows @ coords**2 / area - cy**2
    sxx = cols @ coords**2 / area - cx**2
    sxy = np.einsum("nij,i,j->n", weights[:, 0], coords, coords, dtype=np.float64) / area - cy * cx
    half_trace = (syy + sxx) / 2
    spread = np.sqrt(np.maximum(half_trace**2 - (syy * sxx - sxy**2), 0.0))
    major, minor = half_trace + spread, np.maximum(half_trace - spread, 0.0)
    eccentricity = np.sqrt(np.clip(1 - minor / np.maximum(major, 1e-12), 0.0, 1.0))
    features[:, 0] = np.log(area / size**2 + 1e-4)
    features[:, 1] = eccentricity
    features[:, 2] = counts[:, 2] ** 2 / (4 * np.pi * area)
    features[:, 3] = inner_mean
    features[:, 4] = np.sqrt(np.maximum(inner_sq - inner_mean**2, 0.0))
    features[:, 5] = rim
    features[:, 6] = texture
    features[:, 7] = np.hypot(cy - centre, cx - centre) / size
    features[~found] = 0.0
    return features
