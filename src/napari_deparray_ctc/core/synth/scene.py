"""The physical scene of one field: cell outlines, nuclei, granules, debris (no imaging yet)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_deparray_ctc.core.synth.optics import Optics

__all__ = ["Grid", "Scene", "add_cell", "add_debris"]

_REFERENCE_THICKNESS_UM = 10.0  # normalises projected fluorescence
_REFERENCE_NUCLEUS_RADIUS_UM = 3.3  # 2n lymphocyte nucleus: DAPI reference density


class Grid:
    """Pixel coordinates of a square image (cached per size)."""

    _cache: dict[int, Grid] = {}  # noqa: RUF012 - deliberate class-level cache

    def __init__(self, size: int) -> None:
        self.size = size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
        self.yy = yy
        self.xx = xx

    @classmethod
    def of(cls, size: int) -> Grid:
        if size not in cls._cache:
            cls._cache[size] = cls(size)
        return cls._cache[size]


@dataclass
class Scene:
    """Physical maps of the field before imaging."""

    opd: np.ndarray  # optical path difference, µm
    absorbance: np.ndarray  # natural-log absorbance
    dapi: np.ndarray  # expected photo-electrons (before blur)
    pe: np.ndarray
    apc: np.ndarray

    @classmethod
    def empty(cls, size: int) -> Scene:
        return cls(*(np.zeros((size, size)) for _ in range(5)))


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
    grid: Grid,
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


def add_cell(
    scene: Scene,
    grid: Grid,
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


def add_debris(scene: Scene, grid: Grid, rng: np.random.Generator, optics: Optics) -> int:
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
