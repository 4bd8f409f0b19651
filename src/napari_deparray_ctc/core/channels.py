"""Channel names: aliases, tokens in file names, and user channel maps.

Which names, aliases and file-name tokens are recognised, the channel map file format and the
precedence of names are described for users in ``docs/reader.md``. Names are matched
case-insensitively as whole *tokens* (runs of letters and digits), so ``PE`` is found in
``cell12_PE.tif`` but not in ``pericyte.tif``. Display colormaps (napari colormap names) are
in :data:`CHANNEL_COLORMAPS`; nothing here imports napari.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from napari_deparray_ctc.core.errors import ChannelMapError

__all__ = [
    "CANONICAL_CHANNELS",
    "CHANNEL_ALIASES",
    "CHANNEL_COLORMAPS",
    "CHANNEL_MAP_FILENAMES",
    "DEFAULT_UNNAMED_ORDER",
    "KNOWN_CHANNELS",
    "ChannelMap",
    "ChannelMapError",
    "as_channel_map",
    "canonical_channel",
    "channel_from_name",
    "colormap_for",
    "find_channel_map",
    "is_non_channel_name",
    "load_channel_map",
    "order_channels",
    "resolve_plane_names",
    "split_channel_token",
    "split_index_token",
    "tokenize",
]

CANONICAL_CHANNELS: tuple[str, ...] = ("BF", "DAPI", "FITC", "PE", "APC")
"""Canonical channel names, in their default display order."""

CHANNEL_ALIASES: dict[str, tuple[str, ...]] = {
    "BF": (
        "BF",
        "bright-field",
        "brightfield",
        "bright field",
        "TL",
        "trans",
        "transmitted",
        "transmission",
    ),
    "DAPI": ("DAPI", "Hoechst", "DNA", "nuclei"),
    "FITC": ("FITC",),
    "PE": ("PE",),
    "APC": ("APC", "Cy5"),
    "Cy3": ("Cy3",),
    "DIC": ("DIC", "differential interference contrast"),
    "Phase": ("phase", "phase contrast"),
}
"""Accepted names per known channel (matched case-insensitively, as whole tokens).

``DIC`` and ``Phase`` are other transmitted-light contrasts: they are recognised, but they are
not bright-field, so the classifier (trained on bright-field) does not read them as ``BF``.
"""

KNOWN_CHANNELS: tuple[str, ...] = tuple(CHANNEL_ALIASES)
"""The canonical channels and the other recognised stains and contrasts."""

CHANNEL_COLORMAPS: dict[str, str] = {
    "BF": "gray",
    "DAPI": "blue",
    "FITC": "green",
    "PE": "yellow",
    "APC": "magenta",
    "Cy3": "red",
}
"""napari colormap name per known channel; other channels are shown in ``"gray"``."""

CHANNEL_MAP_FILENAMES: tuple[str, ...] = ("channels.csv", "channels.txt")
"""File names looked for beside the images, in order of preference."""

DEFAULT_UNNAMED_ORDER: tuple[str, ...] = ("BF", "DAPI")
"""Names given to unnamed planes when no channel map applies; later planes become ``C<i>``."""

_TOKEN_RE = re.compile(r"[A-Za-z0-9]+")
_TRAILING_SEP_RE = re.compile(r"[^A-Za-z0-9]+$")
_LEADING_SEP_RE = re.compile(r"^[^A-Za-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lower-case alphanumeric tokens.

    Parameters
    ----------
    text
        A file name, stem or channel name.

    Returns
    -------
    list of str
        ``"Cell0012_Bright-Field"`` gives ``["cell0012", "bright", "field"]``.
    """
    return [m.group(0).lower() for m in _TOKEN_RE.finditer(text)]


def _build_alias_table() -> dict[tuple[str, ...], str]:
    table: dict[tuple[str, ...], str] = {}
    for canonical, aliases in CHANNEL_ALIASES.items():
        for alias in aliases:
            table[tuple(tokenize(alias))] = canonical
    return table


_ALIAS_TOKENS: dict[tuple[str, ...], str] = _build_alias_table()
_MAX_ALIAS_LEN = max(len(k) for k in _ALIAS_TOKENS)
#: the tokens an alias can start with: most tokens of a file name (``cell0012``) start none,
#: and are passed over without building a candidate per alias length
_ALIAS_FIRST_TOKENS = frozenset(key[0] for key in _ALIAS_TOKENS)


