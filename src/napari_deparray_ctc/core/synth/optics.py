"""The acquisition model of the synthetic cells: :class:`Optics` and its presets.

Lengths are in µm, light in photo-electrons per pixel, camera values in ADU. The benchmark
domains and the randomised pretraining domains built on it are in ``synth.domains``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Optics"]


@dataclass(frozen=True)
class Optics:
    """Acquisition parameters of one instrument (or one sample on it).

    Lengths are in µm, light in photo-electrons per pixel, camera values in ADU.

    Attributes
    ----------
    pixel_size_um
        Object-side pixel size; 0.55 µm/px puts a 25 µm CTC inside a 64 px image.
    defocus_um
        Effective focus offset of the bright-field image in the (linearised)
        transport-of-intensity model: with ``rim_strength`` it sets the contrast of the
        refractive rim and bright interior (a negative value inverts them). The default
        is tuned to the rim contrast of real bright-field cells, not measured.
    rim_strength
        Multiplier of the defocus phase term (condenser aperture / coherence).
    rim_width_um
        Blur of the optical path before the Laplacian: the width of the rim.
    halo_strength, halo_width_um
        Depth and width of the diffuse dark halo outside the cell.
    absorption
        Natural-log absorbance of a 10 µm thick cell (unstained cells barely absorb).
    psf_sigma_um
        Gaussian blur of the bright-field intensity (defocus, aberrations).
    fluor_psf_sigma_um
        Gaussian blur of the fluorescence channels.
    illumination_gradient
        Relative change of the illumination across the field (linear ramp).
    illumination_angle_deg
        Direction of that ramp.
    vignetting
        Relative darkening of the field corners.
    photons
        Expected photo-electrons per background pixel in bright-field.
    dapi_photons, pe_photons, apc_photons
        Peak photo-electrons of a reference bright cell in each fluorescence channel.
    fluor_background_photons
        Background photo-electrons in the fluorescence channels.
    gain_e_per_adu, offset_adu, read_noise_e, bit_depth
        Camera: conversion gain, offset, read noise and the value range
        (12 = values 0-4095 stored in 16-bit files).
    max_offset_um
        Largest displacement of the cell from the image centre.
    debris_probability, neighbour_probability
        Chance of debris in the field and of a neighbouring cell edge.
    """

    pixel_size_um: float = 0.55
    defocus_um: float = 5.0
    rim_strength: float = 1.0
    rim_width_um: float = 0.6
    halo_strength: float = 0.05
    halo_width_um: float = 1.6
    absorption: float = 0.02
    psf_sigma_um: float = 0.35
    fluor_psf_sigma_um: float = 0.45
    illumination_gradient: float = 0.04
    illumination_angle_deg: float = 30.0
    vignetting: float = 0.02
    photons: float = 9000.0
    dapi_photons: float = 4000.0
    pe_photons: float = 2500.0
    apc_photons: float = 3000.0
    fluor_background_photons: float = 150.0
    gain_e_per_adu: float = 5.0
    offset_adu: float = 100.0
    read_noise_e: float = 6.0
    bit_depth: int = 12
    max_offset_um: float = 2.5
    debris_probability: float = 0.2
    neighbour_probability: float = 0.08

    def __post_init__(self) -> None:
        positive = (
            "pixel_size_um",
            "rim_width_um",
            "halo_width_um",
            "photons",
            "gain_e_per_adu",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"Optics.{name} must be > 0, got {getattr(self, name)!r}")
        if self.bit_depth not in (8, 10, 12, 14, 16):
            raise ValueError(f"Optics.bit_depth must be 8-16 (even), got {self.bit_depth!r}")
        for name in ("debris_probability", "neighbour_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"Optics.{name} must be in [0, 1], got {getattr(self, name)!r}")

    @classmethod
    def default(cls) -> Optics:
        """The reference instrument (12-bit values, moderate defocus, low noise)."""
        return cls()

    @classmethod
    def shifted(cls) -> Optics:
        """A "different hospital": other illumination, focus, contrast, noise and camera."""
        return cls(
            pixel_size_um=0.6,
            defocus_um=6.5,
            rim_strength=0.75,
            rim_width_um=1.0,
            halo_strength=0.10,
            halo_width_um=2.4,
            absorption=0.05,
            psf_sigma_um=0.6,
            fluor_psf_sigma_um=0.7,
            illumination_gradient=0.15,
            illumination_angle_deg=200.0,
            vignetting=0.08,
            photons=2500.0,
            dapi_photons=3000.0,
            pe_photons=2500.0,
            apc_photons=1500.0,
            fluor_background_photons=400.0,
            gain_e_per_adu=0.45,
            offset_adu=500.0,
            read_noise_e=2.0,
            bit_depth=16,
            max_offset_um=4.0,
            debris_probability=0.35,
            neighbour_probability=0.15,
        )

    def replace(self, **changes: Any) -> Optics:
        """Return a copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def jittered(self, rng: np.random.Generator, scale: float = 1.0) -> Optics:
        """Draw a nearby instrument/sample: the preset with random variation.

        Parameters
        ----------
        rng
            Random generator (the draw is reproducible for a seeded generator).
        scale
            0 returns ``self`` unchanged; 1 is the between-sample spread of one
            instrument (sd about 10-25 % on contrasts, blur and photons, 0.6 µm on
            focus, 40° on the illumination ramp direction).

        Returns
        -------
        Optics
        """
        if scale <= 0:
            return self

        def mult(value: float, sd: float) -> float:
            return float(value * math.exp(rng.normal(0.0, sd * scale)))

        return dataclasses.replace(
            self,
            defocus_um=float(self.defocus_um + rng.normal(0.0, 0.6 * scale)),
            rim_strength=mult(self.rim_strength, 0.12),
            rim_width_um=mult(self.rim_width_um, 0.1),
            halo_strength=mult(self.halo_strength, 0.25),
            halo_width_um=mult(self.halo_width_um, 0.15),
            psf_sigma_um=mult(self.psf_sigma_um, 0.2),
            fluor_psf_sigma_um=mult(self.fluor_psf_sigma_um, 0.15),
            illumination_gradient=mult(self.illumination_gradient, 0.4),
            illumination_angle_deg=float(self.illumination_angle_deg + rng.normal(0, 40 * scale)),
            photons=mult(self.photons, 0.15),
            dapi_photons=mult(self.dapi_photons, 0.2),
            pe_photons=mult(self.pe_photons, 0.25),
            apc_photons=mult(self.apc_photons, 0.25),
            fluor_background_photons=mult(self.fluor_background_photons, 0.2),
        )

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict of the fields (JSON-safe)."""
        return dataclasses.asdict(self)
