"""The trained model: :class:`LoadedModel`, and saving and loading model files.

The network is ``core.network`` (a one-channel torchvision ResNet, or a small ensemble of
them), the input is ``core.preprocess`` and the file layout and its safe reader are
``core.model_format``; this module puts them together. ``LoadedModel.predict_proba`` returns
**calibrated** P(CTC): the calibration fitted on out-of-fold predictions in training
(``core.calibration``) is stored in the file and applied here.

The names of those modules that callers have always imported from here (``build_network``,
``prepare_batch``, ``select_device``...) are importable from this module too.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_deparray_ctc.core.constants import ARCHITECTURES, CLASS_NAMES, DEFAULT_IMAGE_SIZE
from napari_deparray_ctc.core.errors import ModelFileError
from napari_deparray_ctc.core.inference.preprocess import (
    DEFAULT_NORMALISATION,
    normalise_image,
    pad_to_square,
    prepare_batch,
)
from napari_deparray_ctc.core.model.file_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    json_safe,
    package_versions,
    read_payload,
    validate_payload,
)

__all__ = [
    "ARCHITECTURES",
    "CLASS_NAMES",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_NORMALISATION",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LoadedModel",
    "ModelFileError",
    "build_network",  # noqa: F822 - lazy, see __getattr__
    "find_imagenet_weights",  # noqa: F822
    "load_model",
    "normalise_image",
    "package_versions",
    "pad_to_square",
    "prepare_batch",
    "save_model",
    "select_device",  # noqa: F822
]

_NETWORK_NAMES = ("build_network", "build_ensemble", "find_imagenet_weights", "select_device")


def __getattr__(name: str) -> Any:
    # the network functions live in core.network; importing them lazily keeps this module
    # importable without torch (``from ...core.model.loaded import build_network`` still works)
    if name in _NETWORK_NAMES:
        from napari_deparray_ctc.core.model import network

        return getattr(network, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The eight rotations and reflections of the square, as (k quarter turns, flip).
_DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


@dataclass
class LoadedModel:
    """A network ready for inference, with its metadata.

    Attributes
    ----------
    network
        The ResNet (or an ensemble of them), in eval mode, on ``device``. ``network(x)`` with
        ``x`` from :func:`prepare_batch` gives logits ``(N, 1)`` before calibration.
    metadata
        JSON-safe dict: ``arch``, ``input_channel`` (``"BF"``), ``image_size``,
        ``normalisation``, ``class_names`` (``["WBC", "CTC"]``), ``threshold`` (on calibrated
        P(CTC)), ``calibration``, ``threshold_sd``, ``learned``, ``warning``, ``ensemble``,
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
        """Decision threshold on calibrated P(CTC) (cells at or above it are CTC)."""
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

    @property
    def calibration(self) -> dict | None:
        """The calibration of the logit (``None``: plain sigmoid, an uncalibrated model)."""
        return self.metadata.get("calibration")

    @property
    def site_profile(self) -> dict | None:
        """The site this model was calibrated for (``core.inference.site_calibration``), or
        ``None`` for a model as training wrote it."""
        profile = self.metadata.get("site_profile")
        return dict(profile) if isinstance(profile, dict) else None

    @property
    def learned(self) -> bool:
        """``False`` when training could not show that the model beats the trivial calls."""
        return bool(self.metadata.get("learned", True))

    def to(self, device: str | None) -> LoadedModel:
        """Move the network to ``device`` (``None``/``"auto"``: the best one) and return self."""
        from napari_deparray_ctc.core.model.network import select_device

        target = select_device(device)
        self.network.to(target)
        self.device = target
        return self

    def predict_logits(self, batch, tta: bool = False) -> np.ndarray:
        """Uncalibrated logits of a prepared batch ``(N, 1, S, S)``; no gradient, eval mode.

        ``tta`` averages the network's logits over the eight rotations and reflections of each
        image. A model trained with ``morphology`` combines the network's logit with the
        cells' shape features here (``core.training.stacking``): the logit returned is the
        stacked one, which the calibration was fitted on.
        """
        import torch

        self.network.eval()
        device = torch.device(self.device)
        views = _DIHEDRAL if tta else _DIHEDRAL[:1]
        with torch.inference_mode():
            x = batch.to(device, non_blocking=True)
            total = None
            for k, flip in views:
                view = torch.rot90(x, k, dims=(-2, -1)) if k else x
                view = torch.flip(view, dims=(-1,)) if flip else view
                with torch.autocast(
                    device_type="cuda", dtype=torch.float16, enabled=device.type == "cuda"
                ):
                    logits = self.network(view).float().reshape(-1)
                total = logits if total is None else total + logits
        logits = (total / len(views)).cpu().numpy().astype(np.float64)
        stack = self.metadata.get("morphology_stack")
        if stack:
            from napari_deparray_ctc.core.inference.morphology import morphology_features
            from napari_deparray_ctc.core.training.stacking import stacked_logits

            logits = stacked_logits(stack, logits, morphology_features(batch))
        return logits

    def predict_proba(self, batch, tta: bool = False) -> np.ndarray:
        """Calibrated P(CTC) for a prepared batch (see :func:`prepare_batch`).

        Returns
        -------
        numpy.ndarray
            ``float64`` probabilities, shape ``(N,)``.
        """
        from napari_deparray_ctc.core.training.calibration import apply_calibration

        return apply_calibration(self.calibration, self.predict_logits(batch, tta=tta))

    def adapted(self, batches: Iterable) -> LoadedModel:
        """A copy whose BatchNorm statistics are re-estimated on prepared ``batches``.

        Test-time adaptation to a new instrument: the weights stay, only the running means
        and variances of every BatchNorm layer are recomputed on the cells to classify
        (cumulative average over all batches).
        """
        import torch

        network = copy.deepcopy(self.network)
        norms = [
            m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        ]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
        network.train()
        device = torch.device(self.device)
        with torch.no_grad():
            for batch in batches:
                if batch.shape[0] > 1:
                    network(batch.to(device))
        network.eval()
        return LoadedModel(network=network, metadata=dict(self.metadata), device=self.device)


