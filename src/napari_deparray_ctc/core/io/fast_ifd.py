"""A minimal IFD parser: list the pages of a plain multi-page TIFF without tifffile's series.

A TIFF is a chain of IFDs (image file directories), one per page. Each IFD is a count of
entries, then that many fixed-size entries ``(tag, type, count, value-or-offset)``, then the
offset of the next IFD (0 at the last page). Parsing every page with tifffile (and its series
detection) costs more than reading a small cell image, so for plain files this module reads
only the few tags it needs from the pages after the first, checks that their layout matches
the first page, and hands them to tifffile as ``TiffFrame`` objects that decode like the first
page. Anything unusual returns ``None``: the caller then parses the pages with tifffile, which
also words any error precisely.

A later page whose entries are laid out exactly like the first page's (same tags and types at
the same places, same bytes in every layout entry) is recognised from its bytes with one
compiled struct, and only its per-page tags (pixel offsets, PageName, description) are parsed;
the first page of the next file is matched against the previous file's in the same way. Any
other page is parsed tag by tag: both give the same values.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tifffile

from napari_deparray_ctc.core.errors import DeparrayReadError
from napari_deparray_ctc.core.io.common import tag_text
from napari_deparray_ctc.core.io.ifd_chain import EndlessStructureError

_TAGS = tifffile.TIFF.TAGS  # tag name -> number (and number -> name)
NEW_SUBFILE_TYPE = _TAGS["NewSubfileType"]  # 254: bit 0 set = a reduced-resolution page
IMAGE_DESCRIPTION = _TAGS["ImageDescription"]  # 270
STRIP_OFFSETS = _TAGS["StripOffsets"]  # 273
STRIP_BYTE_COUNTS = _TAGS["StripByteCounts"]  # 279
PAGE_NAME = _TAGS["PageName"]  # 285
TILE_OFFSETS = _TAGS["TileOffsets"]  # 324
TILE_BYTE_COUNTS = _TAGS["TileByteCounts"]  # 325
SUB_IFDS = _TAGS["SubIFDs"]  # 330: pages inside pages: left to tifffile
JPEG_TABLES = _TAGS["JPEGTables"]  # 347: per-page JPEG tables: left to tifffile

#: tags that must equal the first page's for a page to be decoded like it
LAYOUT_TAGS = tuple(
    _TAGS[name]
    for name in (
        "ImageWidth",  # 256
        "ImageLength",  # 257
        "BitsPerSample",  # 258
        "Compression",  # 259
        "PhotometricInterpretation",  # 262
        "SamplesPerPixel",  # 277
        "RowsPerStrip",  # 278
        "PlanarConfiguration",  # 284
        "Predictor",  # 317
        "TileWidth",  # 322
        "TileLength",  # 323
        "SampleFormat",  # 339
    )
)
#: wanted tags whose values may differ from page to page of one layout
_PER_PAGE_TAGS = frozenset(
    (IMAGE_DESCRIPTION, STRIP_OFFSETS, STRIP_BYTE_COUNTS, PAGE_NAME, TILE_OFFSETS, TILE_BYTE_COUNTS)
)
#: the only tags parsed; all others are skipped without reading their values
_WANTED = frozenset((*LAYOUT_TAGS, NEW_SUBFILE_TYPE, SUB_IFDS, JPEG_TABLES, *_PER_PAGE_TAGS))

#: TIFF field type -> struct item (BYTE, ASCII, SHORT, LONG, SBYTE, UNDEFINED, SSHORT, SLONG,
#: IFD, and the BigTIFF LONG8, SLONG8, IFD8). Other types (RATIONAL, FLOAT...) never occur in
#: the wanted tags of a sane file: the page is left to tifffile.
_TYPE_ITEMS = {1: "B", 2: "s", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i", 13: "I"}
_TYPE_ITEMS.update({16: "Q", 17: "q", 18: "Q"})
_ASCII = 2
_ITEM_SIZES = {kind: struct.calcsize(item) for kind, item in _TYPE_ITEMS.items()}

_MAX_ENTRIES = 4096  # entries per IFD; more is a damaged count
_MAX_PAGES = 1_000_000
_MAX_TAG_BYTES = 16 * 1024**2  # largest tag value read (a strip offset array, say)


#: (byte order, field type) -> the struct of one value of that type
_SINGLE_ITEMS = {
    (order, kind): struct.Struct(order + item)
    for order in "<>"
    for kind, item in _TYPE_ITEMS.items()
}


def _ifd_bytes(tif: tifffile.TiffFile, offset: int) -> tuple[bytes, int] | None:
    """Bytes that hold the IFD at ``offset`` (entry count, entries, next-IFD offset), and the
    file offset of their first byte.

    The whole file when :func:`~.common.open_tiff` read it in one call; else the IFD as the
    survey read it (with the bytes that followed it in that read), or read now. ``None`` when
    cut short.
    """
    survey = getattr(tif, "deparray_survey", None)
    if survey is not None:
        if survey.data is not None:
            return survey.data, 0
        kept = survey.main_blocks.get(offset)
        if kept is not None:
            return kept, offset
    handle = tif.filehandle
    fmt = tif.tiff
    handle.seek(offset)
    head = handle.read(fmt.tagnosize)
    (count,) = struct.unpack(fmt.tagnoformat, head)
    if count > _MAX_ENTRIES:
        return None
    block = handle.read(fmt.tagsize * count + fmt.offsetsize)
    if len(block) < fmt.tagsize * count + fmt.offsetsize:
        return None
    return head + block, offset


def _ifd_at(tif: tifffile.TiffFile, offset: int) -> tuple[bytes, int]:
    """:func:`_ifd_bytes` and where the IFD starts in them; ``ValueError`` when cut short."""
    found = _ifd_bytes(tif, offset)
    if found is None:
        raise ValueError(f"the image directory at byte {offset} is cut short")
    buffer, base = found
    return buffer, offset - base


def _tag_value(
    tif: tifffile.TiffFile, buffer: bytes, base: int, kind: int, n_items: int, raw: bytes
) -> Any:
    """The value of one IFD entry: a tuple of numbers, or a string for ASCII tags.

    ``raw``: the entry's value field; ``buffer``: bytes of the file from offset ``base``, where
    a value stored elsewhere is taken from when they hold it. ``None`` when the type is not one
    of :data:`_TYPE_ITEMS`, the value is too long or cut short. Raises ``struct.error``,
    ``OSError`` or ``ValueError`` on damage.
    """
    fmt = tif.tiff
    item = _TYPE_ITEMS.get(kind)
    if item is None:
        return None
    size = n_items * _ITEM_SIZES[kind]
    if size > _MAX_TAG_BYTES:
        return None
    # a value that fits in the entry is stored in it; a longer one elsewhere, at the offset
    # the entry holds instead (4 bytes in classic TIFF, 8 in BigTIFF)
    if size > fmt.tagoffsetthreshold:
        (position,) = struct.unpack(fmt.offsetformat, raw)
        if base <= position and position + size <= base + len(buffer):
            raw = buffer[position - base : position - base + size]  # read already
        else:
            handle = tif.filehandle
            handle.seek(position)
            raw = handle.read(size)
        if len(raw) < size:
            return None
    else:
        raw = raw[:size]
    if kind == _ASCII:  # NUL-terminated
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    if n_items == 1:
        return _SINGLE_ITEMS[fmt.byteorder, kind].unpack(raw)
    return struct.unpack(f"{fmt.byteorder}{n_items}{item}", raw)


def _scan_ifd(
    tif: tifffile.TiffFile, offset: int, entries: list[tuple[int, int, int]] | None = None
) -> tuple[dict[int, Any], int] | None:
    """The wanted tags of the IFD at ``offset``, and the offset of the next IFD.

    Returns ``(values, next_ifd_offset)``: a tag's value is a tuple of numbers, or a string for
    ASCII tags. ``None`` when anything is unusual. ``entries``: when given, every entry's
    ``(tag, field type, count)`` is added to it, in order (for :class:`_FirstPageLayout`).
    """
    fmt = tif.tiff  # classic TIFF or BigTIFF: entry sizes, byte order, offset format
    try:
        buffer, at = _ifd_at(tif, offset)  # at: where the IFD starts in buffer
        (count,) = struct.unpack_from(fmt.tagnoformat, buffer, at)
        start = at + fmt.tagnosize
        end = start + fmt.tagsize * count
        if count > _MAX_ENTRIES or len(buffer) < end + fmt.offsetsize:
            return None
        values: dict[int, Any] = {}
        for code, kind, n_items, raw in struct.iter_unpack(fmt.tagheaderformat, buffer[start:end]):
            if entries is not None:
                entries.append((code, kind, n_items))
            if code not in _WANTED:
                continue
            value = _tag_value(tif, buffer, offset - at, kind, n_items, raw)
            if value is None:
                return None
            if kind == _ASCII:  # the first of repeated tags wins
                values.setdefault(code, value)
            else:
                values[code] = value
        # the next-IFD offset follows the entries
        (next_offset,) = struct.unpack_from(fmt.offsetformat, buffer, end)
        return values, next_offset
    except (struct.error, OSError, ValueError):
        return None


def _next_ifd_offset(tif: tifffile.TiffFile, offset: int) -> int | None:
    """Offset of the IFD after the one at ``offset`` (0 at the last page), or ``None``."""
    fmt = tif.tiff
    try:
        buffer, at = _ifd_at(tif, offset)
        (count,) = struct.unpack_from(fmt.tagnoformat, buffer, at)
        return struct.unpack_from(
            fmt.offsetformat, buffer, at + fmt.tagnosize + count * fmt.tagsize
        )[0]
    except (struct.error, OSError, ValueError):
        return None


@dataclass(frozen=True)
class _CompiledLayout:
    """How to read a page laid out like a first page (see :class:`_FirstPageLayout`)."""

    reader: struct.Struct  # all entries of the IFD at once, from its start
    compared: Callable[[tuple], Any]  # the fields that must equal the first page's
    per_page: tuple[tuple[int, int, int, struct.Struct | None], ...]  # tag, type, field, struct
    end: int  # where the entries end, from the IFD's start


#: compiled layouts by (entry format, first page's entries): the files of an export share a few
_COMPILED: dict[tuple, _CompiledLayout | None] = {}


def _compile(fmt: Any, entries: tuple[tuple[int, int, int], ...]) -> _CompiledLayout | None:
    """The layout of a first page with these ``(tag, type, count)`` entries; ``None`` when its
    later pages are to be scanned tag by tag."""
    key = (fmt.byteorder, fmt.tagheaderformat, fmt.tagsize, fmt.tagnosize, entries)
    if key in _COMPILED:
        return _COMPILED[key]
    if len(_COMPILED) >= 256:
        _COMPILED.clear()
    compiled = _COMPILED[key] = _build(fmt, entries)
    return compiled


def _build(fmt: Any, entries: tuple[tuple[int, int, int], ...]) -> _CompiledLayout | None:
    entry_size = fmt.tagsize
    if struct.calcsize(fmt.tagheaderformat) != entry_size:
        return None  # entries not as tifffile's entry format reads them (NDPI): scanned
    count_item = fmt.tagheaderformat[-3]  # the entry's count: "I" (classic), "Q" (BigTIFF)
    value_size = entry_size - 4 - struct.calcsize(count_item)
    pieces: list[tuple[int, int, tuple[int, int] | None]] = [(0, fmt.tagnosize, None)]
    for index, (code, kind, n_items) in enumerate(entries):
        entry = fmt.tagnosize + index * entry_size
        if code in _PER_PAGE_TAGS:
            pieces.append((entry, entry + 4, None))  # tag and type
            pieces.append((entry + 4, entry + entry_size, (code, kind)))  # count, value
        elif code in LAYOUT_TAGS or code == NEW_SUBFILE_TYPE:
            item = _ITEM_SIZES.get(kind)
            if item is None or n_items * item > fmt.tagoffsetthreshold:
                return None  # a layout value stored elsewhere: pages are scanned
            pieces.append((entry, entry + entry_size, None))  # the whole entry
        else:
            pieces.append((entry, entry + 4, None))  # tag and type
    parts = [fmt.byteorder]
    compared: list[int] = []  # tuple positions of the bytes that must match
    per_page: list[tuple[int, int, int, struct.Struct | None]] = []
    position = fields = 0
    merging = False  # the last part is compared bytes that end at ``position``
    for first, last, tag in pieces:
        if first > position:
            parts.append(f"{first - position}x")
            merging = False
        if tag is None:
            if merging:  # extends the compared bytes just before
                parts[-1] = f"{int(parts[-1][:-1]) + last - first}s"
            else:
                parts.append(f"{last - first}s")
                compared.append(fields)
                fields += 1
                merging = True
        else:
            code, kind = tag
            single = None
            if kind != _ASCII and _ITEM_SIZES[kind] <= fmt.tagoffsetthreshold:
                single = _SINGLE_ITEMS[fmt.byteorder, kind]
            parts.append(f"{count_item}{value_size}s")
            per_page.append((code, kind, fields, single))
            fields += 2
            merging = False
        position = last
    return _CompiledLayout(
        reader=struct.Struct("".join(parts)),
        compared=operator.itemgetter(*compared),
        per_page=tuple(per_page),
        end=fmt.tagnosize + len(entries) * entry_size,
    )


class _FirstPageLayout:
    """The first page's IFD entries, to recognise a later page laid out alike from its bytes.

    A later page *matches* when its IFD has as many entries as the first page's, with the same
    tag and field type at every position, and the very same bytes (count and value) in every
    entry of :data:`LAYOUT_TAGS` and ``NewSubfileType``. Such a page has the first page's layout
    tag values, is not marked reduced, and has none of the tags the scan refuses (``SubIFDs``,
    ``JPEGTables``) since the first page has none, so of its tags only those of
    :data:`_PER_PAGE_TAGS` are parsed, and one compiled struct reads all its entries at once.
    A page that does not match is scanned tag by tag (:func:`_scan_ifd`), as every page used
    to be: the outcome is the same, only the work differs.
    """

    def __init__(
        self,
        tif: tifffile.TiffFile,
        offset: int,
        values: dict[int, Any],
        entries: list[tuple[int, int, int]],
    ) -> None:
        self.usable = False
        if values.get(NEW_SUBFILE_TYPE, (0,))[0] & 1:
            return  # a first page marked reduced: every page is scanned
        compiled = _compile(tif.tiff, tuple(entries))
        found = _ifd_bytes(tif, offset)
        if compiled is None or found is None:
            return
        buffer, base = found
        self.compiled = compiled
        self.expected = compiled.compared(compiled.reader.unpack_from(buffer, offset - base))
        self.usable = True

    @classmethod
    def of(cls, compiled: _CompiledLayout, expected: Any) -> _FirstPageLayout:
        """The layout of a first page already compiled, with its compared fields."""
        alike = cls.__new__(cls)
        alike.usable, alike.compiled, alike.expected = True, compiled, expected
        return alike

    def match(self, tif: tifffile.TiffFile, offset: int) -> tuple[dict[int, Any], int] | None:
        """The per-page tags of a matching page at ``offset`` and the next IFD's offset;
        ``None`` when it does not match (or anything is unusual: the scan words it)."""
        return _match(tif, offset, self.compiled, self.expected)


def _match(
    tif: tifffile.TiffFile, offset: int, compiled: _CompiledLayout, expected: Any
) -> tuple[dict[int, Any], int] | None:
    """:meth:`_FirstPageLayout.match` for a compiled layout and its first page's fields."""
    fmt = tif.tiff
    try:
        buffer, at = _ifd_at(tif, offset)
        if len(buffer) < at + compiled.end + fmt.offsetsize:
            return None
        fields = compiled.reader.unpack_from(buffer, at)
        if compiled.compared(fields) != expected:
            return None
        values: dict[int, Any] = {}
        for code, kind, index, single in compiled.per_page:
            n_items = fields[index]
            if n_items == 1 and single is not None:  # one number, in the entry itself
                value = single.unpack_from(fields[index + 1])
            else:
                value = _tag_value(tif, buffer, offset - at, kind, n_items, fields[index + 1])
                if value is None:
                    return None
            if kind == _ASCII:  # the first of repeated tags wins, as in the scan
                values.setdefault(code, value)
            else:
                values[code] = value
        (next_offset,) = struct.unpack_from(fmt.offsetformat, buffer, at + compiled.end)
        return values, next_offset
    except (struct.error, OSError, ValueError):
        return None


