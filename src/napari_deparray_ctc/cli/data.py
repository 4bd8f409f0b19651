"""Reading DATA and model files for the commands: thin calls into core, errors as CliError."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from napari_deparray_ctc.cli.output import StderrProgress, only_other_images, skip_warning, warn
from napari_deparray_ctc.core.errors import DeparrayError

__all__ = [
    "CliError",
    "StreamLabels",
    "StreamedCells",
    "check_out_folder",
    "check_paths_exist",
    "classify_paths",
    "join",
    "load_cli_model",
    "no_cells_error",
    "read_training_set",
    "sample_names",
    "sidecar_overrides",
]


class CliError(DeparrayError):
    """A user-facing error of the command line: one line on stderr, exit status 2."""


def join(paths: Sequence[str]) -> str:
    """Paths for a message."""
    return ", ".join(str(p) for p in paths)


def check_paths_exist(paths: Sequence[str]) -> None:
    """Every DATA path exists."""
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise CliError(missing[0], "no such file or folder")


def check_out_folder(path: Path) -> None:
    """The folder of an output file exists."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CliError(path, f"the folder {parent} does not exist")


def no_cells_error(paths: Sequence[str], skipped: Sequence[tuple[str, str]]) -> CliError:
    if only_other_images(skipped):
        return CliError(
            join(paths),
            f"holds no TIFF images ({len(skipped)} other image file(s), e.g. "
            f"{os.path.basename(skipped[0][0])}); the command line reads TIFF exports only "
            "(napari opens PNG and JPEG cells as plain layers, which the widgets can classify)",
        )
    return CliError(join(paths), "no readable cell with a bright-field (BF) image")


@dataclasses.dataclass
class StreamedCells:
    """Streams the BF images of DATA and remembers, per cell, what the CSV needs.

    Uses :func:`core.io.iter_cells`, so only one cell's pixels are in memory at a time.
    Skipped files are collected in ``skipped`` for one warning at the end.
    """

    paths: Sequence[str]
    channel_map: Any = None
    cell_ids: list[str] = dataclasses.field(default_factory=list)
    cell_paths: list[str] = dataclasses.field(default_factory=list)
    labels: list[str | None] = dataclasses.field(default_factory=list)
    groups: list[str | None] = dataclasses.field(default_factory=list)
    pixel_sizes: list[float | None] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    total: int | None = None

    def count(self) -> int:
        """Number of cells found (headers only, no pixels), for the progress bar."""
        from napari_deparray_ctc.core.io import discover_cells

        sources, _ = discover_cells(list(self.paths), channel_map=self.channel_map)
        self.total = len(sources)
        return self.total

    def images(self) -> Iterator[Any]:
        """Yield each readable cell's 2-D BF image, one at a time."""
        from napari_deparray_ctc.core.io import iter_cells

        on_skip = lambda path, reason: self.skipped.append((path, reason))  # noqa: E731
        for cell in iter_cells(list(self.paths), self.channel_map, on_skip=on_skip):
            bf = cell.channels.get("BF")
            if bf is None:
                self.skipped.append(
                    (cell.path, f"cell {cell.cell_id} has no bright-field (BF) channel")
                )
                continue
            self.cell_ids.append(cell.cell_id)
            self.cell_paths.append(cell.path)
            self.labels.append(cell.label)
            self.groups.append(cell.group)
            self.pixel_sizes.append(cell.pixel_size_um)
            yield bf


def load_cli_model(path: str, device: str | None):
    """Load a model file; a missing or unusable file is a one-line error."""
    if not os.path.isfile(path):
        raise CliError(path, "model file not found")
    from napari_deparray_ctc.core.model.loaded import load_model

    return load_model(path, device=device)


def check_device(device: str | None) -> None:
    """A ``--device`` that this machine lacks is a one-line error, before any work."""
    if device is None:
        return
    from napari_deparray_ctc.core.model.loaded import select_device

    try:
        select_device(device)
    except ValueError as exc:
        raise CliError(f"--device: {' '.join(str(exc).split())}") from None


def classify_paths(
    paths: Sequence[str],
    model_path: str,
    batch_size: int,
    device: str | None,
    label: str,
    channel_map: str | None = None,
    classify_options: dict | None = None,
    on_image: Callable[[Any], None] | None = None,
):
    """Stream every cell of DATA through the model; returns ``(stream, predictions, model)``.

    ``on_image`` is called with each BF image as it streams past (e.g. to keep a few, or to
    compute their shift features), so DATA is still read once. Each cell's pixel size is the
    one its file declares unless ``classify_options["pixel_size"]`` gives one for all.
    """
    from napari_deparray_ctc.core.inference.classify import classify

    check_device(device)
    model = load_cli_model(model_path, device)
    stream = StreamedCells(paths, channel_map=channel_map)
    stream.count()
    bar = StderrProgress(label, total=stream.total)
    images = stream.images()
    if on_image is not None:
        images = _tapped(images, on_image)
    options = dict(classify_options or {})
    if options.get("pixel_size") is None:
        # the list grows as the cells stream past; classify reads a batch's sizes only after
        # it has taken that batch's images, so each size is there before it is read
        options["pixel_size"] = stream.pixel_sizes
    predictions = classify(
        images,
        model,
        batch_size=batch_size,
        device=device,
        progress=lambda done, total=None: bar.update(done, total or stream.total),
        **options,
    )
    bar.close()
    if not stream.cell_ids:
        skip_warning(stream.skipped)  # the reasons, then the error
        raise no_cells_error(paths, stream.skipped)
    skip_warning(stream.skipped)
    if predictions.scale_note:
        warn(predictions.scale_note)
    return stream, predictions, model


