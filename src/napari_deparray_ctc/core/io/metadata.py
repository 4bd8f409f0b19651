"""Channel names and pixel size from a TIFF's metadata (OME, ImageJ, TIFF tags)."""

from __future__ import annotations

import json
import math
from typing import Any

import tifffile

from napari_deparray_ctc.core.channels import (
    KNOWN_CHANNELS,
    canonical_channel,
    is_non_channel_name,
)
from napari_deparray_ctc.core.io.common import tag_text
from napari_deparray_ctc.core.io.types import NotACellImageError, Plan

IMAGE_DESCRIPTION = tifffile.TIFF.TAGS["ImageDescription"]  # 270
PAGE_NAME = tifffile.TIFF.TAGS["PageName"]  # 285
MICROMANAGER = tifffile.TIFF.TAGS["MicroManagerMetadata"]  # 51123


def _ome_info(tif: tifffile.TiffFile) -> tuple[list[list[str | None]], float | None]:
    """Channel names per OME Image and the first PhysicalSizeX in µm."""
    import xml.etree.ElementTree as ElementTree

    text = tif.ome_metadata
    if not text:
        return [], None
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return [], None
    names_per_image: list[list[str | None]] = []
    pixel_size = None
    for image in (el for el in root if el.tag.endswith("}Image") or el.tag == "Image"):
        pixels = next((el for el in image if el.tag.endswith("Pixels")), None)
        if pixels is None:
            continue
        channels = [el for el in pixels if el.tag.endswith("}Channel") or el.tag == "Channel"]
        names = [ch.get("Name") for ch in channels]
        if len(names) == 1 and not names[0]:
            names = [image.get("Name")]
        names_per_image.append(names)
        if pixel_size is None and pixels.get("PhysicalSizeX"):
            try:
                value = float(pixels.get("PhysicalSizeX", ""))
            except ValueError:
                value = float("nan")
            unit = pixels.get("PhysicalSizeXUnit", "µm")
            factor = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}.get(unit)
            if factor is not None and math.isfinite(value) and value > 0:
                pixel_size = value * factor
    return names_per_image, pixel_size


def _clean_description(text: str | None) -> str | None:
    if not text:
        return None
    text = text.strip()
    if (
        not text
        or len(text) > 48
        or "\n" in text
        or text[0] in "{<["
        or text.startswith(("ImageJ=", "Created", "Shaped"))
        or not text.isprintable()
    ):
        return None
    return text


def _channel_pages(plan: Plan) -> list[Any] | None:
    """The page holding each channel plane of the first cell, or ``None`` if not page-aligned."""
    try:
        if plan.pages is not None:
            return plan.pages[: plan.n_channels]
        if len(plan.series) > 1:
            return [item.pages[0] for item in plan.series[: plan.n_channels]]
        if plan.page_index is None:
            return None
        pages = plan.series[0].pages
        return [pages[plan.page_index(0, c)] for c in range(plan.n_channels)]
    except Exception:
        return None


def _names(raw: list[Any], keep_titles: bool = False) -> list[str | None]:
    """Stripped names, with the names that are not channel names (page titles, slice labels)
    dropped unless ``keep_titles``."""
    names: list[str | None] = []
    for value in raw:
        text = str(value).splitlines()[0].strip() if value else ""
        keep = text and (keep_titles or not is_non_channel_name(text))
        names.append(text if keep else None)
    return names


def stored_channel_names(
    tif: tifffile.TiffFile, plan: Plan, page_channels: list[str] | None = None
) -> list[str | None] | None:
    """Channel names in the file: OME, ImageJ Labels, Micro-Manager, PageName, ImageDescription.

    ``page_channels``: the per-page channel names of a Micro-Manager file (see
    :func:`micromanager_axes`). Names that only title a page (GIMP's ``Background``) or label
    a slice (ImageJ's ``243``, ``c:1/2 z:30/64``) are not channel names and are dropped.
    """
    return _stored_names(tif, plan, page_channels, keep_titles=False)


def stored_plane_labels(
    tif: tifffile.TiffFile, plan: Plan, page_channels: list[str] | None = None
) -> list[str | None] | None:
    """The names the file gives its planes, page titles and slice labels included.

    Parameters
    ----------
    tif
        The open file.
    plan
        Its plan (the channel planes of the first cell are looked up).
    page_channels
        As for :func:`stored_channel_names`.

    Returns
    -------
    list of (str or None), or None
        One entry per channel plane, from the first source that names any plane (OME
        ``Channel@Name``, ImageJ ``Labels``, Micro-Manager, ``PageName``); ``None`` when the
        file names none. Unlike :func:`stored_channel_names`, GIMP's ``Background`` and ImageJ
        position labels are kept: they are what the user sees in other software, and the layer
        shows them beside the channel the plane is used as.
    """
    try:
        return _stored_names(tif, plan, page_channels, keep_titles=True)
    except NotACellImageError:
        raise
    except Exception:  # a label is only shown: never a reason to refuse the file
        return None


