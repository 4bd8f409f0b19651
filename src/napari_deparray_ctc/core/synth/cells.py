"""``synth_cells``: many cells in memory, in samples that share their optics."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np

from napari_deparray_ctc.core.synth.biology import SUBTYPES, draw_sample_biology
from napari_deparray_ctc.core.synth.imaging import SynthCell, render_cell
from napari_deparray_ctc.core.synth.optics import Optics

__all__ = ["synth_cells"]


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


def check_args(n: int, ctc_fraction: float, image_size: int, n_samples: int) -> None:
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
    optics_sampler: Callable[[np.random.Generator], Optics] | None = None,
    biology_jitter: float = 0.0,
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
    optics_sampler
        Draws each sample's optics from the sample's random generator instead (e.g.
        :func:`~napari_deparray_ctc.core.synth.domains.randomised_optics`: every sample its
        own instrument); ``optics`` and ``optics_jitter`` are then unused.
    biology_jitter
        Spread of per-sample biology factors (leukocyte size, N/C ratio, CTC atypia); 0 keeps
        the documented biology. Drawn from a separate stream, so 0 gives the same cells as
        before this option existed.

    Returns
    -------
    list of SynthCell
        In cell-id order; ``cell.channels`` holds ``uint16`` arrays for
        ``BF``, ``DAPI``, ``PE``, ``APC``.
    """
    check_args(n, ctc_fraction, image_size, n_samples)
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
        if optics_sampler is not None:
            sample_optics = optics_sampler(sample_rng)
        else:
            sample_optics = optics.jittered(sample_rng, optics_jitter)
        sample_bio = draw_sample_biology(
            sample_rng, np.random.default_rng([seed, 3, j]), biology_jitter
        )
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
                render_cell(
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
