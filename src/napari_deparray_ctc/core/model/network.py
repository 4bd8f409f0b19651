"""The network: a one-channel-in, one-logit-out torchvision ResNet, and the device it runs on.

* A plain torchvision ResNet (18, 34 or 50) whose ``conv1`` takes **one** input channel
  (bright-field) and whose ``fc`` gives **one** logit; ``P(CTC) = sigmoid(logit)`` before
  calibration. Adapting ``conv1`` rather than replicating grey to three channels costs a
  third of the first-layer work, and is the same thing when ImageNet weights are used: a
  grey image replicated to RGB and normalised with ImageNet's per-channel mean/std gives
  ``sum_c W_c * (x - m_c) / s_c = (sum_c W_c / s_c) * x - const``, so the one-channel filter
  is ``sum_c W_c / s_c`` (the constant is absorbed by the BatchNorm after ``conv1``). The
  state dict keeps torchvision's key names: anyone can load the weights into
  ``torchvision.models.resnetXX(num_classes=1)`` with a one-channel ``conv1``.
* Any input size >= 16 px works with the same weights (adaptive pooling); 64 px keeps the
  morphology of ~64 px cell crops and costs ~8 % of a 224 px pass.
* An *ensemble* (:func:`build_ensemble`) averages the logits of a few such networks.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from napari_deparray_ctc.core.constants import ARCHITECTURES
from napari_deparray_ctc.core.errors import ModelFileError
from napari_deparray_ctc.core.model.file_format import FORMAT_NAME, read_payload, validate_payload
from napari_deparray_ctc.core.model.pretrained import WEIGHTS_FORMAT, pretrained_path

__all__ = [
    "build_ensemble",
    "build_network",
    "download_imagenet_weights",
    "find_imagenet_weights",
    "select_device",
    "unwrap_members",
]

_IMAGENET_GREY_STD = (0.229, 0.224, 0.225)  # ImageNet per-channel std (R, G, B)


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
        raise ValueError(f"the device {preferred} is not known (use cpu, cuda or mps)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"the device {preferred} was asked for, but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"the device {preferred} was asked for, but this machine has only "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(
                f"the device {preferred} was asked for, but Apple MPS is not available"
            )
    elif device.type != "cpu":
        raise ValueError(f"the device {preferred} is not supported (use cpu, cuda or mps)")
    return name


# --------------------------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------------------------


def _check_arch(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"the architecture {arch} is not known; choose one of {', '.join(ARCHITECTURES)}"
        )
    return arch


def _imagenet_weight_files(arch: str) -> list[str]:
    """Standard torchvision file names of the ImageNet weights for ``arch``."""
    from napari_deparray_ctc.core.gl_guard import avoid_gl_llvm_clash

    avoid_gl_llvm_clash()  # before torchvision: see core.gl_guard
    import torchvision.models as tvm

    enum = {
        "resnet18": tvm.ResNet18_Weights,
        "resnet34": tvm.ResNet34_Weights,
        "resnet50": tvm.ResNet50_Weights,
    }[arch]
    return [Path(w.url).name for w in enum]


def _imagenet_default_url(arch: str) -> str:
    """torchvision's URL of the default ImageNet weights of ``arch``."""
    from napari_deparray_ctc.core.gl_guard import avoid_gl_llvm_clash

    avoid_gl_llvm_clash()  # before torchvision: see core.gl_guard
    import torchvision.models as tvm

    enum = {
        "resnet18": tvm.ResNet18_Weights,
        "resnet34": tvm.ResNet34_Weights,
        "resnet50": tvm.ResNet50_Weights,
    }[_check_arch(arch)]
    return str(enum.DEFAULT.url)


