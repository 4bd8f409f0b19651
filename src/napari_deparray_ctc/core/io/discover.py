"""Finding the cells of files and folders from names and a few headers (no pixels)."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from napari_deparray_ctc.core.annotations.labels import (
    LabelRecord,
    LabelsFileError,
    class_from_folder_name,
    read_labels_csv,
)
from napari_deparray_ctc.core.channels import (
    ChannelMap,
    ChannelMapError,
    canonical_channel,
    channel_from_name,
    tokenize,
)
from napari_deparray_ctc.core.errors import DeparrayReadError
from napari_deparray_ctc.core.io.common import (
    LABELS_FILENAME,
    MAX_FOLDER_DEPTH,
    NOT_IMAGE_SUFFIXES,
    OTHER_IMAGE_SUFFIXES,
    as_path_list,
    channel_map_in,
    error_from_exception,
    group_key,
    is_tiff_name,
    looks_like_tiff_magic,
    natural_key,
    os_reason,
    resolve_limit,
    tiff_stem,
    user_map,
)
from napari_deparray_ctc.core.io.ifd_chain import not_regular_reason
from napari_deparray_ctc.core.io.pixels import STACK_CACHE, OpenFile
from napari_deparray_ctc.core.io.types import CellSource, Plan


@dataclass
class _DirContext:
    """What applies to the files of one folder: class, channel map, labels tables."""

    path: str
    label: str | None
    channel_map: ChannelMap | None
    labels: list[_LabelLookup]  # nearest first


class _LabelLookup:
    """Match cell ids against labels.csv rows: exact, then normalised (case, extension, token)."""

    def __init__(self, records: dict[str, LabelRecord]) -> None:
        self.exact = records
        self.records = list(records.values())
        self.normalised: dict[str, LabelRecord] = {}
        for cell_id, record in records.items():
            for key in _id_variants(cell_id):
                self.normalised.setdefault(key, record)

    def get(self, cell_id: str) -> LabelRecord | None:
        record = self.exact.get(cell_id)
        if record is not None:
            return record
        for key in _id_variants(cell_id):
            if key in self.normalised:
                return self.normalised[key]
        return None


def _id_variants(cell_id: str) -> list[str]:
    stem = tiff_stem(cell_id)
    channel, rest = channel_from_name(stem)
    variants = [group_key(stem)]
    if channel is not None and rest:
        variants.append(group_key(rest))
    return [v for v in variants if v]


@dataclass
class _Discovery:
    user_map: ChannelMap | None
    max_pixels: int
    sources: list[CellSource] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    label_cache: dict[str, _LabelLookup | None] = field(default_factory=dict)
    map_cache: dict[str, ChannelMap | None] = field(default_factory=dict)
    failed_peeks: set[str] = field(default_factory=set)

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append((path, reason))

    # ---- per-folder side files

    def labels_in(self, folder: str) -> _LabelLookup | None:
        if folder not in self.label_cache:
            candidate = os.path.join(folder, LABELS_FILENAME)
            lookup = None
            if os.path.isfile(candidate):
                try:
                    lookup = _LabelLookup(read_labels_csv(candidate))
                except LabelsFileError as exc:
                    self.skip(exc.path, exc.reason)
            self.label_cache[folder] = lookup
        return self.label_cache[folder]

    def map_in(self, folder: str) -> ChannelMap | None:
        if folder not in self.map_cache:
            cmap = None
            try:
                cmap = channel_map_in(folder)
            except ChannelMapError as exc:
                self.skip(exc.path, exc.reason)
            self.map_cache[folder] = cmap
        return self.map_cache[folder]


def _ancestors(folder: str, root: str) -> list[str]:
    """``folder`` and its parents up to and including ``root``."""
    chain = [folder]
    current = folder
    while current != root:
        parent = os.path.dirname(current)
        if parent == current or not current.startswith(root):
            break
        chain.append(parent)
        current = parent
    return chain


def _walk_folder(root: str, state: _Discovery) -> Iterator[tuple[str, list[str], str | None]]:
    """Yield (folder, tiff file names, class label) below ``root``; loops and errors skipped."""
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[str, int, str | None]] = [(root, 0, None)]
    while stack:
        folder, depth, label = stack.pop()
        try:
            info = os.stat(folder)
        except OSError as exc:
            state.skip(folder, f"cannot open folder ({os_reason(exc)})")
            continue
        identity = (info.st_dev, info.st_ino)
        if identity in seen:
            state.skip(folder, "folder already visited (symbolic-link loop); skipped")
            continue
        seen.add(identity)
        files: list[str] = []
        subfolders: list[tuple[str, str | None]] = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith("."):
                        continue
                    try:
                        is_dir = entry.is_dir()
                        is_file = not is_dir and entry.is_file()
                    except OSError as exc:
                        state.skip(entry.path, f"cannot follow ({os_reason(exc)})")
                        continue
                    if is_dir:
                        subfolders.append((entry.path, class_from_folder_name(name) or label))
                    elif is_file:
                        lower = name.lower()
                        if is_tiff_name(lower):
                            files.append(name)
                        elif lower.endswith(OTHER_IMAGE_SUFFIXES):
                            if looks_like_tiff_magic(entry.path):
                                files.append(name)  # a TIFF misnamed .png, .jpg...
                            else:
                                state.skip(entry.path, "not a TIFF file; only TIFF images are read")
                        elif not lower.endswith(NOT_IMAGE_SUFFIXES) and looks_like_tiff_magic(
                            entry.path
                        ):
                            files.append(name)  # a TIFF with another extension
                    else:
                        # a named pipe, socket or device (or a link to one), or a broken link:
                        # never opened (opening a pipe waits for a writer forever)
                        special = not_regular_reason(entry.path)
                        if special is not None:
                            state.skip(entry.path, special)
                        elif entry.is_symlink() and is_tiff_name(name.lower()):
                            state.skip(entry.path, "broken or looping symbolic link")
        except OSError as exc:
            state.skip(folder, f"cannot list folder ({os_reason(exc)})")
            continue
        yield folder, files, label
        if depth < MAX_FOLDER_DEPTH:
            for sub_path, sub_label in sorted(
                subfolders, key=lambda s: natural_key(s[0]), reverse=True
            ):
                stack.append((sub_path, depth + 1, sub_label))


def _context_for(folder: str, root: str, label: str | None, state: _Discovery) -> _DirContext:
    chain = _ancestors(folder, root)
    cmap = state.user_map
    if cmap is None:
        cmap = next((m for m in (state.map_in(f) for f in chain) if m is not None), None)
    labels = [lookup for lookup in (state.labels_in(f) for f in chain) if lookup is not None]
    return _DirContext(folder, label, cmap, labels)


def _apply_labels(source: CellSource, context: _DirContext) -> bool:
    """Class from the folder, overridden by the nearest ``labels.csv`` row; True if a row hit."""
    source.label = context.label
    for lookup in context.labels:
        record = lookup.get(source.cell_id)
        if record is not None:
            source.label = record.label
            source.group = record.group
            return True
    return False


def _peek(path: str, single_channel: bool, state: _Discovery) -> Plan | None:
    """Read one file's header; on failure record it as skipped and return ``None``."""
    try:
        info = os.stat(path)
        handle = OpenFile(path, single_channel, state.max_pixels)
    except (DeparrayReadError, OSError) as exc:
        error = error_from_exception(path, exc)
        state.skip(path, error.reason)
        state.failed_peeks.add(path)
        return None
    plan = handle.plan
    if plan.n_cells > 1:  # a stack: its cells are read next, keep it open for them
        STACK_CACHE.adopt(handle, single_channel, (info.st_size, info.st_mtime_ns))
    else:
        handle.close()
    return plan


