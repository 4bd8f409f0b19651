"""Crash-safe file writes: write to a temporary file beside the target, then rename.

A reader (or a crash, or ``kill -9``) never sees a half-written file: either the old
file is there intact, or the complete new one is.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write"]


def _permissions_for(target: Path) -> int:
    """The mode of the file being replaced, or ``0o666`` minus the umask for a new one."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing and atomically move it onto ``path`` on success.

    Parameters
    ----------
    path
        Final destination. Its folder must exist.
    mode
        ``"w"`` (text) or ``"wb"`` (binary).
    **open_kwargs
        Passed to :func:`open` (e.g. ``newline=""``, ``encoding="utf-8"``).

    Yields
    ------
    file object
        Write to it. If the ``with`` block raises, the temporary file is removed and the
        previous file at ``path`` (if any) is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', not {mode!r}")
    target = Path(path)
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would
        # (or the replaced file's), so a CSV or a model on a shared drive stays readable
        with contextlib.suppress(OSError):
            os.chmod(tmp_name, _permissions_for(target))
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    # make the rename itself durable
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