def download_imagenet_weights(arch: str) -> Path:
    """Download torchvision's ImageNet weights of ``arch`` into the torch hub cache.

    The file lands where :func:`find_imagenet_weights` looks
    (``torch.hub.get_dir()/checkpoints``, e.g. ``~/.cache/torch/hub/checkpoints``; set
    ``TORCH_HOME`` to move it), written to a temporary file first and renamed when complete.

    Parameters
    ----------
    arch
        ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.

    Returns
    -------
    pathlib.Path
        The downloaded file.

    Raises
    ------
    OSError
        No network (``urllib.error.URLError``), a refused or broken download, or a cache
        folder that cannot be written.
    """
    import torch

    url = _imagenet_default_url(arch)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    target = checkpoints / Path(url).name
    torch.hub.download_url_to_file(url, os.fspath(target), progress=False)
    return target


def _imagenet_or_fallback(network, arch: str) -> str | None:
    """``pretrained="imagenet"``: the cache, else a download, else the shipped weights."""
    import torch

    path = find_imagenet_weights(arch)
    if path is None:
        url = _imagenet_default_url(arch)
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        try:
            path = download_imagenet_weights(arch)
        except (OSError, RuntimeError) as exc:  # offline, a proxy, a full disk: in words
            reason = getattr(exc, "reason", None) or exc
            fallback = "synthetic" if arch == "resnet18" else None
            shipped = pretrained_path("synthetic")
            if fallback and (shipped is None or not shipped.is_file()):
                fallback = None
            instead = (
                "starting from the shipped synthetic weights instead"
                if fallback
                else "starting from random weights instead (no shipped weights for " + arch + ")"
            )
            warnings.warn(
                f"ImageNet weights for {arch} could not be downloaded from {url} ({reason}; "
                f"is this computer offline?): {instead}. To use ImageNet weights without a "
                f"network, put {Path(url).name} from a computer that has one into {cache}.",
                stacklevel=3,
            )
            if fallback:
                return _load_pretrained(network, arch, shipped)
            return None
    return _load_pretrained(network, arch, path)