@dataclass(frozen=True)
class ChannelMap:
    """A user's channel naming: by plane index, by token, and a display order.

    Attributes
    ----------
    by_index
        Plane index (page or C-axis position, 0-based) -> channel name.
    by_token
        Lower-case token sequence (a name as it appears in files or metadata) -> channel name.
    order
        Display order of the channels named by the map.
    source
        The file the map was read from, or ``None``.
    """

    by_index: dict[int, str] = field(default_factory=dict)
    by_token: dict[tuple[str, ...], str] = field(default_factory=dict)
    order: tuple[str, ...] = ()
    source: str | None = None

    def lookup_name(self, name: str) -> str | None:
        """Return the map's name for a channel called ``name`` (whole-name match), or ``None``."""
        return self.by_token.get(tuple(tokenize(name)))


def canonical_channel(name: str, channel_map: ChannelMap | None = None) -> str:
    """Return the canonical channel name for ``name``, or ``name`` itself when unknown.

    Parameters
    ----------
    name
        A channel name as found in a file name, metadata or a channel map.
    channel_map
        Optional user map; its ``TOKEN,NAME`` entries are applied first.

    Returns
    -------
    str
        ``"bright-field"`` -> ``"BF"``, ``"Hoechst"`` -> ``"DAPI"``, ``"Cy5"`` -> ``"APC"``.
        A longer name that holds exactly one known channel token (``"Ch01 BF"``) gives that
        channel; names with none or several (``"PE-Cy5"``) are returned stripped but unchanged.
    """
    text = str(name).strip()
    if channel_map is None or not channel_map.by_token:
        return _canonical_without_map(text)
    tokens = tuple(tokenize(text))
    if tokens in channel_map.by_token:
        return channel_map.by_token[tokens]
    return _canonical_without_map(text)


@functools.lru_cache(maxsize=1024)
def _canonical_without_map(text: str) -> str:
    tokens = tuple(tokenize(text))
    if not tokens:
        return text
    if tokens in _ALIAS_TOKENS:
        return _ALIAS_TOKENS[tokens]
    found = {hit[0] for hit in _find_alias_hits(list(tokens))}
    if len(found) == 1:
        return found.pop()
    return text


def _find_alias_hits(
    tokens: Sequence[str], extra: Mapping[tuple[str, ...], str] | None = None
) -> list[tuple[str, int, int]]:
    """All (canonical, first_token, end_token) alias matches, longest match first per start."""
    hits: list[tuple[str, int, int]] = []
    max_len = _MAX_ALIAS_LEN
    first_tokens = _ALIAS_FIRST_TOKENS
    extra = extra or {}
    if extra:
        max_len = max(max_len, max(len(k) for k in extra))
        first_tokens = first_tokens | {key[0] for key in extra if key}
    i = 0
    while i < len(tokens):
        matched = False
        if tokens[i] not in first_tokens:
            i += 1
            continue
        for length in range(min(max_len, len(tokens) - i), 0, -1):
            key = tuple(tokens[i : i + length])
            name = extra.get(key) or _ALIAS_TOKENS.get(key)
            if name is not None:
                hits.append((name, i, i + length))
                i += length
                matched = True
                break
        if not matched:
            i += 1
    return hits


def split_channel_token(stem: str, channel_map: ChannelMap | None = None) -> tuple[str | None, str]:
    """Find the channel token in a file stem and return it with the rest of the name.

    Parameters
    ----------
    stem
        File name without its extension, e.g. ``"cell0012_BF"`` or ``"DAPI cell 12"``.
    channel_map
        Optional user map whose ``TOKEN,NAME`` entries are recognised as tokens too (they win
        over the built-in aliases).

    Returns
    -------
    (channel, cell_key)
        ``channel`` is the canonical name (``None`` when the stem holds no channel token);
        ``cell_key`` is the stem with that token and one adjacent separator removed
        (``"cell0012"``, ``"cell 12"``), or the whole stem when no token was found.
        With several channel tokens, the last one is used.
    """
    matches = list(_TOKEN_RE.finditer(stem))
    tokens = [m.group(0).lower() for m in matches]
    extra = channel_map.by_token if channel_map is not None else None
    hits = _find_alias_hits(tokens, extra)
    if not hits:
        return None, stem
    name, first, end = hits[-1]
    before = stem[: matches[first].start()]
    after = stem[matches[end - 1].end() :]
    before_kept = _TRAILING_SEP_RE.sub("", before)
    after_kept = _LEADING_SEP_RE.sub("", after)
    joiner = before[len(before_kept) : len(before_kept) + 1] if before_kept and after_kept else ""
    rest = before_kept + joiner + after_kept
    return name, rest


