"""Training samples: images prepared once, and the DAPI strategies that turn them into batches.

Every image is normalised and resized once up front (:func:`prepare_tensors`); batches are
then gathered from those tensors and augmented on the fly. Validation and test data are
always bright-field only.

DAPI strategies (inference never uses DAPI)
-------------------------------------------
``"none"``
    Bright-field only.
``"substitute"``
    Channel substitution, as in the seed paper: each cell's normalised DAPI image is an
    extra training sample carrying the cell's label.
``"blend"``
    Each cell with DAPI adds one extra sample ``alpha * BF + (1 - alpha) * DAPI`` of the
    normalised images, with ``alpha`` drawn uniformly in [0.5, 1] anew every time the sample
    is used. The mix is always BF-dominated, so the sample stays close to the inference
    domain, while the DAPI term marks where the nucleus is (size, lobes, position) and
    teaches the network to look at the nuclear features that bright-field shows only
    faintly. Unlike mixup the label is exact: both images are the same cell.
``"aux_nucleus"``
    Multi-task learning: an auxiliary head (training only) predicts a coarse (1/8
    resolution) DAPI map from the BF features of ``layer2``; the loss adds
    ``aux_weight * MSE`` for cells with DAPI. The head is dropped when the model is saved,
    so the saved network is a plain BF-only ResNet.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_deparray_ctc.core.constants import DAPI_STRATEGIES
from napari_deparray_ctc.core.training.training_set import TrainingSet

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "AUX_TARGET_STRIDE",
    "BLEND_ALPHA_RANGE",
    "PreparedData",
    "SampleBank",
    "prepare_tensors",
]

#: Range of the BF weight ``alpha`` of the ``"blend"`` strategy.
BLEND_ALPHA_RANGE = (0.5, 1.0)
#: Down-sampling factor of the nucleus target of ``"aux_nucleus"`` (ResNet layer2 stride).
AUX_TARGET_STRIDE = 8


@dataclass
class PreparedData:
    """Normalised, resized tensors of a training set (computed once, augmented per batch).

    Attributes
    ----------
    bf
        ``(N, 1, S, S)`` float32 in [0, 1].
    y
        ``(N,)`` float32, 1 = CTC.
    dapi
        ``(N, 1, S, S)`` float32 (zeros where a cell has no DAPI), or ``None``.
    has_dapi
        ``(N,)`` bool, or ``None``.
    """

    bf: Any
    y: Any
    dapi: Any = None
    has_dapi: Any = None

    def __len__(self) -> int:
        return int(self.bf.shape[0])

    def subset(self, indices) -> PreparedData:
        """The cells at ``indices`` (a sequence or 1-D tensor of positions)."""
        import torch

        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))

        def pick(t):
            return None if t is None else t[idx]

        return PreparedData(
            bf=pick(self.bf), y=pick(self.y), dapi=pick(self.dapi), has_dapi=pick(self.has_dapi)
        )


def prepare_tensors(
    ts: TrainingSet,
    image_size: int,
    normalisation: dict | None = None,
    with_dapi: bool = True,
    batch: int = 256,
) -> PreparedData:
    """Normalise and resize every image once, as classification will (``prepare_batch``).

    Each cell goes through ``core.inference.preprocess.prepare_batch`` with its own declared
    pixel size, so the scale rule (``input_scale``) decides per cell exactly as it does when
    the model classifies: rescaled to ``normalisation["pixel_size_um"]`` when both that and
    the cell's pixel size are known, resized whole otherwise.

    Parameters
    ----------
    ts
        A checked set (labels ``"CTC"``/``"WBC"``).
    image_size
        Network input size.
    normalisation
        Normalisation spec; training passes
        ``training_normalisation(config.pixel_size_um, ts.pixel_sizes, len(ts))``, the spec
        it then stores in the model, so a model knows a pixel size only when some of its
        training cells did. Default: :func:`training_normalisation` without a pixel size
        (every crop resized whole).
    with_dapi
        Prepare DAPI images too (when the set has any).
    batch
        Images converted per step (bounds temporary memory).

    Returns
    -------
    PreparedData
    """
    import torch

    from napari_deparray_ctc.core.evaluation.metrics import to_binary
    from napari_deparray_ctc.core.inference.preprocess import (
        prepare_batch,
        training_normalisation,
    )

    sizes = ts.pixel_sizes or [None] * len(ts.bf)
    if normalisation is None:
        normalisation = training_normalisation(None, ts.pixel_sizes, len(ts.bf))

    def convert(images: list[np.ndarray], pixel_sizes: list) -> torch.Tensor:
        parts = [
            prepare_batch(
                images[i : i + batch],
                image_size,
                normalisation,
                pixel_sizes=pixel_sizes[i : i + batch],
            )
            for i in range(0, len(images), batch)
        ]
        return torch.cat(parts) if parts else torch.zeros((0, 1, image_size, image_size))

    bf = convert(list(ts.bf), list(sizes))
    y = torch.from_numpy(to_binary(ts.labels).astype(np.float32))
    dapi = has_dapi = None
    if with_dapi and ts.dapi is not None and any(d is not None for d in ts.dapi):
        present = [i for i, d in enumerate(ts.dapi) if d is not None]
        dapi = torch.zeros_like(bf)
        dapi[present] = convert([ts.dapi[i] for i in present], [sizes[i] for i in present])
        has_dapi = torch.zeros(len(ts.bf), dtype=torch.bool)
        has_dapi[present] = True
    return PreparedData(bf=bf, y=y, dapi=dapi, has_dapi=has_dapi)


class SampleBank:
    """Training samples of one DAPI strategy, drawn as batches.

    Sample ``i < N`` is the bright-field image of cell ``i``. For ``"substitute"`` and
    ``"blend"`` the samples ``N + j`` are extra samples made from the ``j``-th cell that has
    DAPI (see the module docstring). For ``"aux_nucleus"`` there are no extra samples; batches
    carry the DAPI image as a nucleus target instead.

    Parameters
    ----------
    data
        Prepared training tensors.
    strategy
        One of :data:`DAPI_STRATEGIES`. A strategy that needs DAPI on a set without DAPI
        falls back to ``"none"`` with a warning.
    """

    def __init__(self, data: PreparedData, strategy: str = "none"):
        import torch

        if strategy not in DAPI_STRATEGIES:
            raise ValueError(
                f"unknown DAPI strategy {strategy!r}; choose one of {', '.join(DAPI_STRATEGIES)}"
            )
        if strategy != "none" and data.dapi is None:
            warnings.warn(
                f"DAPI strategy {strategy!r} chosen but no cell has a DAPI image; "
                "training on bright-field only",
                stacklevel=2,
            )
            strategy = "none"
        self.data = data
        self.strategy = strategy
        if strategy in ("substitute", "blend"):
            self.extra = torch.nonzero(data.has_dapi).flatten()
        else:
            self.extra = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.data) + int(self.extra.numel())

    @property
    def labels(self):
        """``(len(self),)`` float32 labels of every sample (extras carry their cell's label)."""
        import torch

        return torch.cat([self.data.y, self.data.y[self.extra]])

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Images, labels and (``"aux_nucleus"`` only) nucleus targets for sample indices.

        Parameters
        ----------
        indices
            1-D long tensor of sample indices.

        Returns
        -------
        (x, y, nucleus)
            ``x`` ``(B, 1, S, S)``, ``y`` ``(B,)``; ``nucleus`` is ``(B, 1, S, S)`` DAPI with
            NaN for cells without DAPI (``"aux_nucleus"``), else ``None``.
        """
        import torch

        indices = torch.as_tensor(indices, dtype=torch.long)
        n = len(self.data)
        is_bf = indices < n
        cells = indices.clone()
        if not bool(is_bf.all()):
            if not self.extra.numel():
                raise IndexError(f"sample index beyond the {n} samples")
            cells[~is_bf] = self.extra[indices[~is_bf] - n]
        x = self.data.bf[cells].clone()
        y = self.data.y[cells].clone()
        if self.strategy in ("substitute", "blend") and not bool(is_bf.all()):
            extra_rows = torch.nonzero(~is_bf).flatten()
            dapi = self.data.dapi[cells[extra_rows]]
            if self.strategy == "substitute":
                x[extra_rows] = dapi
            else:
                lo, hi = BLEND_ALPHA_RANGE
                alpha = lo + (hi - lo) * torch.rand(len(extra_rows), 1, 1, 1)
                x[extra_rows] = alpha * x[extra_rows] + (1 - alpha) * dapi
        nucleus = None
        if self.strategy == "aux_nucleus":
            nucleus = self.data.dapi[cells].clone()
            nucleus[~self.data.has_dapi[cells]] = math.nan
        return x, y, nucleus
