"""Imaging domains: named "hospitals" for the quality benchmark, and randomised instruments.

:data:`DOMAINS` are the instruments of ``benchmarks/quality.py``: ``reference`` is
:meth:`Optics.default`, the others each move one group of acquisition settings the issue
tracker asked about (optics, defocus, pixel size, background level and gradient, noise, bit
depth), and ``hospital_b`` (:meth:`Optics.shifted`) moves many at once.

:func:`randomised_optics` draws an instrument from broad ranges around all of them (domain
randomisation), for pretraining a network that has seen many instruments. The benchmark
domains lie inside these ranges, so figures after such pretraining say how robust a model is
within the simulator's range, not how it transfers to real microscopes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from napari_deparray_ctc.core.synth.optics import Optics

__all__ = ["DOMAINS", "Domain", "domain", "randomised_optics"]


@dataclass(frozen=True)
class Domain:
    """A named instrument: its optics and the crop size its exports use.

    Attributes
    ----------
    name
        Short name (``"reference"``, ``"defocus"``...).
    optics
        The acquisition parameters.
    image_size
        Side of the exported crops in pixels (crops are a fixed number of pixels, so a
        finer pixel shows a smaller field and larger cells).
    what
        One line: what differs from the reference.
    """

    name: str
    optics: Optics
    image_size: int
    what: str


def _domains() -> dict[str, Domain]:
    ref = Optics.default()
    return {
        d.name: d
        for d in (
            Domain("reference", ref, 64, "the training instrument (Optics.default)"),
            Domain(
                "hospital_b",
                Optics.shifted(),
                64,
                "another site: illumination, focus, contrast, halo, noise, 16-bit camera",
            ),
            Domain(
                "defocus",
                ref.replace(
                    defocus_um=8.5,
                    psf_sigma_um=0.85,
                    rim_width_um=0.9,
                    rim_strength=0.8,
                    halo_strength=0.09,
                ),
                64,
                "stronger defocus and blur, softer rim",
            ),
            Domain(
                "fine_pixels",
                ref.replace(pixel_size_um=0.42, max_offset_um=2.0),
                64,
                "0.42 µm pixels in the same 64 px crops (cells 30 % larger in pixels)",
            ),
            Domain(
                "low_light_8bit",
                ref.replace(
                    photons=900.0,
                    gain_e_per_adu=5.0,
                    offset_adu=10.0,
                    read_noise_e=9.0,
                    bit_depth=8,
                ),
                64,
                "10x fewer photons, more read noise, an 8-bit camera",
            ),
            Domain(
                "uneven_background",
                ref.replace(
                    illumination_gradient=0.4,
                    illumination_angle_deg=120.0,
                    vignetting=0.2,
                    photons=5000.0,
                    offset_adu=600.0,
                ),
                64,
                "strong illumination gradient and vignetting, other background level",
            ),
        )
    }


#: The benchmark's instruments by name (see the module docstring).
DOMAINS: dict[str, Domain] = _domains()


def domain(name: str) -> Domain:
    """The domain called ``name`` (ValueError naming the known ones otherwise)."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise ValueError(f"unknown domain {name!r}; known: {', '.join(DOMAINS)}") from None


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def randomised_optics(rng: np.random.Generator) -> Optics:
    """An instrument drawn from broad ranges (domain randomisation for pretraining).

    The ranges cover every preset of :data:`DOMAINS` and more: pixel size 0.38-0.80 µm,
    defocus 2.5-9.5 µm, blur 0.25-1.0 µm, 600-15,000 background photons, 8- to 16-bit
    cameras, illumination gradients up to 0.45 and vignetting up to 0.25.

    Parameters
    ----------
    rng
        Random generator (seeded: the same draw every time).

    Returns
    -------
    Optics
    """
    bit_depth = int(rng.choice([8, 10, 12, 14, 16]))
    photons = _log_uniform(rng, 600.0, 15000.0)
    full_scale = 2**bit_depth - 1
    offset = float(rng.uniform(0.0, 0.15)) * full_scale
    # the gain puts the background between 40 % and 75 % of the range left above the offset
    fill = float(rng.uniform(0.4, 0.75))
    gain = max(photons / max((full_scale - offset) * fill, 1.0), 0.05)
    return Optics(
        pixel_size_um=float(rng.uniform(0.38, 0.80)),
        defocus_um=float(rng.uniform(2.5, 9.5)),
        rim_strength=float(rng.uniform(0.5, 1.3)),
        rim_width_um=float(rng.uniform(0.4, 1.2)),
        halo_strength=float(rng.uniform(0.01, 0.15)),
        halo_width_um=float(rng.uniform(1.0, 3.0)),
        absorption=float(rng.uniform(0.0, 0.08)),
        psf_sigma_um=float(rng.uniform(0.25, 1.0)),
        fluor_psf_sigma_um=float(rng.uniform(0.3, 0.9)),
        illumination_gradient=float(rng.uniform(0.0, 0.45)),
        illumination_angle_deg=float(rng.uniform(0.0, 360.0)),
        vignetting=float(rng.uniform(0.0, 0.25)),
        photons=photons,
        dapi_photons=_log_uniform(rng, 1500.0, 6000.0),
        pe_photons=_log_uniform(rng, 1200.0, 4000.0),
        apc_photons=_log_uniform(rng, 1200.0, 4000.0),
        fluor_background_photons=_log_uniform(rng, 80.0, 500.0),
        gain_e_per_adu=gain,
        offset_adu=offset,
        read_noise_e=float(rng.uniform(1.0, 10.0)),
        bit_depth=bit_depth,
        max_offset_um=float(rng.uniform(1.0, 5.0)),
        debris_probability=float(rng.uniform(0.1, 0.45)),
        neighbour_probability=float(rng.uniform(0.03, 0.2)),
    )
