"""ResNet classifier, image normalisation, device choice and the model file.

Design choices
--------------
* **Network.** A plain torchvision ResNet (18, 34 or 50) whose ``conv1`` takes **one** input
  channel (bright-field) and whose ``fc`` gives **one** logit; ``P(CTC) = sigmoid(logit)``.
  Adapting ``conv1`` rather than replicating grey to three channels costs a third of the
  first-layer multiply-adds and memory traffic, and is mathematically the same thing when
  ImageNet weights are used: a grey image replicated to RGB and normalised with ImageNet's
  per-channel mean/std gives ``sum_c W_c * (x - m_c) / s_c = (sum_c W_c / s_c) * x - const``,
  so the one-channel filter is ``sum_c W_c / s_c``. The constant offset is absorbed by the
  BatchNorm that follows ``conv1``. The state dict keeps torchvision's key names, so the
  weights can be loaded into ``torchvision.models.resnetXX(num_classes=1)`` with a one-channel
  ``conv1`` by anyone, without this package.
* **Input size** is configurable (``image_size``); the default 64 px matches the synthetic
  ~64 px cell crops, keeps the morphology (cell outline, nucleus, texture) and is fast on a
  2-core CPU (a ResNet18 forward pass at 64 px costs ~8 % of one at 224 px). ResNets end in an
  adaptive pooling layer, so any size >= 16 px works with the same weights.
* **Normalisation** (:func:`normalise_image`): per image, the 1st and 99th percentiles of the
  finite pixels are mapped to 0 and 1 and the result is clipped to [0, 1]. This makes 8-, 12-
  and 16-bit data and different illumination levels comparable and is robust to a few hot or
  dead pixels. Non-finite pixels are replaced by the median of the finite ones (background);
  a constant image becomes all zeros. The network sees exactly these [0, 1] values (no further
  mean/std step: BatchNorm follows ``conv1``).
* **Pad to square, then resize** (:func:`prepare_batch`): non-square crops are padded
  (after normalisation) with the median of their border pixels, i.e. the local background,
  so the aspect ratio and cell shape are kept; then they are resized with antialiasing.
* **Model file**: one ``torch.save`` file holding only plain types and tensors::

      {"format": "napari-deparray-ctc-model", "format_version": 1,
       "metadata": {...JSON-safe...}, "state_dict": {name: tensor}}

  It is written atomically and read only with ``torch.load(weights_only=True)``, which
  refuses any pickled object other than tensors and plain containers, so opening a foreign
  or malicious file can never run code. Everything else that can go wrong (not a torch file,
  truncated, a foreign dict, unknown architecture, a newer format, weights that do not fit)
  raises :class:`ModelFileError` naming the file and the reason.
"""

from __future__ import annotations

import json
import math
import os
import platform
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_deparray_ctc.core.constants import (
    ARCHITECTURES,
    CLASS_NAMES,
    DEFAULT_IMAGE_SIZE,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
)
from napari_deparray_ctc.core.errors import ModelFileError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "ARCHITECTURES",
    "CLASS_NAMES",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_NORMALISATION",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LoadedModel",
    "ModelFileError",
    "build_network",
    "describe_model",
    "find_imagenet_weights",
    "load_model",
    "normalise_image",
    "package_versions",
    "pad_to_square",
    "prepare_batch",
    "save_model",
    "select_device",
]

#: Model file format name and version (``format_version`` is bumped on incompatible changes).
FORMAT_NAME = "napari-deparray-ctc-model"
FORMAT_VERSION = 1
#: Normalisation written to every model and used by :func:`prepare_batch`.
DEFAULT_NORMALISATION: dict[str, Any] = {
    "method": "percentile",
    "low_percentile": 1.0,
    "high_percentile": 99.0,
    "clip": True,
    "pad": "border_median",
    "resize": "bilinear_antialias",
}
_IMAGENET_GREY_STD = (0.229, 0.224, 0.225)  # ImageNet per-channel std (R, G, B)


