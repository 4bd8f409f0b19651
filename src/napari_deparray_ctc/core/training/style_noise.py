"""Feature-statistics noise during training: a lever against instrument shift (issue 20).

An instrument changes a cell's *style* (contrast, blur, texture, background) more than its
*content* (size, shape). In a convolutional network the style lives mostly in the per-image
channel means and standard deviations of the early feature maps. DSU ("Uncertainty modeling
of out-of-distribution generalization", Li et al., ICLR 2022) re-draws those statistics
during training: for each image and channel of a feature map ``x`` with mean ``mu`` and sd
``sigma`` over its pixels,

``x' = (x - mu) / sigma * (sigma + e1 * s_sigma) + (mu + e2 * s_mu)``,

where ``s_mu`` and ``s_sigma`` are the spread of ``mu`` and ``sigma`` across the batch and
``e1``, ``e2`` are standard normal draws. The network thus meets plausible "other instruments"
of its own training cells, with the labels unchanged. It acts only while training (forward
hooks, removed afterwards): the model file and classification are exactly as without it.

:class:`StyleNoise` hooks the outputs of ``network.layer1`` and ``network.layer2`` (the
shallow stages, where the style is). Randomness comes from torch's global generator, which
training seeds, so a CPU run stays reproducible.
"""

from __future__ import annotations

from typing import Any

__all__ = ["STYLE_NOISE_LAYERS", "STYLE_NOISE_P", "StyleNoise", "perturb_statistics"]

#: The ResNet stages whose outputs are perturbed.
STYLE_NOISE_LAYERS: tuple[str, ...] = ("layer1", "layer2")
#: The probability that a stage's output is perturbed in a given training batch (as in DSU).
STYLE_NOISE_P = 0.5
_EPS = 1e-6


def perturb_statistics(x: Any, generator: Any = None) -> Any:
    """Re-draw the per-image channel means and sds of a feature map (the DSU step).

    Parameters
    ----------
    x
        A feature map, ``torch.Tensor`` ``(N, C, H, W)``; with fewer than two images it is
        returned unchanged (no batch spread to draw from).
    generator
        A ``torch.Generator`` for the draws, or ``None`` for torch's global one.

    Returns
    -------
    torch.Tensor
        The same shape and dtype: each image's channels normalised and given a mean and sd
        drawn around their own, with the batch's spread of means and sds as the sd of the draw.
    """
    import torch

    if x.dim() != 4 or x.shape[0] < 2:
        return x
    mean = x.mean(dim=(2, 3), keepdim=True)
    sd = (x.var(dim=(2, 3), keepdim=True) + _EPS).sqrt()
    spread_mean = (mean.var(dim=0, keepdim=True) + _EPS).sqrt()
    spread_sd = (sd.var(dim=0, keepdim=True) + _EPS).sqrt()
    draw_mean = torch.randn(mean.shape, generator=generator, device=x.device, dtype=x.dtype)
    draw_sd = torch.randn(sd.shape, generator=generator, device=x.device, dtype=x.dtype)
    new_mean = mean + draw_mean * spread_mean
    new_sd = sd + draw_sd * spread_sd
    return (x - mean) / sd * new_sd + new_mean


class StyleNoise:
    """Forward hooks that apply :func:`perturb_statistics` to the outputs of
    :data:`STYLE_NOISE_LAYERS` while the network is in training mode, each with probability
    :data:`STYLE_NOISE_P` per batch.

    Parameters
    ----------
    network
        A torchvision ResNet (or anything with the named stages).
    p
        The per-batch probability for each stage.

    Use as a context manager, or call :meth:`close`: the hooks are removed and the network
    is as it was (hooks are not part of its state, so nothing of them is saved).
    """

    def __init__(self, network: Any, p: float = STYLE_NOISE_P) -> None:
        self.p = float(p)
        self.applied = 0  # how many stage outputs were perturbed (for tests and logs)
        self._handles = [
            getattr(network, name).register_forward_hook(self._hook) for name in STYLE_NOISE_LAYERS
        ]

    def _hook(self, module: Any, inputs: Any, output: Any) -> Any:
        import torch

        if not module.training or float(torch.rand(())) >= self.p:
            return None  # the output as it is
        self.applied += 1
        return perturb_statistics(output)

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> StyleNoise:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