def save_model(path: str | os.PathLike, network, metadata: Mapping[str, Any] | None = None) -> None:
    """Write a network and its metadata to one model file, atomically.

    Parameters
    ----------
    path
        Destination (conventionally ``*.pt``). Its folder must exist. A failure leaves any
        existing file at ``path`` untouched.
    network
        The ResNet from ``build_network`` or an ensemble from ``build_ensemble``, or a
        :class:`LoadedModel` (its network; its metadata is the base that ``metadata``
        updates). Weights are copied to the CPU and stored as float16, half the size of
        float32 on disk (``metadata["weights_dtype"]``); :func:`load_model` reads them back
        as float32 (a tensor beyond float16's range stays float32). The change of P(CTC)
        is about 1e-4 (``tests/core/model/test_model.py``).
    metadata
        Must contain ``arch`` and ``threshold``; ``image_size``, ``normalisation``,
        ``input_channel``, ``class_names``, ``ensemble``, ``versions`` and
        ``format_version`` are filled in. Every value must be JSON-safe (numpy scalars and
        tuples are converted).

    Raises
    ------
    TypeError
        A metadata value cannot be stored as JSON.
    ValueError
        ``arch`` is unknown or ``threshold`` is not in [0, 1].
    """
    import torch

    from napari_deparray_ctc.core.atomic import atomic_write

    if isinstance(network, LoadedModel):
        metadata = {**network.metadata, **dict(metadata or {})}
        network = network.network
    meta = json_safe(dict(metadata or {}))
    if meta.get("arch") not in ARCHITECTURES:
        raise ValueError(
            f"the architecture {meta.get('arch')} is not known; choose one of "
            f"{', '.join(ARCHITECTURES)}"
        )
    threshold = meta.get("threshold")
    if not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"the threshold must be a number from 0 to 1, not {threshold}")
    meta["threshold"] = float(threshold)
    meta.setdefault("image_size", DEFAULT_IMAGE_SIZE)
    meta["normalisation"] = {**DEFAULT_NORMALISATION, **(meta.get("normalisation") or {})}
    meta["input_channel"] = "BF"
    meta["class_names"] = list(CLASS_NAMES)
    meta["ensemble"] = len(network.members) if hasattr(network, "members") else 1
    meta["format_version"] = FORMAT_VERSION
    meta.setdefault("versions", package_versions())
    json.dumps(meta)  # guarantees JSON-safety (raises TypeError otherwise)
    state = {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in network.state_dict().items()
    }
    state = {k: _on_disk(v) for k, v in state.items()}
    meta["weights_dtype"] = "float16"
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "metadata": meta,
        "state_dict": state,
    }
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)


#: Largest magnitude stored as float16 (its largest finite value is 65504).
_FLOAT16_LIMIT = 60000.0


def _on_disk(tensor):
    """A weight as stored: float16 (half the size; read back as float32), unless float16
    cannot hold it (a value beyond its range), which stays float32."""
    if not tensor.is_floating_point():
        return tensor
    tensor = tensor.float()
    if tensor.numel() and float(tensor.abs().max()) > _FLOAT16_LIMIT:
        return tensor
    return tensor.half()


def _as_float32(state: Mapping) -> dict:
    """Every floating tensor of a state dict as float32 (files store float16 or float32)."""
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def _mismatch(network, state: Mapping) -> str:
    """The layers that differ between a network and a state dict, in words."""
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    parts = []
    if shape:
        parts.append(f"other sizes in {', '.join(shape[:3])}")
    if missing:
        parts.append(f"{len(missing)} layer(s) missing, e.g. {missing[0]}")
    if extra:
        parts.append(f"{len(extra)} unexpected layer(s), e.g. {extra[0]}")
    return "; ".join(parts) or "the layers do not match"


def load_model(path: str | os.PathLike, device: str | None = None) -> LoadedModel:
    """Load a model file safely (nothing in the file is executed).

    Parameters
    ----------
    path
        A file written by :func:`save_model`.
    device
        ``None``/``"auto"`` for the best available device, or a device string.

    Returns
    -------
    LoadedModel
        Network in eval mode on ``device``; ``metadata`` includes ``format_version``.

    Raises
    ------
    ModelFileError
        The file is missing, a text file, not a torch file, truncated, contains pickled
        objects (refused without executing anything), is a foreign dict, has an unknown
        architecture, a newer format version, or weights that do not fit the architecture.
    """
    from napari_deparray_ctc.core.model.network import (
        build_ensemble,
        build_network,
        select_device,
        unwrap_members,
    )

    path = Path(path)
    target = select_device(device)
    # tensors land on CPU first: a model saved on a GPU machine opens anywhere
    checked = validate_payload(path, read_payload(path, "cpu"))
    meta = checked["metadata"]
    states = [_as_float32(state) for state in unwrap_members(checked["state_dict"])]
    if len(states) != int(meta.get("ensemble", 1)):
        raise ModelFileError(path, "the file holds another number of networks than it says")
    networks = []
    for state in states:
        network = build_network(meta["arch"])
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError:
            raise ModelFileError(
                path,
                f"the weights do not fit a one-channel {meta['arch']} ({_mismatch(network, state)})",
            ) from None
        networks.append(network)
    meta["format_version"] = checked["format_version"]
    network = build_ensemble(networks)
    network.eval()
    network.to(target)
    return LoadedModel(network=network, metadata=meta, device=target)