def _first_readable_header(
    paths: Iterable[str], single_channel: bool, state: _Discovery, tries: int = 8
) -> tuple[str | None, Plan | None]:
    """Header of the first file that can be read (bad ones are recorded as skipped)."""
    for path in itertools.islice(paths, tries):
        plan = _peek(path, single_channel, state)
        if plan is not None:
            return path, plan
    return None, None


def _discover_folder_files(
    folder: str, names: list[str], context: _DirContext, state: _Discovery
) -> list[CellSource]:
    """Turn the TIFF names of one folder into cell sources (peeks at most a few headers)."""
    cmap = context.channel_map
    groups: dict[str, dict[str, str]] = {}
    group_names: dict[str, str] = {}
    plain: list[str] = []
    stems = {name: tiff_stem(name) for name in names}  # once per name: 100,000-file folders
    for name in sorted(names, key=natural_key):
        stem = stems[name]
        channel, rest = channel_from_name(stem, cmap)
        if channel is None:
            plain.append(name)
            continue
        key = group_key(rest)
        members = groups.setdefault(key, {})
        group_names.setdefault(key, rest or os.path.basename(folder))
        if channel in members:
            state.skip(
                os.path.join(folder, name),
                f"second {channel} file for cell {group_names[key]!r} "
                f"(already {members[channel]}); skipped",
            )
            continue
        members[channel] = name

    # a token-less file whose name is a group's name plus one unknown word: an unknown channel
    remaining: list[str] = []
    for name in plain:
        placed = False
        tokens = tokenize(stems[name]) if groups else []
        if len(tokens) >= 2:
            raw_words = re.findall(r"[A-Za-z0-9]+", stems[name])
            for key, word in (
                ("_".join(tokens[:-1]), raw_words[-1]),
                ("_".join(tokens[1:]), raw_words[0]),
            ):
                if key in groups and canonical_channel(word, cmap) not in groups[key]:
                    groups[key][canonical_channel(word, cmap)] = name
                    placed = True
                    break
        if not placed:
            remaining.append(name)

    sources: list[CellSource] = []
    full = lambda name: os.path.join(folder, name)  # noqa: E731

    # ---- per-channel files (layout 2 or per-channel stacks of layout 4)
    if groups:
        first_file, plan = _first_readable_header(
            (full(name) for members in groups.values() for name in members.values()), True, state
        )
        stacked = plan is not None and plan.n_cells > 1
        for key, members in groups.items():
            paths = {channel: full(name) for channel, name in members.items()}
            representative = paths.get("BF") or next(iter(paths.values()))
            if not stacked:
                sources.append(CellSource(group_names[key], paths, representative, None))
                continue
            counts = {}
            for channel, path in paths.items():
                member_plan = plan if path == first_file else _peek(path, True, state)
                if member_plan is not None:
                    counts[channel] = member_plan.n_cells
            if not counts:
                continue
            if len(set(counts.values())) > 1:
                listed = ", ".join(f"{c}: {n}" for c, n in counts.items())
                state.skip(representative, f"channel stacks hold different cell counts ({listed})")
                continue
            usable = {c: p for c, p in paths.items() if c in counts}
            representative = usable.get("BF") or next(iter(usable.values()))
            n_cells = next(iter(counts.values()))
            for index in range(n_cells):
                cell_id = f"{group_names[key]}_{index:04d}"
                sources.append(CellSource(cell_id, usable, representative, index))

    # ---- multichannel files (layout 1 or (N, C, Y, X) stacks of layout 4)
    if remaining:
        first_file, plan = _first_readable_header(map(full, remaining), False, state)
        stacked = plan is not None and plan.n_cells > 1
        for name in remaining:
            path = full(name)
            if path in state.failed_peeks:
                continue  # already recorded as skipped
            if not stacked:
                sources.append(CellSource(stems[name], {}, path, None))
                continue
            file_plan = plan if path == first_file else _peek(path, False, state)
            if file_plan is None:
                continue
            for index in range(file_plan.n_cells):
                index_id = (
                    f"{tiff_stem(name)}_{index:04d}" if file_plan.n_cells > 1 else tiff_stem(name)
                )
                sources.append(
                    CellSource(index_id, {}, path, index if file_plan.n_cells > 1 else None)
                )
    matched = False
    for source in sources:
        source.channel_map = cmap
        matched |= _apply_labels(source, context)
    if not matched and sources and context.labels:
        _apply_labels_by_order(sources, context)
    return sources