# --------------------------------------------------------------------------------------------
# normalisation and batching (numpy; torch only for the resize)
# --------------------------------------------------------------------------------------------


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
        ``float32`` image of the same shape with values in [0, 1]. Non-finite pixels are
        replaced by the median of the finite pixels before scaling; an image with no finite
        pixels, or whose percentiles coincide (constant image), becomes all zeros.
    """
    arr = np.asarray(img)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
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


def pad_to_square(img: np.ndarray) -> np.ndarray:
    """Pad a 2-D image to a square with the median of its border pixels (the background).

    Parameters
    ----------
    img
        2-D image (normalised or not).

    Returns
    -------
    numpy.ndarray
        Square image, the original centred; returned unchanged when already square.
    """
    h, w = img.shape
    if h == w:
        return img
    border = np.concatenate([img[0, :], img[-1, :], img[:, 0], img[:, -1]])
    fill = float(np.median(border))
    size = max(h, w)
    top = (size - h) // 2
    left = (size - w) // 2
    out = np.full((size, size), fill, dtype=img.dtype)
    out[top : top + h, left : left + w] = img
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
        raise ValueError(f"image {index} has non-numeric dtype {arr.dtype}")
    return arr


def prepare_batch(
    images: Iterable[np.ndarray],
    image_size: int = DEFAULT_IMAGE_SIZE,
    normalisation: Mapping[str, Any] | None = None,
    index_offset: int = 0,
) -> torch.Tensor:
    """Normalise, pad to square and resize images into one network input batch.

    Parameters
    ----------
    images
        2-D images (any size, dtype). Singleton extra dimensions are squeezed.
    image_size
        Output side length in pixels.
    normalisation
        A normalisation spec as stored in model metadata (defaults to
        :data:`DEFAULT_NORMALISATION`).
    index_offset
        Added to an image's position in error messages (for streamed batches).

    Returns
    -------
    torch.Tensor
        ``float32`` tensor of shape ``(N, 1, image_size, image_size)``, values in [0, 1].

    Raises
    ------
    ValueError
        An image is not 2-D, empty, or the normalisation method is unknown.
    """
    import torch
    import torch.nn.functional as F

    spec = _check_normalisation(normalisation)
    low, high = float(spec["low_percentile"]), float(spec["high_percentile"])
    tensors = []
    for index, img in enumerate(images):
        arr = pad_to_square(normalise_image(_as_2d(img, index + index_offset), low, high))
        t = torch.from_numpy(np.ascontiguousarray(arr))[None, None]
        if arr.shape[0] != image_size:
            t = F.interpolate(
                t,
                size=(image_size, image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            ).clamp_(0.0, 1.0)
        tensors.append(t)
    if not tensors:
        return torch.zeros((0, 1, image_size, image_size), dtype=torch.float32)
    return torch.cat(tensors, dim=0)


def _check_normalisation(normalisation: Mapping[str, Any] | None) -> dict[str, Any]:
    spec = dict(DEFAULT_NORMALISATION)
    if normalisation is not None:
        spec.update(normalisation)
    if spec.get("method") != "percentile":
        raise ValueError(f"unknown normalisation method {spec.get('method')!r}")
    low, high = spec.get("low_percentile"), spec.get("high_percentile")
    if not (
        isinstance(low, (int, float)) and isinstance(high, (int, float)) and 0 <= low < high <= 100
    ):
        raise ValueError(f"invalid normalisation percentiles {low!r}, {high!r}")
    return spec


# --------------------------------------------------------------------------------------------
# device
# --------------------------------------------------------------------------------------------


def select_device(preferred: str | None = None) -> str:
    """Choose the compute device.

    Parameters
    ----------
    preferred
        ``None`` or ``"auto"``: CUDA if available, then Apple MPS, then CPU. Otherwise a torch
        device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) that is used as given.

    Returns
    -------
    str
        The device string.

    Raises
    ------
    ValueError
        The requested device is not available on this machine.
    """
    import torch

    if preferred is None or str(preferred).strip().lower() in ("", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    name = str(preferred).strip().lower()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"unknown device {preferred!r}: {exc}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {preferred!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {preferred!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {preferred!r} requested but Apple MPS is not available")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {preferred!r} (use cpu, cuda or mps)")
    return name


# --------------------------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------------------------


def _check_arch(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return arch


def _imagenet_weight_files(arch: str) -> list[str]:
    """Standard torchvision file names of the ImageNet weights for ``arch``."""
    from .gl_guard import avoid_gl_llvm_clash

    avoid_gl_llvm_clash()  # before torchvision: see core.gl_guard
    import torchvision.models as tvm

    enum = {
        "resnet18": tvm.ResNet18_Weights,
        "resnet34": tvm.ResNet34_Weights,
        "resnet50": tvm.ResNet50_Weights,
    }[arch]
    return [Path(w.url).name for w in enum]


def find_imagenet_weights(arch: str) -> Path | None:
    """Look for ImageNet weights of ``arch`` in the local torch hub cache (no network).

    Parameters
    ----------
    arch
        ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.

    Returns
    -------
    pathlib.Path or None
        The first of torchvision's standard files (e.g. ``resnet18-f37072fd.pth``) found in
        ``torch.hub.get_dir()/checkpoints``, or ``None``.
    """
    import torch

    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    for name in _imagenet_weight_files(_check_arch(arch)):
        candidate = checkpoints / name
        if candidate.is_file():
            return candidate
    return None


def build_network(arch: str = "resnet18", pretrained: str | os.PathLike | None = None):
    """Build a one-channel-in, one-logit-out ResNet.

    Parameters
    ----------
    arch
        ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
    pretrained
        ``None``: random initialisation (torchvision's default). ``"auto"``: ImageNet weights
        from the local torch cache when present, otherwise a warning and random
        initialisation. A path: ImageNet weights from that file (a torchvision ResNet state
        dict), or a napari-deparray-ctc model file of the same architecture (fine-tuning);
        a missing or unusable file raises :class:`ModelFileError`. The network is never used.

    Returns
    -------
    torch.nn.Module
        The network (train mode, on CPU). ``network.pretrained_source`` records where the
        initial weights came from (``None`` for random).
    """
    import torch

    from .gl_guard import avoid_gl_llvm_clash

    avoid_gl_llvm_clash()  # before torchvision: see core.gl_guard
    import torchvision.models as tvm

    _check_arch(arch)
    network = getattr(tvm, arch)(weights=None, num_classes=1)
    network.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    torch.nn.init.kaiming_normal_(network.conv1.weight, mode="fan_out", nonlinearity="relu")
    source: str | None = None
    if pretrained is not None:
        if str(pretrained) == "auto":
            path = find_imagenet_weights(arch)
            if path is None:
                names = " or ".join(_imagenet_weight_files(arch))
                warnings.warn(
                    f"ImageNet weights for {arch} not found in the local torch cache "
                    f"({Path(torch.hub.get_dir()) / 'checkpoints'}/{names}); training from "
                    "random initialisation. Put the file there or pass its path to use them.",
                    stacklevel=2,
                )
            else:
                source = _load_pretrained(network, arch, path)
        else:
            source = _load_pretrained(network, arch, Path(pretrained))
    network.pretrained_source = source
    return network


def _load_pretrained(network, arch: str, path: Path) -> str:
    """Copy ImageNet (or own-model) weights into ``network``; conv1 summed to one channel."""
    import torch

    if not path.is_file():
        raise ModelFileError(path, "pretrained weights file does not exist")
    payload = _safe_torch_load(path, "cpu")
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT_NAME:
        loaded = _validate_payload(path, payload)
        if loaded["metadata"]["arch"] != arch:
            raise ModelFileError(
                path,
                f"is a {loaded['metadata']['arch']} model; cannot initialise a {arch} from it",
            )
        try:
            network.load_state_dict(loaded["state_dict"])
        except RuntimeError:
            raise ModelFileError(path, f"weights do not fit a one-channel {arch}") from None
        return f"model:{path.name}"
    if not isinstance(payload, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in payload.values()
    ):
        raise ModelFileError(path, "is not a torchvision ResNet state dict (ImageNet weights)")
    state = dict(payload)
    conv1 = state.get("conv1.weight")
    if conv1 is None or conv1.ndim != 4 or conv1.shape[1] not in (1, 3):
        raise ModelFileError(path, "has no usable 'conv1.weight' (not ResNet weights)")
    if conv1.shape[1] == 3:
        # grey replicated to RGB and ImageNet-normalised: sum_c W_c / s_c (see module doc)
        std = torch.tensor(_IMAGENET_GREY_STD, dtype=conv1.dtype).view(1, 3, 1, 1)
        state["conv1.weight"] = (conv1 / std).sum(dim=1, keepdim=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = network.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        detail = ", ".join((missing + unexpected)[:5])
        raise ModelFileError(path, f"weights do not fit a {arch} (mismatched keys: {detail})")
    return f"imagenet:{path.name}"


# --------------------------------------------------------------------------------------------
# the loaded model
# --------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A network ready for inference, with its metadata.

    Attributes
    ----------
    network
        The ResNet, in eval mode, on ``device``. ``network(x)`` with ``x`` from
        :func:`prepare_batch` gives logits of shape ``(N, 1)``.
    metadata
        JSON-safe dict: ``arch``, ``input_channel`` (``"BF"``), ``image_size``,
        ``normalisation``, ``class_names`` (``["WBC", "CTC"]``), ``threshold``,
        ``train_config``, ``seed``, ``data_summary``, ``metrics``, ``versions``,
        ``format_version``.
    device
        Device string the network lives on.
    """

    network: Any
    metadata: dict
    device: str = "cpu"

    @property
    def threshold(self) -> float:
        """Decision threshold on P(CTC) chosen on validation (cells >= it are CTC)."""
        return float(self.metadata.get("threshold", 0.5))

    @property
    def image_size(self) -> int:
        """Network input side length in pixels."""
        return int(self.metadata.get("image_size", DEFAULT_IMAGE_SIZE))

    @property
    def arch(self) -> str:
        """Architecture name, e.g. ``"resnet18"``."""
        return str(self.metadata["arch"])

    @property
    def normalisation(self) -> dict:
        """Normalisation spec to pass to :func:`prepare_batch`."""
        return dict(self.metadata.get("normalisation") or DEFAULT_NORMALISATION)

    def to(self, device: str | None) -> LoadedModel:
        """Move the network to ``device`` (in place) and return ``self``.

        Parameters
        ----------
        device
            A device string, or ``None`` / ``"auto"`` for :func:`select_device`.
        """
        target = select_device(device)
        self.network.to(target)
        self.device = target
        return self

    def predict_proba(self, batch) -> np.ndarray:
        """P(CTC) for a prepared batch (see :func:`prepare_batch`); no gradient, eval mode.

        Parameters
        ----------
        batch
            ``float32`` tensor ``(N, 1, S, S)``.

        Returns
        -------
        numpy.ndarray
            ``float64`` probabilities, shape ``(N,)``.
        """
        import torch

        self.network.eval()
        device = torch.device(self.device)
        with torch.inference_mode():
            x = batch.to(device, non_blocking=True)
            if device.type == "cuda":
                with torch.autocast(device_type="cuda", dtype=torch.float16):
                    logits = self.network(x)
            else:
                logits = self.network(x)
            p = torch.sigmoid(logits.float().reshape(-1))
        return p.cpu().numpy().astype(np.float64)


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------


def _json_safe(value: Any, where: str = "metadata") -> Any:
    """Convert numpy scalars/arrays, tuples and paths to JSON types; reject anything else."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)  # plain str: subclasses (e.g. torch's version string) do not unpickle
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist(), where)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where} has a value of type {type(value).__name__} that is not JSON-safe")


def package_versions() -> dict[str, str]:
    """Versions recorded in every model file (package, torch, torchvision, numpy, python)."""
    import torch
    import torchvision

    from napari_deparray_ctc import __version__

    return {
        "napari_deparray_ctc": str(__version__),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


def save_model(path: str | os.PathLike, network, metadata: Mapping[str, Any] | None = None) -> None:
    """Write a network and its metadata to one model file, atomically.

    Parameters
    ----------
    path
        Destination (conventionally ``*.pt``). Its folder must exist. A failure leaves any
        existing file at ``path`` untouched.
    network
        The ResNet from :func:`build_network` (its weights are copied to CPU float32), or a
        :class:`LoadedModel` (its network; its metadata is the base that ``metadata``
        updates).
    metadata
        Must contain ``arch`` and ``threshold``; ``image_size``, ``normalisation``,
        ``input_channel``, ``class_names``, ``versions`` and ``format_version`` are filled in
        when missing. Every value must be JSON-safe (numpy scalars and tuples are converted).

    Raises
    ------
    TypeError
        A metadata value is not JSON-safe.
    ValueError
        ``arch`` is unknown or ``threshold`` is not in [0, 1].
    """
    import torch

    from napari_deparray_ctc.core.atomic import atomic_write

    if isinstance(network, LoadedModel):
        metadata = {**network.metadata, **dict(metadata or {})}
        network = network.network
    meta = _json_safe(dict(metadata or {}))
    _check_arch(meta.get("arch", ""))
    threshold = meta.get("threshold")
    if not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"metadata threshold must be a number in [0, 1], got {threshold!r}")
    meta["threshold"] = float(threshold)
    meta.setdefault("image_size", DEFAULT_IMAGE_SIZE)
    meta.setdefault("normalisation", dict(DEFAULT_NORMALISATION))
    meta["input_channel"] = "BF"
    meta["class_names"] = list(CLASS_NAMES)
    meta["format_version"] = FORMAT_VERSION
    meta.setdefault("versions", package_versions())
    meta = _json_safe(meta)
    json.dumps(meta)  # guarantees JSON-safety (raises TypeError otherwise)
    state = {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in network.state_dict().items()
    }
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "metadata": meta,
        "state_dict": state,
    }
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)


def _starts_like_a_pickle(path: Path) -> bool:
    """A torch zip archive (``PK``) or a pickle stream (``PROTO`` opcode of protocols 2-5, or
    the usual first opcodes of protocols 0-1: ``GLOBAL``, ``MARK``, empty dict / list).

    torch's weights-only unpickler rejects random bytes with the same error as a pickle of
    foreign objects; only a file that looks like a pickle is reported as one.
    """
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head == b"PK" or head[:1] in (b"c", b"(", b"}", b"]"):
        return True
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _safe_torch_load(path: Path, map_location: str) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into ModelFileError."""
    import pickle

    import torch

    if not path.exists():
        raise ModelFileError(path, "file does not exist")
    if not path.is_file():
        raise ModelFileError(path, "is not a file")
    if path.stat().st_size == 0:
        raise ModelFileError(path, "file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        weights_only_refusal = (
            "weights only" in str(exc).lower() or "weights_only" in str(exc).lower()
        )
        if weights_only_refusal and _starts_like_a_pickle(path):
            raise ModelFileError(
                path,
                "refused: the file contains pickled Python objects that a model file must not "
                "contain (loading them could run code); nothing in it was executed",
            ) from None
        if weights_only_refusal:  # random bytes fail the same way: not a pickle at all
            raise ModelFileError(
                path, "not a model file, or truncated/corrupted (not a torch or pickle file)"
            ) from None
        raise ModelFileError(path, f"not a readable model file ({exc})") from None
    except MemoryError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(
            path, f"not a model file, or truncated/corrupted ({type(exc).__name__}: {reason[:200]})"
        ) from None


def _validate_payload(path: Path, payload: Any) -> dict:
    """Check the structure of a loaded payload; returns it with a checked metadata dict."""
    import torch

    if not isinstance(payload, Mapping):
        raise ModelFileError(
            path, f"not a napari-deparray-ctc model (holds a {type(payload).__name__})"
        )
    if payload.get("format") != FORMAT_NAME:
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            raise ModelFileError(
                path,
                "not a napari-deparray-ctc model: it is a bare state dict without metadata "
                "(to start from such weights, pass it as 'pretrained' when training)",
            )
        raise ModelFileError(path, "not a napari-deparray-ctc model (no 'format' marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(path, f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            path,
            f"written by a newer napari-deparray-ctc (format version {version}; this version "
            f"reads up to {FORMAT_VERSION}); please upgrade",
        )
    for key in ("metadata", "state_dict"):
        if key not in payload:
            raise ModelFileError(path, f"missing {key!r}")
    meta = payload["metadata"]
    state = payload["state_dict"]
    if not isinstance(meta, Mapping):
        raise ModelFileError(path, "'metadata' is not a dict")
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelFileError(path, "'state_dict' is not a dict of tensors")
    meta = dict(meta)
    for key in ("arch", "threshold", "image_size"):
        if key not in meta:
            raise ModelFileError(path, f"metadata lacks {key!r}")
    if meta["arch"] not in ARCHITECTURES:
        raise ModelFileError(
            path, f"unknown architecture {meta['arch']!r} (supported: {', '.join(ARCHITECTURES)})"
        )
    threshold = meta["threshold"]
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not (0.0 <= float(threshold) <= 1.0)
    ):
        raise ModelFileError(path, f"threshold {threshold!r} is not a number in [0, 1]")
    size = meta["image_size"]
    if (
        isinstance(size, bool)
        or not isinstance(size, int)
        or not (MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE)
    ):
        raise ModelFileError(
            path, f"image_size {size!r} is not an integer in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]"
        )
    if meta.get("input_channel", "BF") != "BF":
        raise ModelFileError(path, f"input channel {meta.get('input_channel')!r} is not 'BF'")
    try:
        meta["normalisation"] = _check_normalisation(meta.get("normalisation"))
    except ValueError as exc:
        raise ModelFileError(path, str(exc)) from None
    return {"metadata": meta, "state_dict": dict(state)}


