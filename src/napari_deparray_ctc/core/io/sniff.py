"""The cheap probe behind ``napari_get_reader``: is this a DEPArray export? (no pixels).

The probe claims only what the reader will open. It needs evidence of a cell export (a
``labels.csv`` or channel map, class folders, a channel name or a DEPArray-like cell name in a
file name, channel names in a header, or small cell-sized images in a folder) and a header that
the reader accepts: a valid image that is not a cell export (a z-stack, a colour photo, a
mosaic...) is left to napari's own reader instead of being claimed and then refused. A damaged
file with a cell-like name is claimed, because napari's own reader could not open it either,
and the reader's error then says what is wrong with it.

The probe answers within a second whatever the file: it never opens a named pipe, socket or
device (it claims one named like a TIFF, so that napari's own reader, which would wait on it
forever, is not handed it; the reader then says what it is), it refuses looping or endless
chains of image directories before tifffile follows them (claimed the same way), and it
inspects the header of a file only when the file holds at most :data:`PROBE_MAX_IFDS` image
directories; a longer one is decided from its name (and a channel map beside it), and the
reader inspects it fully when it opens it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from napari_deparray_ctc.core.annotations.labels import class_from_folder_name
from napari_deparray_ctc.core.channels import (
    CHANNEL_MAP_FILENAMES,
    KNOWN_CHANNELS,
    ChannelMap,
    ChannelMapError,
    canonical_channel,
    channel_from_name,
)
from napari_deparray_ctc.core.errors import DeparrayReadError
from napari_deparray_ctc.core.io.common import (
    DEPARRAY_NAME_RE,
    LABELS_FILENAME,
    MAX_PIXELS_PER_PLANE,
    channel_map_in,
    error_from_exception,
    is_tiff_name,
    natural_key,
    tiff_stem,
)
from napari_deparray_ctc.core.io.ifd_chain import (
    EndlessStructureError,
    NotARegularFileError,
    not_regular_reason,
    survey_tiff,
)
from napari_deparray_ctc.core.io.pixels import OpenFile
from napari_deparray_ctc.core.io.types import NotACellImageError, Plan

#: the largest plane side of an unnamed TIFF that is taken for a cell image in a folder
CELL_SIDE_PX = 512
#: files looked at in a folder (names), and headers read at most
_MAX_ENTRIES = 5000
_MAX_HEADERS = 3
#: the most image directories (pages and sub-images) of a file whose header the probe inspects
PROBE_MAX_IFDS = 1024
#: channel names listed in a message at most
_LISTED_NAMES = 6


def _named_like_a_cell(stem: str, channel_map: ChannelMap | None = None) -> bool:
    return (
        channel_from_name(stem, channel_map)[0] is not None
        or DEPARRAY_NAME_RE.search(stem) is not None
    )


def _header(path: str, single_channel: bool) -> Plan | None:
    """The reader's plan of one file (raises what reading it would raise).

    ``None`` when the file holds more than :data:`PROBE_MAX_IFDS` image directories: the probe
    does not inspect it (the reader does, when it opens it).
    """
    if not survey_tiff(path, PROBE_MAX_IFDS).complete:
        return None
    handle = OpenFile(path, single_channel, MAX_PIXELS_PER_PLANE)
    handle.close()
    return handle.plan


def _map_beside(path: str) -> ChannelMap | None:
    """The channel map beside a file (``channels.csv``/``channels.txt``), if one is usable."""
    try:
        return channel_map_in(os.path.dirname(os.path.abspath(path)))
    except ChannelMapError:
        return None  # the reader reports the broken map


def _names_channels(plan: Plan, channel_map: ChannelMap | None = None) -> bool:
    names = plan.stored_names or []
    return any(name and canonical_channel(name, channel_map) in KNOWN_CHANNELS for name in names)


def _cell_sized(plan: Plan) -> bool:
    return plan.height <= CELL_SIDE_PX and plan.width <= CELL_SIDE_PX


def unknown_names_reason(plan: Plan) -> str | None:
    """Why a file whose metadata names only unknown channels is not claimed, in words.

    Parameters
    ----------
    plan
        The file's plan (:class:`~napari_deparray_ctc.core.io.types.Plan`).

    Returns
    -------
    str or None
        The channel names the file holds and how to open it as cells (a channel map beside
        it); ``None`` when the file names no channel.
    """
    names = [name for name in plan.stored_names or [] if name]
    if not names:
        return None
    listed = ", ".join(names[:_LISTED_NAMES]) + (", ..." if len(names) > _LISTED_NAMES else "")
    example = names[0]
    return (
        f"its metadata names {len(names)} channel(s) ({listed}), none of which the reader "
        "knows as a cell-image channel (BF, DAPI, FITC, PE, APC, ...), and its name is not a "
        "cell's, so napari's own reader opens it; to open it as cells, put a channel map "
        f"beside it: channels.csv with one line per channel naming its role, such as "
        f"'{example},DAPI' (docs/reader.md, \"The channel map file\")"
    )


def explain_file(path: str) -> tuple[bool, str]:
    """Whether the reader claims one TIFF file, and why not in words when it does not.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    (claimed, reason)
        ``reason`` is empty when claimed (or the reason the reader will give, for a damaged
        file that is claimed).
    """
    if os.path.lexists(path) and not os.path.exists(path):
        return False, "cannot open (broken or looping symbolic link)"
    special = not_regular_reason(path)
    if special is not None:
        # never opened here; claimed when named like a TIFF, because napari's own reader would
        # open it and wait forever; the reader's error says what it is
        return is_tiff_name(path), special
    if not is_tiff_name(path) or not os.path.isfile(path):
        return False, "not a TIFF file (the reader opens .tif and .tiff files and folders)"
    stem = tiff_stem(path)
    channel_map = _map_beside(path)
    named = _named_like_a_cell(stem, channel_map) or channel_map is not None
    single = channel_from_name(stem, channel_map)[0] is not None
    try:
        plan = _header(path, single)
    except (EndlessStructureError, NotARegularFileError) as exc:
        return True, exc.reason  # any other reader would never finish: the reader says why
    except NotACellImageError as exc:
        return False, exc.reason  # a valid image of another kind: napari's own reader opens it
    except DeparrayReadError as exc:
        # damaged or unreadable: napari's own reader fails too, the reader's error says why
        return named, exc.reason
    except OSError as exc:  # e.g. permission denied: the same, in the reader's words
        return named, error_from_exception(path, exc).reason
    if plan is None:  # too many image directories to inspect here: decided by its name
        if named:
            return True, ""
        return False, (
            f"it holds more than {PROBE_MAX_IFDS:,} images and neither its name nor a channel "
            "map beside it shows a cell export, so napari's own reader opens it"
        )
    if named or _names_channels(plan, channel_map):
        return True, ""
    unknown = unknown_names_reason(plan)
    if unknown is not None:
        return False, unknown
    return False, (
        "neither its name nor its metadata names a channel or a DEPArray cell "
        "(cell0012_BF.tif, an OME or ImageJ channel name...), so napari's own reader opens it"
    )


def explain_folder(folder: str, depth: int = 0) -> tuple[bool, str]:
    """Whether the reader claims a folder, and why not in words when it does not.

    Parameters
    ----------
    folder
        The folder.
    depth
        0 for the opened folder; class sub-folders are looked into at depth 1.

    Returns
    -------
    (claimed, reason)
        ``reason`` is empty when claimed.
    """
    tiffs: list[str] = []
    side_files = False
    evidence = False
    hostile = False  # a file that any other reader would never finish reading
    reasons: list[str] = []
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
                if not _is_regular(entry):
                    # a pipe or device named like a TIFF: never opened; napari's own reader
                    # would wait on it forever, the reader skips it with its reason
                    special = not_regular_reason(entry.path)
                    if special is not None:
                        hostile = True
                        reasons.append(f"{name}: {special}")
                    continue
                tiffs.append(entry.path)
                evidence = evidence or _named_like_a_cell(tiff_stem(name))
    if not tiffs:
        if side_files or hostile:
            return True, ""  # a labels.csv or channel map: cells in sub-folders, or none yet
        return False, "no cell images found: the folder holds no TIFF file"
    for path in sorted(tiffs, key=natural_key)[:_MAX_HEADERS]:
        stem = tiff_stem(path)
        single = channel_from_name(stem)[0] is not None
        try:
            plan = _header(path, single)
        except (EndlessStructureError, NotARegularFileError) as exc:
            hostile = True
            reasons.append(f"{os.path.basename(path)}: {exc.reason}")
            continue  # never given to another reader; the next file decides the rest
        except NotACellImageError as exc:
            return False, f"{os.path.basename(path)}: {exc.reason}"
        except DeparrayReadError as exc:
            reasons.append(f"{os.path.basename(path)}: {exc.reason}")
            continue  # a damaged file: the next one decides
        if plan is None:  # too many images to inspect here: the names decide
            if evidence or side_files or hostile:
                return True, ""
            reasons.append(f"{os.path.basename(path)}: holds more than {PROBE_MAX_IFDS:,} images")
            continue
        if evidence or side_files or hostile or _names_channels(plan) or _cell_sized(plan):
            return True, ""
        return False, (
            f"its TIFF files do not look like cell images ({os.path.basename(path)} is "
            f"{plan.height}×{plan.width} px, larger than {CELL_SIDE_PX} px a side, and no "
            "file name or metadata names a channel or a DEPArray cell)"
        )
    # only damaged files were looked at: claimed when names show a cell export
    return evidence or side_files or hostile, "; ".join(reasons)


def _is_regular(entry: os.DirEntry) -> bool:
    """A regular file, or a symbolic link to one (never opens it)."""
    try:
        return entry.is_file()
    except OSError:
        return False


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
