"""From a raw bright-field crop to the network's input: normalise, scale, pad, resize.

* **Intensity** (:func:`normalise_image`): per image, the 1st and 99th percentiles of the
  finite pixels are mapped to 0 and 1 and the result is clipped to [0, 1]. This makes 8-,
  12- and 16-bit data and different illumination levels comparable and is robust to a few
  hot or dead pixels. Non-finite pixels are replaced by the median of the finite ones
  (background); a constant image becomes all zeros. The network sees these [0, 1] values
  (no mean/std step: BatchNorm follows ``conv1``).
* **Geometry, pixel size unknown**: a non-square crop is padded (after normalisation) with
  the median of its border pixels, the local background, then the whole crop is resized to
  ``image_size`` with antialiasing: the crop is assumed to show the same field of view as
  the training crops.
* **Geometry, physical scale** (when the normalisation spec has ``pixel_size_um`` and the
  image's pixel size is known): the crop is resampled to that pixel size, then centre-cropped
  or padded with its border median to ``image_size``. Cells then have the same size in
  pixels whatever the camera, so a model trained at 0.55 µm/px reads a 0.42 µm/px export
  correctly (``docs/quality.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_deparray_ctc.core.constants import DEFAULT_IMAGE_SIZE

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DEFAULT_NORMALISATION",
    "check_normalisation",
    "normalise_image",
    "pad_to_square",
    "pixel_size_list",
    "prepare_batch",
]

#: Normalisation written to every model and used by :func:`prepare_batch`.
#: ``pixel_size_um`` is the canonical pixel size of the network input (``None``: crops are
#: resized whole, whatever their pixel size).
DEFAULT_NORMALISATION: dict[str, Any] = {
    "method": "percentile",
    "low_percentile": 1.0,
    "high_percentile": 99.0,
    "clip": True,
    "pad": "border_median",
    "resize": "bilinear_antialias",
    "pixel_size_um": None,
}


def normalise_image(
    img: np.ndarray, low_percentile: float = 1.0, high_percentile: float = 99.0
) -> np.ndarray:
    """Robust per-image intensity scaling to [0, 1].

    Parameters
    ----------
    img
        A 2-D image of any numeric dtype (8-, 12-, 16-bit integers, floats).
    low_percentile, high_percentile
        Percentiles of the finite pixels mapped to 0 and 1.

    Returns
    -------
    numpy.ndarray
        ``float32`` image of the same shape with values in [0, 1]; all zeros when the image
        has no finite pixel or is constant.
    """
    arr = np.asarray(img)
    arr = arr.astype(np.float32, copy=True)
    finite = np.isfinite(arr)
    if not finite.all():
        if not finite.any():
            return np.zeros(arr.shape, dtype=np.float32)
        arr[~finite] = np.median(arr[finite])
    lo, hi = np.percentile(arr, [low_percentile, high_percentile])
    if not hi > lo:
        return np.zeros(arr.shape, dtype=np.float32)
    arr -= lo
    arr *= 1.0 / (hi - lo)
    np.clip(arr, 0.0, 1.0, out=arr)
    return arr


def _border_median(img: np.ndarray) -> float:
    return float(np.median(np.concatenate([img[0, :], img[-1, :], img[:, 0], img[:, -1]])))


def pad_to_square(img: np.ndarray) -> np.ndarray:
    """Pad a 2-D image to a square with the median of its border pixels (the background).

    Returns the image unchanged when it is already square.
    """
    h, w = img.shape
    if h == w:
        return img
    return _fit_canvas(img, max(h, w))


def _fit_canvas(img: np.ndarray, size: int) -> np.ndarray:
    """Centre ``img`` on a ``size`` x ``size`` canvas of its border median (crop if larger)."""
    h, w = img.shape
    out = np.full((size, size), _border_median(img), dtype=img.dtype)
    # source and destination windows of the centred overlap
    sy, sx = max(0, (h - size) // 2), max(0, (w - size) // 2)
    dy, dx = max(0, (size - h) // 2), max(0, (size - w) // 2)
    ch, cw = min(h, size), min(w, size)
    out[dy : dy + ch, dx : dx + cw] = img[sy : sy + ch, sx : sx + cw]
    return out


def _as_2d(img: Any, index: int) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim > 2:
        squeezed = np.squeeze(arr)
        if squeezed.ndim == 2:
            arr = squeezed
    if arr.ndim != 2:
        raise ValueError(
            f"image {index} has shape {arr.shape}; a single-channel 2-D bright-field image is needed"
        )
    if arr.size == 0:
        raise ValueError(f"image {index} is empty (shape {arr.shape})")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"image {index} has pixels that are not numbers ({arr.dtype})")
    return arr


def pixel_size_list(pixel_size: float | Sequence[float | None] | None, n: int) -> list:
    """``pixel_size`` as one entry per image: a number for all, a sequence, or ``None``."""
    if pixel_size is None:
        return [None] * n
    if isinstance(pixel_size, (int, float, np.floating, np.integer)):
        return [float(pixel_size)] * n
    values = list(pixel_size)
    if len(values) != n:
        raise ValueError(f"{len(values)} pixel sizes given for {n} images")
    return [None if v is None else float(v) for v in values]


def _resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    import torch.nn.functional as F

    if tuple(t.shape[-2:]) == size:
        return t
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(
        0.0, 1.0
    )


def prepare_batch(
    images: Iterable[np.ndarray],
    image_size: int = DEFAULT_IMAGE_SIZE,
    normalisation: Mapping[str, Any] | None = None,
    index_offset: int = 0,
    pixel_sizes: Sequence[float | None] | None = None,
) -> torch.Tensor:
    """Normalise, scale and resize images into one network input batch.

    Parameters
    ----------
    images
        2-D images (any size, dtype). Singleton extra dimensions are squeezed.
    image_size
        Output side length in pixels.
    normalisation
        A normalisation spec as stored in model metadata (default
        :data:`DEFAULT_NORMALISATION`).
    index_offset
        Added to an image's position in error messages (for streamed batches).
    pixel_sizes
        Pixel size (µm) of each image, ``None`` where unknown. Used only when the spec has a
        ``pixel_size_um``.

    Returns
    -------
    torch.Tensor
        ``float32`` tensor ``(N, 1, image_size, image_size)``, values in [0, 1].

    Raises
    ------
    ValueError
        An image is not 2-D or is empty, or the normalisation spec is not valid.
    """
    import torch

    spec = check_normalisation(normalisation)
    low, high = float(spec["low_percentile"]), float(spec["high_percentile"])
    canonical = spec.get("pixel_size_um")
    tensors = []
    for index, img in enumerate(images):
        arr = normalise_image(_as_2d(img, index + index_offset), low, high)
        known = None if pixel_sizes is None else pixel_sizes[index]
        if canonical and known and known > 0:
            factor = float(known) / float(canonical)
            h, w = arr.shape
            scaled = (max(1, round(h * factor)), max(1, round(w * factor)))
            t = _resize(torch.from_numpy(np.ascontiguousarray(arr))[None, None], scaled)
            arr = _fit_canvas(t[0, 0].numpy(), image_size)
            tensors.append(torch.from_numpy(np.ascontiguousarray(arr))[None, None])
            continue
        arr = pad_to_square(arr)
        t = torch.from_numpy(np.ascontiguousarray(arr))[None, None]
        tensors.append(_resize(t, (image_size, image_size)))
    if not tensors:
        return torch.zeros((0, 1, image_size, image_size), dtype=torch.float32)
    return torch.cat(tensors, dim=0)


def check_normalisation(normalisation: Mapping[str, Any] | None) -> dict[str, Any]:
    """The full normalisation spec (defaults filled in); ValueError when it is not valid."""
    spec = dict(DEFAULT_NORMALISATION)
    if normalisation is not None:
        spec.update(normalisation)
    if spec.get("method") != "percentile":
        raise ValueError(f"the normalisation method {spec.get('method')} is not known")
    low, high = spec.get("low_percentile"), spec.get("high_percentile")
    if not (
        isinstance(low, (int, float)) and isinstance(high, (int, float)) and 0 <= low < high <= 100
    ):
        raise ValueError(f"the normalisation percentiles {low} and {high} are not valid")
    size = spec.get("pixel_size_um")
    if size is not None and (
        isinstance(size, bool)
        or not isinstance(size, (int, float))
        or not math.isfinite(size)
        or size <= 0
    ):
        raise ValueError(f"the canonical pixel size {size} is not a positive number")
    return spec