def load_model(path: str | os.PathLike, device: str | None = None) -> LoadedModel:
    """Load a model file safely.

    Parameters
    ----------
    path
        A file written by :func:`save_model`.
    device
        ``None``/``"auto"`` for :func:`select_device`, or a device string.

    Returns
    -------
    LoadedModel
        Network in eval mode on ``device``; ``metadata`` includes ``format_version``.

    Raises
    ------
    ModelFileError
        The file is missing, not a torch file, truncated, contains pickled objects (refused
        without executing anything), is a foreign dict, has an unknown architecture, a newer
        format version, or weights that do not fit the architecture.
    """
    path = Path(path)
    target = select_device(device)
    # tensors land on CPU first: a model saved on a GPU machine opens anywhere
    payload = _safe_torch_load(path, "cpu")
    checked = _validate_payload(path, payload)
    meta = checked["metadata"]
    network = build_network(meta["arch"])
    try:
        network.load_state_dict(checked["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise ModelFileError(
            path, f"weights do not fit a one-channel {meta['arch']} ({detail})"
        ) from None
    meta["format_version"] = int(payload["format_version"])
    network.eval()
    network.to(target)
    return LoadedModel(network=network, metadata=meta, device=target)


def describe_model(model: LoadedModel) -> str:
    """One-line human description of a loaded model (for logs and widgets)."""
    meta = model.metadata
    f1 = (meta.get("metrics") or {}).get("f1")
    f1_text = f", validation F1 {f1:.3f}" if isinstance(f1, (int, float)) else ""
    return f"{model.arch}, {model.image_size} px BF input, threshold {model.threshold:.3f}{f1_text}"
