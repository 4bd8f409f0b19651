"""Limits, file-name helpers and error wording shared by the reader modules."""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import threading
from collections.abc import Callable
from typing import Any

import tifffile

from napari_deparray_ctc.core.channels import (
    ChannelMap,
    ChannelMapError,
    as_channel_map,
    find_channel_map,
    load_channel_map,
    split_channel_token,
    tokenize,
)
from napari_deparray_ctc.core.constants import TIFF_SUFFIXES
from napari_deparray_ctc.core.errors import DeparrayReadError
from napari_deparray_ctc.core.io.ifd_chain import (
    first_ifd_tags,
    open_regular_sized,
    read_whole,
    survey_ifd_chains,
)

MAX_PIXELS_PER_PLANE: int = 4096 * 4096
"""Largest plane (height × width) read; larger images are refused from their header."""

MIN_SIDE_PX: int = 4
"""Smallest accepted plane side in pixels (a 1×1 image is not a cell image)."""

MAX_CHANNELS_PER_CELL: int = 8
"""An unnamed page sequence longer than this in a file without channel token is a stack."""

MAX_FOLDER_DEPTH: int = 4
"""How many folder levels below an opened folder are searched."""

LABELS_FILENAME = "labels.csv"

OTHER_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".jp2", ".czi", ".nd2", ".lif")

NOT_IMAGE_SUFFIXES = (
    ".csv",
    ".txt",
    ".json",
    ".xml",
    ".md",
    ".log",
    ".yaml",
    ".yml",
    ".ini",
    ".pdf",
    ".html",
    ".zip",
    ".pt",
    ".pth",
    ".py",
)

DEPARRAY_NAME_RE = re.compile(r"(?i)(?<![a-z])(?:cells?|ctcs?|wbcs?|deparray)[\s_\-#]*\d+|deparray")

_NATURAL_SPLIT_RE = re.compile(r"(\d+)")

ALLOWED_KINDS = "uif"


def is_tiff_name(name: str) -> bool:
    return name.lower().endswith(TIFF_SUFFIXES)


def tiff_stem(path: str | os.PathLike[str]) -> str:
    """File name without its TIFF suffix (``cell_01.ome.tif`` -> ``cell_01``).

    The suffixes are :data:`~napari_deparray_ctc.core.constants.TIFF_SUFFIXES`, matched in any
    case (``.ome.tiff`` before ``.tiff``); other names lose their last suffix only.
    """
    base = os.path.basename(os.fspath(path))
    lower = base.lower()
    for suffix in TIFF_SUFFIXES:
        if lower.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return os.path.splitext(base)[0] or base


def natural_key(text: str) -> tuple:
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part.lower())
        for part in _NATURAL_SPLIT_RE.split(text)
        if part
    )


def group_key(text: str) -> str:
    return "_".join(tokenize(text))


def looks_like_tiff_magic(path: str) -> bool:
    """True when ``path`` starts like a TIFF; a pipe or device is never opened to find out."""
    try:
        descriptor = open_regular_sized(path)[0]
    except (OSError, DeparrayReadError):
        return False
    try:
        head = os.read(descriptor, 4)
    except OSError:
        return False
    finally:
        os.close(descriptor)
    return head in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def as_path_list(paths: Any) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def resolve_limit(max_pixels: int | None) -> int:
    return MAX_PIXELS_PER_PLANE if max_pixels is None else int(max_pixels)


def user_map(channel_map: Any) -> ChannelMap | None:
    try:
        return as_channel_map(channel_map)
    except ChannelMapError as exc:
        raise DeparrayReadError(exc.path, exc.reason) from None


def channel_map_in(folder: str) -> ChannelMap | None:
    """The channel map file (``channels.csv``/``channels.txt``) in ``folder``, loaded.

    Returns
    -------
    ChannelMap or None
        ``None`` when the folder holds no channel map file.

    Raises
    ------
    ChannelMapError
        When the file is there but cannot be used (the reason in words).
    """
    candidate = find_channel_map(folder)
    return None if candidate is None else load_channel_map(candidate)


#: what a damaged file's parse error is reported as when tifffile's message is not words
_DAMAGED = "its structure could not be parsed"
_WORDS_RE = re.compile(r"[A-Za-z][A-Za-z ,;:'()-]*")


