"""Which cells to label next: uncertain ones, and different from each other.

Labelling the cells a model is least sure of teaches it most per label (uncertainty
sampling), but the least sure cells are often near-duplicates: twenty debris-laden WBCs that
look alike teach about as much as one. :func:`select_uncertain_diverse` therefore

1. keeps the candidates whose call is uncertain: the margin ``|logit(p) - logit(threshold)|``
   (on the calibrated P(CTC), so "uncertain" means "could well be on the other side of the
   threshold") is at most :data:`MAX_MARGIN` (odds within a factor e^2 ~ 7 of the
   threshold's), and at least the ``pool_factor * n`` cells of smallest margin;
2. picks from them greedily: first the most uncertain cell, then each time the cell that
   maximises ``uncertainty x distance to the nearest cell already picked``, with
   ``uncertainty = exp(-|logit(p) - logit(threshold)|)`` and the cosine distance between the
   network's own features of the cells (the input of its last layer): an
   uncertainty-weighted farthest-first traversal, close in spirit to BADGE (Ash et al. 2020)
   and core-set selection (Sener & Savarese 2018), at the cost of one forward pass.

``benchmarks/bench_suggest.py`` simulates the labelling loop against random picks.

For **calibrating** a model for a site (``core.inference.site_calibration``) the most
uncertain cells are not the most useful: a Platt calibration has a slope and an intercept,
which cells near the threshold alone pin down badly, and it needs both classes, while on a
new instrument the threshold itself is what no longer holds.
:func:`select_for_calibration` therefore picks by rank on the export: the top-ranked cells
(where the rare CTCs are) and cells spread over the ranks below (``suggest --for
calibration``). It picks by the score only, which leaves the calibration unbiased: Platt
models P(CTC | score).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from napari_deparray_ctc.core.model.loaded import LoadedModel, prepare_batch

__all__ = [
    "PURPOSES",
    "cell_embeddings",
    "select_for_calibration",
    "select_uncertain_diverse",
    "suggest_cells",
]

#: The candidate pool holds at least this many times the number of cells asked for.
POOL_FACTOR = 4
#: Cells whose logit is within this of the threshold's logit are all candidates.
MAX_MARGIN = 2.0
#: What the suggested cells are for: labelling to train, or calibrating for a site.
PURPOSES: tuple[str, ...] = ("labelling", "calibration")


def cell_embeddings(
    images: Iterable[np.ndarray],
    model: LoadedModel,
    batch_size: int = 64,
    pixel_sizes: Sequence[float | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated P(CTC) and the network's penultimate features of every image, in one pass.

    ``pixel_sizes`` (µm per image, ``None`` where unknown; a list may grow while the images
    stream) is used as by ``classify``: the same scale rule brings each image to the network.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``p_ctc`` ``(N,)`` and features ``(N, D)`` (the input of every ``fc`` layer,
        concatenated over the members of an ensemble).
    """
    import torch

    from napari_deparray_ctc.core.training.calibration import apply_calibration

    layers = [m for name, m in model.network.named_modules() if name.split(".")[-1] == "fc"]
    captured: list = []
    handles = [
        m.register_forward_pre_hook(lambda _m, args: captured.append(args[0])) for m in layers
    ]
    logits, feats = [], []
    pending: list[np.ndarray] = []
    device = torch.device(model.device)
    model.network.eval()

    def flush(offset: int) -> None:
        sizes = None
        if pixel_sizes is not None:
            sizes = [
                pixel_sizes[i] if i < len(pixel_sizes) else None
                for i in range(offset, offset + len(pending))
            ]
        x = prepare_batch(
            pending, model.image_size, model.normalisation, index_offset=offset, pixel_sizes=sizes
        )
        captured.clear()
        with torch.inference_mode():
            out = model.network(x.to(device)).float().reshape(-1)
        logits.append(out.cpu().numpy().astype(np.float64))
        feats.append(torch.cat([c.float().flatten(1) for c in captured], dim=1).cpu().numpy())
        pending.clear()

    try:
        done = 0
        for image in images:
            pending.append(image)
            if len(pending) == batch_size:
                flush(done)
                done += batch_size
        if pending:
            flush(done)
    finally:
        for handle in handles:
            handle.remove()
    if not logits:
        return np.zeros(0), np.zeros((0, 0), dtype=np.float32)
    p = apply_calibration(model.calibration, np.concatenate(logits))
    return p, np.concatenate(feats)


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(q) - np.log1p(-q)


