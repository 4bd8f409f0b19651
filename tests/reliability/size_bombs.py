"""Hand-made declared-size bombs: small TIFFs whose headers or codec streams declare far more
pixels than they hold (issue 15). Each builder writes one file and returns its path; the
reader must refuse or read each one within the per-file budget (peak RSS < 1 GB, < 30 s).

A plain module (imported by ``test_size_bombs.py`` and ``test_bad_inputs.py``).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile


def _patch(path: Path, name: str, value, page: int = 0) -> None:
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[page].tags[name].overwrite(value)


def _entry_offset(path: Path, code: int) -> int:
    with tifffile.TiffFile(path) as tif:
        return tif.pages[0].tags[code].offset


def jpeg_frame(path: Path) -> Path:
    """A 16 × 16 px JPEG-compressed plane whose JPEG header declares 65,535 × 65,535 px.

    The input class behind the deep-fuzz blow-up: the decoder allocates the frame its stream
    declares, 4.3 GB per grey plane (measured: 4.2 GB peak, 8-10 s, for this 600-byte file).
    """
    tifffile.imwrite(path, np.zeros((16, 16), "uint8"), compression="jpeg")
    content = bytearray(path.read_bytes())
    sof = content.find(b"\xff\xc0")
    content[sof + 5 : sof + 9] = struct.pack(">HH", 65535, 65535)
    path.write_bytes(bytes(content))
    return path


def deflate_pages(path: Path, pages: int = 80, side: int = 4096) -> Path:
    """Deflate pages of zeros: 2.5 MB on disk that declare (and would decode to) 1.3 GB."""
    plane = np.zeros((side, side), "uint8")
    with tifffile.TiffWriter(path) as tif:
        for _ in range(pages):
            tif.write(
                plane, compression="zlib", compressionargs={"level": 9}, photometric="minisblack"
            )
    return path


def deflate_strip(path: Path, inflated: int = 1024**3) -> Path:
    """One 16 × 16 px page whose single deflate strip inflates to 1 GB."""
    tifffile.imwrite(path, np.zeros((16, 16), "uint8"), compression="zlib")
    data = zlib.compress(bytes(inflated), 9)
    with open(path, "ab") as handle:
        offset = handle.tell()
        handle.write(data)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["StripOffsets"].overwrite([offset])
        tif.pages[0].tags["StripByteCounts"].overwrite([len(data)])
    return path


def strip_byte_counts(path: Path) -> Path:
    """A StripByteCounts value of 4 GB in a 300-byte file."""
    tifffile.imwrite(path, np.zeros((16, 16), "uint8"), compression="zlib")
    _patch(path, "StripByteCounts", [0xFFFFFFF0])
    return path


def offsets_array(path: Path) -> Path:
    """A StripOffsets tag declaring 2**30 values (4 GB of offsets)."""
    tifffile.imwrite(path, np.zeros((16, 16), "uint8"))
    entry = _entry_offset(path, 273)
    content = bytearray(path.read_bytes())  # classic TIFF entry: code, type, count, value
    content[entry + 2 : entry + 12] = struct.pack("<HII", 4, 2**30, 8)
    path.write_bytes(bytes(content))
    return path


def colormap(path: Path) -> Path:
    """A palette whose ColorMap tag declares 2**31 values."""
    tifffile.imwrite(
        path,
        np.zeros((16, 16), "uint8"),
        photometric="palette",
        colormap=np.zeros((3, 256), "uint16"),
    )
    entry = _entry_offset(path, 320)
    content = bytearray(path.read_bytes())
    content[entry + 4 : entry + 8] = struct.pack("<I", 2**31 - 1)
    path.write_bytes(bytes(content))
    return path


def tile_size(path: Path) -> Path:
    """A tiled plane whose TileLength says 16,777,216 rows."""
    tifffile.imwrite(path, np.zeros((32, 32), "uint16"), tile=(16, 16))
    _patch(path, "TileLength", 16_777_216)
    return path


def imagej_images(path: Path) -> Path:
    """One page whose ImageJ header declares 10**9 images (slices)."""
    description = "ImageJ=1.11a\nimages=999999999\nslices=999999999\n"
    tifffile.imwrite(path, np.zeros((16, 16), "uint16"), description=description, metadata=None)
    return path


def shaped_planes(path: Path) -> Path:
    """One page whose tifffile shape description declares 10**12 planes."""
    description = '{"shape": [999999, 999999, 16, 16]}'
    tifffile.imwrite(path, np.zeros((16, 16), "uint16"), description=description, metadata=None)
    return path


def ome_planes(path: Path) -> Path:
    """One page whose OME-XML declares SizeC × SizeZ × SizeT = 3 × 10**11 planes."""
    description = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint16" '
        'SizeX="16" SizeY="16" SizeC="300000" SizeZ="1" SizeT="1000000">'
        '<Channel ID="Channel:0:0" Name="BF"/><TiffData/></Pixels></Image></OME>'
    )
    tifffile.imwrite(path, np.zeros((16, 16), "uint16"), description=description, metadata=None)
    return path


#: name -> (builder, what the reader says: a fragment of the refusal, or None if it opens)
BOMBS: dict[str, tuple[Callable[[Path], Path], str | None]] = {
    "jpeg-frame": (jpeg_frame, "declares a 65535×65535 px frame"),
    "deflate-pages": (deflate_pages, "GB of pixels, more than 256 times its size"),
    "deflate-strip": (deflate_strip, "corrupt or truncated TIFF"),
    "strip-byte-counts": (strip_byte_counts, "truncated file"),
    "offsets-array": (offsets_array, "corrupt or truncated TIFF"),
    "colormap": (colormap, "palette colour image"),
    "tile-size": (tile_size, "corrupt tile size"),
    "imagej-images": (imagej_images, None),  # tifffile reads the one page there is
    "shaped-planes": (shaped_planes, "corrupt metadata"),
    "ome-planes": (ome_planes, "corrupt OME-XML metadata"),
}
