"""The model file a viewer uses: chosen once, checked once (off the UI thread), read by all.

Every widget that needs the model (classify, fine-tuning in training, suggestions, saliency)
reads this one object from the session instead of asking another widget. Choosing a file
(Browse, typing, "Use this model" after training) sets :attr:`ModelChoice.path`; the file is
then read in a background worker (torch is imported there, never on the UI thread) and
``events.checked`` says what it is, or why it cannot be used, in words.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from napari.utils.events import EmitterGroup, Event

__all__ = ["ModelChoice", "check_model_file"]


def check_model_file(path: str) -> tuple[dict | None, str | None]:
    """Read a model file (worker thread): ``(metadata, None)`` or ``(None, reason)``.

    The loaded model is kept in the workers' cache, so the first classification does not
    load it again.
    """
    from napari_deparray_ctc.core.errors import DeparrayError
    from napari_deparray_ctc.core.runtime import collections_paused, load_torch_in_this_thread

    try:
        # no garbage collection over torch's million new objects while the UI waits (runtime)
        with collections_paused():
            load_torch_in_this_thread()
            from napari_deparray_ctc.napari.workers import cached_model

            return dict(cached_model(path).metadata), None
    except DeparrayError as exc:
        return None, str(exc)
    except OSError as exc:  # vanished between the choice and the check
        from napari_deparray_ctc.core.errors import describe_os_error

        return None, f"{path}: {describe_os_error(exc)}"


class ModelChoice:
    """The chosen model file of one viewer, and what its check found.

    Parameters
    ----------
    runs
        The viewer's :class:`~napari_deparray_ctc.napari.runs.BackgroundRuns` (checks run
        there).

    Attributes
    ----------
    events
        ``path(path)`` when the choice changes; ``checked(path, metadata, problem)`` when its
        check ends.
    metadata
        The model's metadata once checked (``None`` before, or when it cannot be used).
    problem
        Why the file cannot be used, in words (``None`` when it can, or before the check).
    """

    def __init__(self, runs: Any) -> None:
        self._runs = runs
        self.events = EmitterGroup(source=self, path=Event, checked=Event)
        self._path = ""
        self.metadata: dict | None = None
        self.problem: str | None = None
        self._checking: Any = None

    @property
    def path(self) -> str:
        """The chosen file (``""`` when none)."""
        return self._path

    @property
    def is_checking(self) -> bool:
        """Whether the chosen file is still being read."""
        return self._checking is not None

    @property
    def usable(self) -> bool:
        """A file is chosen and its check found a model."""
        return bool(self._path) and self.metadata is not None

    def set_path(self, path: str | os.PathLike | None) -> None:
        """Choose ``path`` (``""``/``None``: none) and check it in the background.

        Choosing the same file again reads it again (it may have been retrained), unless its
        check is still running.
        """
        text = os.fspath(path) if path else ""
        changed = text != self._path
        self._path = text
        if changed:
            self.events.path(path=text)
        if changed or not self.is_checking:
            self.check()

    def check(self) -> None:
        """Read the chosen file again (in the background)."""
        self.metadata, self.problem = None, None
        path = self._path
        if not path:
            self.events.checked(path="", metadata=None, problem=None)
            return
        expanded = Path(path).expanduser()
        if not expanded.is_file():
            self.problem = f"{path}: " + (
                "is not a file" if expanded.exists() else "model file does not exist"
            )
            self.events.checked(path=path, metadata=None, problem=self.problem)
            return
        worker = self._runs.function_worker(check_model_file, str(expanded))
        self._checking = worker
        started = self._runs.start(
            worker,
            f"reading the model file {expanded.name}",
            returned=lambda result, p=path: self._on_checked(p, *result),
            finished=lambda w=worker: self._on_check_finished(w),
        )
        if started is None:
            self._checking = None

    def _on_check_finished(self, worker: Any) -> None:
        if self._checking is worker:
            self._checking = None

    def _on_checked(self, path: str, metadata: dict | None, problem: str | None) -> None:
        if path != self._path:  # another file was chosen meanwhile
            return
        self.metadata, self.problem = metadata, problem
        if metadata is not None:
            from napari_deparray_ctc.napari.settings import remember_model_path

            remember_model_path(str(Path(path).expanduser()))
        self.events.checked(path=path, metadata=metadata, problem=problem)