def select_uncertain_diverse(
    p_ctc: Sequence[float],
    features: np.ndarray,
    threshold: float,
    n: int,
    pool_factor: int = POOL_FACTOR,
) -> list[int]:
    """Indices of ``n`` cells that are uncertain and diverse (see the module docstring).

    Parameters
    ----------
    p_ctc
        Calibrated P(CTC) per cell.
    features
        ``(N, D)`` features per cell (any embedding; compared by cosine distance).
    threshold
        The decision threshold on ``p_ctc``.
    n
        How many to pick (all cells when there are fewer).
    pool_factor
        The candidates are at least the ``pool_factor * n`` most uncertain cells.

    Returns
    -------
    list of int
        In the order picked (the first is the most uncertain cell).
    """
    p = np.asarray(p_ctc, dtype=np.float64)
    n = int(min(max(n, 0), len(p)))
    if n == 0:
        return []
    margin = np.abs(_logit(p) - _logit(np.array([float(threshold)]))[0])
    order = np.argsort(margin, kind="stable")
    size = max(n, pool_factor * n, int(np.sum(margin <= MAX_MARGIN)))
    pool = order[:size]
    uncertainty = np.exp(-margin[pool])
    f = np.asarray(features, dtype=np.float64)[pool]
    f = f - f.mean(axis=0, keepdims=True)  # cosine distance of centred features
    f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    picked = [0]  # the pool is sorted: 0 is the most uncertain cell
    nearest = 1.0 - f @ f[0]
    for _ in range(n - 1):
        score = uncertainty * np.maximum(nearest, 0.0)
        score[picked] = -1.0
        best = int(np.argmax(score))
        picked.append(best)
        nearest = np.minimum(nearest, 1.0 - f @ f[best])
    return [int(pool[i]) for i in picked]


def select_for_calibration(p_ctc: Sequence[float], n: int) -> list[int]:
    """Indices of ``n`` cells whose labels best inform a site calibration.

    On a new instrument the stored threshold does not transfer, but the ranking of the cells
    mostly does; so the picks follow the ranks of this export, never the threshold. CTCs are
    the rare class and sit at the top of the ranking: half the picks (rounded up) are the
    highest-ranked cells, so that the labels hold CTCs even when the model calls far too many
    or far too few cells CTC. The other half are spread evenly over the ranks below, from the
    doubtful to the most confident WBCs, which pins down the calibration's slope. Picking by
    the score only keeps the calibration unbiased: Platt models P(CTC | score).

    Parameters
    ----------
    p_ctc
        P(CTC) per cell (any monotone score gives the same picks).
    n
        How many to pick (all cells when there are fewer).

    Returns
    -------
    list of int
        The top-ranked picks first (highest score first), then the spread ones (top down).
    """
    p = np.asarray(p_ctc, dtype=np.float64)
    n = int(min(max(n, 0), len(p)))
    if n == 0:
        return []
    ranked = np.argsort(-p, kind="stable")
    n_top = -(-n // 2)
    rest = ranked[n_top:]
    n_spread = n - n_top
    # evenly spaced ranks over the rest, the middle of each of n_spread equal slices
    positions = ((np.arange(n_spread) + 0.5) * len(rest) / max(n_spread, 1)).astype(int)
    return [int(i) for i in ranked[:n_top]] + [int(rest[j]) for j in positions]


def suggest_cells(
    images: Iterable[np.ndarray],
    model: LoadedModel,
    n: int = 20,
    cell_ids: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
    threshold: float | None = None,
    batch_size: int = 64,
    pixel_sizes: Sequence[float | None] | None = None,
    purpose: str = "labelling",
) -> list[str]:
    """The ids of the ``n`` cells a person should label next.

    Parameters
    ----------
    images
        2-D BF images of the candidate cells.
    model
        The current model.
    n
        How many cells to suggest.
    cell_ids
        Aligned ids (default ``cell-00000``...).
    exclude
        Ids never to suggest (cells already labelled).
    threshold
        Decision threshold (default: the model's).
    batch_size
        Images per forward pass.
    pixel_sizes
        Pixel size (µm) per image, ``None`` where unknown (as for ``classify``).
    purpose
        ``"labelling"`` (uncertain and diverse cells, to train on) or ``"calibration"``
        (the top-ranked cells and cells spread over the ranks below: :func:`select_for_calibration`).

    Returns
    -------
    list of str
        Cell ids, most useful first.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"the purpose {purpose} is not known; choose one of {', '.join(PURPOSES)}")
    images = list(images)
    ids = [f"cell-{i:05d}" for i in range(len(images))] if cell_ids is None else list(cell_ids)
    if len(ids) != len(images):
        raise ValueError(f"{len(ids)} cell ids given for {len(images)} images")
    skip = {str(c) for c in exclude}
    keep = [i for i, c in enumerate(ids) if str(c) not in skip]
    if not keep:
        return []
    sizes = None if pixel_sizes is None else [list(pixel_sizes)[i] for i in keep]
    p, feats = cell_embeddings([images[i] for i in keep], model, batch_size, sizes)
    t = model.threshold if threshold is None else float(threshold)
    if purpose == "calibration":
        picked = select_for_calibration(p, n)
    else:
        picked = select_uncertain_diverse(p, feats, t, n)
    return [str(ids[keep[i]]) for i in picked]
