"""Pretrained weights shipped with the package, and their small file format.

``synthetic_resnet18.pt`` (when present) is a ResNet18 pretrained on synthetic cells from
randomised instruments (``benchmarks/pretrain.py``); ``TrainConfig(pretrained="synthetic")``
fine-tunes it. The file holds fp16 tensors and a JSON-safe metadata dict::

    {"format": "napari-deparray-ctc-weights", "format_version": 1,
     "metadata": {...}, "state_dict": {name: float16 tensor}}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["PRETRAINED", "WEIGHTS_FORMAT", "pretrained_path", "save_weights"]

#: File format marker of a weights file.
WEIGHTS_FORMAT = "napari-deparray-ctc-weights"
#: Names accepted by ``TrainConfig.pretrained`` for the shipped weights -> file name.
PRETRAINED: dict[str, str] = {"synthetic": "synthetic_resnet18.pt"}


def pretrained_path(name: str) -> Path | None:
    """The shipped weights file called ``name`` (``None`` when it is not a shipped name)."""
    if name not in PRETRAINED:
        return None
    return Path(__file__).resolve().parent / PRETRAINED[name]


def save_weights(path: str | os.PathLike, network, metadata: dict[str, Any]) -> None:
    """Write ``network``'s weights as fp16 with ``metadata``, atomically."""
    import torch

    from napari_deparray_ctc.core.atomic import atomic_write

    json.dumps(metadata)
    state = {
        k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in network.state_dict().items()
    }
    payload = {
        "format": WEIGHTS_FORMAT,
        "format_version": 1,
        "metadata": metadata,
        "state_dict": state,
    }
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)
