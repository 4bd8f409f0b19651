"""Classify bright-field images with a trained model, streaming in bounded memory.

:func:`classify` reads images from any iterable (a list, a generator over files, a napari
stack) one batch at a time, and reads and prepares the next batch in a background thread while
the network runs on the current one (:func:`predict_batches`, ``core.inference.prefetch``):
at most two batches (their images and prepared tensors) are held, whatever the number of
cells, so 10,000 cells need no more memory than 128. Only the probabilities (8 bytes per
cell) accumulate. The images are therefore taken from the iterable in that thread, in order,
one batch ahead of the network. Inference runs under ``torch.inference_mode``
with mixed precision (float16 autocast) on CUDA. ``p_ctc`` is the model's calibrated P(CTC).

Options measured in ``benchmarks/quality.py`` (``docs/quality.md``):

* ``adapt=True``: test-time BatchNorm re-estimation. The BatchNorm statistics are recomputed
  on the first ``adapt_cells`` cells of this export (held as prepared tensors, ~16 kB per
  cell at 64 px), then every cell is classified with them: a new instrument's contrast and
  noise are absorbed without labels.
* ``tta=True``: the logit is averaged over the eight rotations and reflections (8x slower).
* ``pixel_size``: the pixel size (µm) of the images, one number or one per image,
  overriding what the files say. Whether it is used is the scale rule of
  ``core.inference.preprocess.input_scale``, the same rule training applied to its cells:
  only a model that was trained on rescaled cells (``normalisation["pixel_size_um"]``) and
  an image whose pixel size is known are brought to a physical scale; every other crop is
  resized whole, as in training.

:func:`prepared_stream` is that preparation (and the adaptation), shared with
``core.inference.site_calibration`` so that calibrating a model for a site sees the cells
exactly as classifying them does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_deparray_ctc.core.constants import call_label
from napari_deparray_ctc.core.inference.preprocess import prepare_batch, scale_note
from napari_deparray_ctc.core.model.loaded import LoadedModel, load_model

__all__ = [
    "Predictions",
    "classify",
    "evaluate",
    "open_stream",
    "predict_batches",
    "prepared_stream",
]


@dataclass
class Predictions:
    """Per-cell CTC probabilities and the model's decision threshold.

    Attributes
    ----------
    p_ctc
        ``float64`` array ``(N,)`` of P(CTC).
    threshold
        A cell is called CTC when ``p_ctc >= threshold``.
    cell_ids
        Aligned ids (given, or ``"cell-00000"``...).
    cancelled
        ``True`` when ``should_stop()`` ended classification early; ``p_ctc`` and
        ``cell_ids`` then hold only the cells classified so far.
    scale_note
        A sentence when cells without a pixel size were resized whole although the model
        was trained only on rescaled cells (``core.inference.preprocess.scale_note``).
    """

    p_ctc: np.ndarray
    threshold: float
    cell_ids: list[str] = field(default_factory=list)
    cancelled: bool = False
    scale_note: str | None = None

    def __len__(self) -> int:
        return len(self.p_ctc)

    @property
    def labels(self) -> list[str]:
        """``"CTC"`` where ``p_ctc >= threshold``, else ``"WBC"``."""
        return self.relabel(self.threshold)

    def relabel(self, threshold: float) -> list[str]:
        """Labels at another threshold (e.g. a slider in the widget).

        Parameters
        ----------
        threshold
            Decision threshold in [0, 1].

        Returns
        -------
        list of str
            ``"CTC"`` / ``"WBC"`` per cell.
        """
        t = float(threshold)
        return [call_label(p, t) for p in self.p_ctc]

    def as_records(self) -> list[dict[str, Any]]:
        """``[{"cell_id", "p_ctc", "label"}, ...]`` (the layer-metadata ``predictions`` form)."""
        return [
            {"cell_id": c, "p_ctc": float(p), "label": lab}
            for c, p, lab in zip(self.cell_ids, self.p_ctc, self.labels, strict=True)
        ]


def _resolve_model(model: LoadedModel | str | os.PathLike, device: str | None) -> LoadedModel:
    if isinstance(model, LoadedModel):
        if device is not None and str(device) != model.device:
            model.to(device)
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, device=device)
    raise TypeError(f"model must be a LoadedModel or a path, got {type(model).__name__}")


def _pixel_sizes(pixel_size: float | Sequence[float | None] | None):
    """An endless iterator of per-image pixel sizes (``None`` where unknown)."""
    import itertools

    if pixel_size is None or isinstance(pixel_size, (int, float, np.floating, np.integer)):
        return itertools.repeat(None if pixel_size is None else float(pixel_size))
    return itertools.chain(
        (None if v is None else float(v) for v in pixel_size), itertools.repeat(None)
    )


def classify(
    images: Iterable[np.ndarray],
    model: LoadedModel | str | os.PathLike,
    batch_size: int = 64,
    device: str | None = None,
    cell_ids: Sequence[str] | None = None,
    progress: Callable[[int, int | None], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    pixel_size: float | Sequence[float | None] | None = None,
    adapt: bool = False,
    tta: bool = False,
    adapt_cells: int = 2048,
) -> Predictions:
    """Compute calibrated P(CTC) for bright-field images, streaming batch by batch.

    Parameters
    ----------
    images
        Any iterable of 2-D BF arrays (any size/dtype); consumed lazily. A 3-D array
        ``(N, Y, X)`` is treated as a stack of ``N`` images.
    model
        A :class:`~napari_deparray_ctc.core.model.loaded.LoadedModel` or a model file path.
    batch_size
        Images per forward pass (bounds memory).
    device
        ``None`` keeps a loaded model's device (or picks one when loading a path); otherwise
        the model is moved there.
    cell_ids
        Aligned ids; default ``"cell-00000"``, ``"cell-00001"``...
    progress
        Called as ``progress(done, total)`` after every batch; ``total`` is ``len(images)``
        when known, else ``None``.
    should_stop
        Called before every batch; ``True`` ends early with ``cancelled=True`` (the batch
        read ahead, if any, is dropped).
    pixel_size
        Pixel size in µm: one number for every image, or one per image (``None`` entries:
        unknown). Only used by models trained at a canonical pixel size.
    adapt
        Re-estimate BatchNorm statistics on these images first (see the module docstring);
        the given model is not changed.
    tta
        Average over the eight rotations and reflections of each image.
    adapt_cells
        Most cells used to re-estimate the statistics.

    Returns
    -------
    Predictions
        Uses the model's stored threshold.

    Raises
    ------
    ValueError
        An image is not 2-D (the message gives its position), ``batch_size < 1``, or
        ``cell_ids`` does not match the number of images.
    """
    loaded, total = open_stream(images, model, device, batch_size)
    if cell_ids is not None and total is not None and len(cell_ids) != total:
        raise ValueError(f"{len(cell_ids)} cell ids given for {total} images")
    used_sizes: list[float | None] = []
    loaded, batches = prepared_stream(
        images,
        loaded,
        batch_size,
        pixel_size=pixel_size,
        adapt=adapt,
        adapt_cells=adapt_cells,
        used_sizes=used_sizes,
    )
    chunks, done, cancelled = predict_batches(
        batches,
        lambda batch: loaded.predict_proba(batch, tta=tta),
        total,
        progress=progress,
        should_stop=should_stop,
    )
    p_ctc = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float64)
    if cell_ids is None:
        ids = [f"cell-{i:05d}" for i in range(done)]
    else:
        all_ids = list(cell_ids)
        if not cancelled and len(all_ids) != done:
            raise ValueError(f"{len(all_ids)} cell ids given for {done} images")
        ids = [str(c) for c in all_ids[:done]]
    if progress is not None and done == 0 and not cancelled:
        progress(0, total)
    return Predictions(
        p_ctc=p_ctc,
        threshold=loaded.threshold,
        cell_ids=ids,
        cancelled=cancelled,
        scale_note=scale_note(loaded.normalisation, used_sizes),
    )


def open_stream(
    images: Iterable[np.ndarray],
    model: LoadedModel | str | os.PathLike,
    device: str | None,
    batch_size: int,
) -> tuple[LoadedModel, int | None]:
    """Check the batch size, load (or move) the model and count the images when they can be.

    Parameters
    ----------
    images
        The images to stream (only ``len`` is asked; nothing is read).
    model
        A loaded model or a model file path.
    device
        As for :func:`classify`.
    batch_size
        Images per batch.

    Returns
    -------
    (LoadedModel, int or None)
        The model to use and ``len(images)``, or ``None`` for an iterable without a length.

    Raises
    ------
    ValueError
        ``batch_size`` is not a positive whole number.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, not {batch_size}")
    loaded = _resolve_model(model, device)
    try:
        total: int | None = len(images)  # type: ignore[arg-type]
    except TypeError:
        total = None
    return loaded, total