#: the first page of the file read last, when its later pages could be matched: (TIFF
#: format, compiled layout, its compared fields, its other wanted tags' values)
_LAST_FIRST_PAGE: tuple[Any, _CompiledLayout, Any, dict[int, Any]] | None = None


def _first_page_like_last(
    tif: tifffile.TiffFile, offset: int
) -> tuple[dict[int, Any], int, _FirstPageLayout] | None:
    """The first page's wanted tags, next IFD offset and layout, when its entries match the
    first page of the file read last (the files of an export are alike); else ``None``.

    A match means the same entries (tag and type at every position, the same bytes in every
    layout entry) as a first page that the scan parsed, so its wanted tags are that page's
    layout values and its own per-page tags, read as :meth:`_FirstPageLayout.match` reads a
    later page's.
    """
    last = _LAST_FIRST_PAGE
    if last is None or last[0] is not tif.tiff:
        return None
    _, compiled, expected, layout_values = last
    matched = _match(tif, offset, compiled, expected)
    if matched is None:
        return None
    per_page, next_offset = matched
    return {**layout_values, **per_page}, next_offset, _FirstPageLayout.of(compiled, expected)


def plain_page_list(
    tif: tifffile.TiffFile, path: str, first: Any
) -> tuple[list[Any], list[str | None], list[str | None]] | None:
    """All main pages as (first page + virtual frames), with their PageName and description.

    ``None`` when a page differs from the first in layout or anything is unusual; the caller
    then loads full pages with tifffile.
    """
    if _next_ifd_offset(tif, first.offset) == 0:  # single page: nothing to compare
        return [first], [tag_text(first, PAGE_NAME)], [tag_text(first, IMAGE_DESCRIPTION)]
    global _LAST_FIRST_PAGE
    alike: _FirstPageLayout | None
    quick = _first_page_like_last(tif, first.offset)
    if quick is not None:
        first_values, next_offset, alike = quick
    else:
        entries: list[tuple[int, int, int]] = []
        scanned = _scan_ifd(tif, first.offset, entries)
        if scanned is None or SUB_IFDS in scanned[0] or JPEG_TABLES in scanned[0]:
            return None
        first_values, next_offset = scanned
        try:
            alike = _FirstPageLayout(tif, first.offset, first_values, entries)
        except (struct.error, OSError, ValueError):
            alike = None
        if alike is not None and not alike.usable:
            alike = None
        if alike is not None:
            others = {k: v for k, v in first_values.items() if k not in _PER_PAGE_TAGS}
            _LAST_FIRST_PAGE = (tif.tiff, alike.compiled, alike.expected, others)
    layout = [first_values.get(code) for code in LAYOUT_TAGS]
    pages: list[Any] = [first]
    page_names: list[str | None] = [first_values.get(PAGE_NAME)]
    descriptions: list[str | None] = [first_values.get(IMAGE_DESCRIPTION)]
    seen = {first.offset}  # IFD offsets already visited: a chain that loops is damaged
    size = tif.filehandle.size
    while next_offset:
        if next_offset >= size:
            raise DeparrayReadError(
                path,
                f"truncated file: page {len(pages)} would start at byte {next_offset}, "
                f"beyond the end of the file ({size} bytes)",
            )
        if next_offset in seen:
            raise EndlessStructureError(
                path,
                f"corrupt TIFF: its chain of image directories loops back on itself (after "
                f"{len(seen):,} image directories, it points back to the one at byte "
                f"{next_offset:,})",
            )
        if len(pages) >= _MAX_PAGES:
            return None
        seen.add(next_offset)
        # a page laid out like the first is recognised from its bytes; others are scanned
        scanned = alike.match(tif, next_offset) if alike is not None else None
        if scanned is not None:
            values, following = scanned
        else:
            scanned = _scan_ifd(tif, next_offset)
            if scanned is None:
                return None
            values, following = scanned
            if values.get(NEW_SUBFILE_TYPE, (0,))[0] & 1:  # a thumbnail: not a plane
                next_offset = following
                continue
            if [values.get(code) for code in LAYOUT_TAGS] != layout or SUB_IFDS in values:
                return None
        # where the page's pixel data is: strips, or tiles in tiled files
        offsets = values.get(TILE_OFFSETS) or values.get(STRIP_OFFSETS)
        counts = values.get(TILE_BYTE_COUNTS) or values.get(STRIP_BYTE_COUNTS)
        if not offsets or not counts or len(offsets) != len(counts) or JPEG_TABLES in values:
            return None
        frame = tifffile.TiffFrame(  # decodes with the first page's layout (its key frame)
            tif,
            index=len(pages),
            offset=next_offset,
            keyframe=first,
            dataoffsets=tuple(offsets),
            databytecounts=tuple(counts),
        )
        pages.append(frame)
        page_names.append(values.get(PAGE_NAME))
        descriptions.append(values.get(IMAGE_DESCRIPTION))
        next_offset = following
    return pages, page_names, descriptions
