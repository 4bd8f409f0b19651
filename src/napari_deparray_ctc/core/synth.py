"""Synthetic DEPArray-like single-cell exports: sample data, test data and benchmark data.

No public DEPArray image set exists, so the plugin ships a generator that draws
circulating tumour cells (CTCs) and leukocytes (WBCs) in the four channels of the
standard DEPArray CTC panel and writes them in the export layouts the reader supports.
It uses numpy, scipy and tifffile only (no torch, no napari).

Public API
----------
``Optics``
    Frozen dataclass of the acquisition: pixel size, bright-field (BF) image formation
    (defocus, refractive rim, halo, blur), illumination, camera (photons, gain, read
    noise, bit depth) and nuisances (off-centre, debris, neighbouring cells).
    Presets ``Optics.default()`` and ``Optics.shifted()`` (a "different hospital");
    ``optics.jittered(rng, scale)`` samples a nearby instrument for one sample/patient.
``synth_cells(n, ctc_fraction=0.2, seed=0, optics=None, image_size=64, n_samples=1)``
    -> ``list[SynthCell]`` in memory (uint16 2-D arrays per channel).
``write_export(out_dir, n_cells, ctc_fraction=0.2, seed=0, layout="multipage", ...)``
    writes an export folder plus ``labels.csv`` (``cell_id,label,sample``) and returns
    its path. Layouts: ``multipage``, ``perchannel``, ``ome``, ``classdirs``, ``stack``
    (see :data:`LAYOUTS`). Same arguments -> byte-identical files.

Channels
--------
``BF`` bright-field; ``DAPI`` nuclei; ``PE`` cytokeratin (CK, epithelial marker);
``APC`` CD45 (pan-leukocyte marker). This is the usual DEPArray CTC panel
(CK-PE / CD45-APC / DAPI, as in CellSearch; Di Trapani et al., Cytometry A 93:1260, 2018).
A CTC is DAPI+ CK+ CD45-, a leukocyte DAPI+ CD45+ CK-.

Biology (per cell; all values are the generator's parameters, sources in brackets)
---------------------------------------------------------------------------------
Sizes are cell diameters in suspension (DEPArray cages hold cells in suspension, so
they are roughly spherical). Parsortix enrichment (Miller et al., Cytometry A 93:1234,
2018) captures cells by size and deformability in a 6.5 µm gap, so the leukocytes that
remain are the larger ones and CTC and WBC sizes overlap.

============== ============================ ==================================================
subtype        diameter (µm)                nucleus
============== ============================ ==================================================
lymphocyte     normal 9.0 ± 1.1, [7, 13]    round, fills 72-88 % of the diameter, dense DNA
neutrophil     normal 10.8 ± 1.0, [8.5, 14] 3-5 lobes on an arc, granular cytoplasm
monocyte       normal 12.6 ± 1.5, [10, 17]  kidney / horseshoe, 55-72 %, vacuoles
ctc            lognormal median 13.5,       large, irregular (atypia-dependent), 55-80 %,
               sigma 0.24, [8.5, 27]        0-5 nucleoli (DAPI-dim, high refractive index)
ctc_binucleate lognormal median 16, 0.2     two nuclei, each 55-68 % of a single one
============== ============================ ==================================================

Sources: haematology texts for leukocytes (small lymphocytes 7-10 µm, neutrophils
10-12 µm with 3-5 lobes, monocytes 12-20 µm with kidney-shaped nuclei); CTC sizes vary
by tumour type and overlap leukocytes: median CellSearch CTC diameters 12.4 µm
(breast), 10.3 (prostate), 8.6 (bladder), 7.5 (colorectal) vs 9.4 µm for leukocytes
(Mendelaar et al., Mol Oncol 15:116, 2021); "CTCs 12-25 µm" is the cell-line-based
textbook range. CTC cytology: high nuclear/cytoplasmic ratio, irregular nuclear
outline, prominent nucleoli, occasional multinucleation, and a wide morphological
variation between CTCs of one patient (Marrinucci et al., Hum Pathol 38:514, 2007). Every CTC draws an *atypia* in [0, 1] (Beta(2, 2)) that scales
outline irregularity, nuclear irregularity, blebs and nucleolus count, so some CTCs are
round and bland and look like monocytes; every leukocyte draws mild irregularity,
so some look ragged. DNA content: leukocytes 2n; CTCs aneuploid 2-5n (DAPI per nucleus
scales with it). Cytoplasm and nucleus refractive indices: cytoplasm +0.025-0.04 above
the buffer; nuclei slightly *lower* than cytoplasm (Schürmann et al., J Biophotonics
9:1068, 2016); nucleoli higher. Marker levels (lognormal): CK bright on ~88 % of CTCs,
dim on ~12 % (EMT-like); CD45 highest on lymphocytes, lower on monocytes and lowest on
neutrophils; leukocytes show weak non-specific PE (monocytes most, Fc binding) and CTCs
almost no APC.

Bright-field image formation
----------------------------
Cells are almost transparent phase objects. The optical path difference (OPD, µm) of
the scene (cell dome, nucleus, nucleoli, granules/vesicles, cytoplasm texture,
debris, neighbours) is blurred by ``rim_width_um`` (objective/condenser aperture) and
turned into intensity with the transport-of-intensity approximation
``I/I0 = exp(-absorbance) * (1 - rim_strength * defocus_um * laplacian(OPD))``
(Teague, JOSA 73:1434, 1983): a defocused sphere shows a dark refractive ring at the
membrane and a bright interior, the look of the real bright-field cells in
``../shared/real-cells``. A wider dark ``halo`` follows the outline, then the intensity
is blurred by ``psf_sigma_um`` (defocus), multiplied by an illumination field
(linear gradient + vignetting) and sampled with a Poisson-Gaussian camera
(``photons`` per background pixel, ``gain_e_per_adu``, ``read_noise_e``,
``offset_adu``, clipped to ``bit_depth``; shot noise above 100 e- is drawn as a normal
of equal variance). The nucleus shows in BF only through its
small refractive-index step and nucleoli, so a BF classifier has a hard but learnable
problem, while DAPI shows nuclear shape and DNA content clearly.
Fluorescence channels are projections of the stained compartment (DNA, cytoplasmic CK,
membrane CD45), blurred by ``fluor_psf_sigma_um``, plus background, Poisson-Gaussian.

Nuisances: the cell is off-centre by up to ``max_offset_um``; with probability
``debris_probability`` 1-3 debris particles (dark, sometimes PE- or DAPI-positive) lie
in the field; with probability ``neighbour_probability`` the edge of a neighbouring
leukocyte enters from the border (in every channel). Optics vary per sample
(``Optics.jittered``) and per cell (focus, sd 0.4 µm), and ``Optics.shifted()`` is a
different instrument: other illumination, stronger defocus, weaker rim, more halo,
fewer photons, 16-bit camera with other gain and offset.

Limits
------
Not a physical simulation: no coherent imaging, no 3-D PSF, no DEP cage electrodes,
no clusters, no apoptotic cells, no red cells or platelets; one cell per image and
no segmentation errors. Parameter values are literature-informed guesses, tuned so
that the BF images resemble real bright-field cells (``benchmarks/realism_check.py``),
and are not calibrated against DEPArray data, which is not public.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_deparray_ctc.core.atomic import atomic_write
from napari_deparray_ctc.core.constants import LAYOUTS as _LAYOUTS
from napari_deparray_ctc.core.labels import write_labels_csv

__all__ = [
    "CHANNELS",
    "LAYOUTS",
    "SUBTYPES",
    "Optics",
    "SynthCell",
    "synth_cells",
    "write_export",
]

#: Channel order of every synthetic cell (canonical names).
CHANNELS: tuple[str, ...] = ("BF", "DAPI", "PE", "APC")
#: Export layouts understood by :func:`write_export`.
LAYOUTS = _LAYOUTS
#: Subtypes per class and their relative frequencies among that class.
SUBTYPES: dict[str, dict[str, float]] = {
    "WBC": {"lymphocyte": 0.45, "neutrophil": 0.35, "monocyte": 0.20},
    "CTC": {"ctc": 0.85, "ctc_binucleate": 0.15},
}

_REFERENCE_THICKNESS_UM = 10.0  # normalises projected fluorescence
_REFERENCE_NUCLEUS_RADIUS_UM = 3.3  # 2n lymphocyte nucleus: DAPI reference density


# --------------------------------------------------------------------------- optics
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


# --------------------------------------------------------------------------- cells
@dataclass
class SynthCell:
    """One synthetic cell.

    Attributes
    ----------
    cell_id
        ``"cell0000"``-style id; also the file stem in every layout.
    label
        ``"CTC"`` or ``"WBC"``.
    subtype
        One of :data:`SUBTYPES` (``lymphocyte``, ``neutrophil``, ``monocyte``,
        ``ctc``, ``ctc_binucleate``).
    channels
        Canonical channel name -> 2-D ``uint16`` image, in :data:`CHANNELS` order.
    diameter_um
        Drawn cell diameter (µm), before the outline's irregularity.
    sample
        Sample / patient id (``"S01"``...): cells of one sample share their optics.
    pixel_size_um
        Pixel size the cell was rendered at.
    params
        The latent parameters drawn for this cell (nucleus size, atypia, marker
        levels, focus...), for ablations and checks; JSON-safe scalars.
    """

    cell_id: str
    label: str
    subtype: str
    channels: dict[str, np.ndarray]
    diameter_um: float
    sample: str
    pixel_size_um: float
    params: dict[str, float | int | str | bool] = field(default_factory=dict)


class _Grid:
    """Pixel coordinates of a square image (cached per size)."""

    _cache: dict[int, _Grid] = {}  # noqa: RUF012 - deliberate class-level cache

    def __init__(self, size: int) -> None:
        self.size = size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
        self.yy = yy
        self.xx = xx

    @classmethod
    def of(cls, size: int) -> _Grid:
        if size not in cls._cache:
            cls._cache[size] = cls(size)
        return cls._cache[size]


@dataclass
class _Scene:
    """Physical maps of the field before imaging."""

    opd: np.ndarray  # optical path difference, µm
    absorbance: np.ndarray  # natural-log absorbance
    dapi: np.ndarray  # expected photo-electrons (before blur)
    pe: np.ndarray
    apc: np.ndarray

    @classmethod
    def empty(cls, size: int) -> _Scene:
        return cls(*(np.zeros((size, size)) for _ in range(5)))


def _truncated_normal(
    rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float
) -> float:
    for _ in range(100):
        value = rng.normal(mean, sd)
        if lo <= value <= hi:
            return float(value)
    return float(np.clip(mean, lo, hi))


def _truncated_lognormal(
    rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float
) -> float:
    for _ in range(100):
        value = median * math.exp(rng.normal(0.0, sigma))
        if lo <= value <= hi:
            return float(value)
    return float(np.clip(median, lo, hi))


def _outline(
    rng: np.random.Generator,
    direction: np.ndarray,
    radius: float,
    irregularity: float,
    ellipticity: float,
    n_blebs: int = 0,
    bleb_height: float = 0.0,
) -> np.ndarray:
    """Radius of a closed outline along each pixel's direction (same units as ``radius``).

    ``direction`` is ``exp(i * theta)`` per pixel; harmonics ``cos(k theta + phase)``
    are real parts of its powers (cheaper than trigonometry on the grid), blebs are
    von Mises bumps ``exp(kappa (cos(theta - centre) - 1))``.
    """
    rel = np.ones(direction.shape)
    power = direction * direction  # k = 2
    rel += ellipticity * (power * np.exp(1j * rng.uniform(0, 2 * np.pi))).real
    for k in range(2, 9):
        if k > 2:
            power = power * direction
        amp = irregularity * rng.normal() / k**0.8
        rel += amp * (power * np.exp(1j * rng.uniform(0, 2 * np.pi))).real
    for _ in range(n_blebs):
        centre = rng.uniform(-np.pi, np.pi)
        width = rng.uniform(0.15, 0.4)
        cos_delta = (direction * np.exp(-1j * centre)).real
        rel += bleb_height * rng.uniform(0.5, 1.0) * np.exp((cos_delta - 1) / width**2)
    return radius * np.clip(rel, 0.6, 1.6)


def _blob(
    grid: _Grid,
    rng: np.random.Generator,
    cy: float,
    cx: float,
    radius_px: float,
    irregularity: float = 0.0,
    ellipticity: float = 0.0,
    n_blebs: int = 0,
    bleb_height: float = 0.0,
    pixel_size_um: float = 1.0,
    flatten: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft mask, thickness (µm, dome) and signed edge distance (px) of one blob."""
    offset = (grid.xx - cx) + 1j * (grid.yy - cy)
    rho = np.abs(offset)
    direction = offset / np.where(rho > 0, rho, 1.0)
    direction[rho == 0] = 1.0
    r_edge = _outline(rng, direction, radius_px, irregularity, ellipticity, n_blebs, bleb_height)
    edge = r_edge - rho  # > 0 inside
    mask = np.clip(edge + 0.5, 0.0, 1.0)
    frac = np.clip(1.0 - (rho / r_edge) ** 2, 0.0, 1.0)
    thickness = 2.0 * radius_px * pixel_size_um * flatten * np.sqrt(frac)
    return mask, thickness, edge


