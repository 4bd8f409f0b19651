"""Refusals decided from a TIFF's header, before any pixel is read.

Each check raises :class:`~napari_deparray_ctc.core.errors.DeparrayReadError` with the reason in
words: pixel types and plane sizes, colour images, codecs that are missing or unsupported, and
declared sizes that the file cannot hold (the memory bombs found by fuzzing).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import tifffile

from napari_deparray_ctc.core.errors import DeparrayReadError
from napari_deparray_ctc.core.io.codec_frames import uncheckable_codec
from napari_deparray_ctc.core.io.common import ALLOWED_KINDS, MIN_SIDE_PX
from napari_deparray_ctc.core.io.types import NotACellImageError

#: TIFF Photometric values whose samples are colour components, not channels
_COLOUR_PHOTOMETRICS = {
    2: "RGB",
    5: "CMYK",
    6: "YCbCr",
    8: "CIELab",
    9: "ICCLab",
    10: "ITULab",
    32844: "LogL",
    32845: "LogLuv",
}
_PALETTE = 3
#: ExtraSamples values: 1 = associated alpha, 2 = unassociated alpha (0 = unspecified)
_ALPHA_SAMPLES = (1, 2)


def check_plane(path: str, height: int, width: int, dtype: np.dtype, max_pixels: int) -> None:
    """Refuse pixel types other than integers and floats, and planes too large or too small."""
    if dtype.kind == "b":
        raise NotACellImageError(
            path,
            "1-bit black-and-white image (two grey levels); cell images need 8 bits per pixel "
            "or more",
        )
    if dtype.kind not in ALLOWED_KINDS:
        raise NotACellImageError(path, f"unsupported pixel type {dtype} (need integer or float)")
    if height * width > max_pixels:
        side = math.isqrt(max_pixels)
        raise NotACellImageError(
            path,
            f"image is {height}×{width} px, above the limit of {max_pixels:,} px per plane "
            f"(about {side}×{side}); not read to keep memory bounded "
            "(raise max_pixels to read it anyway)",
        )
    if height < MIN_SIDE_PX or width < MIN_SIDE_PX:
        raise NotACellImageError(path, f"image is {height}×{width} px, too small for a cell image")


def check_tiles(path: str, pages: Iterable[Any], max_pixels: int) -> None:
    """Refuse tiles larger than the largest plane read (a damaged TileWidth/TileLength).

    tifffile allocates a buffer per tile from these tags: one flipped bit in a 4 kB file
    asked for a 32 × 16,777,232 px tile, a gigabyte (found by fuzzing).
    """
    for page in pages:
        if not isinstance(page, tifffile.TiffPage) or not page.is_tiled:
            continue
        tile_pixels = page.tilewidth * page.tilelength * max(1, page.tiledepth)
        if tile_pixels > max_pixels:
            raise DeparrayReadError(
                path,
                f"corrupt tile size {page.tilelength}×{page.tilewidth} px (more than the "
                f"{max_pixels:,} px limit per plane)",
            )


def is_intensity_lut(colormap: Any) -> bool:
    """True when a palette only tints grey levels (each colour component rises with the index).

    ImageJ and Leica LAS save a single channel shown through a colour lookup table (a green
    ramp, say) as a palette TIFF; its pixel values are the grey levels. A real colour palette
    (indexed colours) goes up and down.
    """
    try:
        table = np.asarray(colormap, dtype=np.int64)
    except (TypeError, ValueError):
        return False
    if table.ndim != 2 or table.shape[0] != 3 or table.shape[1] < 2:
        return False
    rising = bool((np.diff(table, axis=1) >= 0).all())
    return rising and bool((table[:, -1] > table[:, 0]).any())


def check_colour(path: str, page: Any, samples: int, samples_last: bool) -> None:
    """Refuse colour images; grey samples stored as planes are channels.

    Parameters
    ----------
    path
        The file, for the message.
    page
        The page (or key frame) whose photometric interpretation decides.
    samples
        Samples per pixel (the size of tifffile's ``S`` axis; 1 when there is none).
    samples_last
        The samples are interleaved (``YXS``) rather than planar (``SYX``).
    """
    photometric = int(getattr(page, "photometric", 1))
    if photometric == _PALETTE:
        if is_intensity_lut(getattr(page, "colormap", None)):
            return  # a grey plane shown through a colour lookup table
        raise NotACellImageError(
            path, "palette colour image (indexed colours); channels must be grey-level planes"
        )
    if samples <= 1:
        # one sample per pixel: a grey plane, whatever the photometric tag says (tifffile
        # reports planar colour components as a C axis only when the file's metadata declares
        # them channels; SGI LogL is grey luminance, refused by its codec when undecodable)
        return
    extra = tuple(getattr(page, "extrasamples", ()) or ())
    if samples_last or photometric in _COLOUR_PHOTOMETRICS:
        kind = _COLOUR_PHOTOMETRICS.get(photometric, "multi-sample")
        raise NotACellImageError(
            path,
            f"{kind} colour image ({samples} samples per pixel); DEPArray channels must be "
            "grey-level planes (one page or C-axis plane per channel)",
        )
    if any(value in _ALPHA_SAMPLES for value in extra):
        raise NotACellImageError(
            path,
            f"grey image with a transparency (alpha) sample ({samples} samples per pixel); "
            "channels must be grey-level planes without transparency",
        )


def check_codecs(path: str, pages: Iterable[Any]) -> None:
    """Refuse compressions and predictors that cannot be decoded here, naming what is missing.

    tifffile decodes LZW, JPEG, ZSTD, WebP... through ``imagecodecs`` (a dependency of this
    plugin; a broken install may lack it) and does not decode some rare TIFF compressions at
    all (SGI LogL/LogLuv, for example).
    """
    seen: set[tuple[int, int]] = set()
    for page in pages:
        compression = int(getattr(page, "compression", 1) or 1)
        predictor = int(getattr(page, "predictor", 1) or 1)
        if (compression, predictor) in seen:
            continue
        seen.add((compression, predictor))
        unchecked = uncheckable_codec(compression)
        if unchecked is not None:
            raise DeparrayReadError(
                path,
                f"{unchecked} compression is not read: its frames declare their own size, which "
                "cannot be checked before decoding (a damaged one can ask for gigabytes of "
                "memory); save the image uncompressed, or with LZW or Deflate compression",
            )
        if compression != 1:
            try:
                tifffile.TIFF.DECOMPRESSORS[compression]
            except KeyError as exc:
                raise DeparrayReadError(path, _codec_reason(compression, str(exc))) from None
        if predictor != 1:
            try:
                tifffile.TIFF.UNPREDICTORS[predictor]
            except KeyError as exc:
                raise DeparrayReadError(
                    path, _codec_reason(compression, str(exc), predictor=predictor)
                ) from None


def compression_name(code: int) -> str:
    """The compression's name in words (``LZW``, ``ZSTD``, ``compression 34676``)."""
    try:
        return tifffile.COMPRESSION(code).name.replace("_", " ")
    except ValueError:
        return f"compression {code}"


def _codec_reason(compression: int, message: str, predictor: int | None = None) -> str:
    what = compression_name(compression) + " compression"
    if predictor is not None:
        try:
            kind = tifffile.PREDICTOR(predictor).name.lower()
        except ValueError:
            kind = f"number {predictor}"
        what = f"the {kind} predictor of {what}"
    if "imagecodecs" in message:
        return (
            f"{what} needs the 'imagecodecs' package, which is not installed "
            "(install it with: pip install imagecodecs)"
        )
    return (
        f"{what} (code {compression}) cannot be decoded by tifffile or imagecodecs; "
        "save the image uncompressed, or with LZW or Deflate compression"
    )


def decode_reason(page: Any, exc: BaseException) -> str | None:
    """Words for a failure to decode pixels that a missing or unsupported codec caused.

    ``None`` when ``exc`` is not about a codec (the caller reports a damaged file then).
    """
    message = str(exc)
    compression = int(getattr(page, "compression", 1) or 1)
    bits = getattr(page, "bitspersample", 8)
    if isinstance(exc, ImportError):  # e.g. ZSTD through Python 3.14's compression.zstd
        module = getattr(exc, "name", None) or "a codec module"
        return (
            f"{compression_name(compression)} compression needs the Python module "
            f"'{module}', which is not installed; install imagecodecs "
            "(pip install imagecodecs), which decodes it"
        )
    if "imagecodecs" not in message and "not supported" not in message:
        return None
    if compression == 1 and bits not in (8, 16, 32, 64):
        return (
            f"{bits}-bit packed pixels need the 'imagecodecs' package to unpack, which is not "
            "installed (install it with: pip install imagecodecs)"
        )
    return _codec_reason(compression, message)


_OME_PIXELS_RE = re.compile(r"<(?:\w+:)?Pixels\b[^>]*>")
_OME_PLANE_SIZE_RE = re.compile(r"\bSize([CZT])\s*=\s*[\"'](\d+)[\"']")
_MIN_OME_PLANE_LIMIT = 10_000


def check_ome_plane_count(tif: tifffile.TiffFile, path: str) -> None:
    """Refuse OME-XML that declares far more image planes than the file can hold.

    tifffile builds Python lists as long as the declared SizeC × SizeZ × SizeT when it parses
    the OME series: a 1 kB file declaring 10**7 planes took minutes and gigabytes of memory
    (found by fuzzing). Each plane needs its own IFD (tens of bytes at least), so more than
    ``file size / 64`` planes (and more than :data:`_MIN_OME_PLANE_LIMIT`) is corrupt metadata.
    """
    try:
        if not tif.is_ome:
            return
        xml = tif.pages.first.description
    except Exception:  # tifffile reports unreadable headers itself, later
        return
    declared = 0
    for pixels in _OME_PIXELS_RE.finditer(xml):
        planes = 1
        for _axis, size in _OME_PLANE_SIZE_RE.findall(pixels.group(0)):
            planes *= max(1, int(size))
        declared += planes
    limit = max(_MIN_OME_PLANE_LIMIT, tif.filehandle.size // 64)
    if declared > limit:
        raise DeparrayReadError(
            path,
            f"corrupt OME-XML metadata: it declares {declared:,} image planes, more than a "
            f"file of {tif.filehandle.size:,} bytes can hold",
        )


def check_series_fits(path: str, series: Any, tif: tifffile.TiffFile) -> None:
    """Refuse a series whose metadata declares more image planes than the file holds.

    tifffile trusts shape metadata (a ``{"shape": [...]}`` description, ImageJ ``images=``):
    a one-page file declaring 10**8 or 10**9 planes became that many cells here and ran out of
    memory (found by fuzzing). A series may declare more planes than the file has pages (IFDs)
    only when its data is stored contiguously, uncompressed, and then it must fit in the file.
    """
    axes, shape = series.axes, tuple(series.shape)
    planes = math.prod(n for ax, n in zip(axes, shape, strict=True) if ax not in "YXS")
    n_pages = len(tif.pages)  # the IFDs really in the file
    file_size = tif.filehandle.size
    if planes <= n_pages or series.nbytes <= file_size:
        return
    raise DeparrayReadError(
        path,
        f"corrupt metadata: it declares {planes:,} image planes (shape {shape}) but the file "
        f"holds {n_pages:,} page(s) and {file_size:,} bytes",
    )


#: pixels a file may declare beyond its own size before its compression ratio is checked
DECLARED_BYTES_LIMIT = 1024**3
#: the largest ratio of declared pixel bytes to file bytes believed above that size; image
#: data rarely compresses 20-fold, only blank planes do
MAX_COMPRESSION_RATIO = 256


def check_declared_size(path: str, declared: int, file_size: int) -> None:
    """Refuse a small compressed file that declares gigabytes of pixels (a deflate bomb).

    Each page decodes into a buffer of its declared size, so one page is bounded by
    :data:`~napari_deparray_ctc.core.io.common.MAX_PIXELS_PER_PLANE`; but a few megabytes of
    zlib pages of zeros declare and decode to gigabytes (1000-fold). Above
    :data:`DECLARED_BYTES_LIMIT`, more than :data:`MAX_COMPRESSION_RATIO` times the file size
    is refused from the header. Uncompressed data must lie in the file, so it always passes.
    """
    if declared <= DECLARED_BYTES_LIMIT or declared <= MAX_COMPRESSION_RATIO * file_size:
        return
    raise DeparrayReadError(
        path,
        f"corrupt or hostile compressed data: the file ({file_size:,} bytes) declares "
        f"{declared / 1024**3:.1f} GB of pixels, more than {MAX_COMPRESSION_RATIO} times its "
        "size; not decoded to keep memory bounded",
    )