def _in_words(message: str) -> str | None:
    """tifffile's own message when it is a short phrase in words, else ``None``."""
    text = " ".join(message.split()).strip(" .")
    if not text or len(text) > 120 or not _WORDS_RE.fullmatch(text):
        return None
    if re.search(r"(Error|Exception)\b", text):
        return None
    return text


def error_from_exception(path: str, exc: BaseException) -> DeparrayReadError:
    """Turn whatever reading raised into a DeparrayReadError with the reason in words."""
    if isinstance(exc, DeparrayReadError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return DeparrayReadError(path, "file not found (it was moved or deleted while reading)")
    if isinstance(exc, PermissionError):
        return DeparrayReadError(path, "permission denied (cannot open the file)")
    if isinstance(exc, IsADirectoryError):
        return DeparrayReadError(path, "is a folder, not a file")
    if isinstance(exc, MemoryError):
        return DeparrayReadError(path, "not enough memory to read the image")
    try:
        size = os.path.getsize(path)
    except OSError:
        size = -1
    if size == 0:
        return DeparrayReadError(path, "empty file (0 bytes)")
    message = str(exc)
    if isinstance(exc, tifffile.TiffFileError) and "not a TIFF" in message:
        return DeparrayReadError(path, "not a TIFF file")
    if "imagecodecs" in message:
        return DeparrayReadError(
            path,
            "this file needs the 'imagecodecs' package, which is not installed "
            "(install it with: pip install imagecodecs)",
        )
    if isinstance(exc, OSError) and not isinstance(exc, tifffile.TiffFileError):
        return DeparrayReadError(path, f"cannot read the file ({os_reason(exc)})")
    detail = _in_words(message) if isinstance(exc, tifffile.TiffFileError) else None
    return DeparrayReadError(path, f"corrupt or truncated TIFF ({detail or _DAMAGED})")


def os_reason(exc: OSError) -> str:
    """An operating-system error in words (``No space left on device``), without its number."""
    return exc.strerror or "input/output error"


def tag_text(page: Any, code: int) -> str | None:
    tags = getattr(page, "tags", None)
    tag = tags.get(code) if tags is not None else None
    if tag is None or not isinstance(tag.value, str):
        return None
    return tag.value


_TIFFFILE_QUIET = threading.local()


class _DropTifffileLogWhileReading(logging.Filter):
    """Drop tifffile's log records emitted while this module reads a file.

    tifffile logs what it tolerates in a damaged file (``invalid offset to first page``...);
    the reader reports such files itself, as a :class:`DeparrayReadError` or one skip
    warning, so those lines would only be noise on stderr (the CLI) or the console.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_TIFFFILE_QUIET, "depth", 0)


logging.getLogger("tifffile").addFilter(_DropTifffileLogWhileReading())


def quiet_tifffile(function: Callable) -> Callable:
    """Run ``function`` with tifffile's log records dropped (this thread only)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _TIFFFILE_QUIET.depth = getattr(_TIFFFILE_QUIET, "depth", 0) + 1
        try:
            return function(*args, **kwargs)
        finally:
            _TIFFFILE_QUIET.depth -= 1

    return wrapper


class NameNotResolvedError(Exception):
    """tifffile is about to read series from a TIFF opened under its unresolved name, or from
    a copy of it in memory.

    :func:`open_tiff` names the file by its absolute path, not by the path with symbolic links
    resolved (``os.path.realpath`` costs as much as reading a small page), and parses a small
    file from memory. Only tifffile's series of multi-file formats (OME, Micro-Manager,
    NDTiff) look for files beside it, and some of them only in a file on disk:
    :func:`require_resolved_name` raises this before any series is read, and the caller opens
    the file again with ``resolve_links=True`` (under its real path, on disk).
    """


IN_MEMORY_MAX_BYTES: int = 1024**2
"""Files up to this size are read in one call; tifffile parses a plain one from memory."""

#: first-page tags of formats read through tifffile's series: IJMetadataByteCounts,
#: IJMetadata (ImageJ), MicroManagerMetadata (Micro-Manager, NDTiff)
_SERIES_FORMAT_TAGS = frozenset((50838, 50839, 51123))


def _in_memory(data: bytes | None, resolve_links: bool) -> bool:
    """Whether tifffile is to parse a file from its bytes ``data`` read whole.

    Not when its name is to be resolved, nor when its first page holds the metadata of a
    format read through tifffile's series (OME, ImageJ, Micro-Manager, NDTiff): such a file
    is parsed from disk at once, since its series would have it opened a second time (see
    :class:`NameNotResolvedError`). This look is only a shortcut: any other file that is not
    a plain page sequence is opened again the same way.
    """
    if data is None or resolve_links:
        return False
    tags, description = first_ifd_tags(data)
    if description.startswith(b"ImageJ=") or b"OME>" in description[-16:]:
        return False
    return _SERIES_FORMAT_TAGS.isdisjoint(tags)


@quiet_tifffile
def open_tiff(path: str, resolve_links: bool = False) -> tifffile.TiffFile:
    """Open a TIFF with tifffile, after checking that doing so cannot block or never end.

    The file must be a regular file (a named pipe, socket or device is refused without being
    opened in a blocking way) and its chains of image directories must end (see
    :mod:`.ifd_chain`). The file is opened once: tifffile reads the very descriptor that was
    checked and surveyed. A file of at most :data:`IN_MEMORY_MAX_BYTES` is read whole in one
    call (the survey walks those bytes), and tifffile parses it from them, unless its name is
    to be resolved or it holds the metadata of a format read through tifffile's series (see
    :class:`NameNotResolvedError`). The survey is kept as ``tif.deparray_survey`` (main and
    sub-IFD counts) so that later walks over the pages can be bounded by it. Close the file
    with :func:`close_tiff` (tifffile does not close a file object it was given).

    Parameters
    ----------
    path
        The file.
    resolve_links
        Name the file by its real path (symbolic links resolved), as tifffile does when it
        opens a path itself; see :class:`NameNotResolvedError`.

    Returns
    -------
    tifffile.TiffFile

    Raises
    ------
    DeparrayReadError
        Naming the file and the reason in words.
    """
    handle: Any = None
    try:
        descriptor, size = open_regular_sized(path)
        try:
            data = read_whole(descriptor, size) if size <= IN_MEMORY_MAX_BYTES else None
            survey = survey_ifd_chains(path, descriptor, size, data=data)
            in_memory = _in_memory(data, resolve_links)
            if in_memory:
                raw: Any = io.BytesIO(data)
            else:
                raw = io.FileIO(descriptor, "r", closefd=True)
        except BaseException:
            os.close(descriptor)
            raise
        if in_memory:
            os.close(descriptor)
        # what tifffile names the file, and where it looks for files beside it
        raw.name = os.path.realpath(path) if resolve_links else os.path.abspath(path)
        handle = raw if in_memory else io.BufferedReader(raw)
        tif = tifffile.TiffFile(handle)
    except Exception as exc:
        if handle is not None:
            handle.close()
        raise error_from_exception(path, exc) from None
    tif.deparray_survey = survey
    tif.deparray_handle = handle
    tif.deparray_in_memory = in_memory
    return tif


def require_resolved_name(tif: tifffile.TiffFile, path: str) -> None:
    """Raise :class:`NameNotResolvedError` when ``tif`` is not named by its real path or is
    parsed from memory."""
    if getattr(tif, "deparray_in_memory", False) or tif.filehandle.path != os.path.realpath(path):
        raise NameNotResolvedError(path)


def close_tiff(tif: tifffile.TiffFile) -> None:
    """Close a file that :func:`open_tiff` opened (tifffile's handle and the file itself)."""
    tif.close()
    handle = getattr(tif, "deparray_handle", None)
    if handle is not None:
        handle.close()


def page_limit(tif: tifffile.TiffFile) -> int:
    """The most pages a walk over ``tif.pages`` may visit: the pages the survey counted."""
    survey = getattr(tif, "deparray_survey", None)
    return survey.main_ifds if survey is not None and survey.complete else 1_000_000


def is_channel_file_name(name: str | os.PathLike[str]) -> bool:
    """True when a file name (with or without extension) holds a known channel token."""
    return split_channel_token(tiff_stem(name))[0] is not None
