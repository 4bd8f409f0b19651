"""Imaging a scene (bright-field by transport of intensity, fluorescence, camera) and one cell."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from napari_deparray_ctc.core.synth.biology import SUBTYPES, draw_biology
from napari_deparray_ctc.core.synth.optics import Optics
from napari_deparray_ctc.core.synth.scene import Grid, Scene, add_cell, add_debris

__all__ = ["CHANNELS", "SynthCell", "render_cell"]

#: Channel order of every synthetic cell (canonical names).
CHANNELS: tuple[str, ...] = ("BF", "DAPI", "PE", "APC")


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


def _illumination(grid: Grid, optics: Optics) -> np.ndarray:
    size = grid.size
    c = (size - 1) / 2
    a = math.radians(optics.illumination_angle_deg)
    ramp = ((grid.xx - c) * math.cos(a) + (grid.yy - c) * math.sin(a)) / size
    r2 = ((grid.xx - c) ** 2 + (grid.yy - c) ** 2) / (2 * c * c)
    return np.clip(1 + optics.illumination_gradient * ramp - optics.vignetting * r2, 0.05, None)


def _image(
    rng: np.random.Generator, scene: Scene, grid: Grid, optics: Optics, cell_mask: np.ndarray
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


def render_cell(
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
    grid = Grid.of(image_size)
    px = optics.pixel_size_um
    # per-cell focus: cells float at slightly different heights in their cages
    cell_optics = optics.replace(defocus_um=optics.defocus_um + rng.normal(0.0, 0.4))
    p = draw_biology(rng, subtype, sample_bio)
    scene = Scene.empty(image_size)
    c = (image_size - 1) / 2
    off_r = optics.max_offset_um / px * math.sqrt(rng.random())
    off_a = rng.uniform(0, 2 * np.pi)
    cy, cx = c + off_r * math.sin(off_a), c + off_r * math.cos(off_a)
    cell_mask, nuc_mask = add_cell(scene, grid, rng, p, cy, cx, cell_optics)
    neighbour = bool(rng.random() < optics.neighbour_probability)
    all_cells = cell_mask
    if neighbour:
        nb_type = str(rng.choice(list(SUBTYPES["WBC"]), p=list(SUBTYPES["WBC"].values())))
        nb = draw_biology(rng, nb_type, sample_bio)
        nb_r = nb["diameter_um"] / 2 / px
        a = rng.uniform(0, 2 * np.pi)
        # centre outside the field so only part of it shows, never on top of the cell
        dist = max(
            image_size / 2 + nb_r * rng.uniform(-0.1, 0.6), p["diameter_um"] / 2 / px + nb_r + 1
        )
        nb_mask, _ = add_cell(
            scene, grid, rng, nb, c + dist * math.sin(a), c + dist * math.cos(a), cell_optics
        )
        all_cells = np.maximum(all_cells, nb_mask)
    n_debris = (
        add_debris(scene, grid, rng, cell_optics) if rng.random() < optics.debris_probability else 0
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
