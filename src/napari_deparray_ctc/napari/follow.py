"""What a widget follows (session, run and viewer events), connected at once and undone at
once when its dock closes: no callback outlives its widget."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

__all__ = ["Follows"]


class Follows:
    """Connect each ``(emitter, callback)`` pair now; :meth:`close` disconnects them all.

    Parameters
    ----------
    *pairs
        ``(emitter, callback)``: a napari event emitter (or Qt signal) and what it calls.
    """

    def __init__(self, *pairs: tuple[Any, Callable[..., Any]]) -> None:
        self._pairs = list(pairs)
        for emitter, callback in self._pairs:
            emitter.connect(callback)

    def close(self) -> None:
        """Disconnect every pair (once; closing twice does nothing)."""
        for emitter, callback in self._pairs:
            with contextlib.suppress(TypeError, ValueError, RuntimeError):  # already gone
                emitter.disconnect(callback)
        self._pairs = []
