"""A bounded walk over a TIFF's chains of image directories, before tifffile parses them.

A TIFF is a chain of IFDs (image file directories): each one ends with the offset of the
next (0 at the last), and a ``SubIFDs`` tag (330) starts further chains below a page. A
damaged or hostile file can make a chain loop (an IFD pointing back at itself or an earlier
one) or run far longer than the file could hold (IFDs overlapping each other): tifffile's page
iterator then never ends, and even opening such a file can walk every page (LSM, ScanImage and
NDPI files are loaded in full when opened). So every file is surveyed here first, on a raw
file descriptor that is never a pipe or a device (:func:`open_regular_sized`), with every walk
bounded: a revisited offset, or IFDs that together need more bytes than the file has, refuses
the file with the reason in words.

Nothing here imports tifffile; the survey reads the IFD headers only.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass, field

from napari_deparray_ctc.core.errors import DeparrayReadError

__all__ = [
    "ChainSurvey",
    "EndlessStructureError",
    "NotARegularFileError",
    "first_ifd_tags",
    "not_regular_reason",
    "open_regular_sized",
    "read_whole",
    "survey_ifd_chains",
    "survey_tiff",
]

_SUB_IFDS = 330
#: TIFF field types that may hold IFD offsets: LONG, IFD (classic); LONG8, IFD8 (BigTIFF)
_OFFSET_TYPES = {4: ("I", 4), 13: ("I", 4), 16: ("Q", 8), 18: ("Q", 8)}
#: entries per IFD beyond which tifffile itself stops (a damaged count)
_MAX_ENTRIES = 4096
#: bytes read at each IFD in one call: its count and entries (and next offset) for IFDs of up
#: to ~40 entries; a longer IFD gets a second read for the rest
_FIRST_READ = 512
#: main-chain IFDs whose bytes the survey keeps for the fast page list (bounded memory)
KEPT_IFDS = 256
#: bytes read at the start of the file in one call: the header and, in a small file, every IFD
#: (a 64 × 64 px cell image is about 8 kB), so that those need no read of their own
_HEAD_READ = 16384

_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class NotARegularFileError(DeparrayReadError):
    """A named pipe, socket or device (or a link to one): never opened in a blocking way."""


class EndlessStructureError(DeparrayReadError):
    """A TIFF whose chains of image directories loop, or are longer than the file can hold.

    Any TIFF reader that follows them (napari's own included) would never finish.
    """


def _kind_of(mode: int) -> str:
    for test, words in _KINDS:
        if test(mode):
            return words
    return "not a regular file"


def not_regular_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a regular file or folder, in words; ``None`` when it is one.

    Parameters
    ----------
    path
        Any path. Nothing is opened: only ``stat`` and ``lstat`` are called, which never block.

    Returns
    -------
    str or None
        For a named pipe, a socket or a device (or a symbolic link to one), the reason it is
        not read (``"not a regular file: it is a named pipe (FIFO); not opened, since reading
        it would wait for a writer, or never end"``); ``None`` for a regular file, a folder,
        or a path that cannot be looked up (the caller reports that itself).
    """
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
        return None
    return _reason(path, info.st_mode)


def _reason(path: str | os.PathLike[str], mode: int) -> str:
    kind = _kind_of(mode)
    try:
        linked = os.path.islink(path)
        target = os.path.realpath(path) if linked else None
    except (OSError, ValueError):
        target = None
    what = f"a symbolic link to {kind} ({target})" if target else kind
    return (
        f"not a regular file: it is {what}; not opened, since reading it would wait for a "
        "writer, or never end"
    )


def open_regular_sized(path: str) -> tuple[int, int]:
    """Open ``path`` for reading as a raw file descriptor, refusing anything but a regular file.

    The open never blocks (``O_NONBLOCK``: a named pipe without a writer would block a plain
    ``open`` forever); the descriptor is checked with ``fstat`` before anything is read.

    Parameters
    ----------
    path
        The file to open (a symbolic link is followed to what it points at).

    Returns
    -------
    (descriptor, size)
        The open descriptor, which the caller closes, and the file's size in bytes (from the
        same ``fstat``).

    Raises
    ------
    OSError
        When the file cannot be opened (missing, permission denied...).
    DeparrayReadError
        When it is a named pipe, a socket or a device (or a link to one).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(path, flags)
    try:
        info = os.fstat(descriptor)
    except OSError:
        os.close(descriptor)
        raise
    if not stat.S_ISREG(info.st_mode):
        os.close(descriptor)
        raise NotARegularFileError(path, _reason(path, info.st_mode))
    return descriptor, info.st_size


@dataclass(frozen=True)
class ChainSurvey:
    """What the walk over a file's IFD chains found.

    Attributes
    ----------
    main_ifds
        IFDs in the main chain (the pages), counted up to where the chain ends or breaks.
    sub_ifds
        IFDs reached through ``SubIFDs`` tags (reduced resolutions, child images).
    complete
        False when the walk stopped at its ``max_ifds`` budget before the end.
    main_blocks
        The bytes of the first main-chain IFDs, by offset (entry count, entries and the
        next-IFD offset, then whatever else the same read returned, which often holds the
        IFD's longer tag values; at most :data:`KEPT_IFDS` of them): the fast page list
        (:mod:`.fast_ifd`) parses them instead of reading them a second time. Empty when
        ``data`` holds the whole file.
    data
        The whole file, when the survey was given it (a small file read in one call, see
        :func:`~.common.open_tiff`); ``None`` otherwise.
    """

    main_ifds: int
    sub_ifds: int
    complete: bool = True
    main_blocks: dict[int, bytes] = field(default_factory=dict, compare=False, repr=False)
    data: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class _Format:
    byteorder: str
    countsize: int  # the entry count at the start of an IFD
    entrysize: int
    offsetsize: int

    def number(self, data: bytes, at: int, width: int) -> int:
        return _NUMBERS[self.byteorder, width].unpack_from(data, at)[0]


#: (byte order, width) -> the struct of an unsigned number of that width
_NUMBERS = {
    (order, width): struct.Struct(order + item)
    for order in "<>"
    for width, item in ((2, "H"), (4, "I"), (8, "Q"))
}
#: classic TIFF and BigTIFF, by byte order
_CLASSIC = {order: _Format(order, 2, 12, 4) for order in "<>"}
_BIG = {order: _Format(order, 8, 20, 8) for order in "<>"}


def _read(descriptor: int, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` (fewer at the end of the file); never moves a file pointer.

    Plain reads, not a memory map: a file truncated while it is read (an export still being
    written) must give short reads, not a bus error.
    """
    if hasattr(os, "pread"):
        return os.pread(descriptor, length, offset)
    os.lseek(descriptor, offset, os.SEEK_SET)  # pragma: no cover - Windows
    return os.read(descriptor, length)


def read_whole(descriptor: int, size: int) -> bytes | None:
    """The whole file of ``size`` bytes in one read; ``None`` when it no longer has that size
    (it shrank while it was read: the caller reads it piece by piece, as a larger file)."""
    data = _read(descriptor, 0, size)
    return data if len(data) == size else None


#: the most entries of a first IFD that :func:`first_ifd_tags` lists
_MAX_LISTED = 256
_DESCRIPTION = 270  # ImageDescription
_MAX_DESCRIPTION = 1024**2
#: (byte order, entry size, count) -> the struct of the tags of that many IFD entries
_TAG_LISTS: dict[tuple[str, int, int], struct.Struct] = {}


def first_ifd_tags(data: bytes) -> tuple[tuple[int, ...], bytes]:
    """The tags of the first IFD of a whole file held in memory, and its ImageDescription.

    A quick look at a file's metadata with one C-level read of the entries, without any
    parsing: the tags in entry order (none when the file is not a TIFF, the IFD lies beyond
    the data or has more than 256 entries), and the first ImageDescription's bytes (empty
    when there is none or it does not lie in the data).
    """
    found = _format(data)
    if found is None:
        return (), b""
    fmt, first = found
    if first < 8 or first + fmt.countsize > len(data):
        return (), b""
    count = fmt.number(data, first, fmt.countsize)
    start = first + fmt.countsize
    if count > _MAX_LISTED or start + count * fmt.entrysize > len(data):
        return (), b""
    key = (fmt.byteorder, fmt.entrysize, count)
    reader = _TAG_LISTS.get(key)
    if reader is None:
        reader = _TAG_LISTS.setdefault(
            key, struct.Struct(fmt.byteorder + f"H{fmt.entrysize - 2}x" * count)
        )
    tags = reader.unpack_from(data, start)
    if _DESCRIPTION not in tags:
        return tags, b""
    entry = start + tags.index(_DESCRIPTION) * fmt.entrysize
    nbytes = min(fmt.number(data, entry + 4, fmt.offsetsize), _MAX_DESCRIPTION)
    at = entry + 4 + fmt.offsetsize
    if nbytes > fmt.offsetsize:  # stored elsewhere, at the offset the entry holds
        at = fmt.number(data, at, fmt.offsetsize)
    return tags, data[at : at + nbytes]


class _Reader:
    """Reads of one file for the survey: served from its first :data:`_HEAD_READ` bytes (read
    once) where they lie there, else read from the file (:func:`_read`)."""

    def __init__(self, descriptor: int, data: bytes | None = None) -> None:
        self.descriptor = descriptor
        self.head = _read(descriptor, 0, _HEAD_READ) if data is None else data
        # the head is the whole file
        self.whole = data is not None or len(self.head) < _HEAD_READ

    def __call__(self, offset: int, length: int) -> bytes:
        end = offset + length
        if end <= len(self.head) or self.whole:
            return self.head[offset:end]
        return _read(self.descriptor, offset, length)


def _format(head: bytes) -> tuple[_Format, int] | None:
    """The file's byte order and sizes, and the offset of its first IFD; ``None`` if not a TIFF."""
    if len(head) < 8 or head[:2] not in (b"II", b"MM"):
        return None
    order = "<" if head[:2] == b"II" else ">"
    (version,) = _NUMBERS[order, 2].unpack_from(head, 2)
    if version == 42:
        return _CLASSIC[order], _NUMBERS[order, 4].unpack_from(head, 4)[0]
    if version == 43 and len(head) >= 16:
        return _BIG[order], _NUMBERS[order, 8].unpack_from(head, 8)[0]
    return None


def _chain_loops(path: str, steps: int, offset: int, chain: str) -> DeparrayReadError:
    return EndlessStructureError(
        path,
        f"corrupt TIFF: its chain of image directories loops back on itself (directory "
        f"{steps:,} of {chain} points back to the one at byte {offset:,}); a reader following "
        "the chain would never stop",
    )


def _overlapping(path: str, walked: int, size: int) -> DeparrayReadError:
    return EndlessStructureError(
        path,
        f"corrupt TIFF: its chains of image directories hold at least {walked:,} directories, "
        f"more than a file of {size:,} bytes can hold (they overlap each other); a reader "
        "following them would not stop in any useful time",
    )


def survey_ifd_chains(
    path: str,
    descriptor: int,
    size: int,
    max_ifds: int | None = None,
    data: bytes | None = None,
) -> ChainSurvey:
    """Walk every IFD chain of a TIFF (main and SubIFDs), bounded, without tifffile.

    Parameters
    ----------
    path
        The file, for messages.
    descriptor
        A descriptor of the (regular) file open for reading (see :func:`open_regular_sized`).
    size
        The file's size in bytes.
    max_ifds
        Stop after this many IFDs (the reader probe's budget) and report an incomplete survey;
        ``None``: walk everything (the walk is still bounded by the file's size).
    data
        The whole file, already read (``len(data) == size``): the walk reads nothing more,
        and the survey keeps it (:attr:`ChainSurvey.data`) instead of IFD blocks.

    Returns
    -------
    ChainSurvey

    Raises
    ------
    DeparrayReadError
        When a chain comes back to an IFD already visited (it loops), or when the IFDs met so
        far need more bytes than the file holds (they overlap: a chain no real file has).

    Notes
    -----
    Offsets beyond the end of the file, damaged entry counts and files that are not TIFFs
    end the walk quietly: tifffile (and the checks after it) word those precisely.
    """
    if data is not None and len(data) != size:
        raise ValueError("data must be the whole file")
    if size < 8:
        return ChainSurvey(0, 0, data=data)
    read = _Reader(descriptor, data)
    found = _format(read.head)
    if found is None:
        return ChainSurvey(0, 0, data=data)
    keep = KEPT_IFDS if data is None else 0  # a file in memory needs no copies of its IFDs
    fmt, first = found
    sub_code = struct.pack(fmt.byteorder + "H", _SUB_IFDS)
    visited: set[int] = set()
    chains: list[tuple[int, str]] = [(first, "the page chain")]  # chain starts still to walk
    main = sub = used_bytes = 0
    blocks: dict[int, bytes] = {}
    while chains:
        offset, chain = chains.pop()
        steps = 0
        in_chain: set[int] = set()
        while offset:
            if offset < 8 or offset + fmt.countsize > size:
                break  # beyond the end of the file: tifffile reports it
            if offset in in_chain:  # back to a directory of this very chain: it never ends
                raise _chain_loops(path, steps, offset, chain)
            if offset in visited:
                break  # reached from another chain too (pyramid levels listed and chained)
            in_chain.add(offset)
            visited.add(offset)
            # one read for the count and (usually) every entry; a long IFD gets a second one
            ifd = read(offset, _FIRST_READ)
            if len(ifd) < fmt.countsize:
                break  # the file shrank: tifffile reports it
            count = fmt.number(ifd, 0, fmt.countsize)
            if count > _MAX_ENTRIES:
                break  # a damaged entry count: tifffile reports it
            length = count * fmt.entrysize + fmt.offsetsize
            whole = fmt.countsize + length
            if len(ifd) < whole and len(ifd) == _FIRST_READ:
                ifd += read(offset + _FIRST_READ, whole - _FIRST_READ)
            if len(ifd) < whole:
                break  # truncated inside the IFD: tifffile reports it
            read_here = ifd  # the IFD and the bytes after it (often its tags' longer values)
            ifd = ifd[:whole]
            block = ifd[fmt.countsize :]
            used_bytes += whole
            if chain == "the page chain":
                main += 1
                if main <= keep:
                    blocks[offset] = read_here
            else:
                sub += 1
            if used_bytes > size:
                raise _overlapping(path, main + sub, size)
            if max_ifds is not None and main + sub >= max_ifds:
                return ChainSurvey(main, sub, complete=False, main_blocks=blocks, data=data)
            _queue_sub_ifds(read, fmt, block, count, size, sub_code, chains)
            following = fmt.number(block, count * fmt.entrysize, fmt.offsetsize)
            if offset < following < offset + fmt.countsize + length:
                raise EndlessStructureError(
                    path,
                    f"corrupt TIFF: its image directories overlap each other (directory "
                    f"{steps + 2:,} of {chain} starts at byte {following:,}, inside the one "
                    "before it); such a chain can hold more directories than the file has room "
                    "for, and a reader following it would not stop in any useful time",
                )
            offset = following
            steps += 1
    return ChainSurvey(main, sub, main_blocks=blocks, data=data)


def _queue_sub_ifds(
    read: _Reader,
    fmt: _Format,
    block: bytes,
    count: int,
    size: int,
    sub_code: bytes,
    chains: list[tuple[int, str]],
) -> None:
    """Add the chains a ``SubIFDs`` entry of this IFD starts (found with one C-level search)."""
    end = count * fmt.entrysize
    position = block.find(sub_code, 0, end)
    while position != -1:
        if position % fmt.entrysize == 0:
            (kind,) = struct.unpack_from(fmt.byteorder + "H", block, position + 2)
            item = _OFFSET_TYPES.get(kind)
            if item is None:
                return
            letter, width = item
            n_values = fmt.number(block, position + 4, fmt.offsetsize)
            value_at = position + 4 + fmt.offsetsize
            if n_values * width <= fmt.offsetsize:  # stored in the entry itself
                data = block[value_at : value_at + n_values * width]
            else:
                start = fmt.number(block, value_at, fmt.offsetsize)
                if start >= size or n_values > (size - start) // width:
                    return  # values beyond the file: tifffile reports it
                data = read(start, n_values * width)
                if len(data) < n_values * width:
                    return
            values = struct.unpack(f"{fmt.byteorder}{n_values}{letter}", data)
            chains.extend((value, "a sub-image chain") for value in values if value)
            return
        position = block.find(sub_code, position + 1, end)


def survey_tiff(path: str, max_ifds: int | None = None) -> ChainSurvey:
    """Open ``path`` safely (:func:`open_regular_sized`) and walk its IFD chains (bounded).

    Parameters
    ----------
    path
        The file.
    max_ifds
        As for :func:`survey_ifd_chains`.

    Returns
    -------
    ChainSurvey

    Raises
    ------
    OSError
        When the file cannot be opened.
    DeparrayReadError
        For a pipe, socket or device, and for looping or impossibly long IFD chains.
    """
    descriptor, size = open_regular_sized(path)
    try:
        return survey_ifd_chains(path, descriptor, size, max_ifds)
    finally:
        os.close(descriptor)