def _apply_labels_by_order(sources: list[CellSource], context: _DirContext) -> None:
    """A single stack whose ``labels.csv`` rows list its cells in order (same count, no id hit).

    The cells then take the ids, classes and samples of the rows, in order.
    """
    stacks = {(s.path, *sorted(s.files.values())) for s in sources}
    if len(stacks) != 1 or any(s.stack_index is None for s in sources):
        return
    lookup = context.labels[0]
    if len(lookup.records) != len(sources):
        return
    ordered = sorted(sources, key=lambda s: s.stack_index or 0)
    for source, record in zip(ordered, lookup.records, strict=True):
        source.cell_id = record.cell_id
        source.label = record.label
        source.group = record.group


def discover_cells(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    channel_map: ChannelMap | str | os.PathLike | Sequence[str] | dict | None = None,
    *,
    max_pixels: int | None = None,
) -> tuple[list[CellSource], list[tuple[str, str]]]:
    """Find the cells in files and folders without reading pixels.

    Parameters
    ----------
    paths
        A file, a folder, or several of them.
    channel_map
        A :class:`~napari_deparray_ctc.core.channels.ChannelMap`, a map file path, a list of
        names in plane order, or a ``{index_or_token: name}`` dict. ``None`` uses the nearest
        ``channels.csv``/``channels.txt`` beside the files (up to the opened folder).
    max_pixels
        Largest plane read (default :data:`MAX_PIXELS_PER_PLANE`); used where headers are read.

    Returns
    -------
    (sources, skipped)
        The cells found, and ``(path, reason)`` for everything that could not be used.

    Raises
    ------
    DeparrayReadError
        Only for an unusable ``channel_map`` given by the caller.

    Notes
    -----
    File names decide the layout. At most the first file of each kind in a folder has its
    header read (to tell single cells from multi-cell stacks); every file's header is read only
    in folders of stacks. Cell ids that repeat across folders are prefixed with the folder name;
    a repeat within one folder is skipped.
    """
    state = _Discovery(user_map=user_map(channel_map), max_pixels=resolve_limit(max_pixels))
    explicit_files: dict[str, list[str]] = {}
    for raw in as_path_list(paths):
        path = os.path.abspath(raw)
        if os.path.isdir(path):
            for folder, names, label in _walk_folder(path, state):
                context = _context_for(folder, path, label, state)
                state.sources.extend(_discover_folder_files(folder, names, context, state))
        elif os.path.isfile(path):
            explicit_files.setdefault(os.path.dirname(path), []).append(os.path.basename(path))
        elif (special := not_regular_reason(path)) is not None:
            state.skip(raw, special)  # a pipe or device: never opened
        elif os.path.lexists(path):
            state.skip(raw, "cannot open (broken or looping symbolic link, or not a file)")
        else:
            state.skip(raw, "no such file or folder")
    for folder, names in explicit_files.items():
        context = _context_for(folder, folder, None, state)
        state.sources.extend(_discover_folder_files(folder, names, context, state))
    _make_ids_unique(state)
    return state.sources, state.skipped


def _make_ids_unique(state: _Discovery) -> None:
    """Repeats within one folder are skipped; ids found in several folders get the folder name."""
    folder_of = [os.path.dirname(source.path) for source in state.sources]
    folders_of: dict[str, set[str]] = {}
    for source, folder in zip(state.sources, folder_of, strict=True):
        folders_of.setdefault(source.cell_id, set()).add(folder)
    taken = set(folders_of)
    seen: set[tuple[str, str]] = set()
    kept: list[CellSource] = []
    for source, folder in zip(state.sources, folder_of, strict=True):
        cell_id = source.cell_id
        if (cell_id, folder) in seen:
            state.skip(
                source.path, f"duplicate cell id {cell_id!r} (another file in this folder has it)"
            )
            continue
        seen.add((cell_id, folder))
        if len(folders_of[cell_id]) > 1:
            new_id = f"{os.path.basename(folder)}/{cell_id}"
            if new_id in taken:
                new_id = f"{folder}/{cell_id}"
            taken.add(new_id)
            source.cell_id = new_id
        kept.append(source)
    state.sources[:] = kept
