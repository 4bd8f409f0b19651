"""Saliency: how much of each map falls on the cell, per method, and what it costs.

The base model (``explain_adapt_data.base_model``, default pipeline on 600 reference cells)
explains ``--cells`` held-out reference cells whose outline the generator drew
(``synth_masks``). For each method the mean share of the map on the cell, on the cell with a
2 px rim (bright-field optics put the rim and halo just outside the outline), the share a
uniform map would give (the cell's area), and the time per cell (one torch thread) are
printed side by side; and the completeness error of integrated gradients per number of steps
(|sum of attributions - (logit(x) - logit(baseline))| / |logit gap|, on the network input).

Usage::

    python benchmarks/bench_explain.py [--cells 100] [--json benchmarks/results/bench_explain.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from explain_adapt_data import base_model, common_arguments, one_thread, write_json
from synth_masks import inside_fraction, synth_cells_with_masks

METHODS = (
    ("integrated gradients, 16 steps", {"method": "integrated_gradients", "steps": 16}),
    ("integrated gradients, 8 steps", {"method": "integrated_gradients", "steps": 8}),
    ("integrated gradients, 4 steps", {"method": "integrated_gradients", "steps": 4}),
    ("IG, 16 steps, no smoothing", {"method": "integrated_gradients", "steps": 16, "smooth_px": 0}),
    ("Grad-CAM layer4 (2x2 px)", {"method": "gradcam", "gradcam_layer": "layer4"}),
    ("Grad-CAM layer3 (4x4 px)", {"method": "gradcam", "gradcam_layer": "layer3"}),
    ("Grad-CAM layer2 (8x8 px)", {"method": "gradcam", "gradcam_layer": "layer2"}),
)


def completeness(model, images, steps_list) -> dict[int, float]:
    """Median relative completeness error of integrated gradients per number of steps."""
    import torch

    from napari_deparray_ctc.core.inference.explain import _integrated_gradients
    from napari_deparray_ctc.core.model.loaded import prepare_batch

    x = prepare_batch(images, model.image_size, model.normalisation)
    n = len(x)
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1)
    baseline = border.reshape(n, -1).median(dim=1).values.reshape(n, 1, 1, 1).expand_as(x)
    with torch.no_grad():
        gap = (model.network(x) - model.network(baseline)).reshape(-1).numpy()
    out = {}
    for steps in steps_list:
        with torch.enable_grad():
            total = _integrated_gradients(model.network, x, steps).sum(dim=(1, 2)).detach().numpy()
        out[steps] = float(np.median(np.abs(total - gap) / np.maximum(np.abs(gap), 1e-6)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_arguments(parser)
    parser.add_argument("--cells", type=int, default=100)
    args = parser.parse_args()
    one_thread()
    from scipy import ndimage as ndi

    from napari_deparray_ctc.core.inference.explain import saliency_maps
    from napari_deparray_ctc.core.model.loaded import load_model

    model = load_model(base_model(args.cache), device="cpu")
    cells, masks = synth_cells_with_masks(args.cells, ctc_fraction=0.3, seed=4242, n_samples=2)
    images = [c.channels["BF"] for c in cells]
    rims = [ndi.binary_dilation(m, iterations=2) for m in masks]
    area = float(np.mean([m.mean() for m in masks]))
    rim_area = float(np.mean([m.mean() for m in rims]))
    print(
        f"{args.cells} held-out reference cells, base model ({model.metadata.get('ensemble', 1)} "
        f"networks); a uniform map puts {area:.3f} on the cell, {rim_area:.3f} on cell + 2 px rim"
    )
    print(f"{'method':<34}{'on cell':>9}{'cell+rim':>10}{'ms/cell':>9}")
    results = {"area": area, "rim_area": rim_area, "methods": {}}
    for name, kwargs in METHODS:
        start = time.perf_counter()
        maps = saliency_maps(images, model, **kwargs)
        ms = (time.perf_counter() - start) / len(images) * 1e3
        inside = [inside_fraction(s, m) for s, m in zip(maps, masks, strict=True)]
        rim = [inside_fraction(s, m) for s, m in zip(maps, rims, strict=True)]
        results["methods"][name] = {
            "inside": float(np.mean(inside)),
            "inside_median": float(np.median(inside)),
            "rim": float(np.mean(rim)),
            "ms_per_cell": ms,
        }
        print(f"{name:<34}{np.mean(inside):>9.3f}{np.mean(rim):>10.3f}{ms:>9.0f}")
    labels = np.array([c.label for c in cells])
    ig = saliency_maps(images, model, steps=16)
    for label in ("CTC", "WBC"):
        chosen = np.flatnonzero(labels == label)
        share = np.mean([inside_fraction(ig[i], masks[i]) for i in chosen])
        print(f"  integrated gradients (16 steps), {label} cells: {share:.3f} on the cell")
        results[f"inside_{label}"] = float(share)
    errors = completeness(model, images[:16], (4, 8, 16, 32))
    print("completeness error of integrated gradients (median over 16 cells):")
    for steps, value in errors.items():
        print(f"  {steps:>2} steps: {value:.3f}")
    results["completeness"] = errors
    write_json(args.json, results)


if __name__ == "__main__":
    main()
