"""Builders of hostile files (issue 21): looping or endless IFD chains, pipes, devices.

A plain module (imported by ``tests/core/io`` and ``tests/reliability``). Each builder writes a
valid TIFF with tifffile and then patches the offsets that chain its image directories.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

#: a hanging case must end within this many seconds in its child process
CHILD_LIMIT_S = 60


def _next_offset_position(tif: tifffile.TiffFile, ifd_offset: int) -> int:
    """Byte position of the next-IFD offset of the IFD at ``ifd_offset``."""
    fmt = tif.tiff
    handle = tif.filehandle
    handle.seek(ifd_offset)
    (count,) = struct.unpack(fmt.tagnoformat, handle.read(fmt.tagnosize))
    return ifd_offset + fmt.tagnosize + count * fmt.tagsize


def _patch_offset(path: Path, position: int, value: int, bigtiff: bool, order: str) -> None:
    raw = bytearray(path.read_bytes())
    struct.pack_into(order + ("Q" if bigtiff else "I"), raw, position, value)
    path.write_bytes(bytes(raw))


def looping_tiff(
    path: Path, pages: int = 1, back_to: int = 0, bigtiff: bool = False, dtype: str = "uint16"
) -> Path:
    """A ``pages``-page grey TIFF whose last IFD points back to IFD ``back_to``.

    ``pages=1, back_to=0``: the first IFD's next offset is itself.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.arange(pages * 16 * 16).astype(dtype).reshape(pages, 16, 16)
    tifffile.imwrite(path, data, photometric="minisblack", bigtiff=bigtiff, metadata=None)
    with tifffile.TiffFile(path) as tif:
        offsets = [page.offset for page in tif.pages]
        position = _next_offset_position(tif, offsets[-1])
        order = tif.tiff.byteorder
    _patch_offset(path, position, offsets[back_to], bigtiff, order)
    return path


def looping_subifd_tiff(path: Path) -> Path:
    """A one-page TIFF with one reduced-resolution SubIFD whose next offset is itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.arange(32 * 32, dtype="uint16").reshape(32, 32)
    with tifffile.TiffWriter(path) as writer:
        writer.write(data, photometric="minisblack", subifds=1, metadata=None)
        writer.write(data[::2, ::2], photometric="minisblack", subfiletype=1, metadata=None)
    with tifffile.TiffFile(path) as tif:
        (sub_offset,) = tif.pages.first.subifds
        position = _next_offset_position(tif, sub_offset)
        order = tif.tiff.byteorder
    _patch_offset(path, position, sub_offset, False, order)
    return path


def overlapping_chain_tiff(path: Path, n_ifds: int = 10_000) -> Path:
    """A TIFF header followed by ``n_ifds`` empty IFDs that overlap (4 bytes apart, 6 long).

    Nothing loops, but the chain is longer than the file could hold: each empty IFD needs 6
    bytes, and they start every 4 bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    records = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for k in range(n_ifds):
        offset = 8 + 4 * k
        following = offset + 4 if k < n_ifds - 1 else 0
        records += struct.pack("<HH", 0, following)  # count 0, low half of the next offset
    records += b"\x00\x00"  # the high half of the last next offset
    path.write_bytes(bytes(records))
    return path


def long_chain_tiff(path: Path, n_ifds: int = 200_000) -> Path:
    """A chain of ``n_ifds`` empty, non-overlapping IFDs (6 bytes each): long but finite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for k in range(n_ifds):
        following = 8 + 6 * (k + 1) if k < n_ifds - 1 else 0
        records += struct.pack("<HI", 0, following)
    path.write_bytes(bytes(records))
    return path


def fifo(path: Path) -> Path:
    """A named pipe at ``path`` (no writer: ``open`` on it would block forever)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def run_child(code: str, *args: str | os.PathLike, timeout: float = CHILD_LIMIT_S):
    """Run ``code`` in a fresh interpreter; fails the test (not hangs) past ``timeout`` s."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", QT_QPA_PLATFORM="offscreen")
    try:
        return subprocess.run(
            [sys.executable, "-c", code, *map(os.fspath, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"still running after {timeout} s (it hangs): {args}") from exc