def find_imagenet_weights(arch: str) -> Path | None:
    """Look for ImageNet weights of ``arch`` in the local torch hub cache (no network).

    Parameters
    ----------
    arch
        As for :func:`download_imagenet_weights`.

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


def build_network(
    arch: str = "resnet18", pretrained: str | os.PathLike | None = None, member: int = 0
):
    """Build a one-channel-in, one-logit-out ResNet.

    Parameters
    ----------
    arch
        ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
    pretrained
        ``None``: random initialisation (torchvision's default). ``"imagenet"``: torchvision's
        ImageNet weights, from the local torch cache, downloaded there on first use
        (:func:`download_imagenet_weights`); offline, a warning says so in words and the
        shipped ``"synthetic"`` weights are used instead (random ones for an architecture
        without shipped weights). ``"auto"``: ImageNet weights from the local torch cache
        when present (never downloaded), otherwise a warning and random initialisation. A path: ImageNet weights from that file (a torchvision ResNet state
        dict), or a napari-deparray-ctc model file of the same architecture (fine-tuning);
        a missing or unusable file raises :class:`ModelFileError`. ``"synthetic"``: the
        weights shipped in ``core.model.pretrained`` (pretrained on randomised synthetic cells).
    member
        When ``pretrained`` is a model file holding an ensemble: which of its networks to
        start from (taken modulo their number, so fold ``i`` of a fine-tuning starts from
        network ``i`` and the fine-tuned ensemble keeps the start's diversity). Ignored for
        other starts.

    Returns
    -------
    torch.nn.Module
        The network (train mode, on CPU). ``network.pretrained_source`` records where the
        initial weights came from (``None`` for random).
    """
    import torch

    from napari_deparray_ctc.core.gl_guard import avoid_gl_llvm_clash

    avoid_gl_llvm_clash()  # before torchvision: see core.gl_guard
    import torchvision.models as tvm

    _check_arch(arch)
    network = getattr(tvm, arch)(weights=None, num_classes=1)
    network.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    torch.nn.init.kaiming_normal_(network.conv1.weight, mode="fan_out", nonlinearity="relu")
    source: str | None = None
    if pretrained is not None:
        if str(pretrained) == "imagenet":
            source = _imagenet_or_fallback(network, arch)
        elif str(pretrained) == "auto":
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
        elif pretrained_path(str(pretrained)) is not None:
            path = pretrained_path(str(pretrained))
            if not path.is_file() or arch != "resnet18":
                why = (
                    "are missing from this installation" if arch == "resnet18" else "are a resnet18"
                )
                warnings.warn(
                    f"The shipped {pretrained} weights {why}; training {arch} from random "
                    "weights instead.",
                    stacklevel=2,
                )
            else:
                source = _load_pretrained(network, arch, path)
        else:
            source = _load_pretrained(network, arch, Path(pretrained), member)
    network.pretrained_source = source
    return network


def _load_pretrained(network, arch: str, path: Path, member: int = 0) -> str:
    """Copy ImageNet (or own-model) weights into ``network``; conv1 summed to one channel.

    From a model file, network ``member`` (modulo the ensemble's size) is copied."""
    import torch

    if not path.is_file():
        raise ModelFileError(path, "the file of starting weights does not exist")
    payload = read_payload(path, "cpu")
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT_NAME:
        loaded = validate_payload(path, payload)
        if loaded["metadata"]["arch"] != arch:
            raise ModelFileError(
                path,
                f"is a {loaded['metadata']['arch']} model; cannot initialise a {arch} from it",
            )
        members = unwrap_members(loaded["state_dict"])
        try:
            network.load_state_dict(members[int(member) % len(members)])
        except RuntimeError:
            raise ModelFileError(path, f"the weights do not fit a one-channel {arch}") from None
        return f"model:{path.name}"
    if isinstance(payload, Mapping) and payload.get("format") == WEIGHTS_FORMAT:
        meta = payload.get("metadata") or {}
        if meta.get("arch") != arch:
            raise ModelFileError(
                path, f"holds {meta.get('arch')} weights; cannot initialise a {arch} from them"
            )
        state = {
            k: v.float() if v.is_floating_point() else v
            for k, v in dict(payload.get("state_dict") or {}).items()
        }
        try:
            network.load_state_dict(state)
        except RuntimeError:
            raise ModelFileError(path, f"the weights do not fit a one-channel {arch}") from None
        return f"weights:{path.name}"
    if not isinstance(payload, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in payload.values()
    ):
        raise ModelFileError(path, "is neither a model file nor torchvision ResNet weights")
    state = dict(payload)
    conv1 = state.get("conv1.weight")
    if conv1 is None or conv1.ndim != 4 or conv1.shape[1] not in (1, 3):
        raise ModelFileError(path, "holds no first convolution layer, so it is not ResNet weights")
    if conv1.shape[1] == 3:
        # grey replicated to RGB and ImageNet-normalised: sum_c W_c / s_c (see module doc)
        std = torch.tensor(_IMAGENET_GREY_STD, dtype=conv1.dtype).view(1, 3, 1, 1)
        state["conv1.weight"] = (conv1 / std).sum(dim=1, keepdim=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = network.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        detail = ", ".join((missing + unexpected)[:5])
        raise ModelFileError(
            path, f"the weights do not fit a {arch} (layers that differ: {detail})"
        )
    return f"imagenet:{path.name}"


def build_ensemble(networks: Sequence):
    """One module averaging the logits of ``networks`` (returned as is when there is one).

    The members are kept in ``module.members`` (a ``torch.nn.ModuleList``); the state dict
    keys are ``members.<i>.<torchvision key>``.
    """
    import torch

    networks = list(networks)
    if len(networks) == 1:
        return networks[0]

    class Ensemble(torch.nn.Module):
        def __init__(self, members):
            super().__init__()
            self.members = torch.nn.ModuleList(members)

        def forward(self, x):
            return torch.stack([m(x) for m in self.members]).mean(dim=0)

    return Ensemble(networks)


def unwrap_members(state: Mapping) -> list[dict]:
    """The per-network state dicts of a (possibly ensemble) state dict, in member order."""
    if not any(str(k).startswith("members.") for k in state):
        return [dict(state)]
    members: dict[int, dict] = {}
    for key, value in state.items():
        _, index, rest = str(key).split(".", 2)
        members.setdefault(int(index), {})[rest] = value
    return [members[i] for i in sorted(members)]
