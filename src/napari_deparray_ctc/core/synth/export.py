"""``write_export``: synthetic cells written in every export layout the reader accepts."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_deparray_ctc.core.annotations.labels import write_labels_csv
from napari_deparray_ctc.core.atomic import atomic_write
from napari_deparray_ctc.core.constants import LAYOUTS
from napari_deparray_ctc.core.synth.cells import check_args, synth_cells
from napari_deparray_ctc.core.synth.imaging import CHANNELS
from napari_deparray_ctc.core.synth.optics import Optics

__all__ = ["write_export"]


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
    check_args(n_cells, ctc_fraction, image_size, n_samples)
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
