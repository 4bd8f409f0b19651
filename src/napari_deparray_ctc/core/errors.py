"""The errors a user can meet, in one torch-free module.

Every error here is a :class:`DeparrayError`: a ``ValueError`` whose message is a sentence for
the user (no exception names, no internal details), that names the file at fault when there
is one. The command line, the widgets and the reader catch :class:`DeparrayError` and show
its message as it is, so importing this module must stay cheap (no numpy, no torch).
"""

from __future__ import annotations

import os

__all__ = [
    "AnnotationFileError",
    "ChannelMapError",
    "DeparrayError",
    "DeparrayReadError",
    "LabelsFileError",
    "ModelFileError",
    "TrainingDataError",
    "describe_os_error",
    "printable_path",
]


def printable_path(path: str | os.PathLike | None) -> str:
    """``path`` as text that can always be printed (undecodable bytes shown as ``�``)."""
    if path is None:
        return ""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class DeparrayError(ValueError):
    """A problem with the user's input, explained in words.

    Parameters
    ----------
    path
        The file or folder at fault, or ``None`` when no single file is.
    reason
        What is wrong, as a sentence for the user.

    Notes
    -----
    ``str(err)`` is ``"<path>: <reason>"``, or just the reason when there is no path.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str | None = None) -> None:
        if reason is None:  # DeparrayError("message"): no file involved
            path, reason = None, str(path)
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        text = reason if self.path is None else f"{printable_path(self.path)}: {reason}"
        super().__init__(text)


class DeparrayReadError(DeparrayError):
    """A file or folder cannot be read as a DEPArray export."""


class ModelFileError(DeparrayError):
    """A model file that cannot be used (missing, foreign, damaged, newer format...)."""


class TrainingDataError(DeparrayError):
    """The training data cannot be used; raised before any training work starts."""


class LabelsFileError(DeparrayError):
    """A ``labels.csv`` (or annotation file) cannot be read or written."""


class AnnotationFileError(LabelsFileError):
    """An annotation sidecar cannot be read or written."""


class ChannelMapError(DeparrayError):
    """A channel map file (``channels.csv`` / ``channels.txt``) cannot be used."""


_OS_ERROR_WORDS = {
    "ENOSPC": "the disk is full",
    "EDQUOT": "the disk quota is exceeded",
    "EROFS": "the folder is read-only",
    "EACCES": "permission denied",
    "EPERM": "permission denied",
    "ENOENT": "the file or its folder does not exist",
    "ENOTDIR": "a part of the path is not a folder",
    "EISDIR": "it is a folder, not a file",
    "EIO": "the disk or the network share reported an input/output error",
    "ESTALE": "the network share went away",
    "ETIMEDOUT": "the network share did not answer in time",
    "EMFILE": "too many files are open",
    "ENAMETOOLONG": "the file name is too long",
}


def describe_os_error(exc: OSError) -> str:
    """What went wrong with a file, in words (``the disk is full``), never ``[Errno 28]``."""
    import errno

    name = errno.errorcode.get(exc.errno or -1, "")
    if name in _OS_ERROR_WORDS:
        return _OS_ERROR_WORDS[name]
    text = exc.strerror or ""
    return text[:1].lower() + text[1:] if text else "the operating system refused the operation"
