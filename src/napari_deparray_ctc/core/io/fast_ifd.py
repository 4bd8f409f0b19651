"""A minimal IFD parser: list the pages of a plain multi-page TIFF without tifffile's series.

A TIFF is a chain of IFDs (image file directories), one per page. Each IFD is a count of
entries, then that many fixed-size entries ``(tag, type, count, value-or-offset)``, then the
offset of the next IFD (0 at the last page). Parsing every page with tifffile (and its series
detection) costs more than reading a small cell image, so for plain files this module reads
only the few tags it needs from the pages after the first, checks that their layout matches
the first page, and hands them to tifffile as ``TiffFrame`` objects that decode like the first
page. Anything unusual returns ``None``: the caller then parses the pages with tifffile, which
also words any error precisely.
"""

from __future__ import annotations

import struct
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
#: the only tags parsed; all others are skipped without reading their values
_WANTED = frozenset(
    (
        *LAYOUT_TAGS,
        NEW_SUBFILE_TYPE,
        IMAGE_DESCRIPTION,
        STRIP_OFFSETS,
        STRIP_BYTE_COUNTS,
        PAGE_NAME,
        TILE_OFFSETS,
        TILE_BYTE_COUNTS,
        SUB_IFDS,
        JPEG_TABLES,
    )
)

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


def _ifd_bytes(tif: tifffile.TiffFile, offset: int) -> bytes | None:
    """The IFD at ``offset`` (entry count, entries, next-IFD offset): as the survey that
    :func:`~.common.open_tiff` ran read it (with the bytes that followed it in that read), or
    read now; ``None`` when cut short."""
    survey = getattr(tif, "deparray_survey", None)
    kept = survey.main_blocks.get(offset) if survey is not None else None
    if kept is not None:
        return kept
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
    return head + block


def _scan_ifd(tif: tifffile.TiffFile, offset: int) -> tuple[dict[int, Any], int] | None:
    """The wanted tags of the IFD at ``offset``, and the offset of the next IFD.

    Returns ``(values, next_ifd_offset)``: a tag's value is a tuple of numbers, or a string for
    ASCII tags. ``None`` when anything is unusual.
    """
    fmt = tif.tiff  # classic TIFF or BigTIFF: entry sizes, byte order, offset format
    try:
        ifd = _ifd_bytes(tif, offset)
        if ifd is None:
            return None
        (count,) = struct.unpack_from(fmt.tagnoformat, ifd)
        start = fmt.tagnosize
        end = start + fmt.tagsize * count
        if count > _MAX_ENTRIES or len(ifd) < end + fmt.offsetsize:
            return None
        values: dict[int, Any] = {}
        byteorder, threshold = fmt.byteorder, fmt.tagoffsetthreshold
        handle = None
        for code, kind, n_items, raw in struct.iter_unpack(fmt.tagheaderformat, ifd[start:end]):
            if code not in _WANTED:
                continue
            item = _TYPE_ITEMS.get(kind)
            if item is None:
                return None
            size = n_items * _ITEM_SIZES[kind]
            if size > _MAX_TAG_BYTES:
                return None
            # a value that fits in the entry is stored in it; a longer one elsewhere, at the
            # offset the entry holds instead (4 bytes in classic TIFF, 8 in BigTIFF)
            if size > threshold:
                (position,) = struct.unpack(fmt.offsetformat, raw)
                if offset <= position and position + size <= offset + len(ifd):
                    raw = ifd[position - offset : position - offset + size]  # read already
                else:
                    handle = handle or tif.filehandle
                    handle.seek(position)
                    raw = handle.read(size)
                if len(raw) < size:
                    return None
            else:
                raw = raw[:size]
            if kind == _ASCII:  # NUL-terminated; the first of repeated tags wins
                values.setdefault(code, raw.split(b"\0", 1)[0].decode("utf-8", "replace"))
            elif n_items == 1:
                values[code] = _SINGLE_ITEMS[byteorder, kind].unpack(raw)
            else:
                values[code] = struct.unpack(f"{byteorder}{n_items}{item}", raw)
        # the next-IFD offset follows the entries
        (next_offset,) = struct.unpack_from(fmt.offsetformat, ifd, end)
        return values, next_offset
    except (struct.error, OSError, ValueError):
        return None


def _next_ifd_offset(tif: tifffile.TiffFile, offset: int) -> int | None:
    """Offset of the IFD after the one at ``offset`` (0 at the last page), or ``None``."""
    fmt = tif.tiff
    try:
        ifd = _ifd_bytes(tif, offset)
        if ifd is None:
            return None
        (count,) = struct.unpack_from(fmt.tagnoformat, ifd)
        return struct.unpack_from(fmt.offsetformat, ifd, fmt.tagnosize + count * fmt.tagsize)[0]
    except (struct.error, OSError, ValueError):
        return None


def plain_page_list(
    tif: tifffile.TiffFile, path: str, first: Any
) -> tuple[list[Any], list[str | None], list[str | None]] | None:
    """All main pages as (first page + virtual frames), with their PageName and description.

    ``None`` when a page differs from the first in layout or anything is unusual; the caller
    then loads full pages with tifffile.
    """
    if _next_ifd_offset(tif, first.offset) == 0:  # single page: nothing to compare
        return [first], [tag_text(first, PAGE_NAME)], [tag_text(first, IMAGE_DESCRIPTION)]
    scanned = _scan_ifd(tif, first.offset)
    if scanned is None or SUB_IFDS in scanned[0] or JPEG_TABLES in scanned[0]:
        return None
    first_values, next_offset = scanned
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
