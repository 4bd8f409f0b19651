"""Three switchable augmentation families built with ``torchvision.transforms.v2``.

The transforms act on one **normalised** image at a time: a float tensor ``(1, H, W)`` with
values in [0, 1] (the output of :func:`napari_deparray_ctc.core.model.loaded.prepare_batch`), so
each cell in a batch gets its own random draw. Labels are never touched: augmentation only
changes pixels. The result is clipped back to [0, 1], the range the network sees at
inference.

Families (parameters chosen for DEPArray-like ~64 px bright-field crops: cells are roughly
centred, orientation is meaningless, optics and exposure vary between runs/instruments):

``"geometric"``
    horizontal and vertical flips (``v2.RandomHorizontalFlip`` / ``v2.RandomVerticalFlip``),
    random multiples of 90° (:class:`RandomRotate90`; v2 has no such class), and a small
    affine (±15° rotation, ±6 % shift, 0.9–1.1 scale, ``v2.RandomAffine``). The affine works
    on a reflect-padded copy (:class:`ReflectPadded`) so the corners it uncovers show
    background instead of black wedges, an artefact absent from real crops.
``"photometric"``
    brightness and contrast (``v2.ColorJitter``), gamma (:class:`RandomGamma`, using
    ``v2.functional.adjust_gamma``), an illumination gradient (:class:`RandomIlluminationGradient`:
    a linear ramp across the field, as from uneven Köhler illumination), and defocus blur
    (``v2.GaussianBlur``).
``"noise"``
    one of Gaussian (``v2.GaussianNoise``), Poisson/shot (:class:`RandomPoissonNoise`) or
    speckle/multiplicative (:class:`RandomSpeckleNoise`) noise.

Randomness comes from torch's global generator (as in every torchvision v2 transform), so
``torch.manual_seed(seed)`` before a run makes augmentation reproducible; training seeds it.

Joint transforms: when a target map must follow the image geometrically (the auxiliary
nucleus target of the ``"aux_nucleus"`` DAPI strategy), pass it wrapped as
``torchvision.tv_tensors.Mask``: geometric transforms move it with the image, photometric and
noise transforms leave it untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from napari_deparray_ctc.core.constants import AUGMENT_FAMILIES
from napari_deparray_ctc.core.gl_guard import avoid_gl_llvm_clash

avoid_gl_llvm_clash()  # before torchvision: see core.gl_guard

import torch  # noqa: E402
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402

__all__ = [
    "FAMILIES",
    "RANDOM_CONVOLUTION_P",
    "ClampUnit",
    "RandomConvolution",
    "RandomGamma",
    "RandomIlluminationGradient",
    "RandomPoissonNoise",
    "RandomRotate90",
    "RandomSpeckleNoise",
    "ReflectPadded",
    "augment_batch",
    "build_augmentation",
    "check_families",
    "is_identity",
]

#: The three augmentation families, in the order they are applied.
FAMILIES: tuple[str, ...] = AUGMENT_FAMILIES
#: How often ``TrainConfig.random_convolution`` applies a :class:`RandomConvolution` (as the
#: random-convolution pretraining of ``benchmarks/pretrain.py --randconv 0.5`` did).
RANDOM_CONVOLUTION_P = 0.5


def check_families(families: Sequence[str] | str | None) -> tuple[str, ...]:
    """Validate and order augmentation family names.

    Parameters
    ----------
    families
        Names from :data:`FAMILIES`; ``None``/empty means no augmentation; ``"all"`` (alone or
        as a string) means all three. A comma-separated string is accepted.

    Returns
    -------
    tuple of str
        Unique names in canonical order.

    Raises
    ------
    ValueError
        An unknown family name.
    """
    if families is None:
        return ()
    if isinstance(families, str):
        families = [f for f in families.replace(" ", ",").split(",") if f]
    names = [str(f).strip().lower() for f in families]
    if names in (["all"],):
        return FAMILIES
    if names in (["none"],):
        return ()
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(
            f"unknown augmentation famil{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(map(repr, unknown))}; choose from {', '.join(FAMILIES)}"
        )
    return tuple(f for f in FAMILIES if f in names)


class _Transform(v2.Transform):
    """Base for the few transforms v2 lacks; works with old and new torchvision v2 APIs.

    Subclasses implement ``_params()`` (random draw, once per call) and ``_apply(inpt, params)``;
    ``_applies_to_masks`` says whether a ``tv_tensors.Mask`` target is transformed too
    (geometric) or passed through unchanged (intensity transforms).
    """

    _applies_to_masks = False

    def _params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {}

    def _apply(self, inpt: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    # torchvision >= 0.21
    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return self._params(flat_inputs)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask) and not self._applies_to_masks:
            return inpt
        if not isinstance(inpt, torch.Tensor):
            return inpt
        out = self._apply(inpt.as_subclass(torch.Tensor), params)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    # torchvision < 0.21 names of the same hooks
    _get_params = make_params
    _transform = transform


class RandomRotate90(_Transform):
    """Rotate by a random multiple of 90° (0, 90, 180 or 270, equally likely); exact, lossless."""

    _applies_to_masks = True

    def _params(self, flat_inputs):
        return {"k": int(torch.randint(0, 4, ()).item())}

    def _apply(self, inpt, params):
        return torch.rot90(inpt, params["k"], dims=(-2, -1)) if params["k"] else inpt


class ReflectPadded(_Transform):
    """Run a geometric transform on a reflect-padded copy, then crop back to the input size.

    Parameters
    ----------
    inner
        A v2 geometric transform (e.g. ``v2.RandomAffine``).
    fraction
        Padding on each side as a fraction of the image side.
    """

    _applies_to_masks = True

    def __init__(self, inner: v2.Transform, fraction: float = 0.25):
        super().__init__()
        self.inner = inner
        self.fraction = float(fraction)

    def forward(self, *inputs: Any) -> Any:
        # Pads every input, runs ``inner`` once on all of them (same random parameters),
        # then crops. Overriding forward keeps the joint draw of the inner transform.
        single = len(inputs) == 1
        items = list(inputs)
        shapes = [tuple(x.shape[-2:]) for x in items]
        h, w = shapes[0]
        pad = max(1, round(self.fraction * min(h, w)))
        pad = min(pad, h - 1, w - 1)
        padded = [
            tv_tensors.wrap(
                torch.nn.functional.pad(
                    x.as_subclass(torch.Tensor)[None], (pad, pad, pad, pad), mode="reflect"
                )[0],
                like=x,
            )
            if isinstance(x, tv_tensors.TVTensor)
            else torch.nn.functional.pad(x[None], (pad, pad, pad, pad), mode="reflect")[0]
            for x in items
        ]
        out = self.inner(*padded) if not single else [self.inner(padded[0])]
        out = list(out) if not single else out
        cropped = [
            x[..., pad : pad + hh, pad : pad + ww] for x, (hh, ww) in zip(out, shapes, strict=True)
        ]
        return cropped[0] if single else tuple(cropped)


class RandomGamma(_Transform):
    """Gamma correction ``x ** gamma`` with ``log(gamma)`` uniform in ``log(gamma_range)``.

    Parameters
    ----------
    gamma_range
        ``(low, high)``, e.g. ``(0.7, 1.4)``; symmetric in log space around 1.
    p
        Probability of applying it.
    """

    def __init__(self, gamma_range: tuple[float, float] = (0.7, 1.4), p: float = 0.5):
        super().__init__()
        self.gamma_range = gamma_range
        self.p = p

    def _params(self, flat_inputs):
        if torch.rand(()) >= self.p:
            return {"gamma": None}
        lo, hi = (math.log(g) for g in self.gamma_range)
        return {"gamma": math.exp(lo + (hi - lo) * torch.rand(()).item())}

    def _apply(self, inpt, params):
        if params["gamma"] is None:
            return inpt
        return TF.adjust_gamma(inpt.clamp(0.0, 1.0), params["gamma"])


class RandomIlluminationGradient(_Transform):
    """Multiply by a linear illumination ramp ``1 + s * (u cos θ + v sin θ)``.

    ``u, v`` run from -1 to 1 across the image, θ is uniform, ``s`` uniform in
    ``[-strength, strength]``: one side of the field up to ``strength`` brighter, the other
    darker, as from uneven illumination.

    Parameters
    ----------
    strength
        Largest relative change at the image border.
    p
        Probability of applying it.
    """

    def __init__(self, strength: float = 0.25, p: float = 0.5):
        super().__init__()
        self.strength = strength
        self.p = p

    def _params(self, flat_inputs):
        if torch.rand(()) >= self.p:
            return {"slope": 0.0, "angle": 0.0}
        return {
            "slope": float((2 * torch.rand(()) - 1) * self.strength),
            "angle": float(torch.rand(()) * 2 * math.pi),
        }

    def _apply(self, inpt, params):
        if params["slope"] == 0.0:
            return inpt
        h, w = inpt.shape[-2:]
        v = torch.linspace(-1, 1, h, dtype=inpt.dtype, device=inpt.device)[:, None]
        u = torch.linspace(-1, 1, w, dtype=inpt.dtype, device=inpt.device)[None, :]
        ramp = 1 + params["slope"] * (u * math.cos(params["angle"]) + v * math.sin(params["angle"]))
        return inpt * ramp


class RandomPoissonNoise(_Transform):
    """Shot noise: ``Poisson(x * peak) / peak`` with ``peak`` log-uniform in ``peak_range``.

    ``peak`` is the photon count of a pixel at intensity 1; smaller means noisier.
    """

    def __init__(self, peak_range: tuple[float, float] = (30.0, 300.0)):
        super().__init__()
        self.peak_range = peak_range

    def _params(self, flat_inputs):
        lo, hi = (math.log(v) for v in self.peak_range)
        return {"peak": math.exp(lo + (hi - lo) * torch.rand(()).item())}

    def _apply(self, inpt, params):
        peak = params["peak"]
        return torch.poisson(inpt.clamp(min=0.0) * peak) / peak


class RandomSpeckleNoise(_Transform):
    """Multiplicative (speckle) noise ``x * (1 + sigma * N(0, 1))``, sigma uniform in range."""

    def __init__(self, sigma_range: tuple[float, float] = (0.03, 0.15)):
        super().__init__()
        self.sigma_range = sigma_range

    def _params(self, flat_inputs):
        lo, hi = self.sigma_range
        return {"sigma": lo + (hi - lo) * torch.rand(()).item()}

    def _apply(self, inpt, params):
        return inpt * (1 + params["sigma"] * torch.randn_like(inpt))


class RandomConvolution(_Transform):
    """Random convolution (Xu et al., ICLR 2021, "RandConv"): the image seen through a random
    linear filter, mixed with itself.

    A kernel of side ``k`` (drawn from ``kernel_sizes``) with weights ``N(0, 1/k^2)`` is
    applied (reflect padding); the result is rescaled to the image's own mean and sd and
    mixed as ``a * image + (1 - a) * filtered`` with ``a`` uniform in [0, 1]. A random filter
    changes local contrast, edges and their sign while keeping the cell's shape and size: it
    stands for the differences between instruments' optical transfer that no parametric
    family of the simulator or of the augmentation covers.

    Parameters
    ----------
    kernel_sizes
        Kernel sides to draw from (odd).
    p
        Probability of applying it.
    """

    def __init__(self, kernel_sizes: Sequence[int] = (1, 3, 5, 7), p: float = 0.5):
        super().__init__()
        if any(int(k) < 1 or int(k) % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel sizes must be odd and positive, not {tuple(kernel_sizes)}")
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.p = p

    def _params(self, flat_inputs):
        if torch.rand(()) >= self.p:
            return {"kernel": None, "mix": 1.0}
        k = self.kernel_sizes[int(torch.randint(len(self.kernel_sizes), ()).item())]
        return {"kernel": torch.randn(k, k) / k, "mix": float(torch.rand(()))}

    def _apply(self, inpt, params):
        kernel = params["kernel"]
        if kernel is None:
            return inpt
        k = kernel.shape[-1]
        flat = inpt.reshape(-1, 1, *inpt.shape[-2:])
        padded = (
            torch.nn.functional.pad(flat, (k // 2,) * 4, mode="reflect")
            if k > 1 and min(inpt.shape[-2:]) > k // 2
            else flat
        )
        weight = kernel.to(dtype=inpt.dtype, device=inpt.device)[None, None]
        filtered = torch.nn.functional.conv2d(padded, weight)
        if filtered.shape[-2:] != flat.shape[-2:]:  # a crop too small to pad: leave it
            return inpt
        dims = (-2, -1)
        mean, sd = flat.mean(dim=dims, keepdim=True), flat.std(dim=dims, keepdim=True)
        f_mean, f_sd = filtered.mean(dim=dims, keepdim=True), filtered.std(dim=dims, keepdim=True)
        filtered = (filtered - f_mean) / f_sd.clamp(min=1e-6) * sd + mean
        mix = params["mix"]
        return (mix * flat + (1 - mix) * filtered).reshape(inpt.shape)


class ClampUnit(_Transform):
    """Clip intensities to [0, 1], the range normalised inference inputs have."""

    def _apply(self, inpt, params):
        return inpt.clamp(0.0, 1.0)


def _gaussian_noise() -> v2.Transform:
    if hasattr(v2, "GaussianNoise"):  # torchvision >= 0.19
        return v2.RandomChoice([v2.GaussianNoise(sigma=s, clip=True) for s in (0.02, 0.05, 0.08)])
    return RandomSpeckleNoise((0.02, 0.08))  # pragma: no cover - very old torchvision


def build_augmentation(
    families: Sequence[str] | str | None = FAMILIES, random_convolution: float = 0.0
) -> v2.Compose:
    """Compose the chosen augmentation families.

    Parameters
    ----------
    families
        Any subset of ``("geometric", "photometric", "noise")`` (see :func:`check_families`).
        An empty selection gives an identity transform.
    random_convolution
        Probability of a :class:`RandomConvolution` first (0: none), a transfer lever
        (``TrainConfig.random_convolution``; ``benchmarks/pretrain.py --randconv``). It is
        part of augmentation: with no family chosen there is none, and it is ignored.

    Returns
    -------
    torchvision.transforms.v2.Compose
        Callable on one ``(1, H, W)`` float tensor in [0, 1] (or on ``(image, Mask)``); keeps
        the shape, returns values in [0, 1].
    """
    chosen = check_families(families)
    if not 0.0 <= float(random_convolution) <= 1.0:
        raise ValueError(f"random_convolution is a probability, not {random_convolution!r}")
    steps: list[v2.Transform] = []
    if random_convolution > 0 and chosen:
        steps.append(RandomConvolution(p=float(random_convolution)))
    if "geometric" in chosen:
        steps += [
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomVerticalFlip(p=0.5),
            RandomRotate90(),
            v2.RandomApply(
                [
                    ReflectPadded(
                        v2.RandomAffine(
                            degrees=15,
                            translate=(0.06, 0.06),
                            scale=(0.9, 1.1),
                            interpolation=v2.InterpolationMode.BILINEAR,
                        )
                    )
                ],
                p=0.7,
            ),
        ]
    if "photometric" in chosen:
        steps += [
            v2.RandomApply([v2.ColorJitter(brightness=0.25, contrast=0.25)], p=0.8),
            RandomGamma((0.7, 1.4), p=0.5),
            RandomIlluminationGradient(strength=0.25, p=0.5),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.3, 1.2))], p=0.4),
        ]
    if "noise" in chosen:
        steps += [
            v2.RandomApply(
                [v2.RandomChoice([_gaussian_noise(), RandomPoissonNoise(), RandomSpeckleNoise()])],
                p=0.8,
            )
        ]
    if steps:
        steps.append(ClampUnit())
    else:
        steps.append(v2.Identity())  # v2.Compose needs at least one transform
    return v2.Compose(steps)


def is_identity(transform: v2.Transform) -> bool:
    """True for a transform that never changes anything (e.g. ``build_augmentation(())``)."""
    if isinstance(transform, v2.Identity):
        return True
    return isinstance(transform, v2.Compose) and all(
        isinstance(t, v2.Identity) for t in transform.transforms
    )


def augment_batch(
    images: torch.Tensor,
    transform: v2.Transform | None,
    targets: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Apply ``transform`` to each image of a batch independently (own random draw each).

    Parameters
    ----------
    images
        ``(N, 1, H, W)`` float tensor in [0, 1].
    transform
        From :func:`build_augmentation`; ``None`` returns the input unchanged.
    targets
        Optional ``(N, 1, h, w)`` maps (e.g. nucleus targets) transformed geometrically with
        their image; ``h, w`` must equal ``H, W``.

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)
        The augmented batch (same shape), and the transformed targets when given.
    """
    if transform is None or is_identity(transform):
        return images if targets is None else (images, targets)
    if targets is None:
        return torch.stack([transform(img) for img in images])
    out_images, out_targets = [], []
    for img, target in zip(images, targets, strict=True):
        a, b = transform(img, tv_tensors.Mask(target))
        out_images.append(a)
        out_targets.append(b.as_subclass(torch.Tensor))
    return torch.stack(out_images), torch.stack(out_targets)
