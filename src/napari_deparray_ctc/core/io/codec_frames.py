"""Frame sizes declared inside compressed image data, checked before anything is decoded.

Image codecs used in TIFF (JPEG, JPEG 2000, PNG, WebP) store their own frame size in each strip
or tile, and their decoders allocate what that frame size asks for, whatever the TIFF header
says. One damaged JPEG header in a 600-byte file asked for a 65,000 × 65,000 px frame: 4 GB of
memory and 8 s for one grey plane, 12.7 GB for a colour one (the deep-fuzz blow-up of issue
15). Before a page is decoded, :func:`check_frames` reads the few header bytes of each of its
strips or tiles and refuses a frame larger than the page itself. Codecs whose frame headers
are not parsed here (JPEG XL, JPEG XR, LERC, Jetraw, EER) are refused from the TIFF header by
:func:`uncheckable_codec` instead.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

from napari_deparray_ctc.core.errors import DeparrayReadError

#: TIFF Compression values -> the codec whose stream declares its frame size
_JPEG = frozenset((6, 7, 33007, 34892))
_JPEG2000 = frozenset((33003, 33004, 33005, 34712))
_PNG = frozenset((34933,))
_WEBP = frozenset((50001, 34927))
_CHECKED = _JPEG | _JPEG2000 | _PNG | _WEBP
#: codecs with their own frame size that is not parsed here: refused from the header
_UNCHECKED = {
    22610: "JPEG XR",
    34934: "JPEG XR",
    50002: "JPEG XL",
    52546: "JPEG XL",
    34887: "LERC",
    48124: "Jetraw",
    65000: "EER",
    65001: "EER",
    65002: "EER",
}
#: JPEG markers: start of frame (all but DHT C4, JPG C8, DAC CC), and markers without length
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_NO_LENGTH = frozenset((0x01, 0xD8, *range(0xD0, 0xD8)))
_MAX_MARKERS = 512
#: slack for MCU padding: a JPEG frame may be a block larger than its strip
_SLACK_PX = 16
_MAX_COMPONENTS = 4


def uncheckable_codec(compression: int) -> str | None:
    """The codec's name when its frames cannot be size-checked here, else ``None``."""
    return _UNCHECKED.get(int(compression))


def _jpeg_frame(handle: BinaryIO, start: int, end: int) -> tuple[int, int, int] | None:
    """(height, width, components) from the SOF marker of a JPEG stream, or ``None``."""
    handle.seek(start)
    if handle.read(2) != b"\xff\xd8":  # SOI
        return None
    position = start + 2
    for _ in range(_MAX_MARKERS):
        handle.seek(position)
        head = handle.read(2)
        if len(head) < 2 or head[0] != 0xFF:
            return None
        marker = head[1]
        position += 2
        if marker == 0xFF:  # fill byte: the marker follows
            position -= 1
            continue
        if marker in _NO_LENGTH:
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before
            return None
        (length,) = struct.unpack(">H", handle.read(2))
        if marker in _SOF:
            body = handle.read(6)
            if len(body) < 6:
                return None
            _precision, height, width, components = struct.unpack(">BHHB", body)
            return height, width, components
        position += length
        if position >= end:
            return None
    return None


def _png_frame(handle: BinaryIO, start: int) -> tuple[int, int, int] | None:
    handle.seek(start)
    head = handle.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return height, width, 4


def _webp_frame(handle: BinaryIO, start: int) -> tuple[int, int, int] | None:
    handle.seek(start)
    head = handle.read(30)
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the 3-byte start code
        width, height = struct.unpack("<HH", head[26:30])
        return height & 0x3FFF, width & 0x3FFF, 4
    if chunk == b"VP8L":  # lossless: 14 bits each, minus one, after the signature byte
        (bits,) = struct.unpack("<I", head[21:25])
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1, 4
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes, minus one
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return height, width, 4
    return None


def _jpeg2000_frame(handle: BinaryIO, start: int, end: int) -> tuple[int, int, int] | None:
    """From the SIZ marker of a codestream, or the ``ihdr`` box of a JP2 file."""
    handle.seek(start)
    head = handle.read(12)
    if head[:4] == b"\xff\x4f\xff\x51":  # SOC then SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz
        body = handle.read(30)  # Ysiz ... YTOsiz, then Csiz
        if len(body) < 30:
            return None
        xsiz, ysiz, xo, yo = struct.unpack(">IIII", head[8:12] + body[:12])
        (components,) = struct.unpack(">H", body[28:30])
        return ysiz - yo, xsiz - xo, components
    position = start
    for _ in range(_MAX_MARKERS):  # JP2 boxes: length (4), type (4), contents
        handle.seek(position)
        box = handle.read(8)
        if len(box) < 8:
            return None
        length, kind = struct.unpack(">I4s", box)
        if kind == b"jp2h":
            position += 8  # a superbox: its first child is ihdr
            continue
        if kind == b"ihdr":
            height, width, components = struct.unpack(">IIH", handle.read(10))
            return height, width, components
        if kind == b"jp2c":
            return _jpeg2000_frame(handle, position + 8, end)
        if length < 8:
            return None
        position += length
        if position >= end:
            return None
    return None


def _frames(handle: BinaryIO, page: Any, compression: int) -> Iterator[tuple[int, int, int] | None]:
    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
        if not count:
            continue
        end = offset + count
        if compression in _JPEG:
            yield _jpeg_frame(handle, offset, end)
        elif compression in _JPEG2000:
            yield _jpeg2000_frame(handle, offset, end)
        elif compression in _PNG:
            yield _png_frame(handle, offset)
        elif compression in _WEBP:
            yield _webp_frame(handle, offset)


def check_frames(path: str, handle: BinaryIO, page: Any) -> None:
    """Refuse a page whose compressed strips or tiles declare frames larger than the page.

    Reads a few header bytes per strip or tile (no decoding). Pages of other compressions
    return at once: tifffile decodes those into buffers of the page's own size.
    """
    key = getattr(page, "keyframe", None) or page  # a TiffFrame decodes like its key frame
    compression = int(getattr(key, "compression", 1) or 1)
    if compression not in _CHECKED:
        return
    height = int(getattr(key, "imagelength", 0) or 0)
    width = int(getattr(key, "imagewidth", 0) or 0)
    try:
        frames = list(_frames(handle, page, compression))
    except (OSError, struct.error, ValueError):
        return  # unreadable header bytes: the decoder reports the damage itself
    for frame in frames:
        if frame is None:
            continue
        frame_height, frame_width, components = frame
        if (
            frame_height > height + _SLACK_PX
            or frame_width > width + _SLACK_PX
            or components > _MAX_COMPONENTS
        ):
            raise DeparrayReadError(
                path,
                f"corrupt compressed data: a strip or tile declares a {frame_height}×"
                f"{frame_width} px frame with {components} component(s), larger than the "
                f"{height}×{width} px image; not decoded to keep memory bounded",
            )
