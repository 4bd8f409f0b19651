"""Second-instrument simulator: partially coherent wave-optics bright-field, numpy/scipy only.

Evaluation only. No import from ``napari_deparray_ctc``; the physical model is in README.md.

Pipeline for one cell (all lengths in µm, simulated at ``OVERSAMPLE`` x the camera sampling,
then binned, which is the pixel's own integration):

1. **Biology** (:func:`_draw_cell`): a Fourier-perturbed superellipse outline, a dome height
   profile, refractive-index increments of cytoplasm and nucleus, and class-specific content
   (CTC: large, irregular, 1-3 clustered nuclear bodies with clumped chromatin and nucleoli;
   WBC: small lymphocytes with a round nucleus, granulocytes with 2-4 lobes and granules,
   monocyte-like cells with an indented nucleus).
2. **Object**: complex transmission ``exp(-absorption + i * phase)``, phase = 2 pi / lambda *
   optical path difference.
3. **Image formation**: angular-spectrum (Fresnel) propagation by the defocus distance through
   an objective pupil (NA, spherical aberration, astigmatism); partially coherent Koehler
   illumination as the incoherent sum over tilted plane waves filling the condenser aperture;
   a Gaussian detector MTF; pixel binning.
4. **Illumination**: a sensor-wide flat field (cos^4-like vignetting about an off-centre axis,
   a linear tilt), cropped where the cell sits on the sensor.
5. **Camera**: Poisson photo-electrons, PRNU (fixed per sensor), column fixed-pattern offsets,
   Gaussian read noise, dark offset, quantised to ``bit_depth`` bits in a uint16 container.
6. **DAPI**: DNA density (chromatin texture x ploidy) blurred by a defocused Gaussian PSF,
   Poisson + read noise, same sensor.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

OVERSAMPLE = 2
WAVELENGTH_UM = 0.53  # green LED
SENSOR_PX = 2048


@dataclass(frozen=True)
class Instrument:
    """A camera + microscope. Per-sample jitter is applied in :func:`_sample_state`."""

    name: str
    pixel_size_um: float  # camera pixel in object space
    crop_px: int
    na_objective: float
    na_condenser: float
    defocus_um: tuple[float, float]  # per-sample uniform range (positive: past focus)
    spherical_waves: float  # Z40 coefficient in waves
    astig_waves: float
    detector_sigma_px: float  # Gaussian MTF (camera pixels)
    photons_bg: tuple[float, float]  # background photo-electrons, per-sample range
    bit_depth: int
    fill: float  # background level as a fraction of full scale
    read_noise_adu: float
    dark_offset_adu: float
    prnu: float
    column_fpn_adu: float
    vignetting: float  # relative loss at the sensor corner
    tilt: float  # relative illumination slope across the sensor
    medium_index: float
    dapi_photons: tuple[float, float]
    declare_pixel_size: bool
    sensor_seed: int


INSTRUMENTS: dict[str, Instrument] = {
    # The "second instrument": 10-bit camera, 0.6-0.7 µm pixels, 96 px crops.
    "instrument_b": Instrument(
        name="instrument_b",
        pixel_size_um=0.65,
        crop_px=96,
        na_objective=0.35,
        na_condenser=0.21,
        defocus_um=(0.8, 2.6),
        spherical_waves=0.35,
        astig_waves=0.12,
        detector_sigma_px=0.45,
        photons_bg=(2500.0, 5000.0),
        bit_depth=10,
        fill=0.62,
        read_noise_adu=1.6,
        dark_offset_adu=32.0,
        prnu=0.006,
        column_fpn_adu=0.8,
        vignetting=0.22,
        tilt=0.06,
        medium_index=1.337,
        dapi_photons=(250.0, 700.0),
        declare_pixel_size=True,
        sensor_seed=7919,
    ),
}
INSTRUMENTS["instrument_b_undeclared"] = replace(
    INSTRUMENTS["instrument_b"], name="instrument_b_undeclared", declare_pixel_size=False
)


@dataclass
class SimCell:
    cell_id: str
    label: str
    kind: str
    sample: str
    bf: np.ndarray
    dapi: np.ndarray
    pixel_size_um: float
    diameter_um: float


# ------------------------------------------------------------------------------ geometry
def _radius_function(rng, mean_radius: float, elong: float, n_exp: float, irregular: float):
    """R(theta) of a superellipse |x/a|^n + |y/b|^n = 1 times a Fourier perturbation."""
    a = mean_radius * math.sqrt(elong)
    b = mean_radius / math.sqrt(elong)
    rot = rng.uniform(0, 2 * math.pi)
    ks = np.arange(2, 9)
    amps = irregular * rng.normal(0, 1, ks.size) / ks**0.9
    phases = rng.uniform(0, 2 * math.pi, ks.size)

    def radius(theta: np.ndarray) -> np.ndarray:
        t = theta - rot
        c, s = np.abs(np.cos(t)), np.abs(np.sin(t))
        r_se = (c**n_exp / a**n_exp + s**n_exp / b**n_exp) ** (-1.0 / n_exp)
        pert = 1.0 + (amps[:, None] * np.cos(ks[:, None] * t.ravel()[None] + phases[:, None])).sum(
            0
        )
        return r_se * np.clip(pert.reshape(t.shape), 0.6, 1.5)

    return radius


def _rho(yy, xx, cy, cx, radius) -> np.ndarray:
    """Normalised radius: 1 on the outline."""
    dy, dx = yy - cy, xx - cx
    return np.hypot(dy, dx) / np.maximum(radius(np.arctan2(dy, dx)), 1e-6)


def _smooth_field(rng, shape, sigma_px: float) -> np.ndarray:
    f = ndi.gaussian_filter(rng.normal(0, 1, shape), sigma_px, mode="wrap")
    return f / (f.std() + 1e-12)


# ------------------------------------------------------------------------------ biology
def _draw_cell(rng, label: str) -> dict:
    """Class-specific parameters (µm, refractive-index increments)."""
    if label == "CTC":
        d = float(np.clip(rng.lognormal(math.log(15.0), 0.26), 9.0, 30.0))
        return {
            "kind": "ctc",
            "diameter": d,
            "elong": rng.uniform(1.0, 1.45),
            "n_exp": rng.uniform(1.7, 2.8),
            "irregular": rng.uniform(0.03, 0.13),
            "dn_cyto": rng.uniform(0.018, 0.030),
            "dn_nuc": rng.uniform(0.008, 0.018),
            "nc_area": rng.uniform(0.33, 0.62),
            "n_nuclei": int(rng.choice([1, 1, 1, 2, 3])),
            "chromatin_clump": rng.uniform(0.4, 0.9),
            "nucleoli": int(rng.integers(1, 5)),
            "granules": 0,
            "ploidy": rng.uniform(1.4, 3.2),
            "absorb": rng.uniform(0.005, 0.02),
        }
    kind = rng.choice(["lymph", "gran", "mono"], p=[0.4, 0.36, 0.24])
    base = {
        "lymph": dict(d=rng.normal(7.8, 0.7), nc=rng.uniform(0.62, 0.82), lobes=1, gran=0),
        "gran": dict(
            d=rng.normal(10.0, 0.9),
            nc=rng.uniform(0.3, 0.45),
            lobes=int(rng.integers(2, 5)),
            gran=int(rng.integers(25, 70)),
        ),
        "mono": dict(
            d=rng.normal(13.4, 1.6),
            nc=rng.uniform(0.4, 0.55),
            lobes=-1,
            gran=int(rng.integers(0, 12)),
        ),
    }[kind]
    return {
        "kind": str(kind),
        "diameter": float(np.clip(base["d"], 6.0, 19.0)),
        "elong": rng.uniform(1.0, 1.12),
        "n_exp": rng.uniform(1.95, 2.25),
        "irregular": rng.uniform(0.0, 0.035),
        "dn_cyto": rng.uniform(0.022, 0.034),
        "dn_nuc": rng.uniform(0.010, 0.02),
        "nc_area": base["nc"],
        "n_nuclei": 1,
        "lobes": base["lobes"],
        "chromatin_clump": rng.uniform(0.6, 1.0),
        "nucleoli": 0,
        "granules": base["gran"],
        "ploidy": 1.0,
        "absorb": rng.uniform(0.008, 0.03) if kind == "gran" else rng.uniform(0.003, 0.012),
    }


def _object_maps(rng, bio: dict, grid_um: tuple[np.ndarray, np.ndarray], centre, flatten: float):
    """(optical path difference µm, absorption, DNA density, cell mask) on the sim grid."""
    yy, xx = grid_um
    cy, cx = centre
    radius_cell = _radius_function(
        rng, bio["diameter"] / 2, bio["elong"], bio["n_exp"], bio["irregular"]
    )
    rho = _rho(yy, xx, cy, cx, radius_cell)
    inside = rho < 1
    r_mean = bio["diameter"] / 2
    thickness = 2 * r_mean * flatten * np.sqrt(np.clip(1 - rho**2, 0, None))  # dome (µm)
    opd = bio["dn_cyto"] * thickness
    absorb = bio["absorb"] * thickness / max(r_mean, 1e-6) * inside
    dna = np.zeros_like(opd)
    step = float(yy[1, 0] - yy[0, 0])
    # nucleus / nuclei
    nuc_mask = np.zeros_like(inside)
    nuc_r = r_mean * math.sqrt(bio["nc_area"])
    if bio["kind"] == "ctc" and bio["n_nuclei"] > 1:
        parts = []
        for _ in range(bio["n_nuclei"]):
            ang = rng.uniform(0, 2 * math.pi)
            off = rng.uniform(0.15, 0.4) * r_mean
            parts.append(
                (
                    cy + off * math.sin(ang),
                    cx + off * math.cos(ang),
                    nuc_r / math.sqrt(bio["n_nuclei"]) * rng.uniform(0.9, 1.2),
                )
            )
    elif bio.get("lobes", 1) > 1:
        parts = []
        arc0, lobe_r = rng.uniform(0, 2 * math.pi), nuc_r / math.sqrt(bio["lobes"]) * 1.05
        for i in range(bio["lobes"]):
            ang = arc0 + i * rng.uniform(0.8, 1.3)
            off = 0.45 * r_mean
            parts.append((cy + off * math.sin(ang), cx + off * math.cos(ang), lobe_r))
    else:
        off = rng.uniform(0, 0.2) * r_mean
        ang = rng.uniform(0, 2 * math.pi)
        parts = [(cy + off * math.sin(ang), cx + off * math.cos(ang), nuc_r)]
    for ny, nx, nr in parts:
        rf = _radius_function(
            rng, nr, rng.uniform(1.0, 1.3), 2.0, 0.06 if bio["kind"] == "ctc" else 0.03
        )
        nuc_mask |= _rho(yy, xx, ny, nx, rf) < 1
    if bio.get("lobes", 1) == -1:  # monocyte: indented (kidney) nucleus
        ang = rng.uniform(0, 2 * math.pi)
        bite = (
            np.hypot(yy - (cy + nuc_r * math.sin(ang)), xx - (cx + nuc_r * math.cos(ang)))
            < 0.55 * nuc_r
        )
        nuc_mask &= ~bite
    nuc_mask &= rho < 0.92
    chrom = _smooth_field(rng, yy.shape, 0.5 / step)
    clumps = 1.0 + bio["chromatin_clump"] * 0.5 * np.tanh(chrom)
    nuc_soft = ndi.gaussian_filter(nuc_mask.astype(float), 0.25 / step)
    opd += bio["dn_nuc"] * thickness * nuc_soft * clumps
    absorb += 0.02 * nuc_soft * clumps
    dna += nuc_soft * clumps * bio["ploidy"] / max(nuc_soft.sum() * step**2, 1.0) * 60.0
    for _ in range(bio["nucleoli"]):
        ys, xs = np.nonzero(nuc_mask)
        if ys.size == 0:
            break
        k = rng.integers(ys.size)
        blob = np.exp(
            -(
                ((yy - yy[ys[k], xs[k]]) ** 2 + (xx - xx[ys[k], xs[k]]) ** 2)
                / (2 * rng.uniform(0.35, 0.7) ** 2)
            )
        )
        opd += 0.06 * blob
        absorb += 0.03 * blob
    if bio["granules"]:
        ys, xs = np.nonzero(inside & ~nuc_mask)
        if ys.size:
            pick = rng.integers(ys.size, size=bio["granules"])
            spots = np.zeros_like(opd)
            spots[ys[pick], xs[pick]] = rng.uniform(0.5, 1.0, pick.size)
            spots = ndi.gaussian_filter(spots, 0.22 / step) * (2 * math.pi * (0.22 / step) ** 2)
            opd += 0.05 * spots
            absorb += 0.04 * spots
    return opd, absorb, dna, inside


def _debris(rng, grid_um, opd, absorb):
    yy, xx = grid_um
    span = float(yy.max())
    for _ in range(rng.poisson(0.35)):
        cy, cx = rng.uniform(0, span, 2)
        r = rng.uniform(0.6, 2.2)
        blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2)))
        opd += rng.uniform(0.02, 0.1) * blob
        absorb += rng.uniform(0.02, 0.25) * blob


# ------------------------------------------------------------------------------ optics
def _koehler_image(
    field_t: np.ndarray, step_um: float, inst: Instrument, defocus_um: float, astig_angle: float
) -> np.ndarray:
    """Partially coherent bright-field intensity of a complex transmission (sim grid)."""
    n = field_t.shape[0]
    f = np.fft.fftfreq(n, d=step_um)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    spectrum = sfft.fft2(field_t, workers=1)
    fc = inst.na_objective / WAVELENGTH_UM
    # illumination tilts: centre + rings filling the condenser aperture
    tilts = [(0.0, 0.0)]
    fcond = inst.na_condenser / WAVELENGTH_UM
    for ring, count in ((0.5, 5), (0.92, 8)):
        for j in range(count):
            a = 2 * math.pi * (j + 0.5 * ring) / count
            tilts.append((ring * fcond * math.sin(a), ring * fcond * math.cos(a)))
    out = np.zeros((n, n))
    lam = WAVELENGTH_UM / inst.medium_index
    for ty, tx in tilts:
        gy, gx = fy + ty, fx + tx
        f2 = gy**2 + gx**2
        rho2 = f2 / fc**2
        pupil = (rho2 <= 1.0).astype(complex)
        ang = np.arctan2(gy, gx)
        aberr = inst.spherical_waves * (
            6 * rho2**2 - 6 * rho2 + 1
        ) + inst.astig_waves * rho2 * np.cos(2 * (ang - astig_angle))
        phase = math.pi * lam * defocus_um * f2 + 2 * math.pi * aberr
        h = pupil * np.exp(1j * phase)
        out += np.abs(sfft.ifft2(spectrum * h, workers=1)) ** 2
    return out / len(tilts)


def _sensor_maps(inst: Instrument):
    rng = np.random.default_rng(inst.sensor_seed)
    prnu = 1.0 + inst.prnu * rng.normal(0, 1, (SENSOR_PX, SENSOR_PX)).astype(np.float32)
    columns = inst.column_fpn_adu * rng.normal(0, 1, SENSOR_PX).astype(np.float32)
    axis = rng.uniform(0.35, 0.65, 2) * SENSOR_PX
    tilt_dir = rng.uniform(0, 2 * math.pi)
    return prnu, columns, axis, tilt_dir


_SENSORS: dict[int, tuple] = {}


def _flat_field(inst: Instrument, y0: int, x0: int, size: int, tilt_scale: float) -> np.ndarray:
    _, _, axis, tilt_dir = _SENSORS[inst.sensor_seed]
    yy, xx = np.mgrid[y0 : y0 + size, x0 : x0 + size].astype(float)
    half = SENSOR_PX / 2
    r2 = ((yy - axis[0]) ** 2 + (xx - axis[1]) ** 2) / (half * math.sqrt(2)) ** 2
    k = (
        1 - inst.vignetting
    ) ** -0.5 - 1  # cos^4-like: (1 + k r^2)^-2 reaches 1 - vignetting at r = 1
    vig = (1 + k * r2) ** -2
    slope = (
        inst.tilt
        * tilt_scale
        * ((yy - half) * math.sin(tilt_dir) + (xx - half) * math.cos(tilt_dir))
        / SENSOR_PX
    )
    return vig * (1 + slope)


def _camera(
    rng, electrons_expected: np.ndarray, inst: Instrument, gain: float, y0: int, x0: int
) -> np.ndarray:
    prnu, columns, _, _ = _SENSORS[inst.sensor_seed]
    s = electrons_expected.shape[0]
    e = rng.poisson(np.clip(electrons_expected * prnu[y0 : y0 + s, x0 : x0 + s], 0, None)).astype(
        float
    )
    adu = (
        e * gain
        + inst.dark_offset_adu
        + columns[x0 : x0 + s][None, :]
        + rng.normal(0, inst.read_noise_adu, e.shape)
    )
    return np.clip(np.rint(adu), 0, 2**inst.bit_depth - 1).astype(np.uint16)


def _bin(a: np.ndarray, k: int) -> np.ndarray:
    s = a.shape[0] // k
    return a[: s * k, : s * k].reshape(s, k, s, k).mean(axis=(1, 3))


# ------------------------------------------------------------------------------ cells
def _sample_state(rng, inst: Instrument) -> dict:
    return {
        "defocus": rng.uniform(*inst.defocus_um),
        "astig_angle": rng.uniform(0, math.pi),
        "photons": rng.uniform(*inst.photons_bg),
        "tilt_scale": rng.uniform(0.3, 1.7),
        "flatten": rng.uniform(0.55, 0.8),
        "dapi_photons": rng.uniform(*inst.dapi_photons),
        "dapi_blur_um": rng.uniform(0.35, 0.8),
    }


def _render(rng, inst: Instrument, state: dict, label: str) -> tuple[np.ndarray, np.ndarray, dict]:
    size = inst.crop_px
    n_sim = size * OVERSAMPLE
    pad = int(math.ceil((n_sim + 48) / 16) * 16)  # margin against wrap-around of the halo
    step = inst.pixel_size_um / OVERSAMPLE
    coords = (np.arange(pad) - (pad - n_sim) / 2) * step  # crop starts at 0 µm
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    span = size * inst.pixel_size_um
    bio = _draw_cell(rng, label)
    centre = (span / 2 + rng.normal(0, 1.5), span / 2 + rng.normal(0, 1.5))
    opd, absorb, dna, _ = _object_maps(rng, bio, (yy, xx), centre, state["flatten"])
    if rng.random() < 0.12:  # a neighbour leukocyte partly in the crop
        nb = _draw_cell(rng, "WBC")
        ang = rng.uniform(0, 2 * math.pi)
        dist = span / 2 + rng.uniform(0.0, 0.35) * nb["diameter"]
        c2 = (span / 2 + dist * math.sin(ang), span / 2 + dist * math.cos(ang))
        o2, a2, d2, _ = _object_maps(rng, nb, (yy, xx), c2, state["flatten"])
        opd, absorb, dna = opd + o2, absorb + a2, dna + d2
    _debris(rng, (yy, xx), opd, absorb)
    field_t = np.exp(-absorb + 1j * 2 * math.pi * opd / WAVELENGTH_UM)
    defocus = state["defocus"] + rng.normal(0, 0.35)
    intensity = _koehler_image(field_t, step, inst, defocus, state["astig_angle"])
    lo = (pad - n_sim) // 2
    intensity = intensity[lo : lo + n_sim, lo : lo + n_sim]
    intensity = ndi.gaussian_filter(intensity, inst.detector_sigma_px * OVERSAMPLE, mode="nearest")
    intensity = _bin(intensity, OVERSAMPLE)
    y0, x0 = (int(v) for v in rng.integers(0, SENSOR_PX - size, 2))
    flat = _flat_field(inst, y0, x0, size, state["tilt_scale"])
    full = 2**inst.bit_depth - 1
    gain = inst.fill * full / state["photons"]
    bf = _camera(rng, intensity * flat * state["photons"], inst, gain, y0, x0)
    # DAPI: defocused Gaussian PSF on the DNA density, weak background + autofluorescence
    dna_c = dna[lo : lo + n_sim, lo : lo + n_sim]
    dna_c = ndi.gaussian_filter(dna_c, state["dapi_blur_um"] / step, mode="constant")
    dna_c = _bin(dna_c, OVERSAMPLE)
    electrons = state["dapi_photons"] * dna_c / 2.0 + 12.0  # ~2: a 2N lymphocyte nucleus
    dapi = _camera(rng, electrons, inst, gain * 0.5, y0, x0)
    return bf, dapi, bio


def simulate_cells(
    n: int,
    ctc_fraction: float,
    seed: int,
    instrument: str | Instrument = "instrument_b",
    n_samples: int = 4,
    sample_prefix: str = "B",
) -> list[SimCell]:
    """``n`` cells (exactly ``round(n * ctc_fraction)`` CTCs, shuffled) in ``n_samples`` samples."""
    inst = INSTRUMENTS[instrument] if isinstance(instrument, str) else instrument
    if inst.sensor_seed not in _SENSORS:
        _SENSORS[inst.sensor_seed] = _sensor_maps(inst)
    rng = np.random.default_rng([seed, 4242])
    n_ctc = round(n * ctc_fraction)
    labels = np.array(["CTC"] * n_ctc + ["WBC"] * (n - n_ctc))
    rng.shuffle(labels)
    samples = rng.integers(0, n_samples, n)
    states = [_sample_state(rng, inst) for _ in range(n_samples)]
    cells = []
    for i, (label, s) in enumerate(zip(labels, samples, strict=True)):
        bf, dapi, bio = _render(rng, inst, states[s], str(label))
        cells.append(
            SimCell(
                cell_id=f"cell{i:04d}",
                label=str(label),
                kind=bio["kind"],
                sample=f"{sample_prefix}{s + 1:02d}",
                bf=bf,
                dapi=dapi,
                pixel_size_um=inst.pixel_size_um,
                diameter_um=bio["diameter"],
            )
        )
    return cells


def write_export(cells: list[SimCell], out: str | os.PathLike, declare_pixel_size: bool) -> Path:
    """Per-cell 2-page TIFFs (BF, DAPI) and labels.csv; OME PhysicalSizeX only if declared."""
    import tifffile

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for c in cells:
        data = np.stack([c.bf, c.dapi])
        if declare_pixel_size:
            tifffile.imwrite(
                out / f"{c.cell_id}.ome.tif",
                data,
                ome=True,
                photometric="minisblack",
                metadata={
                    "axes": "CYX",
                    "PhysicalSizeX": c.pixel_size_um,
                    "PhysicalSizeXUnit": "µm",
                    "PhysicalSizeY": c.pixel_size_um,
                    "PhysicalSizeYUnit": "µm",
                    "Channel": {"Name": ["BF", "DAPI"]},
                },
            )
        else:  # two plain pages, no resolution, no description: the reader's default order
            with tifffile.TiffWriter(out / f"{c.cell_id}.tif") as tw:
                for plane in data:
                    tw.write(plane, photometric="minisblack", metadata=None)
    with open(out / "labels.csv", "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["cell_id", "label", "sample"])
        for c in cells:
            w.writerow([c.cell_id, c.label, c.sample])
    return out


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="write an export of the independent second instrument")
    p.add_argument("out")
    p.add_argument("--cells", type=int, default=200)
    p.add_argument("--ctc-fraction", type=float, default=0.12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--instrument", default="instrument_b", choices=sorted(INSTRUMENTS))
    a = p.parse_args(argv)
    inst = INSTRUMENTS[a.instrument]
    cells = simulate_cells(a.cells, a.ctc_fraction, a.seed, inst, a.samples)
    write_export(cells, a.out, inst.declare_pixel_size)
    print(f"{len(cells)} cells -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