def _random_field(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Smooth Gaussian random field with unit standard deviation."""
    f = ndi.gaussian_filter(rng.standard_normal((size, size)), sigma_px, mode="wrap")
    sd = f.std()
    return f / sd if sd > 0 else f


def _splat(
    size: int,
    ys: np.ndarray,
    xs: np.ndarray,
    amplitudes: np.ndarray,
    sigma_px: float,
) -> np.ndarray:
    """Sum of Gaussian spots (bilinear impulses, then one Gaussian filter)."""
    img = np.zeros((size, size))
    if len(ys):
        y0 = np.floor(ys).astype(int)
        x0 = np.floor(xs).astype(int)
        fy = ys - y0
        fx = xs - x0
        for oy, ox, w in (
            (0, 0, (1 - fy) * (1 - fx)),
            (1, 0, fy * (1 - fx)),
            (0, 1, (1 - fy) * fx),
            (1, 1, fy * fx),
        ):
            yi = y0 + oy
            xi = x0 + ox
            ok = (yi >= 0) & (yi < size) & (xi >= 0) & (xi < size)
            np.add.at(img, (yi[ok], xi[ok]), (amplitudes * w)[ok])
        # normalise so that `amplitude` is the spot's peak value
        img = ndi.gaussian_filter(img, sigma_px, mode="constant") * (2 * np.pi * sigma_px**2)
    return img


def _sample_inside(
    rng: np.random.Generator, weight: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random sub-pixel positions drawn with probability ∝ ``weight``."""
    flat = weight.ravel()
    total = flat.sum()
    if n <= 0 or total <= 0:
        return np.zeros(0), np.zeros(0)
    idx = rng.choice(flat.size, size=n, p=flat / total)
    ys, xs = np.divmod(idx, weight.shape[1])
    return ys + rng.uniform(-0.5, 0.5, n), xs + rng.uniform(-0.5, 0.5, n)


def _draw_biology(
    rng: np.random.Generator, subtype: str, sample_bio: dict[str, float]
) -> dict[str, Any]:
    """Latent parameters of one cell of ``subtype`` (see the module docstring table)."""
    p: dict[str, Any] = {"subtype": subtype}
    ellipticity = abs(rng.normal(0, 0.035))
    if subtype == "lymphocyte":
        p.update(
            diameter_um=_truncated_normal(rng, 9.0, 1.1, 7.0, 13.0),
            nc_ratio=rng.uniform(0.72, 0.88),
            irregularity=rng.uniform(0.005, 0.03),
            nucleus_irregularity=rng.uniform(0.01, 0.04),
            n_blebs=int(rng.random() < 0.05),
            ploidy=2.0,
            n_nucleoli=int(rng.random() < 0.15),
            ri_cytoplasm=rng.uniform(0.026, 0.036),
            granules=int(rng.integers(0, 12)),
            vacuoles=int(rng.integers(0, 3)),
            ck=rng.lognormal(math.log(0.02), 0.5),
            cd45=rng.lognormal(math.log(1.0), 0.3),
        )
    elif subtype == "neutrophil":
        p.update(
            diameter_um=_truncated_normal(rng, 10.8, 1.0, 8.5, 14.0),
            nc_ratio=rng.uniform(0.5, 0.65),
            irregularity=rng.uniform(0.01, 0.045),
            nucleus_irregularity=rng.uniform(0.02, 0.06),
            n_blebs=int(rng.random() < 0.15),
            ploidy=2.0,
            n_lobes=int(rng.integers(3, 6)),
            n_nucleoli=0,
            ri_cytoplasm=rng.uniform(0.028, 0.038),
            granules=int(rng.integers(50, 120)),
            vacuoles=int(rng.integers(0, 3)),
            ck=rng.lognormal(math.log(0.035), 0.5),
            cd45=rng.lognormal(math.log(0.45), 0.35),
        )
    elif subtype == "monocyte":
        p.update(
            diameter_um=_truncated_normal(rng, 12.6, 1.5, 10.0, 17.0),
            nc_ratio=rng.uniform(0.55, 0.72),
            irregularity=rng.uniform(0.015, 0.06),
            nucleus_irregularity=rng.uniform(0.02, 0.07),
            n_blebs=int(rng.integers(0, 3)),
            ploidy=2.0,
            n_nucleoli=int(rng.random() < 0.3),
            ri_cytoplasm=rng.uniform(0.024, 0.034),
            granules=int(rng.integers(10, 40)),
            vacuoles=int(rng.integers(2, 10)),
            ck=rng.lognormal(math.log(0.06), 0.6),
            cd45=rng.lognormal(math.log(0.7), 0.3),
        )
    elif subtype in ("ctc", "ctc_binucleate"):
        atypia = float(rng.beta(2.0, 2.0))
        median = 16.0 if subtype == "ctc_binucleate" else 13.5
        sigma = 0.2 if subtype == "ctc_binucleate" else 0.24
        ck_low = bool(rng.random() < 0.12)
        p.update(
            atypia=atypia,
            diameter_um=_truncated_lognormal(
                rng, median * sample_bio["ctc_size_factor"], sigma, 8.5, 27.0
            ),
            nc_ratio=rng.uniform(0.55, 0.8),
            irregularity=0.008 + 0.055 * atypia * rng.uniform(0.3, 1.0),
            nucleus_irregularity=0.02 + 0.11 * atypia * rng.uniform(0.3, 1.0),
            n_blebs=int(rng.poisson(1.5 * atypia)),
            ploidy=float(rng.uniform(2.0, 5.0)),
            n_nucleoli=int(rng.poisson(0.4 + 2.2 * atypia)),
            ri_cytoplasm=rng.uniform(0.024, 0.036),
            granules=int(rng.integers(0, 25)),
            vacuoles=int(rng.integers(0, 6)),
            ck_low=ck_low,
            ck=rng.lognormal(math.log(0.08 if ck_low else 0.9), 0.5) * sample_bio["ck_factor"],
            cd45=rng.lognormal(math.log(0.015), 0.5),
        )
    else:  # pragma: no cover - guarded by callers
        raise ValueError(f"unknown subtype {subtype!r}")
    p["ellipticity"] = ellipticity
    p["ri_nucleus_rel"] = rng.normal(-0.006, 0.004)  # nucleus vs cytoplasm (Schürmann 2016)
    p["flatten"] = rng.uniform(0.75, 0.95)
    p["edge_softness_um"] = rng.uniform(0.3, 0.7)
    return p


def _add_cell(
    scene: _Scene,
    grid: _Grid,
    rng: np.random.Generator,
    p: dict[str, Any],
    cy: float,
    cx: float,
    optics: Optics,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one cell (biology ``p``) centred at (cy, cx) into ``scene``.

    Returns the cell mask and the nucleus mask.
    """
    px = optics.pixel_size_um
    size = grid.size
    radius = p["diameter_um"] / 2 / px
    subtype = p["subtype"]
    cell_mask, cell_h, cell_edge = _blob(
        grid,
        rng,
        cy,
        cx,
        radius,
        p["irregularity"],
        p["ellipticity"],
        p["n_blebs"],
        0.10 if subtype.startswith("ctc") else 0.06,
        px,
        p["flatten"],
    )
    # ----- nucleus (mask, thickness in µm) -----
    nuc_r = p["nc_ratio"] * radius
    nuc_mask = np.zeros_like(cell_mask)
    nuc_h = np.zeros_like(cell_h)

    def put(ny: float, nx: float, r: float, irr: float, ell: float = 0.05):
        nonlocal nuc_mask, nuc_h
        m, h, _ = _blob(grid, rng, ny, nx, r, irr, ell, 0, 0.0, px, p["flatten"])
        nuc_mask = np.maximum(nuc_mask, m)
        nuc_h = np.maximum(nuc_h, h)

    off_angle = rng.uniform(0, 2 * np.pi)
    if subtype == "neutrophil":
        n_lobes = p["n_lobes"]
        arc_r = 0.42 * radius
        start = rng.uniform(0, 2 * np.pi)
        step = rng.uniform(0.8, 1.15) * np.sign(rng.normal())
        lobe_r = nuc_r * rng.uniform(0.42, 0.5)
        for i in range(n_lobes):
            a = start + i * step + rng.normal(0, 0.12)
            put(
                cy + arc_r * np.sin(a),
                cx + arc_r * np.cos(a),
                lobe_r * rng.uniform(0.85, 1.1),
                p["nucleus_irregularity"],
                0.15,
            )
    elif subtype == "monocyte":
        shift = rng.uniform(0.05, 0.15) * radius
        ny, nx = cy + shift * np.sin(off_angle), cx + shift * np.cos(off_angle)
        put(ny, nx, nuc_r, p["nucleus_irregularity"], 0.12)
        bite_a = off_angle + np.pi + rng.normal(0, 0.3)
        bite_r = nuc_r * rng.uniform(0.45, 0.65)
        bite_d = nuc_r * rng.uniform(0.85, 1.1)
        bite, _, _ = _blob(
            grid, rng, ny + bite_d * np.sin(bite_a), nx + bite_d * np.cos(bite_a), bite_r
        )
        nuc_mask = nuc_mask * (1 - bite)
        nuc_h = nuc_h * (1 - bite)
    elif subtype == "ctc_binucleate":
        sep = rng.uniform(0.3, 0.42) * radius
        for sgn in (-1, 1):
            put(
                cy + sgn * sep * np.sin(off_angle),
                cx + sgn * sep * np.cos(off_angle),
                nuc_r * rng.uniform(0.55, 0.68),
                p["nucleus_irregularity"],
            )
    else:  # lymphocyte, ctc: one nucleus, off-centre
        shift = rng.uniform(0.0, 0.16 if subtype == "ctc" else 0.1) * radius
        put(
            cy + shift * np.sin(off_angle),
            cx + shift * np.cos(off_angle),
            nuc_r,
            p["nucleus_irregularity"],
            abs(rng.normal(0, 0.05)),
        )
    nuc_mask *= cell_mask
    nuc_h = np.minimum(nuc_h, cell_h) * cell_mask

    # ----- nucleoli: small high-index, DNA-poor spots -----
    n_nucleoli = p["n_nucleoli"]
    nucleoli = np.zeros_like(cell_h)
    if n_nucleoli:
        ys, xs = _sample_inside(rng, (nuc_mask > 0.9) * nuc_h, n_nucleoli)
        sigma = rng.uniform(0.35, 0.6) / px
        nucleoli = _splat(size, ys, xs, rng.uniform(0.6, 1.0, len(ys)), sigma)

    # ----- cytoplasm: granules, vacuoles, texture -----
    cyto_w = np.clip(cell_mask - nuc_mask, 0, 1) * (cell_edge > 1.0)
    ys, xs = _sample_inside(rng, cyto_w, p["granules"])
    granules = _splat(size, ys, xs, rng.uniform(0.02, 0.05, len(ys)), 0.32 / px)
    ys, xs = _sample_inside(rng, cyto_w, p["vacuoles"])
    vacuoles = _splat(size, ys, xs, rng.uniform(0.03, 0.08, len(ys)), rng.uniform(0.4, 0.7) / px)
    texture = _random_field(rng, size, 0.35 / px)
    chromatin = _random_field(rng, size, 0.45 / px)

    ri_c = p["ri_cytoplasm"]
    # the cell surface is not a perfect sphere edge (microvilli, cortex): soften the dome
    dome = ndi.gaussian_filter(ri_c * cell_h, p["edge_softness_um"] / px, mode="nearest")
    opd = dome + ri_c * cell_h * 0.045 * texture
    opd += (p["ri_nucleus_rel"] + 0.004 * chromatin) * nuc_h
    opd += 0.04 * nucleoli * (nuc_h > 0)
    opd += (granules - vacuoles) * cell_mask
    scene.opd += opd
    scene.absorbance += optics.absorption * cell_h / _REFERENCE_THICKNESS_UM
    scene.absorbance += 0.3 * granules * cell_mask  # granules scatter a little light

    # ----- fluorescence (expected photo-electrons) -----
    nuc_area_um2 = max(float(nuc_mask.sum()) * px * px, 1.0)
    r_eq = math.sqrt(nuc_area_um2 / math.pi)
    density = (p["ploidy"] / 2.0) * (_REFERENCE_NUCLEUS_RADIUS_UM / r_eq) ** 3
    chromatin_tex = np.clip(1 + 0.25 * chromatin, 0.3, None)
    dna = density * nuc_h / (2 * _REFERENCE_NUCLEUS_RADIUS_UM) * chromatin_tex
    dna *= 1 - 0.7 * np.clip(nucleoli, 0, 1)
    scene.dapi += optics.dapi_photons * dna
    cyto_h = np.clip(cell_h - nuc_h, 0, None) * cell_mask
    filaments = np.clip(1 + 0.35 * _random_field(rng, size, 0.4 / px), 0.2, None)
    scene.pe += optics.pe_photons * p["ck"] * cyto_h / (0.5 * _REFERENCE_THICKNESS_UM) * filaments
    membrane = np.exp(-0.5 * (cell_edge / max(0.5 / px, 0.6)) ** 2) + 0.25 * cell_mask
    scene.apc += optics.apc_photons * p["cd45"] * membrane
    return cell_mask, nuc_mask


def _add_debris(scene: _Scene, grid: _Grid, rng: np.random.Generator, optics: Optics) -> int:
    """A few small dark particles; some stick PE or carry DNA."""
    px = optics.pixel_size_um
    n = int(rng.integers(1, 4))
    for _ in range(n):
        cy, cx = rng.uniform(0, grid.size, 2)
        radius = rng.uniform(0.4, 1.5) / px
        m, h, _ = _blob(grid, rng, cy, cx, radius, 0.15, 0.2, 0, 0.0, px, 0.6)
        scene.opd += rng.uniform(0.02, 0.06) * h
        scene.absorbance += rng.uniform(0.05, 0.3) * m
        if rng.random() < 0.3:
            scene.pe += optics.pe_photons * rng.uniform(0.1, 0.6) * m
        if rng.random() < 0.08:
            scene.dapi += optics.dapi_photons * rng.uniform(0.2, 0.8) * m
    return n


def _camera(rng: np.random.Generator, expected_e: np.ndarray, optics: Optics) -> np.ndarray:
    """Poisson-Gaussian camera: photo-electrons -> uint16 ADU clipped to the bit depth.

    Shot noise is drawn as a normal with variance = mean where the mean exceeds
    100 e- (indistinguishable from Poisson there, and several times faster) and
    from the Poisson distribution below; read noise is Gaussian.
    """
    lam = np.clip(expected_e, 0, None)
    electrons = lam + np.sqrt(lam + optics.read_noise_e**2) * rng.standard_normal(lam.shape)
    low = lam < 100
    if low.any():
        electrons[low] = rng.poisson(lam[low]) + rng.normal(0.0, optics.read_noise_e, low.sum())
    adu = electrons / optics.gain_e_per_adu + optics.offset_adu
    return np.clip(np.rint(adu), 0, 2**optics.bit_depth - 1).astype(np.uint16)


def _illumination(grid: _Grid, optics: Optics) -> np.ndarray:
    size = grid.size
    c = (size - 1) / 2
    a = math.radians(optics.illumination_angle_deg)
    ramp = ((grid.xx - c) * math.cos(a) + (grid.yy - c) * math.sin(a)) / size
    r2 = ((grid.xx - c) ** 2 + (grid.yy - c) ** 2) / (2 * c * c)
    return np.clip(1 + optics.illumination_gradient * ramp - optics.vignetting * r2, 0.05, None)


def _image(
    rng: np.random.Generator, scene: _Scene, grid: _Grid, optics: Optics, cell_mask: np.ndarray
) -> dict[str, np.ndarray]:
    """Image the scene: BF by transport of intensity, fluorescence by blurred projection."""
    px = optics.pixel_size_um
    opd = ndi.gaussian_filter(scene.opd, optics.rim_width_um / px, mode="nearest")
    laplacian = ndi.laplace(opd, mode="nearest") / (px * px)  # 1/µm
    phase_term = 1.0 - optics.rim_strength * optics.defocus_um * laplacian
    halo = ndi.gaussian_filter(cell_mask, optics.halo_width_um / px, mode="nearest")
    phase_term -= optics.halo_strength * halo * (1 - cell_mask)
    intensity = np.exp(-scene.absorbance) * np.clip(phase_term, 0.05, None)
    intensity = ndi.gaussian_filter(intensity, optics.psf_sigma_um / px, mode="nearest")
    illum = _illumination(grid, optics)
    channels = {"BF": _camera(rng, optics.photons * illum * intensity, optics)}
    sigma = optics.fluor_psf_sigma_um / px
    for name, signal in (("DAPI", scene.dapi), ("PE", scene.pe), ("APC", scene.apc)):
        blurred = ndi.gaussian_filter(signal, sigma, mode="constant")
        background = optics.fluor_background_photons * (0.5 + 0.5 * illum)
        channels[name] = _camera(rng, blurred + background, optics)
    return channels


def _render(
    rng: np.random.Generator,
    cell_id: str,
    label: str,
    subtype: str,
    sample: str,
    sample_bio: dict[str, float],
    optics: Optics,
    image_size: int,
) -> SynthCell:
    """Draw and image one cell."""
    grid = _Grid.of(image_size)
    px = optics.pixel_size_um
    # per-cell focus: cells float at slightly different heights in their cages
    cell_optics = optics.replace(defocus_um=optics.defocus_um + rng.normal(0.0, 0.4))
    p = _draw_biology(rng, subtype, sample_bio)
    scene = _Scene.empty(image_size)
    c = (image_size - 1) / 2
    off_r = optics.max_offset_um / px * math.sqrt(rng.random())
    off_a = rng.uniform(0, 2 * np.pi)
    cy, cx = c + off_r * math.sin(off_a), c + off_r * math.cos(off_a)
    cell_mask, nuc_mask = _add_cell(scene, grid, rng, p, cy, cx, cell_optics)
    neighbour = bool(rng.random() < optics.neighbour_probability)
    all_cells = cell_mask
    if neighbour:
        nb_type = str(rng.choice(list(SUBTYPES["WBC"]), p=list(SUBTYPES["WBC"].values())))
        nb = _draw_biology(rng, nb_type, sample_bio)
        nb_r = nb["diameter_um"] / 2 / px
        a = rng.uniform(0, 2 * np.pi)
        # centre outside the field so only part of it shows, never on top of the cell
        dist = max(
            image_size / 2 + nb_r * rng.uniform(-0.1, 0.6), p["diameter_um"] / 2 / px + nb_r + 1
        )
        nb_mask, _ = _add_cell(
            scene, grid, rng, nb, c + dist * math.sin(a), c + dist * math.cos(a), cell_optics
        )
        all_cells = np.maximum(all_cells, nb_mask)
    n_debris = (
        _add_debris(scene, grid, rng, cell_optics)
        if rng.random() < optics.debris_probability
        else 0
    )
    channels = _image(rng, scene, grid, cell_optics, all_cells)
    params: dict[str, float | int | str | bool] = {
        k: (round(float(v), 6) if isinstance(v, float) else v) for k, v in p.items()
    }
    params.update(
        nucleus_area_um2=round(float(nuc_mask.sum()) * px * px, 4),
        cell_area_um2=round(float(cell_mask.sum()) * px * px, 4),
        offset_px=round(off_r, 4),
        defocus_um=round(cell_optics.defocus_um, 4),
        neighbour=neighbour,
        n_debris=n_debris,
    )
    return SynthCell(
        cell_id=cell_id,
        label=label,
        subtype=subtype,
        channels=channels,
        diameter_um=float(p["diameter_um"]),
        sample=sample,
        pixel_size_um=px,
        params=params,
    )


def _cell_ids(n: int) -> list[str]:
    width = max(4, len(str(max(n - 1, 0))))
    return [f"cell{i:0{width}d}" for i in range(n)]


def _split_count(total: int, sizes: list[int]) -> list[int]:
    """Share ``total`` among blocks in proportion to ``sizes`` (largest remainders)."""
    n = sum(sizes)
    if n == 0:
        return [0] * len(sizes)
    exact = [total * size / n for size in sizes]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(sizes)), key=lambda j: (counts[j] - exact[j], j))
    for j in order[: total - sum(counts)]:
        counts[j] += 1
    return counts


def _check_args(n: int, ctc_fraction: float, image_size: int, n_samples: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"number of cells must be a non-negative integer, got {n!r}")
    if not 0.0 <= ctc_fraction <= 1.0:
        raise ValueError(f"ctc_fraction must be within [0, 1], got {ctc_fraction!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}")
    if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")


def synth_cells(
    n: int,
    ctc_fraction: float = 0.2,
    seed: int = 0,
    optics: Optics | None = None,
    image_size: int = 64,
    n_samples: int = 1,
    optics_jitter: float = 1.0,
) -> list[SynthCell]:
    """Generate ``n`` synthetic DEPArray-like cells in memory.

    Parameters
    ----------
    n
        Number of cells.
    ctc_fraction
        Fraction of CTCs: exactly ``round(n * ctc_fraction)`` CTCs, shared among the
        samples in proportion to their size, in random positions.
    seed
        Seed; the same arguments always give identical arrays.
    optics
        Instrument preset (default :meth:`Optics.default`).
    image_size
        Side of the square images in pixels.
    n_samples
        Number of samples (patients); cells are split into contiguous blocks
        ``S01``, ``S02``... Each sample gets its own optics (``optics.jittered``)
        and its own CTC size and CK level factors.
    optics_jitter
        Spread of the per-sample optics around ``optics`` (0 = exactly the preset).

    Returns
    -------
    list of SynthCell
        In cell-id order; ``cell.channels`` holds ``uint16`` arrays for
        ``BF``, ``DAPI``, ``PE``, ``APC``.
    """
    _check_args(n, ctc_fraction, image_size, n_samples)
    optics = optics or Optics.default()
    ids = _cell_ids(n)
    plan_rng = np.random.default_rng([seed, 0])
    cells: list[SynthCell] = []
    bounds = [round(j * n / n_samples) for j in range(n_samples + 1)]
    ctc_per_sample = _split_count(
        math.floor(n * ctc_fraction + 0.5), [hi - lo for lo, hi in itertools.pairwise(bounds)]
    )
    for j in range(n_samples):
        lo, hi = bounds[j], bounds[j + 1]
        sample = f"S{j + 1:02d}"
        sample_rng = np.random.default_rng([seed, 1, j])
        sample_optics = optics.jittered(sample_rng, optics_jitter)
        sample_bio = {
            "ctc_size_factor": float(math.exp(sample_rng.normal(0, 0.08))),
            "ck_factor": float(math.exp(sample_rng.normal(0, 0.3))),
        }
        block = hi - lo
        n_ctc = ctc_per_sample[j]
        labels = np.array(["CTC"] * n_ctc + ["WBC"] * (block - n_ctc))
        plan_rng.shuffle(labels)
        for k, label in enumerate(labels):
            i = lo + k
            cell_rng = np.random.default_rng([seed, 2, i])
            names = list(SUBTYPES[str(label)])
            subtype = str(cell_rng.choice(names, p=list(SUBTYPES[str(label)].values())))
            cells.append(
                _render(
                    cell_rng,
                    ids[i],
                    str(label),
                    subtype,
                    sample,
                    sample_bio,
                    sample_optics,
                    image_size,
                )
            )
    return cells


# --------------------------------------------------------------------------- writing
def _resolution(pixel_size_um: float) -> dict[str, Any]:
    per_cm = 1e4 / pixel_size_um
    return {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}


def _tiff_bytes_pages(
    images: Sequence[np.ndarray], names: Sequence[str], pixel_size_um: float, compression
) -> bytes:
    """A TIFF with one page per channel: PageName (285) and ImageDescription = channel."""
    import tifffile

    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as tw:
        for image, name in zip(images, names, strict=True):
            tw.write(
                image,
                photometric="minisblack",
                description=name,
                metadata=None,
                extratags=[(285, "s", 0, name, True)],
                compression=compression,
                **_resolution(pixel_size_um),
            )
    return buffer.getvalue()


def _ome_bytes(
    array: np.ndarray,
    axes: str,
    names: Sequence[str],
    pixel_size_um: float,
    name: str,
    compression,
) -> bytes:
    """OME-TIFF with Channel@Name and PhysicalSizeX/Y; deterministic UUID."""
    import tifffile

    ome = tifffile.OmeXml(
        Creator="napari-deparray-ctc synth",
        UUID=f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'napari-deparray-ctc/' + name)}",
    )
    pages = int(np.prod(array.shape[:-2]))
    ome.addimage(
        array.dtype,
        array.shape,
        (pages, 1, 1, array.shape[-2], array.shape[-1], 1),
        axes=axes,
        Name=name,
        Channel={"Name": list(names)},
        PhysicalSizeX=pixel_size_um,
        PhysicalSizeXUnit="µm",
        PhysicalSizeY=pixel_size_um,
        PhysicalSizeYUnit="µm",
    )
    xml = '<?xml version="1.0" encoding="UTF-8"?>' + ome.tostring()
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        array,
        photometric="minisblack",
        description=xml.encode("utf-8"),
        metadata=None,
        compression=compression,
        **_resolution(pixel_size_um),
    )
    return buffer.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_export(
    out_dir: str | os.PathLike,
    n_cells: int,
    ctc_fraction: float = 0.2,
    seed: int = 0,
    layout: str = "multipage",
    optics: Optics | None = None,
    image_size: int = 64,
    n_samples: int = 1,
    optics_jitter: float = 1.0,
    compression: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic DEPArray-like export folder.

    Parameters
    ----------
    out_dir
        Folder to write (created if missing). It must be empty unless ``overwrite``.
    n_cells, ctc_fraction, seed, optics, image_size, n_samples, optics_jitter
        As in :func:`synth_cells`.
    layout
        ``multipage``: ``cell0000.tif`` per cell, one page per channel (PageName tag
        285 and ImageDescription hold the channel name).
        ``perchannel``: ``cell0000_BF.tif``, ``cell0000_DAPI.tif``... (single pages).
        ``ome``: ``cell0000.ome.tif`` per cell, C axis, OME ``Channel@Name`` and
        ``PhysicalSizeX``.
        ``classdirs``: ``CTC/`` and ``WBC/`` subfolders of multipage files.
        ``stack``: one OME-TIFF ``cells.ome.tif`` shaped (N, C, Y, X), axes ``TCYX``
        (the cell index is stored on the OME T axis), cells in ``labels.csv`` order.
    compression
        TIFF compression passed to tifffile (``None``, ``"zlib"``, ``"lzw"``...).
    overwrite
        Allow writing into a non-empty folder (files of the same name are replaced,
        each one atomically).

    Returns
    -------
    Path
        ``out_dir``. It always contains ``labels.csv`` with columns
        ``cell_id,label,sample``; every file is byte-identical for the same arguments.

    Raises
    ------
    ValueError
        Unknown layout or bad arguments.
    FileExistsError
        ``out_dir`` is not empty and ``overwrite`` is False (nothing is written).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    _check_args(n_cells, ctc_fraction, image_size, n_samples)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder is not empty (use overwrite=True / --overwrite)")
    cells = synth_cells(n_cells, ctc_fraction, seed, optics, image_size, n_samples, optics_jitter)
    out.mkdir(parents=True, exist_ok=True)
    if layout == "classdirs":
        for label in ("CTC", "WBC"):
            (out / label).mkdir(exist_ok=True)

    if layout == "stack":
        if cells:
            array = np.stack([np.stack([c.channels[ch] for ch in CHANNELS]) for c in cells])
            data = _ome_bytes(array, "TCYX", CHANNELS, cells[0].pixel_size_um, "cells", compression)
            _write_bytes(out / "cells.ome.tif", data)
    else:
        for cell in cells:
            images = [cell.channels[ch] for ch in CHANNELS]
            if layout == "perchannel":
                for ch, image in zip(CHANNELS, images, strict=True):
                    data = _tiff_bytes_pages([image], [ch], cell.pixel_size_um, compression)
                    _write_bytes(out / f"{cell.cell_id}_{ch}.tif", data)
            elif layout == "ome":
                data = _ome_bytes(
                    np.stack(images),
                    "CYX",
                    CHANNELS,
                    cell.pixel_size_um,
                    cell.cell_id,
                    compression,
                )
                _write_bytes(out / f"{cell.cell_id}.ome.tif", data)
            else:  # multipage, classdirs
                folder = out / cell.label if layout == "classdirs" else out
                data = _tiff_bytes_pages(images, CHANNELS, cell.pixel_size_um, compression)
                _write_bytes(folder / f"{cell.cell_id}.tif", data)

    write_labels_csv(out / "labels.csv", [(c.cell_id, c.label, c.sample) for c in cells])
    return out
