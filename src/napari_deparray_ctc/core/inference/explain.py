"""Saliency maps: which bright-field pixels made the model's call.

Method: **integrated gradients** (Sundararajan, Taly & Yan 2017) of the CTC logit, from a
**blank-field baseline** (the cell's own background level: the median of the border pixels of
the network input), with the absolute value of the attribution as the map.

Why not Grad-CAM
    Grad-CAM weights the feature maps of the last convolution block by their gradient. With
    64 px inputs the last block of a ResNet is 2 x 2 pixels, so Grad-CAM can say at most which
    quadrant of the crop mattered; earlier blocks (4 x 4, 8 x 8) are not what the classifier
    reads. Integrated gradients works at the input's own resolution, needs no choice of layer,
    and satisfies *completeness*: the attributions of the network input sum to
    ``logit(image) - logit(baseline)`` (up to the Riemann error of ``steps``), so the map
    is an exact share-out of the score. ``benchmarks/bench_explain.py`` measures how much of
    each map falls inside the cell for both methods.

Why a blank-field baseline
    In bright field the background is bright, not black: a black baseline would make every
    background pixel look like evidence. A field with no cell (its background level) asks
    "what about this cell, compared with an empty cage, made the score".

The map is computed on the network input, smoothed with a Gaussian of ``smooth_px`` pixels,
mapped back through the preprocessing geometry (padding to a square, resizing, or the
physical-scale canvas) onto the BF image's own pixels, and normalised to sum to 1 (float32,
>= 0). Pixels the network never saw (padding, a cropped margin) get 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from napari_deparray_ctc.core.inference.preprocess import input_scale
from napari_deparray_ctc.core.model.loaded import LoadedModel, prepare_batch

__all__ = ["DEFAULT_STEPS", "FAST_STEPS", "SALIENCY_METHODS", "saliency_maps"]

#: Methods accepted by :func:`saliency_maps`.
SALIENCY_METHODS: tuple[str, ...] = ("integrated_gradients", "gradcam")
#: Riemann steps of integrated gradients (midpoint rule): attributions add up to the logit gap
#: within ~2 % (``benchmarks/bench_explain.py``).
DEFAULT_STEPS = 16
#: Steps for interactive use (gallery tiles, the report): 4x cheaper, the same share of the map
#: on the cell, completeness within ~7 %.
FAST_STEPS = 4
#: Images x steps per forward/backward pass (bounds memory).
_MAX_PASS = 128


def _shape_2d(img: Any) -> tuple[int, int]:
    arr = np.asarray(img)
    if arr.ndim > 2:
        arr = np.squeeze(arr)
    return (int(arr.shape[-2]), int(arr.shape[-1]))


def _window(n_src: int, n_dst: int) -> tuple[int, int, int]:
    """Centred overlap of a length ``n_src`` on a canvas ``n_dst``: (src start, dst start, n)."""
    return max(0, (n_src - n_dst) // 2), max(0, (n_dst - n_src) // 2), min(n_src, n_dst)


def _resize_map(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    if tuple(m.shape) == tuple(shape):
        return m
    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None, None]
    down = shape[0] < m.shape[0] or shape[1] < m.shape[1]
    out = F.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=down)
    return out[0, 0].numpy()


def _to_image(
    m: np.ndarray,
    shape: tuple[int, int],
    canonical: float | None,
    known: float | None,
) -> np.ndarray:
    """Map an input-space map back onto the BF image (inverse of ``prepare_batch``'s geometry)."""
    h, w = shape
    size = m.shape[0]
    factor = input_scale(canonical, known)  # the one scale rule (core.inference.preprocess)
    if factor is not None:
        # the image was scaled by known / canonical, then centred on a size x size canvas
        hs, ws = max(1, round(h * factor)), max(1, round(w * factor))
        scaled = np.zeros((hs, ws), dtype=np.float32)
        sy, dy, ch = _window(hs, size)
        sx, dx, cw = _window(ws, size)
        scaled[sy : sy + ch, sx : sx + cw] = m[dy : dy + ch, dx : dx + cw]
        return _resize_map(scaled, (h, w))
    # the image was padded to a centred square of side max(h, w), then resized to size
    side = max(h, w)
    square = _resize_map(m, (side, side))
    _, dy, _ = _window(h, side)
    _, dx, _ = _window(w, side)
    return square[dy : dy + h, dx : dx + w]


def _finish(m: np.ndarray) -> np.ndarray:
    """Clip to >= 0 and normalise to sum 1 (a flat map when nothing is left)."""
    out = np.clip(np.nan_to_num(m.astype(np.float32), nan=0.0), 0.0, None)
    total = float(out.sum(dtype=np.float64))
    if not total > 0:
        return np.full(out.shape, 1.0 / out.size, dtype=np.float32)
    out /= total
    return out


def _integrated_gradients(network, x, steps: int):
    """``|IG|`` of the logit for a prepared batch ``x`` (N, 1, S, S), blank-field baseline."""
    import torch

    n = x.shape[0]
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1).reshape(
        n, -1
    )
    baseline = border.median(dim=1).values.reshape(n, 1, 1, 1)
    delta = x - baseline
    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps
    grad_sum = torch.zeros_like(x)
    per_pass = max(1, _MAX_PASS // max(n, 1))
    for start in range(0, steps, per_pass):
        a = alphas[start : start + per_pass]
        path = (baseline[None] + a.reshape(-1, 1, 1, 1, 1) * delta[None]).reshape(-1, *x.shape[1:])
        path.requires_grad_(True)
        logits = network(path).reshape(-1)
        (grad,) = torch.autograd.grad(logits.sum(), path)
        grad_sum += grad.reshape(len(a), *x.shape).sum(dim=0)
    return (delta * grad_sum / steps)[:, 0]


def _gradcam(network, x, layer: str):
    """Grad-CAM of the logit at every module named ``layer`` (summed over ensemble members)."""
    import torch
    import torch.nn.functional as F

    modules = [m for name, m in network.named_modules() if name.split(".")[-1] == layer]
    if not modules:
        raise ValueError(f"the network has no layer called {layer}")
    feats: list = []
    handles = [m.register_forward_hook(lambda _m, _i, out: feats.append(out)) for m in modules]
    try:
        logits = network(x.requires_grad_(True)).reshape(-1)
        grads = torch.autograd.grad(logits.sum(), feats)
    finally:
        for handle in handles:
            handle.remove()
    cam = torch.zeros(x.shape[0], 1, *x.shape[-2:], device=x.device)
    for a, g in zip(feats, grads, strict=True):
        weights = g.mean(dim=(2, 3), keepdim=True)
        m = F.relu((weights * a).sum(dim=1, keepdim=True))
        cam += F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return cam[:, 0]


def saliency_maps(
    images: Iterable[np.ndarray],
    model: LoadedModel,
    method: str = "integrated_gradients",
    steps: int = DEFAULT_STEPS,
    batch_size: int = 16,
    pixel_sizes: Sequence[float | None] | None = None,
    smooth_px: float = 1.0,
    gradcam_layer: str = "layer3",
) -> list[np.ndarray]:
    """Saliency maps of bright-field images for the model's CTC score.

    Parameters
    ----------
    images
        2-D BF images (any size and dtype), as given to ``core.classify.classify``.
    model
        A loaded model (its device is used; weights are not changed).
    method
        ``"integrated_gradients"`` (default, see the module docstring) or ``"gradcam"``
        (at ``gradcam_layer``; for comparison).
    steps
        Riemann steps of integrated gradients: the cost is ``steps`` forward and backward
        passes per image and network (:data:`FAST_STEPS` for gallery tiles).
    batch_size
        Images per chunk.
    pixel_sizes
        Pixel size (µm) per image, as for ``prepare_batch`` (only used when the model works
        at a physical scale).
    smooth_px
        Gaussian smoothing of the map in network-input pixels (0: none).
    gradcam_layer
        Layer name for ``"gradcam"`` (``layer1`` ... ``layer4``).

    Returns
    -------
    list of numpy.ndarray
        One ``float32`` map per image, with the image's 2-D shape, values >= 0 summing to 1.

    Raises
    ------
    ValueError
        An unknown method, ``steps`` < 1, or an image that is not 2-D.
    """
    import torch
    from scipy import ndimage as ndi

    if method not in SALIENCY_METHODS:
        raise ValueError(
            f"the saliency method {method} is not known; choose one of {SALIENCY_METHODS}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, not {steps}")
    spec = model.normalisation
    canonical = spec.get("pixel_size_um")
    images = list(images)
    sizes = list(pixel_sizes) if pixel_sizes is not None else [None] * len(images)
    network = model.network
    network.eval()
    device = torch.device(model.device)
    out: list[np.ndarray] = []
    for start in range(0, len(images), max(1, int(batch_size))):
        chunk = images[start : start + batch_size]
        chunk_sizes = sizes[start : start + batch_size]
        x = prepare_batch(
            chunk, model.image_size, spec, index_offset=start, pixel_sizes=chunk_sizes
        ).to(device)
        with torch.enable_grad():
            if method == "integrated_gradients":
                raw = _integrated_gradients(network, x, steps).abs()
            else:
                raw = _gradcam(network, x, gradcam_layer)
        raw = raw.detach().float().cpu().numpy()
        for img, m, known in zip(chunk, raw, chunk_sizes, strict=True):
            if smooth_px > 0:
                m = ndi.gaussian_filter(m, float(smooth_px), mode="constant")
            out.append(_finish(_to_image(m, _shape_2d(img), canonical, known)))
    return out
