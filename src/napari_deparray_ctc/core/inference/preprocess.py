"""From a raw bright-field crop to the network's input: normalise, scale, pad, resize.

* **Intensity** (:func:`normalise_image`): per image, the 1st and 99th percentiles of the
  finite pixels are mapped to 0 and 1 and the result is clipped to [0, 1]. This makes 8-,
  12- and 16-bit data and different illumination levels comparable and is robust to a few
  hot or dead pixels. Non-finite pixels are replaced by the median of the finite ones
  (background); a constant image becomes all zeros. The network sees these [0, 1] values
  (no mean/std step: BatchNorm follows ``conv1``).
* **Geometry: the scale rule** (:func:`input_scale`, the one place it is decided, used by
  training and classification alike through :func:`prepare_batch`). Two pixel sizes meet:
  the model's (``normalisation["pixel_size_um"]``, the size training rescaled its cells to,
  or ``None``) and the image's (what its file declares, or ``None``).

  ============  ===============  ===========================================================
  model         image            the crop is ...
  ============  ===============  ===========================================================
  ``None``      anything         resized whole (padded to a square with its border median,
                                 then resized to ``image_size``), exactly as in training:
                                 a pixel size the file declares is not used
  known         known            rescaled by ``image / model``, then centre-cropped or padded
                                 with its border median to ``image_size`` (physical scale)
  known         ``None``         resized whole, as training resized its own cells without a
                                 pixel size (in a mixed training set those were resized
                                 whole too): the crop is assumed to show the same field of
                                 view as the training crops
  ============  ===============  ===========================================================

  The model's pixel size is the one training *used*: :func:`model_pixel_size` keeps the
  requested canonical size (``TrainConfig.pixel_size_um``) only when at least one training
  cell declared a pixel size; a model trained only on cells without one has ``None``, so
  every crop it classifies is resized whole, whatever its file declares (issue 20: a model
  whose training cells declared nothing, but which claimed 0.55 µm, saw the cells of a
  0.62 µm camera rescaled and cut, about 1.4 times as large as in training).
  :func:`training_normalisation` is the spec training uses and stores in the model; it also
  records how many training cells had a pixel size (``training_pixel_sizes``), so a model
  can say when a cell without one is resized whole although training never did that
  (:func:`scale_note`).
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
    "FLAT_FIELD_METHODS",
    "check_normalisation",
    "flatten_illumination",
    "input_scale",
    "known_pixel_size",
    "model_pixel_size",
    "normalise_image",
    "pad_to_square",
    "pixel_size_list",
    "prepare_batch",
    "prepare_image",
    "scale_note",
    "training_normalisation",
]

#: Normalisation written to every model and used by :func:`prepare_batch`.
#: ``pixel_size_um`` is the pixel size of the network input that training used (``None``:
#: crops are resized whole, whatever their pixel size; see :func:`input_scale`).
DEFAULT_NORMALISATION: dict[str, Any] = {
    "method": "percentile",
    "low_percentile": 1.0,
    "high_percentile": 99.0,
    "clip": True,
    "pad": "border_median",
    "resize": "bilinear_antialias",
    "pixel_size_um": None,
    "flat_field": None,
}
#: Values of the spec's ``flat_field``: ``None`` (the image as it is) or ``"plane"``
#: (:func:`flatten_illumination` before the intensity scaling).
FLAT_FIELD_METHODS: tuple[str | None, ...] = (None, "plane")
#: Width (px) of the border ring on which the illumination plane is fitted.
FLAT_FIELD_RING = 3


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


def flatten_illumination(img: np.ndarray, ring: int = FLAT_FIELD_RING) -> np.ndarray:
    """Divide out an illumination plane fitted to the crop's border (a flat-field correction).

    Bright-field intensity is the cell's transmission times the illumination. A plane
    ``a + b·y + c·x`` is fitted (least squares) to the finite pixels of the border ring, where
    there is only background, and the image is divided by it and multiplied by its mean: a
    tilt or gradient of the illumination across the crop is removed, the mean level is kept.
    Where the plane comes near zero or below (a dark-field or fluorescence crop, a
    background at the bottom of the range) it is subtracted instead. Non-finite pixels stay
    non-finite.

    Parameters
    ----------
    img
        A 2-D image (any numeric dtype).
    ring
        Width of the border ring in pixels.

    Returns
    -------
    numpy.ndarray
        ``float32``, the same shape.
    """
    arr = np.asarray(img, dtype=np.float32)
    h, w = arr.shape
    if min(h, w) <= 2 * ring:
        return arr.copy()
    yy, xx = np.mgrid[0:h, 0:w]
    border = np.ones((h, w), dtype=bool)
    border[ring:-ring, ring:-ring] = False
    values = arr[border]
    finite = np.isfinite(values)
    if finite.sum() < 3:
        return arr.copy()
    ys = (yy[border][finite] - (h - 1) / 2) / h
    xs = (xx[border][finite] - (w - 1) / 2) / w
    design = np.column_stack([np.ones(ys.size), ys, xs])
    coef, *_ = np.linalg.lstsq(design, values[finite].astype(np.float64), rcond=None)
    plane = (coef[0] + coef[1] * (yy - (h - 1) / 2) / h + coef[2] * (xx - (w - 1) / 2) / w).astype(
        np.float32
    )
    level = float(coef[0])
    if level > 0 and float(plane.min()) > 0.05 * level:
        return arr / plane * np.float32(level)
    return arr - plane + np.float32(level)


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


def known_pixel_size(value: Any) -> float | None:
    """``value`` as a pixel size in µm when it is a positive finite number, else ``None``."""
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
        return None
    size = float(value)
    return size if math.isfinite(size) and size > 0 else None


def input_scale(model_pixel_size_um: Any, image_pixel_size_um: Any) -> float | None:
    """How one image is brought to the network input: **the scale rule**, in one place.

    Parameters
    ----------
    model_pixel_size_um
        The pixel size training rescaled its cells to (``normalisation["pixel_size_um"]``),
        or ``None`` when the model was trained on whole crops.
    image_pixel_size_um
        The pixel size the image's file declares (or the user gives), or ``None``.

    Returns
    -------
    float or None
        The resampling factor ``image / model`` when **both** are known (the crop is then
        rescaled by it and centred on the ``image_size`` canvas); ``None`` otherwise: the
        whole crop is padded to a square and resized to ``image_size``, as training did with
        its cells in that case (see the module docstring's table).
    """
    model = known_pixel_size(model_pixel_size_um)
    image = known_pixel_size(image_pixel_size_um)
    if model is None or image is None:
        return None
    return image / model


def model_pixel_size(requested_um: Any, pixel_sizes: Sequence[float | None] | None) -> float | None:
    """The pixel size a model is trained at: the requested one, if any training cell has one.

    Parameters
    ----------
    requested_um
        The canonical pixel size asked for (``TrainConfig.pixel_size_um``), or ``None``.
    pixel_sizes
        The training cells' declared pixel sizes (``None`` entries: unknown), or ``None``.

    Returns
    -------
    float or None
        ``requested_um`` when it is a pixel size and at least one training cell declares a
        pixel size; ``None`` otherwise (no cell was rescaled, so the model knows no scale).
    """
    requested = known_pixel_size(requested_um)
    if requested is None or not pixel_sizes:
        return None
    if any(known_pixel_size(v) is not None for v in pixel_sizes):
        return requested
    return None


def training_normalisation(
    requested_um: Any,
    pixel_sizes: Sequence[float | None] | None,
    n_cells: int | None = None,
    flat_field: bool = False,
) -> dict[str, Any]:
    """The normalisation spec training uses for its cells and stores in the model.

    Parameters
    ----------
    requested_um
        ``TrainConfig.pixel_size_um``.
    pixel_sizes
        The training cells' pixel sizes (``TrainingSet.pixel_sizes``; ``None``: none known).
    n_cells
        Number of training cells (needed when ``pixel_sizes`` is ``None``).
    flat_field
        ``TrainConfig.flat_field``: divide out the illumination plane of every crop
        (:func:`flatten_illumination`), in training and classification alike.

    Returns
    -------
    dict
        :data:`DEFAULT_NORMALISATION` with ``pixel_size_um`` from :func:`model_pixel_size`,
        ``flat_field`` and ``training_pixel_sizes``: ``{"known": k, "unknown": u}`` training
        cells.
    """
    sizes = list(pixel_sizes) if pixel_sizes is not None else []
    known = sum(1 for v in sizes if known_pixel_size(v) is not None)
    total = len(sizes) if pixel_sizes is not None else int(n_cells or 0)
    return {
        **DEFAULT_NORMALISATION,
        "pixel_size_um": model_pixel_size(requested_um, sizes),
        "flat_field": "plane" if flat_field else None,
        "training_pixel_sizes": {"known": known, "unknown": max(total - known, 0)},
    }


def scale_note(
    normalisation: Mapping[str, Any] | None, pixel_sizes: Iterable[float | None]
) -> str | None:
    """A sentence when cells were resized whole although the model's training never did so.

    That is the case of cells without a pixel size classified by a model whose training cells
    all had one (and were rescaled): the rule (:func:`input_scale`) resizes them whole, a
    geometry the network has not seen. ``None`` otherwise (also for files written before
    ``training_pixel_sizes`` was recorded).
    """
    spec = dict(normalisation or {})
    model = known_pixel_size(spec.get("pixel_size_um"))
    counts = spec.get("training_pixel_sizes")
    if model is None or not isinstance(counts, Mapping) or counts.get("unknown"):
        return None
    sizes = list(pixel_sizes)
    unknown = sum(1 for v in sizes if known_pixel_size(v) is None)
    if not unknown:
        return None
    return (
        f"{unknown} of {len(sizes)} cells declare no pixel size, so they were resized whole "
        f"to the network input; this model was trained on cells rescaled to {model:g} µm per "
        "pixel and never saw whole crops: give their pixel size (--pixel-size) for calls "
        "at the model's scale"
    )


def prepare_image(
    img: Any,
    image_size: int = DEFAULT_IMAGE_SIZE,
    normalisation: Mapping[str, Any] | None = None,
    pixel_size_um: float | None = None,
) -> torch.Tensor:
    """One image as the network sees it: ``(1, 1, image_size, image_size)`` float32.

    The same steps as :func:`prepare_batch` (which calls this per image).
    """
    spec = check_normalisation(normalisation)
    return _prepare_one(img, 0, image_size, spec, pixel_size_um)


def _prepare_one(
    img: Any, index: int, image_size: int, spec: Mapping[str, Any], pixel_size_um: Any
) -> torch.Tensor:
    import torch

    low, high = float(spec["low_percentile"]), float(spec["high_percentile"])
    arr = _as_2d(img, index)
    if spec.get("flat_field") == "plane":
        arr = flatten_illumination(arr)
    arr = normalise_image(arr, low, high)
    factor = input_scale(spec.get("pixel_size_um"), pixel_size_um)
    if factor is not None:
        h, w = arr.shape
        scaled = (max(1, round(h * factor)), max(1, round(w * factor)))
        t = _resize(torch.from_numpy(np.ascontiguousarray(arr))[None, None], scaled)
        arr = _fit_canvas(t[0, 0].numpy(), image_size)
        return torch.from_numpy(np.ascontiguousarray(arr))[None, None]
    arr = pad_to_square(arr)
    t = torch.from_numpy(np.ascontiguousarray(arr))[None, None]
    return _resize(t, (image_size, image_size))


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
        Pixel size (µm) of each image, ``None`` where unknown. Whether it is used is decided
        per image by :func:`input_scale` (only when the spec has a ``pixel_size_um`` too).

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
    tensors = []
    for index, img in enumerate(images):
        known = None if pixel_sizes is None else pixel_sizes[index]
        tensors.append(_prepare_one(img, index + index_offset, image_size, spec, known))
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
    if spec.get("flat_field") not in FLAT_FIELD_METHODS:
        raise ValueError(f"the flat-field correction {spec.get('flat_field')!r} is not known")
    size = spec.get("pixel_size_um")
    if size is not None and (
        isinstance(size, bool)
        or not isinstance(size, (int, float))
        or not math.isfinite(size)
        or size <= 0
    ):
        raise ValueError(f"the canonical pixel size {size} is not a positive number")
    counts = spec.get("training_pixel_sizes")
    if counts is not None and not (
        isinstance(counts, Mapping)
        and all(
            isinstance(counts.get(k), int)
            and not isinstance(counts.get(k), bool)
            and counts.get(k) >= 0
            for k in ("known", "unknown")
        )
    ):
        raise ValueError("the record of how many training cells had a pixel size is not readable")
    return spec