# Channel-index tokens of instrument and software file names (a whole word unless noted):
#   Ch0, ch00, CH1, Channel_0, channel 2   (Leica ``_ch00``, ImageStream ``Ch3_``, cellfinder
#                                           ``...x392Ch0``: after a digit too)
#   C=0                                     (Bio-Formats / Fiji exports, ``AICS_12_134_C=0``)
#   C1-name                                 (Fiji "Split Channels", at the start of the name)
#   w1, w2DAPI                              (MetaMorph; a stain after the number names it)
#   ...f00d0                                (Cellomics: field f00, channel d0, ends the name)
_INDEX_TOKEN_RE = re.compile(
    r"(?<![A-Za-z])(?:ch|channel)[ _-]?\d{1,3}(?![A-Za-z0-9])"
    r"|(?<![A-Za-z0-9])c=\d{1,3}(?![0-9])"
    r"|^c\d{1,2}(?=-.)"
    r"|(?<![A-Za-z0-9])w\d(?:[A-Za-z][A-Za-z0-9]*)?(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_CELLOMICS_CHANNEL_RE = re.compile(r"(?<=[0-9])d\d$", re.IGNORECASE)
_CELLOMICS_NAME_RE = re.compile(r"f\d+d\d$", re.IGNORECASE)
_METAMORPH_RE = re.compile(r"w\d([A-Za-z][A-Za-z0-9]*)?$", re.IGNORECASE)


def split_index_token(stem: str, channel_map: ChannelMap | None = None) -> tuple[str | None, str]:
    """Find a channel-index token (``Ch0``, ``C=1``, ``w2``, ``...f00d0``) in a file stem.

    Parameters
    ----------
    stem
        File name without its extension, e.g. ``"pCellz10y522x392Ch0"`` or ``"AICS_12_C=0"``.
    channel_map
        Optional user map: a ``TOKEN,NAME`` entry for the token (``Ch3,BF``) names the channel.

    Returns
    -------
    (channel, cell_key)
        The channel is the map's name for the token, the stain of a MetaMorph token
        (``w1DAPI`` gives ``DAPI``), else the token as written (``"Ch0"``, ``"C=0"``,
        ``"d1"``); ``None`` without an index token. ``cell_key`` is the stem without the token
        and one adjacent separator. With several index tokens, the last one is used.
    """
    matches = list(_INDEX_TOKEN_RE.finditer(stem))
    match = matches[-1] if matches else None
    if match is None and _CELLOMICS_NAME_RE.search(stem):
        match = _CELLOMICS_CHANNEL_RE.search(stem)
        if match is not None:  # "A01f00d0": the token is the end of a word
            return _name_index_token(match.group(0), channel_map), stem[: match.start()]
    if match is None:
        return None, stem
    before, after = stem[: match.start()], stem[match.end() :]
    before_kept = _TRAILING_SEP_RE.sub("", before)
    after_kept = _LEADING_SEP_RE.sub("", after)
    joiner = before[len(before_kept) : len(before_kept) + 1] if before_kept and after_kept else ""
    return _name_index_token(match.group(0), channel_map), before_kept + joiner + after_kept


def channel_from_name(stem: str, channel_map: ChannelMap | None = None) -> tuple[str | None, str]:
    """The channel a file stem names and the rest of the name (the cell key).

    A stain or contrast name (:func:`split_channel_token`) wins; else a channel-index token
    (:func:`split_index_token`); else ``(None, stem)``.
    """
    channel, rest = split_channel_token(stem, channel_map)
    if channel is None:
        channel, rest = split_index_token(stem, channel_map)
    return channel, rest


def _name_index_token(token: str, channel_map: ChannelMap | None) -> str:
    if channel_map is not None:
        mapped = channel_map.lookup_name(token)
        if mapped is not None:
            return mapped
    stain = _METAMORPH_RE.fullmatch(token)
    if stain is not None and stain.group(1):
        return canonical_channel(stain.group(1), channel_map)
    return token


_NON_CHANNEL_NAME_RE = re.compile(
    r"[-+]?\d+(?:[.,]\d+)?\s*(?:[µu]m|nm|mm|ms|s|min|h)?"  # ImageJ slice labels: "243"
    r"|(?:background|layer|page|image|frame|slice|plane|untitled|default|img)(?:[ _#-]*\d+)?"
    r"|(?:.*\b)?[czt]:\s*\d+\s*/\s*\d+\b.*",  # ImageJ position labels: "c:1/2 z:30/64"
    re.IGNORECASE,
)


def is_non_channel_name(name: str) -> bool:
    """True for names that TIFF writers store but that do not name a channel.

    Parameters
    ----------
    name
        A page name or label from a file's metadata.

    Returns
    -------
    bool
        True for GIMP's ``PageName=Background`` (and ``Layer 1``, ``Untitled``, ``Page 2``...),
        ImageJ slice labels that are numbers (``243``, ``1.5 µm``) and ImageJ position labels
        (``c:1/2 z:30/64 t:1/68 - 4``).
    """
    return _NON_CHANNEL_NAME_RE.fullmatch(str(name).strip()) is not None


def colormap_for(channel: str) -> str:
    """napari colormap name for a canonical channel (``"gray"`` for unknown channels)."""
    return CHANNEL_COLORMAPS.get(channel, "gray")


def order_channels(names: Iterable[str], channel_map: ChannelMap | None = None) -> list[str]:
    """Sort channel names for display: the map's order, then canonical order, then first seen.

    Parameters
    ----------
    names
        Channel names (duplicates are dropped).
    channel_map
        Optional user map whose ``order`` comes first.

    Returns
    -------
    list of str
    """
    unique = tuple(dict.fromkeys(names))
    return list(_ordered(unique, channel_map.order if channel_map is not None else ()))


@functools.lru_cache(maxsize=256)
def _ordered(unique: tuple[str, ...], map_order: tuple[str, ...]) -> tuple[str, ...]:
    preferred = list(map_order)
    preferred += [c for c in CANONICAL_CHANNELS if c not in preferred]
    rank = {name: i for i, name in enumerate(preferred)}
    first_seen = {name: i for i, name in enumerate(unique)}
    return tuple(sorted(unique, key=lambda n: (rank.get(n, len(rank)), first_seen[n])))


def resolve_plane_names(
    stored_names: Sequence[str | None] | None,
    n_planes: int,
    channel_map: ChannelMap | None = None,
    *,
    guess_unnamed: bool = True,
) -> list[str]:
    """Name the planes of a multichannel image.

    Parameters
    ----------
    stored_names
        Names found in the file's metadata, one per plane (``None`` where missing), or ``None``.
    n_planes
        Number of channel planes.
    channel_map
        Optional user map (see ``docs/reader.md`` for the precedence).
    guess_unnamed
        Name unnamed planes by :data:`DEFAULT_UNNAMED_ORDER` (first ``BF``, second ``DAPI``).
        The reader passes ``False`` when the file's name or metadata names a stain, so that
        an unnamed plane is not silently taken for bright-field; unnamed planes are then
        ``C<index>``.

    Returns
    -------
    list of str
        One unique name per plane. When two planes resolve to the same name, the later ones
        become ``"<name>_<index>"`` so that no plane is lost.
    """
    names: list[str] = []
    stored = list(stored_names or [])
    stored += [None] * (n_planes - len(stored))
    for index in range(n_planes):
        name: str | None = None
        if channel_map is not None and index in channel_map.by_index:
            name = channel_map.by_index[index]
        elif stored[index]:
            name = canonical_channel(str(stored[index]), channel_map)
        elif guess_unnamed and index < len(DEFAULT_UNNAMED_ORDER):
            name = DEFAULT_UNNAMED_ORDER[index]
        else:
            name = f"C{index}"
        names.append(name)
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            names[index] = f"{name}_{index}"
        seen.add(names[index])
    return names


_HEADER_WORDS = {
    "index",
    "page",
    "plane",
    "channel",
    "token",
    "key",
    "source",
    "name",
    "canonical",
    "new",
    "old",
    "from",
    "to",
}


def _split_line(line: str) -> list[str]:
    for sep in (",", "\t", ";", "="):
        if sep in line:
            return next(csv.reader(io.StringIO(line), delimiter=sep, skipinitialspace=True))
    return [line]


def load_channel_map(path: str | os.PathLike) -> ChannelMap:
    """Read a ``channels.csv`` / ``channels.txt`` file (format in ``docs/reader.md``).

    Parameters
    ----------
    path
        The map file.

    Returns
    -------
    ChannelMap

    Raises
    ------
    ChannelMapError
        When the file cannot be read, is empty, or has a malformed line (the message names the
        file, the line number and the reason).
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):  # a named pipe would block open() forever; never opened
            raise ChannelMapError(
                path, "cannot read channel map (not a regular file: a pipe, socket or device)"
            )
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            text = handle.read(1_000_000)
    except OSError as exc:
        raise ChannelMapError(path, f"cannot read channel map ({exc.strerror or exc})") from exc
    by_index: dict[int, str] = {}
    by_token: dict[tuple[str, ...], str] = {}
    order: list[str] = []
    next_index = 0
    first_row = True
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in _split_line(line)]
        fields = [f for f in fields if f != ""] or [""]
        if first_row and all(f.lower() in _HEADER_WORDS for f in fields):
            first_row = False
            continue
        first_row = False
        if len(fields) == 1:
            name = canonical_channel(fields[0])
            if not tokenize(name):
                raise ChannelMapError(path, f"line {line_no}: no channel name in {raw!r}")
            by_index.setdefault(next_index, name)
            next_index += 1
        elif len(fields) == 2:
            key, value = fields
            name = canonical_channel(value)
            if not tokenize(name):
                raise ChannelMapError(path, f"line {line_no}: no channel name in {raw!r}")
            if key.isdigit():
                by_index[int(key)] = name
            else:
                key_tokens = tuple(tokenize(key))
                if not key_tokens:
                    raise ChannelMapError(path, f"line {line_no}: empty channel token in {raw!r}")
                by_token[key_tokens] = name
        else:
            raise ChannelMapError(
                path, f"line {line_no}: expected 'NAME' or 'KEY,NAME', got {len(fields)} fields"
            )
        if name not in order:
            order.append(name)
    if not order:
        raise ChannelMapError(path, "channel map is empty (no channel names found)")
    return ChannelMap(by_index=by_index, by_token=by_token, order=tuple(order), source=path)


def find_channel_map(folder: str | os.PathLike) -> str | None:
    """Path of the channel map file in ``folder`` (``channels.csv`` first), or ``None``."""
    for name in CHANNEL_MAP_FILENAMES:
        candidate = os.path.join(os.fspath(folder), name)
        if os.path.isfile(candidate):
            return candidate
    return None


def as_channel_map(
    value: ChannelMap | str | os.PathLike | Sequence[str] | Mapping[object, str] | None,
) -> ChannelMap | None:
    """Turn what a caller passes as ``channel_map`` into a :class:`ChannelMap`.

    Parameters
    ----------
    value
        ``None``; a :class:`ChannelMap`; a path to a map file; a sequence of names in plane
        order (``["BF", "DAPI", "PE", "APC"]``); or a mapping whose keys are plane indices
        (``int``) or tokens (``str``) and whose values are names (``{"Ch3": "BF"}``).

    Returns
    -------
    ChannelMap or None

    Raises
    ------
    ChannelMapError
        For a map file that cannot be used.
    TypeError
        For any other kind of value.
    """
    if value is None or isinstance(value, ChannelMap):
        return value
    if isinstance(value, (str, os.PathLike)):
        return load_channel_map(value)
    if isinstance(value, Mapping):
        by_index: dict[int, str] = {}
        by_token: dict[tuple[str, ...], str] = {}
        order: list[str] = []
        for key, raw_name in value.items():
            name = canonical_channel(str(raw_name))
            if isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit()):
                by_index[int(key)] = name
            else:
                by_token[tuple(tokenize(str(key)))] = name
            if name not in order:
                order.append(name)
        return ChannelMap(by_index, by_token, tuple(order))
    if isinstance(value, Sequence):
        names = [canonical_channel(str(v)) for v in value]
        return ChannelMap(dict(enumerate(names)), {}, tuple(dict.fromkeys(names)))
    raise TypeError(f"channel_map must be a path, a list of names or a dict, not {type(value)}")
