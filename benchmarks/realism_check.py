"""Compare synthetic bright-field cells with real bright-field cells.

Real cells: the Jurkat imaging-flow-cytometry montages in ``../shared/real-cells``
(Blasi et al., Nat Commun 7:10256, 2016; Ch3 = bright-field, Ch4 = DNA, 40x40 px
tiles). They are not DEPArray images and are used only for what every transmitted-
light image of a cell in suspension shares: a dark refractive rim at the membrane,
a bright interior, a faint halo, granular interior texture and camera noise.

Every statistic is computed per tile on ``I / background - 1`` (a plane fitted to the
tile's 4 px border removes illumination ramps), with lengths in units of the cell
radius R (each tile is segmented first), so pixel size, cell size and camera scale do
not matter. The script prints the median [10th, 90th percentile] for the real tiles,
the synthetic default and shifted presets (and the default's WBCs and CTCs apart) and
a "cartoon" baseline (flat disc, dark outline, noise) side by side, then the
median radial profiles, and writes a montage PNG (rows: real | synthetic default |
synthetic shifted; each cell as a BF | DNA/DAPI pair cropped to 1.8 cell diameters).

Usage::

    python benchmarks/realism_check.py [/tmp/realism.png] [--real DIR] [--n 300] [--seed 0]

The montage shows real images: keep it outside the repository.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

DEFAULT_REAL = Path(__file__).resolve().parents[2] / "shared" / "real-cells"
TILE = 40  # Jurkat montage tile size
BORDER = 4  # background frame width (px)
PROFILE_EDGES = np.round(np.arange(0.0, 2.01, 0.1), 2)

STAT_NAMES = {
    "noise_cv": "background noise: robust std of I/bg in the border frame",
    "noise_corr": "correlation of horizontally neighbouring background pixels",
    "rim_depth": "dark rim: minimum of the radial profile in 0.7-1.4 R",
    "rim_pos": "position of that minimum (r/R)",
    "inner_peak": "bright inner ring: maximum of the profile in 0.3-1.0 R",
    "centre": "centre brightness: mean profile in 0-0.5 R",
    "halo": "halo: mean profile in 1.4-1.9 R (Jurkat: mostly inside the border frame)",
    "texture": "interior texture: std of I - blur(I, R/8) within 0.6 R, noise removed",
    "grad_energy": "gradient energy: mean |grad blur(I, R/15)| * R within 1.3 R",
    "psd_slope": "power-spectrum slope (log-log, 2-12 cycles per 4R crop)",
}


def load_jurkat_tiles(real_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """BF and DNA tiles (N, 40, 40) cut from the Jurkat montages; empty tiles dropped."""
    import tifffile

    folder = real_dir / "jurkat-ifc-blasi2016"
    bf_files = sorted(folder.glob("Ch3_*.tif"))
    if not bf_files:
        raise FileNotFoundError(f"{folder}: no Ch3_*.tif montage found")

    def cut(a: np.ndarray) -> np.ndarray:
        rows, cols = a.shape[0] // TILE, a.shape[1] // TILE
        a = a[: rows * TILE, : cols * TILE]
        return a.reshape(rows, TILE, cols, TILE).transpose(0, 2, 1, 3).reshape(-1, TILE, TILE)

    bf_tiles, dna_tiles = [], []
    for bf_path in bf_files:
        dna_path = bf_path.with_name(bf_path.name.replace("Ch3_", "Ch4_"))
        bf = cut(tifffile.imread(bf_path).astype(np.float64))
        dna = cut(tifffile.imread(dna_path).astype(np.float64))
        keep = bf.reshape(len(bf), -1).std(axis=1) > 0
        bf_tiles.append(bf[keep])
        dna_tiles.append(dna[keep])
    return np.concatenate(bf_tiles), np.concatenate(dna_tiles)


def _frame(shape: tuple[int, ...]) -> np.ndarray:
    frame = np.ones(shape, bool)
    frame[BORDER:-BORDER, BORDER:-BORDER] = False
    return frame


def flatten_background(img: np.ndarray) -> np.ndarray:
    """``img / plane - 1`` with a plane fitted to the border frame (removes ramps)."""
    img = img.astype(np.float64)
    yy, xx = np.indices(img.shape)
    design = np.stack([np.ones(img.size), yy.ravel(), xx.ravel()], axis=1)
    frame = _frame(img.shape).ravel()
    coef, *_ = np.linalg.lstsq(design[frame], img.ravel()[frame], rcond=None)
    plane = (design @ coef).reshape(img.shape)
    return img / np.maximum(plane, 1e-9) - 1


def segment(rel: np.ndarray) -> tuple[np.ndarray, float, float, float] | None:
    """Mask, centroid (y, x) and equivalent radius of the cell nearest the tile centre."""
    smooth = ndi.gaussian_filter(np.abs(rel), 1.0)
    frame = smooth[_frame(rel.shape)]
    mad = np.median(np.abs(frame - np.median(frame)))
    mask = smooth > max(0.04, np.median(frame) + 6 * mad)
    mask = ndi.binary_fill_holes(ndi.binary_closing(mask, iterations=2))
    lab, n = ndi.label(mask)
    if n == 0:
        return None
    centre = (np.array(rel.shape) - 1) / 2
    best, best_score = 0, np.inf
    for i, (sy, sx) in enumerate(ndi.find_objects(lab), start=1):
        component = lab[sy, sx] == i
        if component.sum() <= 20:
            continue
        cy, cx = ndi.center_of_mass(component)
        score = np.hypot(sy.start + cy - centre[0], sx.start + cx - centre[1])
        if sy.start == 0 or sx.start == 0 or sy.stop == rel.shape[0] or sx.stop == rel.shape[1]:
            score += rel.shape[0]  # a neighbour entering from the border
        if score < best_score:
            best, best_score = i, score
    if best == 0:
        return None
    m = lab == best
    cy, cx = ndi.center_of_mass(m)
    return m, float(cy), float(cx), float(np.sqrt(m.sum() / np.pi))


def radial_profile(rel: np.ndarray, cy: float, cx: float, radius: float) -> np.ndarray:
    """Mean of ``rel`` in rings of 0.1 R from 0 to 2 R (NaN where a ring is empty)."""
    yy, xx = np.indices(rel.shape)
    rr = np.hypot(yy - cy, xx - cx) / radius
    out = []
    for lo, hi in itertools.pairwise(PROFILE_EDGES):
        ring = (rr >= lo) & (rr < hi)
        out.append(rel[ring].mean() if ring.any() else np.nan)
    return np.array(out)


def _crop(a: np.ndarray, cy: float, cx: float, half: float, out: int) -> np.ndarray:
    """Square crop of side ``2 * half`` around (cy, cx), zero-padded, resized to ``out``."""
    from skimage.transform import resize

    y0, y1 = round(cy - half), round(cy + half)
    x0, x1 = round(cx - half), round(cx + half)
    pad = max(0, -y0, -x0, y1 - a.shape[0], x1 - a.shape[1])
    padded = np.pad(a, pad, mode="constant")
    crop = padded[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
    return resize(crop, (out, out), order=1, anti_aliasing=True)


def psd_slope(rel: np.ndarray, cy: float, cx: float, radius: float) -> float:
    """Slope of the radially averaged power spectrum of a 4R crop resampled to 48 px."""
    crop = _crop(rel, cy, cx, 2 * radius, 48)
    win = np.outer(np.hanning(48), np.hanning(48))
    spec = np.abs(np.fft.fftshift(np.fft.fft2((crop - crop.mean()) * win))) ** 2
    yy, xx = np.indices(spec.shape)
    ring = np.hypot(yy - 24, xx - 24).astype(int).ravel()
    radial = np.bincount(ring, spec.ravel()) / np.bincount(ring)
    f = np.arange(2, 13)
    return float(np.polyfit(np.log(f), np.log(radial[f] + 1e-12), 1)[0])


def tile_stats(img: np.ndarray) -> dict[str, float | np.ndarray] | None:
    """Scale-free statistics of one bright-field tile (None if no cell is found)."""
    rel = flatten_background(img)
    seg = segment(rel)
    if seg is None or seg[3] < 4:
        return None
    _, cy, cx, radius = seg
    stats: dict[str, float | np.ndarray] = {}
    frame = rel[_frame(rel.shape)]
    stats["noise_cv"] = float(1.4826 * np.median(np.abs(frame - np.median(frame))))
    top = rel[:BORDER, :]
    a, b = top[:, 1:].ravel(), top[:, :-1].ravel()
    stats["noise_corr"] = float(np.corrcoef(a, b)[0, 1])
    prof = radial_profile(rel, cy, cx, radius)
    centres = (PROFILE_EDGES[:-1] + PROFILE_EDGES[1:]) / 2
    in_rim = (centres > 0.7) & (centres < 1.4)
    i_rim = int(np.nanargmin(np.where(in_rim, prof, np.nan)))
    stats["rim_depth"] = float(prof[i_rim])
    stats["rim_pos"] = float(centres[i_rim])
    stats["inner_peak"] = float(np.nanmax(prof[(centres > 0.3) & (centres < 1.0)]))
    stats["centre"] = float(np.nanmean(prof[centres < 0.5]))
    halo = prof[(centres > 1.4) & (centres < 1.9)]
    stats["halo"] = float(np.nanmean(halo)) if np.isfinite(halo).any() else np.nan
    yy, xx = np.indices(rel.shape)
    rr = np.hypot(yy - cy, xx - cx) / radius
    sigma = max(radius / 8, 1.0)
    high_pass = rel - ndi.gaussian_filter(rel, sigma)
    noise_var = high_pass[_frame(rel.shape)].var()
    stats["texture"] = float(np.sqrt(max(high_pass[rr < 0.6].var() - noise_var, 0.0)))
    gy, gx = np.gradient(ndi.gaussian_filter(rel, max(radius / 15, 0.7)))
    stats["grad_energy"] = float(np.mean(np.hypot(gy, gx)[rr < 1.3]) * radius)
    stats["psd_slope"] = psd_slope(rel, cy, cx, radius)
    stats["profile"] = prof
    return stats


def summarise(tiles: list[np.ndarray]) -> dict[str, object]:
    """Median and 10th/90th percentiles of every statistic, and the median profile."""
    rows = [s for s in (tile_stats(t) for t in tiles) if s is not None]
    out: dict[str, object] = {"n": len(rows)}
    for key in STAT_NAMES:
        v = np.array([r[key] for r in rows], dtype=float)
        v = v[np.isfinite(v)]
        out[key] = (
            (float(np.median(v)), float(np.percentile(v, 10)), float(np.percentile(v, 90)))
            if len(v)
            else (np.nan, np.nan, np.nan)
        )
    out["profile"] = np.nanmedian(np.array([r["profile"] for r in rows]), axis=0)
    return out


def _display_pair(bf: np.ndarray, other: np.ndarray, out: int = 96) -> np.ndarray:
    """BF (I/bg in [0.7, 1.3]) and fluorescence (1-99.8 percentile) crops of one cell."""
    rel = flatten_background(bf)
    seg = segment(rel)
    if seg is None:
        cy, cx, radius = (bf.shape[0] - 1) / 2, (bf.shape[1] - 1) / 2, bf.shape[0] / 5
    else:
        _, cy, cx, radius = seg
    half = 1.8 * radius  # side = 1.8 cell diameters
    b = np.clip((_crop(rel, cy, cx, half, out) + 0.3) / 0.6, 0, 1)
    o = other.astype(np.float64)
    lo, hi = np.percentile(o, 1), np.percentile(o, 99.8)
    o = np.clip((o - lo) / (hi - lo + 1e-9), 0, 1)
    return np.concatenate([b, _crop(o, cy, cx, half, out), np.ones((out, 2))], axis=1)


def montage(groups: list[tuple[list[np.ndarray], list[np.ndarray]]], path: Path) -> None:
    """Two rows of eight BF|DNA pairs per group, groups separated by white bars."""
    from skimage import io

    blocks = []
    for bfs, dnas in groups:
        for r in range(2):
            pairs = [_display_pair(bfs[i], dnas[i]) for i in range(8 * r, 8 * r + 8)]
            blocks.append(np.concatenate(pairs, axis=1))
        blocks.append(np.ones((6, blocks[-1].shape[1])))
    io.imsave(path, (np.concatenate(blocks, axis=0) * 255).astype(np.uint8), check_contrast=False)


def cartoon_tiles(n: int, rng: np.random.Generator, size: int = 64) -> list[np.ndarray]:
    """Baseline "cartoon" cells: a flat disc with a dark outline, plus camera noise.

    The outline depth is set to the real rim depth, so rim statistics match by
    construction; the others show what a cartoon lacks.
    """
    yy, xx = np.indices((size, size))
    tiles = []
    for _ in range(n):
        radius = rng.uniform(8, 14)
        cy, cx = (size - 1) / 2 + rng.normal(0, 2, 2)
        r = np.hypot(yy - cy, xx - cx)
        img = 1.0 - 0.2 * np.exp(-0.5 * ((r - radius) / 1.0) ** 2) + 0.03 * (r < radius)
        tiles.append(2000 * ndi.gaussian_filter(img, 0.6) + rng.normal(0, 18, img.shape))
    return tiles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("png", nargs="?", default="/tmp/realism.png", help="montage output path")
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="real-cells folder")
    parser.add_argument("--n", type=int, default=300, help="tiles / synthetic cells per column")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from napari_deparray_ctc.core.synth import Optics, synth_cells

    try:
        real_bf, real_dna = load_jurkat_tiles(args.real)
    except FileNotFoundError as err:
        print(f"real cells not available: {err}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(real_bf), size=min(args.n, len(real_bf)), replace=False)
    bf_columns = {"real Jurkat": [real_bf[i] for i in pick]}
    dna_columns = {"real Jurkat": [real_dna[i] for i in pick]}
    by_label: dict[str, list[np.ndarray]] = {}
    for name, optics in (("synth default", Optics.default()), ("synth shifted", Optics.shifted())):
        cells = synth_cells(args.n, 0.5, seed=args.seed, optics=optics, n_samples=4)
        bf_columns[name] = [c.channels["BF"] for c in cells]
        dna_columns[name] = [c.channels["DAPI"] for c in cells]
        if name == "synth default":
            by_label = {
                f"default {label} only": [c.channels["BF"] for c in cells if c.label == label]
                for label in ("WBC", "CTC")
            }
    bf_columns.update(by_label)
    bf_columns["cartoon disc"] = cartoon_tiles(args.n, rng)
    results = {name: summarise(tiles) for name, tiles in bf_columns.items()}
    names = list(bf_columns)

    width = 26
    print(f"{'statistic':<12}" + "".join(f"{n:>{width}}" for n in names))
    print(f"{'(tiles)':<12}" + "".join(f"{results[n]['n']:>{width}d}" for n in names))
    for key in STAT_NAMES:
        row = []
        for n in names:
            med, lo, hi = results[n][key]
            row.append(f"{med:+.3f} [{lo:+.3f},{hi:+.3f}]")
        print(f"{key:<12}" + "".join(f"{t:>{width}}" for t in row))
    print("\nmedian radial profile of I/bg - 1, rings of 0.1 R from the centre:")
    print(f"{'r/R':<20}" + " ".join(f"{e:>5.1f}" for e in PROFILE_EDGES[:-1]))
    for n in names:
        print(f"{n:<20}" + " ".join(f"{v:+5.2f}" for v in results[n]["profile"]))
    print()
    for key, text in STAT_NAMES.items():
        print(f"  {key:<12} {text}")

    montage([(bf_columns[n][:16], dna_columns[n][:16]) for n in dna_columns], Path(args.png))
    print(f"\nmontage (rows: real | synth default | synth shifted; BF|DNA pairs): {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
