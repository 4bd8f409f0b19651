"""Read and prepare the next batch in a background thread while the current one is inferred.

Classification alternates two kinds of work: taking a batch of images from the source
(reading TIFF pages, normalising, resizing: numpy, tifffile and torch release the interpreter
lock for most of it) and running the network on it. :class:`Prefetcher` overlaps them: while
the caller works on item ``k``, one background thread produces item ``k + 1``, and no more.

* **Bounded**: at most one item is produced ahead of the one the caller holds; the next is
  asked for only when the caller takes one, so a stream of 10,000 cells still holds two
  batches at most.
* **Same order, same items**: the source is consumed by the one thread, in order; the
  caller gets exactly what a plain ``for`` loop over the source would give.
* **Errors surface in the caller**: an exception raised by the source is raised again (the
  same object, traceback included) by the ``next()`` that would have returned that item.
* **Clean shutdown**: :meth:`Prefetcher.close` (also on leaving a ``with`` block, or when
  the source is exhausted or fails) stops the thread after the item it is producing, if
  any, and joins it; no thread outlives the stream.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

__all__ = ["Prefetcher"]

T = TypeVar("T")

_ITEM, _END, _ERROR = "item", "end", "error"


class Prefetcher(Generic[T]):
    """An iterator over ``source`` whose next item is produced in a background thread.

    Parameters
    ----------
    source
        Any iterable; it is consumed by the background thread only (one item at a time, in
        order), from the first ``next()`` on.
    name
        Name of the background thread (seen in debuggers and ``threading.enumerate()``).

    Examples
    --------
    >>> with Prefetcher(range(3)) as items:
    ...     [item * 2 for item in items]
    [0, 2, 4]
    """

    def __init__(self, source: Iterable[T], name: str = "deparray-ctc-prefetch") -> None:
        self._source: Iterator[T] = iter(source)
        self._name = name
        self._requests = threading.Semaphore(0)  # one release: produce one more item
        self._results: queue.Queue[tuple[str, object]] = queue.Queue()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        if self._thread is None:
            self._thread = threading.Thread(target=self._produce, name=self._name, daemon=True)
            self._thread.start()
            self._requests.release()
        kind, value = self._results.get()
        if kind == _ITEM:
            self._requests.release()  # the next item is produced while the caller uses this one
            return value  # type: ignore[return-value]
        self.close()
        if kind == _ERROR:
            raise value  # type: ignore[misc]
        raise StopIteration

    def _produce(self) -> None:
        while True:
            self._requests.acquire()
            if self._closing.is_set():
                return
            try:
                item = next(self._source)
            except StopIteration:
                self._results.put((_END, None))
                return
            except BaseException as exc:  # handed to the caller, raised there
                self._results.put((_ERROR, exc))
                return
            self._results.put((_ITEM, item))

    @property
    def alive(self) -> bool:
        """Whether the background thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop producing, wait for the background thread, drop what it made ahead.

        The thread finishes the item it is producing, if any (it cannot be interrupted in
        the middle of a read), then ends. Calling ``close`` again does nothing.
        """
        self._finished = True
        self._closing.set()
        self._requests.release()  # wake the thread if it waits for a request
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        while not self._results.empty():  # an item made ahead and never taken
            self._results.get_nowait()
        close_source = getattr(self._source, "close", None)
        if close_source is not None and not self.alive:
            close_source()  # a generator's own cleanup (``finally`` blocks) runs now