def _stored_names(
    tif: tifffile.TiffFile, plan: Plan, page_channels: list[str] | None, keep_titles: bool
) -> list[str | None] | None:
    def _channel_names(raw: list[Any]) -> list[str | None]:
        return _names(raw, keep_titles)

    n = plan.n_channels
    if tif.is_ome:
        per_image, _ = _ome_info(tif)
        if len(plan.series) > 1 and len(per_image) >= n:
            names = _channel_names([image[0] if image else None for image in per_image[:n]])
        elif per_image and len(per_image[0]) == n:
            names = _channel_names(per_image[0])
        else:
            names = []
        if any(names):
            return names
    if tif.is_imagej:
        labels = (tif.imagej_metadata or {}).get("Labels")
        if isinstance(labels, (list, tuple)) and labels:
            indices = (
                [plan.page_index(0, c) for c in range(n)]
                if plan.page_index is not None
                else list(range(n))
            )
            names = _channel_names([labels[i] if i < len(labels) else None for i in indices])
            if any(names):
                return names
    if page_channels and plan.page_index is not None:
        names = _channel_names([page_channels[plan.page_index(0, c)] for c in range(n)])
        if any(names):
            return names
    if plan.pages is not None:
        raw_names = (plan.page_names or [])[:n]
        raw_descriptions = (plan.page_descriptions or [])[:n]
    else:
        pages = _channel_pages(plan)
        if not pages:
            return None
        raw_names = [tag_text(page, PAGE_NAME) for page in pages]
        raw_descriptions = [tag_text(page, IMAGE_DESCRIPTION) for page in pages]
    names = _channel_names(raw_names)
    if any(names):
        return names
    if keep_titles:
        return None  # a description describes the image; it names a plane only as a channel
    descriptions = _channel_names([_clean_description(text) for text in raw_descriptions])
    if not descriptions:
        return None
    if n == 1:
        known = descriptions[0] and canonical_channel(descriptions[0]) in KNOWN_CHANNELS
        return descriptions if known else None
    if all(descriptions) and len(set(descriptions)) == n:
        return descriptions
    return None


#: Micro-Manager's per-image axes that are channels; any other that varies refuses the file
_MM_CHANNEL_KEYS = ("channel", "ChannelIndex")
_MM_AXIS_KEYS = {"SliceIndex": "z", "FrameIndex": "time", "PositionIndex": "position"}
_MM_MAX_PAGES = 10_000


def micromanager_axes(path: str, series: Any) -> list[str] | None:
    """The channel of each page of a Micro-Manager file, from its per-image metadata.

    tifffile reports a Micro-Manager (NDTiff) file as a plain page sequence, but every image
    carries its own axes (``{"channel": "DAPI", "time": 3}``). A file whose images differ in
    anything but the channel (z, time, position, tile row or column) is refused with what they
    are. ``None`` for files without such metadata.
    """
    try:
        pages = series.pages
        if len(pages) > _MM_MAX_PAGES or MICROMANAGER not in series.keyframe.tags:
            return None
        records = []
        for frame in pages:
            # a uniform series lists its pages after the first as frames, without their tags
            page = series.parent.pages.get(frame.index) if frame is not None else None
            tag = page.tags.get(MICROMANAGER) if page is not None else None
            value = tag.value if tag is not None else None
            if isinstance(value, str):
                value = json.loads(value)
            records.append(value if isinstance(value, dict) else {})
    except Exception:  # unusual metadata: the file is read as tifffile reports it
        return None
    varying: dict[str, set[str]] = {}
    channels: list[str] = []
    for record in records:
        axes = record.get("Axes")
        if isinstance(axes, dict):
            items = {str(k): v for k, v in axes.items()}
        else:
            items = {_MM_AXIS_KEYS.get(k, k): record[k] for k in _MM_AXIS_KEYS if k in record}
            if "ChannelIndex" in record:
                items["channel"] = record["ChannelIndex"]
        for key, value in items.items():
            varying.setdefault(key, set()).add(json.dumps(value, sort_keys=True))
        name = record.get("Channel") or items.get("channel")
        channels.append(str(name) if name not in (None, "") else "")
    others = {key: len(values) for key, values in varying.items() if key not in _MM_CHANNEL_KEYS}
    others = {key: count for key, count in others.items() if count > 1}
    if others:
        listed = " × ".join(f"{count} {key} values" for key, count in others.items())
        raise NotACellImageError(
            path,
            f"a Micro-Manager acquisition whose images differ in more than the channel "
            f"({listed}, from its per-image metadata); a cell image has one 2-D plane per "
            "channel, and z-planes, time points and tiles are never read as channels or cells",
        )
    return channels if any(channels) else None


#: TIFF ResolutionUnit values that are lengths: inch, centimetre, millimetre, micrometre
_UNIT_UM = (2, 3, 4, 5)


def pixel_size_um(tif: tifffile.TiffFile, page: Any) -> float | None:
    """Pixel size in µm from OME, ImageJ or TIFF resolution tags, when meaningful."""
    try:
        if tif.is_ome:
            _, size = _ome_info(tif)
            if size is not None:
                return size
        tags = getattr(page, "tags", None)
        if tags is None or 282 not in tags:
            return None
        unit = int(page.resolutionunit)
        in_microns = False
        if tif.is_imagej:
            ij_unit = str((tif.imagej_metadata or {}).get("unit", "")).lower()
            in_microns = ij_unit in ("micron", "microns", "um", "µm", "\\u00b5m", "μm")
        if not in_microns and unit not in _UNIT_UM:
            return None  # no unit of length: no size, whatever the resolution (most files)
        x_resolution = float(page.resolution[0])
        if not math.isfinite(x_resolution) or x_resolution <= 0:
            return None
        size = None
        if in_microns:
            size = 1.0 / x_resolution
        if size is None and unit == 3:
            size = 1e4 / x_resolution
        elif size is None and unit == 2:
            size = 25400.0 / x_resolution
        elif size is None and unit == 4:
            size = 1e3 / x_resolution
        elif size is None and unit == 5:
            size = 1.0 / x_resolution
        if size is not None and 0.01 <= size <= 100.0:
            return float(size)
    except Exception:
        return None
    return None
