"""Baselines of the quality benchmark: a RandomForest on regionprops of the BF cell.

The cell is segmented in each bright-field image (Otsu threshold of the smoothed deviation
from the background: rim, halo and interior all differ from it), and 21 shape and intensity
features of the region nearest the centre (scikit-image ``regionprops`` plus rim, interior
and Laplacian statistics) feed a class-balanced scikit-learn RandomForest. Its threshold
maximises F1 on the out-of-bag probabilities, as the ResNet's is chosen on held-out cells.
Features are in pixels, as such a feature table usually is.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["RF_FEATURES", "regionprops_features", "run_random_forest"]


RF_FEATURES = (
    "area",
    "perimeter",
    "eccentricity",
    "solidity",
    "extent",
    "major_axis_length",
    "minor_axis_length",
    "equivalent_diameter_area",
    "perimeter_ratio",  # perimeter^2 / (4 pi area): 1 for a disc, larger when irregular
    "intensity_mean",
    "intensity_std",
    "intensity_min",
    "intensity_max",
    "intensity_p10",
    "intensity_p90",
    "inner_mean",
    "inner_std",
    "rim_mean",
    "deviation_mean",
    "laplacian_std",
    "centroid_offset",
)


def regionprops_features(image: np.ndarray) -> np.ndarray:
    """Shape and intensity features of the cell in one BF image (scikit-image).

    The image is divided by its background (median of the border pixels); the cell is the
    Otsu-thresholded, smoothed absolute deviation from 1 (rim, halo and interior all differ
    from the background), holes filled, the component nearest the centre kept.
    """
    from scipy import ndimage as ndi
    from skimage import filters, measure, morphology

    img = np.asarray(image, dtype=np.float64)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    background = float(np.median(border)) or 1.0
    rel = img / background
    deviation = filters.gaussian(np.abs(rel - 1.0), sigma=1.0)
    try:
        mask = deviation > filters.threshold_otsu(deviation)
    except ValueError:  # constant image
        mask = np.zeros_like(deviation, dtype=bool)
    mask = ndi.binary_closing(mask, structure=morphology.disk(2))
    mask = ndi.binary_fill_holes(mask)
    labelled = measure.label(mask)
    centre = np.array(img.shape) / 2.0
    if labelled.max() == 0:
        return np.zeros(len(RF_FEATURES))
    regions = measure.regionprops(labelled, intensity_image=rel)
    region = min(regions, key=lambda r: np.hypot(*(np.array(r.centroid) - centre)) - 0.01 * r.area)
    cell = labelled == region.label
    inner = ndi.binary_erosion(cell, structure=morphology.disk(3))
    rim = cell & ~inner
    values = rel[cell]
    inner_values = rel[inner] if inner.any() else values
    rim_values = rel[rim] if rim.any() else values
    laplace = ndi.laplace(filters.gaussian(rel, 0.7))
    feats = {
        "area": region.area,
        "perimeter": region.perimeter,
        "eccentricity": region.eccentricity,
        "solidity": region.solidity,
        "extent": region.extent,
        "major_axis_length": region.axis_major_length,
        "minor_axis_length": region.axis_minor_length,
        "equivalent_diameter_area": region.equivalent_diameter_area,
        "perimeter_ratio": region.perimeter**2 / (4 * math.pi * max(region.area, 1)),
        "intensity_mean": values.mean(),
        "intensity_std": values.std(),
        "intensity_min": values.min(),
        "intensity_max": values.max(),
        "intensity_p10": np.percentile(values, 10),
        "intensity_p90": np.percentile(values, 90),
        "inner_mean": inner_values.mean(),
        "inner_std": inner_values.std(),
        "rim_mean": rim_values.mean(),
        "deviation_mean": deviation[cell].mean(),
        "laplacian_std": laplace[cell].std(),
        "centroid_offset": float(np.hypot(*(np.array(region.centroid) - centre))),
    }
    return np.array([float(feats[name]) for name in RF_FEATURES])


def run_random_forest(x_train, y_train, x_tests, seed: int) -> tuple[list[np.ndarray], float]:
    """Fit a balanced RandomForest; threshold maximising F1 on out-of-bag probabilities."""
    from sklearn.ensemble import RandomForestClassifier

    from napari_deparray_ctc.core.evaluation.metrics import best_threshold

    forest = RandomForestClassifier(
        n_estimators=400,
        min_samples_leaf=2,
        class_weight="balanced_subsample",
        oob_score=True,
        random_state=seed,
        n_jobs=1,
    )
    forest.fit(x_train, y_train)
    oob = np.nan_to_num(forest.oob_decision_function_[:, 1], nan=0.5)
    threshold, _ = best_threshold(y_train, oob)
    return [forest.predict_proba(x)[:, 1] for x in x_tests], float(threshold)
