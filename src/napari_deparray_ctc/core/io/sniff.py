"""The cheap probe behind ``napari_get_reader``: is this a DEPArray export? (no pixels).

The probe claims only what the reader will open. It needs evidence of a cell export (a
``labels.csv`` or channel map, class folders, a channel name or a DEPArray-like cell name in a
file name, channel names in a header, or small cell-sized images in a folder) and a header that
the reader accepts: a valid image that is not a cell export (a z-stack, a colour photo, a
mosaic...) is left to napari's own reader instead of being claimed and then refused. A damaged
file with a cell-like name is claimed, because napari's own reader could not open it either,
and the reader's error then says what is wrong with it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from napari_deparray_ctc.core.annotations.labels import class_from_folder_name
from napari_deparray_ctc.core.channels import (
    CHANNEL_MAP_FILENAMES,
    KNOWN_CHANNELS,
    canonical_channel,
    channel_from_name,
)
from napari_deparray_ctc.core.errors import DeparrayReadError
from napari_deparray_ctc.core.io.common import (
    DEPARRAY_NAME_RE,
    LABELS_FILENAME,
    MAX_PIXELS_PER_PLANE,
    is_tiff_name,
    natural_key,
    tiff_stem,
)
from napari_deparray_ctc.core.io.pixels import OpenFile
from napari_deparray_ctc.core.io.types import NotACellImageError, Plan

#: the largest plane side of an unnamed TIFF that is taken for a cell image in a folder
CELL_SIDE_PX = 512
#: files looked at in a folder (names), and headers read at most
_MAX_ENTRIES = 5000
_MAX_HEADERS = 3


def _named_like_a_cell(stem: str) -> bool:
    return channel_from_name(stem)[0] is not None or DEPARRAY_NAME_RE.search(stem) is not None


def _header(path: str, single_channel: bool) -> Plan:
    """The reader's plan of one file (raises what reading it would raise)."""
    handle = OpenFile(path, single_channel, MAX_PIXELS_PER_PLANE)
    handle.close()
    return handle.plan


def _names_channels(plan: Plan) -> bool:
    names = plan.stored_names or []
    return any(name and canonical_channel(name) in KNOWN_CHANNELS for name in names)


def _cell_sized(plan: Plan) -> bool:
    return plan.height <= CELL_SIDE_PX and plan.width <= CELL_SIDE_PX


def explain_file(path: str) -> tuple[bool, str]:
    """Whether the reader claims one TIFF file, and why not in words when it does not."""
    if os.path.lexists(path) and not os.path.exists(path):
        return False, "cannot open (broken or looping symbolic link)"
    if not is_tiff_name(path) or not os.path.isfile(path):
        return False, "not a TIFF file (the reader opens .tif and .tiff files and folders)"
    stem = tiff_stem(path)
    named = _named_like_a_cell(stem)
    single = channel_from_name(stem)[0] is not None
    try:
        plan = _header(path, single)
    except NotACellImageError as exc:
        return False, exc.reason  # a valid image of another kind: napari's own reader opens it
    except DeparrayReadError as exc:
        # damaged or unreadable: napari's own reader fails too, the reader's error says why
        return named, exc.reason
    if named or _names_channels(plan):
        return True, ""
    return False, (
        "neither its name nor its metadata names a channel or a DEPArray cell "
        "(cell0012_BF.tif, an OME or ImageJ channel name...), so napari's own reader opens it"
    )


def explain_folder(folder: str, depth: int = 0) -> tuple[bool, str]:
    """Whether the reader claims a folder, and why not in words when it does not."""
    tiffs: list[str] = []
    side_files = False
    evidence = False
    with os.scandir(folder) as entries:
        for count, entry in enumerate(entries):
            if count > _MAX_ENTRIES:
                break
            name = entry.name
            lower = name.lower()
            if name.startswith("."):
                continue
            if lower == LABELS_FILENAME or lower in CHANNEL_MAP_FILENAMES:
                side_files = True
                continue
            try:
                if entry.is_dir():
                    if depth == 0 and class_from_folder_name(name) is not None:
                        if explain_folder(entry.path, depth + 1)[0]:
                            return True, ""
                    continue
            except OSError:
                continue
            if is_tiff_name(lower):
                tiffs.append(entry.path)
                evidence = evidence or _named_like_a_cell(tiff_stem(name))
    if not tiffs:
        if side_files:
            return True, ""  # a labels.csv or channel map: cells in sub-folders, or none yet
        return False, "no cell images found: the folder holds no TIFF file"
    reasons = []
    for path in sorted(tiffs, key=natural_key)[:_MAX_HEADERS]:
        stem = tiff_stem(path)
        single = channel_from_name(stem)[0] is not None
        try:
            plan = _header(path, single)
        except NotACellImageError as exc:
            return False, f"{os.path.basename(path)}: {exc.reason}"
        except DeparrayReadError as exc:
            reasons.append(f"{os.path.basename(path)}: {exc.reason}")
            continue  # a damaged file: the next one decides
        if evidence or side_files or _names_channels(plan) or _cell_sized(plan):
            return True, ""
        return False, (
            f"its TIFF files do not look like cell images ({os.path.basename(path)} is "
            f"{plan.height}×{plan.width} px, larger than {CELL_SIDE_PX} px a side, and no "
            "file name or metadata names a channel or a DEPArray cell)"
        )
    # only damaged files were looked at: claimed when names show a cell export
    return evidence or side_files, "; ".join(reasons)


def explain_claim(path: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[bool, str]:
    """Whether the reader claims ``path``, and the reason in words when it does not.

    Reads no pixels and never raises. For a list of paths, claims it when any item is claimed.
    """
    try:
        if not isinstance(path, (str, os.PathLike)):
            reasons = []
            for item in list(path)[:64]:
                claimed, reason = explain_claim(item)
                if claimed:
                    return True, ""
                reasons.append(f"{os.path.basename(os.fspath(item))}: {reason}")
            return False, "; ".join(reasons[:3]) or "no path given"
        text = os.fspath(path)
        if os.path.isdir(text):
            return explain_folder(text)
        return explain_file(text)
    except Exception:  # the probe never raises
        return False, "it could not be inspected"


def is_probably_deparray(path: str | os.PathLike | Sequence[str | os.PathLike]) -> bool:
    """Cheap guess whether ``path`` is a DEPArray export this reader should claim.

    Reads no pixels and never raises. Claims folders holding a ``labels.csv`` or channel map,
    class sub-folders of cell TIFFs, TIFFs whose names hold a channel name or index token or a
    DEPArray-like cell name (``cell0012``, ``CTC_12``), TIFFs whose header names recognisable
    channels, and folders of small (≤ 512 px) cell-sized TIFFs; only when the reader accepts
    the header of the first files (see :func:`explain_claim` for the reason otherwise). An
    ordinary TIFF (``image.tif`` without channel names) is not claimed, so napari's default
    reader handles it. For a list of paths, claims it when any item is claimed.
    """
    return explain_claim(path)[0]