def predict_batches(
    batches: Iterable[Any],
    predict: Callable[[Any], np.ndarray],
    total: int | None,
    *,
    progress: Callable[[int, int | None], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[list[np.ndarray], int, bool]:
    """Run ``predict`` on each batch while the next batch is read and prepared in the background.

    The batches are produced one ahead by a :class:`~.prefetch.Prefetcher` thread (reading
    and preprocessing overlap inference; at most two batches are held), which is stopped and
    joined before this returns or raises, whatever happens.

    Parameters
    ----------
    batches
        Prepared batches ``(n, 1, S, S)`` (e.g. from :func:`prepared_stream`).
    predict
        Turns a batch into one value per cell.
    total
        Number of cells when known, passed on to ``progress``.
    progress
        Called as ``progress(done, total)`` after every batch.
    should_stop
        Called before every batch; ``True`` ends early.

    Returns
    -------
    (list of numpy.ndarray, int, bool)
        ``predict``'s outputs per batch, the number of cells done, and whether
        ``should_stop`` ended the stream early.
    """
    from napari_deparray_ctc.core.inference.prefetch import Prefetcher

    outputs: list[np.ndarray] = []
    done = 0
    with Prefetcher(batches, name="deparray-ctc-prepare") as prefetched:
        while True:
            if should_stop is not None and should_stop():
                return outputs, done, True
            batch = next(prefetched, None)
            if batch is None:
                return outputs, done, False
            outputs.append(predict(batch))
            done += int(batch.shape[0])
            if progress is not None:
                progress(done, total)


def prepared_stream(
    images: Iterable[np.ndarray],
    model: LoadedModel,
    batch_size: int = 64,
    *,
    pixel_size: float | Sequence[float | None] | None = None,
    adapt: bool = False,
    adapt_cells: int = 2048,
    used_sizes: list | None = None,
) -> tuple[LoadedModel, Iterator[Any]]:
    """The network inputs of ``images``, batch by batch, for ``model``; adapted first if asked.

    Parameters
    ----------
    images
        2-D BF images, consumed lazily (a 3-D array is a stack).
    model
        The loaded model (its image size and normalisation are used).
    batch_size
        Images per batch.
    pixel_size
        One pixel size (µm) for every image, or one per image (``None`` entries: unknown);
        a sequence may grow while the images stream (it is read a batch at a time, after
        that batch's images were taken).
    adapt
        Re-estimate the BatchNorm statistics on the first ``adapt_cells`` cells (held as
        prepared tensors) and return the adapted copy of the model.
    adapt_cells
        Most cells used to adapt.
    used_sizes
        When given, each image's pixel size is appended to it as the image is prepared.

    Returns
    -------
    (LoadedModel, iterator of torch.Tensor)
        The model to use (``model`` itself, or its adapted copy) and the batches
        ``(n, 1, S, S)`` of :func:`~napari_deparray_ctc.core.inference.preprocess.prepare_batch`.
    """
    import itertools

    size = model.image_size
    normalisation = model.normalisation
    sizes = _pixel_sizes(pixel_size)
    stream = iter(images)

    def batches_from(source, offset: int):
        index = offset
        while True:
            block = list(itertools.islice(source, batch_size))
            if not block:
                return
            block_sizes = list(itertools.islice(sizes, len(block)))
            if used_sizes is not None:
                used_sizes.extend(block_sizes)
            yield prepare_batch(
                block, size, normalisation, index_offset=index, pixel_sizes=block_sizes
            )
            index += len(block)

    batches: Iterator[Any] = batches_from(stream, 0)
    if adapt:
        # hold the first adapt_cells cells as tensors, adapt on them, then hand them on too
        held = list(itertools.islice(batches, max(1, -(-adapt_cells // batch_size))))
        if held:
            model = model.adapted(held)
        batches = itertools.chain(held, batches_from(stream, sum(len(b) for b in held)))
    return model, batches


def evaluate(
    images: Iterable[np.ndarray],
    labels: Sequence[Any],
    model: LoadedModel | str | os.PathLike,
    batch_size: int = 64,
    device: str | None = None,
    threshold: float | None = None,
    *,
    pixel_size: float | Sequence[float | None] | None = None,
) -> dict:
    """Classify labelled images and compute metrics (CTC positive).

    Parameters
    ----------
    images
        2-D BF arrays.
    labels
        ``"CTC"``/``"WBC"`` (or 0/1) per image, aligned.
    model
        A loaded model or a model file path.
    batch_size, device
        As for :func:`classify`.
    threshold
        Decision threshold; default: the model's.
    pixel_size
        As for :func:`classify`.

    Returns
    -------
    dict
        :func:`napari_deparray_ctc.core.evaluation.metrics.classification_metrics` output, plus
        ``model_threshold`` and ``best_threshold`` / ``best_f1`` (the oracle threshold on
        these data, for reference only: it is chosen on the test data).
    """
    from napari_deparray_ctc.core.evaluation.metrics import best_threshold, classification_metrics

    predictions = classify(
        images, model, batch_size=batch_size, device=device, pixel_size=pixel_size
    )
    t = predictions.threshold if threshold is None else float(threshold)
    result = classification_metrics(labels, predictions.p_ctc, t)
    result["model_threshold"] = float(predictions.threshold)
    oracle_t, oracle_f1 = best_threshold(labels, predictions.p_ctc)
    result["best_threshold"] = oracle_t
    result["best_f1"] = oracle_f1
    return result