def _tapped(images: Iterator[Any], on_image: Callable[[Any], None]) -> Iterator[Any]:
    for image in images:
        on_image(image)
        yield image


def sample_names(paths: Sequence[str], stream: StreamedCells) -> list[str]:
    """Each cell's sample: its group, or else the name of the DATA export it came from."""
    roots = [(os.path.abspath(p), Path(p).name or str(p)) for p in paths]

    def export_of(cell_path: str) -> str:
        full = os.path.abspath(cell_path)
        for root, name in roots:
            if full == root or full.startswith(root.rstrip(os.sep) + os.sep):
                return name
        return roots[0][1] if roots else "all cells"

    return [
        str(group) if group not in (None, "") else export_of(path)
        for group, path in zip(stream.groups, stream.cell_paths, strict=True)
    ]


def read_training_set(paths: Sequence[str], channel_map: str | None = None):
    """Read DATA into a TrainingSet (BF, DAPI, labels, groups), streaming cell by cell."""
    from napari_deparray_ctc.core.io import iter_cells
    from napari_deparray_ctc.core.training import training_set_from_cells

    skipped: list[tuple[str, str]] = []
    bar = StderrProgress("reading")
    read = 0

    def counted() -> Iterator[Any]:
        nonlocal read
        on_skip = lambda path, reason: skipped.append((path, reason))  # noqa: E731
        for cell in iter_cells(list(paths), channel_map, on_skip=on_skip):
            read += 1
            bar.update(read)
            yield cell

    try:
        data = training_set_from_cells(counted(), on_skip=lambda p, r: skipped.append((p, r)))
    except DeparrayError:
        bar.close()
        if read == 0 or len(skipped) >= read:
            skip_warning(skipped)  # the reasons, then the error
            raise no_cells_error(paths, skipped) from None
        raise
    bar.close()
    skip_warning(skipped)
    return data


@contextlib.contextmanager
def naming_data(paths: Sequence[str]) -> Iterator[None]:
    """A TrainingDataError without a file gets DATA as its path (so the message names it)."""
    from napari_deparray_ctc.core.errors import TrainingDataError

    try:
        yield
    except TrainingDataError as exc:
        if exc.path is None:
            raise CliError(join(paths), exc.reason) from None
        raise


def sidecar_overrides(paths: Sequence[str]) -> list[tuple[str, dict[str, str | None]]]:
    """Each DATA path's annotation sidecar (``core.annotations.sidecars``), as napari reads it.

    Returns ``(absolute DATA path, {cell_id: label})`` pairs for the paths whose sidecar holds
    anything (a label of ``None``: the annotation was cleared). An unreadable sidecar is one
    warning naming the file and the reason, and is left out.
    """
    from napari_deparray_ctc.core.annotations.sidecars import (
        load_effective_annotations,
        sidecar_path,
    )
    from napari_deparray_ctc.core.errors import AnnotationFileError

    out = []
    for path in paths:
        try:
            table = load_effective_annotations(sidecar_path(path))
        except AnnotationFileError as exc:
            warn(f"annotations not used: {exc}")
            continue
        except ValueError:
            continue
        if table:
            out.append((os.path.abspath(path), table))
    return out


def _override(
    overrides: list[tuple[str, dict[str, str | None]]], cell_id: str, cell_path: str, label
):
    full = os.path.abspath(cell_path) if cell_path else ""
    for root, table in overrides:
        inside = full == root or full.startswith(root.rstrip(os.sep) + os.sep)
        if inside and cell_id in table:
            return table[cell_id]
    return label


class StreamLabels(Sequence):
    """The labels of streamed cells, each export's annotation sidecar over its own labels.

    A live view of a :class:`StreamedCells`: it grows as the cells stream past, so it can be
    handed to a core function that reads the labels after the images.
    """

    def __init__(self, stream: StreamedCells, paths: Sequence[str]) -> None:
        self.stream = stream
        self.overrides = sidecar_overrides(paths)

    def __len__(self) -> int:
        return len(self.stream.labels)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        s = self.stream
        return _override(self.overrides, s.cell_ids[index], s.cell_paths[index], s.labels[index])

    @classmethod
    def discovered(cls, paths: Sequence[str], channel_map: str | None = None) -> list:
        """The labels of DATA's cells from the headers alone (no pixels), sidecars applied."""
        from napari_deparray_ctc.core.io import discover_cells

        sources, _ = discover_cells(list(paths), channel_map=channel_map)
        overrides = sidecar_overrides(paths)
        return [_override(overrides, src.cell_id, src.path, src.label) for src in sources]
