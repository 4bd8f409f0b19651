"""``deparray-ctc``: the headless command line (synthesise, train, classify, evaluate, demo).

Every subcommand is a thin layer over :mod:`napari_deparray_ctc.core`; the CLI adds argument
parsing, a small progress line on stderr, one-line errors and atomic output files.

* ``torch`` is imported only by the subcommands that need it (``train``, ``classify``,
  ``evaluate``, ``demo``); ``deparray-ctc --help`` and ``deparray-ctc synth`` never import it.
* Training defaults are **not** repeated here: options left out keep the value of the
  :class:`~napari_deparray_ctc.core.train.TrainConfig` field (``train --help`` shows them).
* User errors (bad model file, no readable cells, a single-class training set, ...) print one
  line ``deparray-ctc: error: <file>: <reason>`` on stderr and exit with status 2, without a
  traceback. Unreadable files among DATA are skipped with one warning that lists them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["CliError", "StderrProgress", "build_parser", "main"]

PROG = "deparray-ctc"
EXIT_OK = 0
EXIT_USAGE = 2  # argparse's own status for bad usage; also used for user errors
EXIT_INTERRUPTED = 130

#: export layouts of ``synth`` (kept equal to ``core.synth.LAYOUTS`` by a test; not imported
#: here so that building the parser stays cheap)
LAYOUTS = ("multipage", "perchannel", "ome", "classdirs", "stack")
#: ``demo`` trains the default pipeline (TrainConfig's arch, size, augmentation, DAPI strategy)
#: but for fewer epochs unless ``--epochs`` is given, so that it finishes in minutes on a CPU
DEMO_EPOCHS = 8
#: on machines with at most this many CPUs the demo uses one torch thread unless --threads
DEMO_SINGLE_THREAD_CPUS = 2

#: (CLI option, TrainConfig field, type, help) of the training options shared by ``train``,
#: ``evaluate --cv`` and ``demo``. Defaults are read from TrainConfig, never written here.
_TRAIN_OPTIONS: tuple[tuple[str, str, Callable[[str], Any] | None, str], ...] = (
    ("--arch", "arch", str, "network architecture: resnet18, resnet34 or resnet50"),
    ("--epochs", "epochs", int, "maximum number of epochs"),
    ("--size", "image_size", int, "input size in pixels (images are resized to size x size)"),
    ("--batch-size", "batch_size", int, "training batch size"),
    ("--lr", "lr", float, "learning rate"),
    (
        "--augment",
        "augment",
        str,
        "augmentation families: comma-separated subset of geometric,photometric,noise, "
        "or 'all', or 'none'",
    ),
    ("--dapi-strategy", "dapi_strategy", str, "how DAPI images enter training"),
    ("--val-fraction", "val_fraction", float, "fraction of cells held out for validation"),
    ("--seed", "seed", int, "random seed (CPU runs are deterministic)"),
    ("--patience", "patience", int, "early stopping: epochs without a better validation F1"),
    ("--device", "device", str, "cuda, mps or cpu (default: automatic)"),
    ("--threads", "num_threads", int, "torch CPU threads"),
    ("--pretrained", "pretrained", str, "ImageNet weights: a file, or 'auto' (local torch cache)"),
)


class CliError(Exception):
    """A user-facing error: printed as one line on stderr, exit status 2."""


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _err(message: str, stream: TextIO | None = None) -> None:
    print(f"{PROG}: error: {message}", file=stream or sys.stderr)


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _info(message: str) -> None:
    print(message, file=sys.stderr)


def _format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class StderrProgress:
    """A minimal progress line on stderr (no tqdm dependency).

    On a terminal the line is redrawn in place (at most ``refresh_s`` apart); when stderr is
    redirected, a plain line is written at most every ``log_every_s`` seconds, so logs stay
    short. Call :meth:`close` once at the end.

    Parameters
    ----------
    label
        Text in front of the bar.
    total
        Number of steps, or ``None`` when unknown.
    stream
        Where to write (default ``sys.stderr``).
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        stream: TextIO | None = None,
        refresh_s: float = 0.2,
        log_every_s: float = 10.0,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.done = 0
        self.extra = ""
        self._start = time.perf_counter()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        # redirected output: the first line only after log_every_s (short jobs log one line)
        self._last = -math.inf if self._tty else self._start
        self._interval = refresh_s if self._tty else log_every_s

    def update(self, done: int, total: int | None = None, extra: str = "") -> None:
        """Record progress (absolute count) and redraw if enough time has passed."""
        self.done = done
        if total is not None:
            self.total = total
        self.extra = extra
        now = time.perf_counter()
        if now - self._last >= self._interval:
            self._last = now
            self._draw()

    def _line(self) -> str:
        elapsed = time.perf_counter() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = min(1.0, self.done / self.total)
            width = 24
            filled = int(frac * width)
            bar = "#" * filled + "-" * (width - filled)
            eta = (self.total - self.done) / rate if rate > 0 else None
            text = (
                f"{self.label} [{bar}] {self.done}/{self.total} {frac:4.0%} "
                f"{_format_duration(elapsed)}<{_format_duration(eta)}"
            )
        else:
            text = f"{self.label} {self.done} done, {_format_duration(elapsed)}, {rate:.1f}/s"
        return f"{text} {self.extra}".rstrip()

    def _draw(self) -> None:
        line = self._line()
        if self._tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._last_line = line

    def close(self) -> None:
        """Draw the final state (unless just drawn) and end the line."""
        line = self._line()
        if self._tty:
            self.stream.write("\r\x1b[2K" + line + "\n")
        elif line != getattr(self, "_last_line", None):
            self.stream.write(line + "\n")
        self.stream.flush()


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exception classes that mean "bad input", from the core modules already imported.

    Looked up in ``sys.modules`` so that handling an error never imports torch.
    """
    names = {
        "napari_deparray_ctc.core.io": ("DeparrayReadError",),
        "napari_deparray_ctc.core.model": ("ModelFileError",),
        "napari_deparray_ctc.core.train": ("TrainingDataError",),
        "napari_deparray_ctc.core.data": ("TrainingDataError",),
    }
    found: list[type[BaseException]] = [CliError]
    for module_name, class_names in names.items():
        module = sys.modules.get(module_name)
        for class_name in class_names:
            cls = getattr(module, class_name, None) if module is not None else None
            if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in found:
                found.append(cls)
    return tuple(found)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Core warnings as one ``deparray-ctc: warning: ...`` line (no file/line noise)."""
    _warn(" ".join(str(message).split()))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def _check_out_folder(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CliError(f"{path}: the folder {parent} does not exist")


def _skip_warning(skipped: Sequence[tuple[str, str]]) -> None:
    """One warning listing every skipped file with its reason."""
    if not skipped:
        return
    items = "; ".join(f"{path}: {reason}" for path, reason in skipped)
    _warn(f"skipped {len(skipped)} unreadable file(s): {items}")


# --------------------------------------------------------------------------------------------
# training configuration (defaults live in TrainConfig only)
# --------------------------------------------------------------------------------------------


def _train_config_defaults() -> dict[str, Any]:
    """``{field: default}`` of :class:`TrainConfig` (imports the training module)."""
    from napari_deparray_ctc.core.train import TrainConfig

    defaults: dict[str, Any] = {}
    for field in dataclasses.fields(TrainConfig):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            defaults[field.name] = field.default_factory()  # type: ignore[misc]
    return defaults


def _format_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value) if value else "none"
    return "automatic" if value is None else str(value)


class _HelpWithTrainDefaults(argparse.Action):
    """``-h`` for subcommands with training options: fills in the TrainConfig defaults first.

    Importing TrainConfig imports torch, so this happens only when that help is asked for.
    """

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, **kw):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            defaults = _train_config_defaults()
        except Exception:  # help must still work when torch is broken
            defaults = {}
        defaults.update(getattr(parser, "train_default_overrides", {}))
        for action in parser._actions:
            field = getattr(action, "train_field", None)
            if field in defaults and action.help and "(default:" not in action.help:
                action.help += f" (default: {_format_default(defaults[field])})"
        parser.print_help()
        parser.exit()


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training options (defaults: TrainConfig)")
    for option, field, type_, help_text in _TRAIN_OPTIONS:
        action = group.add_argument(
            option,
            dest=field,
            type=type_,
            default=None,
            metavar=field.upper(),
            help=help_text,
        )
        action.train_field = field  # type: ignore[attr-defined]


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Training options the user gave (those left out keep TrainConfig's defaults)."""
    values = {
        field: getattr(args, field)
        for _, field, _, _ in _TRAIN_OPTIONS
        if getattr(args, field, None) is not None
    }
    if "augment" in values:
        from napari_deparray_ctc.core.augment import check_families

        try:
            values["augment"] = check_families(values["augment"])
        except ValueError as exc:
            raise CliError(f"--augment: {_one_line(exc)}") from exc
    return values


def _make_config(overrides: dict[str, Any], **extra: Any):
    from napari_deparray_ctc.core.train import TrainConfig

    known = {field.name for field in dataclasses.fields(TrainConfig)}
    values = {**overrides, **extra}
    unknown = sorted(set(values) - known)
    if unknown:  # a contract drift between CLI and core: fail loudly, not silently
        raise CliError(f"TrainConfig has no option(s) {', '.join(unknown)}")
    _check_device(values.get("device"))
    try:
        return TrainConfig(**values).validated()
    except (TypeError, ValueError) as exc:
        raise CliError(f"invalid training option: {_one_line(exc)}") from exc


def _check_device(device: str | None) -> None:
    """A ``--device`` that this machine lacks is a one-line error, before any work."""
    if device is None:
        return
    from napari_deparray_ctc.core.model import select_device

    try:
        select_device(device)
    except ValueError as exc:
        raise CliError(f"--device: {_one_line(exc)}") from exc


def _with_data_context(paths: Sequence[str], call: Callable[[], Any]) -> Any:
    """Run a core training call; a TrainingDataError is re-raised naming DATA."""
    from napari_deparray_ctc.core.data import TrainingDataError

    try:
        return call()
    except TrainingDataError as exc:
        message = _one_line(exc)
        where = _join(paths)
        raise CliError(message if message.startswith(where) else f"{where}: {message}") from exc


def _apply_threads(num_threads: int | None) -> None:
    if num_threads:
        import torch

        torch.set_num_threads(int(num_threads))


# --------------------------------------------------------------------------------------------
# reading data
# --------------------------------------------------------------------------------------------


def _check_paths_exist(paths: Sequence[str]) -> None:
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise CliError(f"{missing[0]}: no such file or folder")


@dataclasses.dataclass
class _StreamedCells:
    """Streams BF images out of DATA and remembers, per cell, what the CSV needs.

    Uses :func:`core.io.iter_cells`, so only one cell's pixels are in memory at a time
    (stack files stay open while their cells are read). Skipped files are collected in
    ``skipped`` for one warning at the end.
    """

    paths: Sequence[str]
    channel_map: Any = None
    cell_ids: list[str] = dataclasses.field(default_factory=list)
    cell_paths: list[str] = dataclasses.field(default_factory=list)
    labels: list[str | None] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    total: int | None = None

    def count(self) -> int:
        """Number of cells found (headers only, no pixels), for the progress bar."""
        from napari_deparray_ctc.core.io import discover_cells

        sources, _ = discover_cells(list(self.paths), channel_map=self.channel_map)
        self.total = len(sources)
        return self.total

    def _on_skip(self, path: str, reason: str) -> None:
        self.skipped.append((path, reason))

    def images(self) -> Iterator[Any]:
        """Yield each readable cell's 2-D BF image, one at a time."""
        from napari_deparray_ctc.core.io import iter_cells

        for cell in iter_cells(list(self.paths), self.channel_map, on_skip=self._on_skip):
            bf = cell.channels.get("BF")
            if bf is None:
                self.skipped.append(
                    (cell.path, f"cell {cell.cell_id} has no bright-field (BF) channel")
                )
                continue
            self.cell_ids.append(cell.cell_id)
            self.cell_paths.append(cell.path)
            self.labels.append(cell.label)
            yield bf


def _load_model(path: str, device: str | None):
    if not os.path.isfile(path):
        raise CliError(f"{path}: model file not found")
    from napari_deparray_ctc.core.model import ModelFileError, load_model

    try:
        return load_model(path, device=device)
    except ModelFileError:
        raise
    except Exception as exc:  # anything else while loading is still "a bad model file"
        raise CliError(f"{path}: not a usable model file ({_one_line(exc)})") from exc


def _classify_paths(
    paths: Sequence[str],
    model_path: str,
    batch_size: int,
    device: str | None,
    label: str,
    channel_map: str | None = None,
):
    """Stream every cell of DATA through the model; returns (stream, predictions, model)."""
    from napari_deparray_ctc.core.classify import classify

    _check_device(device)
    model = _load_model(model_path, device)
    stream = _StreamedCells(paths, channel_map=channel_map)
    stream.count()
    bar = StderrProgress(label, total=stream.total)
    predictions = classify(
        stream.images(),
        model,
        batch_size=batch_size,
        device=device,
        progress=lambda done, total=None: bar.update(done, total or stream.total),
    )
    bar.close()
    _skip_warning(stream.skipped)
    n = len(stream.cell_ids)
    if n == 0:
        raise CliError(f"{_join(paths)}: no readable cell with a bright-field image")
    if len(predictions.p_ctc) != n:
        raise CliError(
            f"internal error: {len(predictions.p_ctc)} predictions for {n} cells"
        )  # pragma: no cover - a core contract violation
    return stream, predictions, model


# --------------------------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------------------------


def _cmd_synth(args: argparse.Namespace) -> int:
    from napari_deparray_ctc.core.synth import Optics, write_export

    optics = Optics.shifted() if args.shifted else Optics.default()
    kwargs: dict[str, Any] = {}
    if args.image_size is not None:
        kwargs["image_size"] = args.image_size
    if args.samples is not None:
        kwargs["n_samples"] = args.samples
    try:
        out = write_export(
            args.out,
            n_cells=args.cells,
            ctc_fraction=args.ctc_fraction,
            seed=args.seed,
            layout=args.layout,
            optics=optics,
            overwrite=args.overwrite,
            **kwargs,
        )
    except FileExistsError as exc:
        raise CliError(_one_line(exc)) from exc
    except ValueError as exc:
        raise CliError(f"{args.out}: {_one_line(exc)}") from exc
    domain = "shifted" if args.shifted else "default"
    print(
        f"wrote {args.cells} synthetic cells ({args.layout} layout, {domain} optics, "
        f"seed {args.seed}) to {out}"
    )
    return EXIT_OK


def _join(paths: Sequence[str]) -> str:
    return ", ".join(str(p) for p in paths)


def _load_training_set(paths: Sequence[str], channel_map: str | None = None):
    """Read DATA into a TrainingSet (BF, DAPI, labels, groups), streaming cell by cell.

    Unreadable files are skipped with one warning listing them (``load_training_set`` in
    ``core.data`` drops them silently, so the CLI reads with ``iter_cells`` itself).
    """
    from napari_deparray_ctc.core.data import TrainingSet
    from napari_deparray_ctc.core.io import iter_cells

    skipped: list[tuple[str, str]] = []
    bf, labels, dapi, ids, groups, sources = [], [], [], [], [], []
    bar = StderrProgress("reading")
    for cell in iter_cells(list(paths), channel_map, on_skip=lambda p, r: skipped.append((p, r))):
        image = cell.channels.get("BF")
        if image is None:
            skipped.append((cell.path, f"cell {cell.cell_id} has no bright-field (BF) channel"))
            continue
        bf.append(image)
        labels.append(cell.label)
        dapi.append(cell.channels.get("DAPI"))
        ids.append(cell.cell_id)
        groups.append(cell.group)
        sources.append(cell.path)
        bar.update(len(bf))
    bar.close()
    _skip_warning(skipped)
    if not bf:
        raise CliError(f"{_join(paths)}: no readable cell with a bright-field image")
    return TrainingSet(
        bf=bf,
        labels=labels,
        dapi=dapi if any(d is not None for d in dapi) else None,
        cell_ids=ids,
        groups=groups if any(g is not None for g in groups) else None,
        paths=sources,
    )


def _train_progress_printer(label: str = "train") -> tuple[Callable[[Any], None], Callable]:
    bar = StderrProgress(label)

    def on_progress(p: Any) -> None:
        total = p.epochs * max(1, p.batches)
        done = (p.epoch - 1) * max(1, p.batches) + p.batch if p.phase == "batch" else None
        if p.phase == "epoch_end":
            done = p.epoch * max(1, p.batches)
        extra = f"epoch {p.epoch}/{p.epochs}"
        if getattr(p, "fold", None) is not None:
            extra = f"fold {p.fold}/{p.folds} " + extra
        if p.train_loss is not None:
            extra += f" loss {p.train_loss:.3f}"
        if p.val_f1 is not None:
            extra += f" val F1 {p.val_f1:.3f}"
        if p.best_f1 is not None:
            extra += f" best {p.best_f1:.3f}"
        bar.update(done if done is not None else bar.done, total, extra)
        if p.phase == "epoch_end" and not bar._tty:
            bar._last = -math.inf  # always log epoch ends in redirected output

    return on_progress, bar.close


def _print_metrics(metrics: dict, title: str, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    print(title, file=out)
    for key in ("precision", "recall", "f1", "average_precision", "accuracy", "threshold"):
        if metrics.get(key) is not None:
            name = "PR-AUC (AP)" if key == "average_precision" else key
            print(f"  {name:<12} {float(metrics[key]):.4f}", file=out)
    cm = metrics.get("confusion_matrix")
    if isinstance(cm, dict) and "matrix" in cm:
        (tn, fp), (fn, tp) = cm["matrix"]
        print("  confusion matrix (rows = true, columns = predicted):", file=out)
        print(f"  {'':>10}{'WBC':>8}{'CTC':>8}", file=out)
        print(f"  {'WBC':>10}{tn:>8}{fp:>8}", file=out)
        print(f"  {'CTC':>10}{fn:>8}{tp:>8}", file=out)


def _cmd_train(args: argparse.Namespace) -> int:
    _check_paths_exist(args.data)
    out = Path(args.out)
    _check_out_folder(out)
    overrides = _train_overrides(args)
    _apply_threads(overrides.get("num_threads"))
    from napari_deparray_ctc.core.train import train

    config = _make_config(overrides, out=str(out))
    data = _load_training_set(args.data, args.channel_map)
    on_progress, close = _train_progress_printer()
    try:
        result = _with_data_context(
            args.data, lambda: train(config, data=data, progress=on_progress)
        )
    finally:
        close()
    summary = result.model.metadata.get("data_summary") or {}
    if summary:
        print(
            f"trained on {summary.get('n_train', '?')} cells, validated on "
            f"{summary.get('n_val', '?')} ({summary.get('split', '?')} split); "
            f"best epoch {result.metrics.get('best_epoch', '?')} of {len(result.history)}"
        )
    _print_metrics(result.metrics, "validation metrics (best epoch; optimistic, see evaluate):")
    if result.stopped_early:
        print("stopped early (no better validation F1 within the patience)")
    print(f"model written to {result.out_path or out}")
    return EXIT_OK


def _write_predictions_csv(out: Path, stream: _StreamedCells, predictions: Any) -> None:
    from napari_deparray_ctc.core.atomic import atomic_write

    labels = predictions.labels
    # surrogateescape: paths with non-UTF-8 bytes are written as they are (as in labels.csv)
    with atomic_write(out, "w", newline="", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell_id", "path", "p_ctc", "label", "threshold"])
        for cell_id, path, p, label in zip(
            stream.cell_ids, stream.cell_paths, predictions.p_ctc, labels, strict=True
        ):
            writer.writerow(
                [cell_id, path, f"{float(p):.6f}", label, f"{predictions.threshold:.6f}"]
            )


def _cmd_classify(args: argparse.Namespace) -> int:
    _check_paths_exist(args.data)
    _check_out_folder(Path(args.out))
    if not os.path.isfile(args.model):
        raise CliError(f"{args.model}: model file not found")
    _apply_threads(args.threads)
    stream, predictions, _ = _classify_paths(
        args.data, args.model, args.batch_size, args.device, "classify", args.channel_map
    )
    _write_predictions_csv(Path(args.out), stream, predictions)
    labels = predictions.labels
    n_ctc = sum(1 for label in labels if label == "CTC")
    print(
        f"{len(labels)} cells: {n_ctc} CTC, {len(labels) - n_ctc} WBC "
        f"(threshold {predictions.threshold:.3f}); results written to {args.out}"
    )
    return EXIT_OK


def _evaluate_model(args: argparse.Namespace) -> int:
    from napari_deparray_ctc.core.metrics import classification_metrics

    stream, predictions, _ = _classify_paths(
        args.data, args.model, args.batch_size or 64, args.device, "evaluate", args.channel_map
    )
    known = [i for i, label in enumerate(stream.labels) if label in ("CTC", "WBC")]
    if not known:
        raise CliError(
            f"{', '.join(args.data)}: no cell has a label (CTC/WBC); evaluation needs class "
            "folders or a labels.csv"
        )
    if len(known) < len(stream.labels):
        _warn(f"{len(stream.labels) - len(known)} cell(s) without a label were not evaluated")
    y = [stream.labels[i] for i in known]
    p = predictions.p_ctc[known]
    threshold = args.threshold if args.threshold is not None else predictions.threshold
    metrics = classification_metrics(y, p, threshold=threshold)
    _print_metrics(
        metrics,
        f"{len(known)} labelled cells ({metrics['n_ctc']} CTC, {metrics['n_wbc']} WBC), "
        f"model {args.model}:",
    )
    if args.json:
        _write_json(Path(args.json), metrics)
    return EXIT_OK


def _write_json(path: Path, obj: Any) -> None:
    import json

    from napari_deparray_ctc.core.atomic import atomic_write

    _check_out_folder(path)
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=2)
        handle.write("\n")
    print(f"metrics written to {path}")


def _cross_validate(args: argparse.Namespace) -> int:
    from napari_deparray_ctc.core.train import cross_validate

    overrides = _train_overrides(args)
    _apply_threads(overrides.get("num_threads"))
    config = _make_config(overrides)
    data = _load_training_set(args.data, args.channel_map)
    on_progress, close = _train_progress_printer(f"{args.cv}-fold CV")
    try:
        result = _with_data_context(
            args.data,
            lambda: cross_validate(config, data=data, k=args.cv, progress=on_progress),
        )
    finally:
        close()
    folds = result["folds"]
    print(
        f"{args.cv}-fold cross-validation ({len(folds)} folds completed; "
        f"{config.arch}, augment {_format_default(tuple(config.augment))}, "
        f"DAPI {config.dapi_strategy}), held-out folds, mean ± sd:"
    )
    for key in ("precision", "recall", "f1", "average_precision", "accuracy"):
        if key in result["mean"]:
            name = "PR-AUC (AP)" if key == "average_precision" else key
            print(f"  {name:<12} {result['mean'][key]:.4f} ± {result['sd'][key]:.4f}")
    for fold in folds:
        m = fold["metrics"]
        print(
            f"  fold {fold['fold']}: F1 {m['f1']:.3f}, precision {m['precision']:.3f}, "
            f"recall {m['recall']:.3f} ({fold['n_test']} test cells)"
        )
    if args.json:
        _write_json(Path(args.json), result)
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace) -> int:
    _check_paths_exist(args.data)
    if args.cv is not None:
        if args.cv < 2:
            raise CliError(f"--cv needs at least 2 folds, not {args.cv}")
        return _cross_validate(args)
    if not args.model:
        raise CliError("evaluate needs --model MODEL (or --cv K to train and evaluate K folds)")
    if not os.path.isfile(args.model):
        raise CliError(f"{args.model}: model file not found")
    _apply_threads(getattr(args, "num_threads", None))
    return _evaluate_model(args)


def _fresh_folder(requested: str | None, default: str = "deparray-ctc-demo") -> Path:
    """The demo's output folder: ``requested`` must be new or empty; the default never clashes.

    Without ``--out``, ``./deparray-ctc-demo`` is used, or ``-2``, ``-3``... when it already
    holds files, so a second demo never overwrites the first.
    """
    if requested is not None:
        out = Path(requested)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise CliError(f"{out}: exists and is not an empty folder; choose another --out")
        return out
    out, n = Path(default), 1
    while out.exists() and (not out.is_dir() or any(out.iterdir())):
        n += 1
        out = Path(f"{default}-{n}")
    return out


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.gui:
        try:
            import napari  # noqa: F401  (checked here for a clear message)
            from napari_deparray_ctc.napari.demo_gui import launch_demo_gui
        except ImportError as exc:
            raise CliError(
                f"demo --gui needs napari ({_one_line(exc)}); install it with "
                "pip install 'napari-deparray-ctc[napari]', or run the demo without --gui"
            ) from exc
        return int(launch_demo_gui(args.out) or EXIT_OK)
    t0 = time.perf_counter()
    out = _fresh_folder(args.out)
    overrides = _train_overrides(args)
    if "num_threads" not in overrides and (os.cpu_count() or 1) <= DEMO_SINGLE_THREAD_CPUS:
        # measured (docs/benchmarks.md): on a 2-core machine doing anything else, two torch
        # threads make per-sample augmentation and small convolutions several times slower
        overrides["num_threads"] = 1
    _apply_threads(overrides.get("num_threads"))
    defaults = _train_config_defaults()
    seed = int(overrides.get("seed", defaults.get("seed", 0)))
    overrides.setdefault("epochs", DEMO_EPOCHS)

    from napari_deparray_ctc.core.synth import Optics, write_export

    train_dir, test_dir = out / "train_export", out / "shifted_test_export"
    model_path, csv_path = out / "model.pt", out / "shifted_test_predictions.csv"
    out.mkdir(parents=True, exist_ok=True)
    _info(
        f"[1/4] synthetic training export: {args.cells} cells, default optics, "
        f"{args.samples} samples -> {train_dir}"
    )
    write_export(
        train_dir,
        n_cells=args.cells,
        ctc_fraction=args.ctc_fraction,
        seed=seed,
        layout="classdirs",
        optics=Optics.default(),
        n_samples=args.samples,
    )
    _info(f"      held-out export: {args.test_cells} cells, SHIFTED optics -> {test_dir}")
    write_export(
        test_dir,
        n_cells=args.test_cells,
        ctc_fraction=args.ctc_fraction,
        seed=seed + 1000,
        layout="classdirs",
        optics=Optics.shifted(),
        n_samples=max(1, args.samples // 2),
    )

    from napari_deparray_ctc.core.train import train

    config = _make_config(overrides, out=str(model_path))
    augment = _format_default(tuple(getattr(config, "augment", ()) or ()))
    _info(
        f"[2/4] training {config.arch}: up to {config.epochs} epochs, {config.image_size} px, "
        f"augment {augment}, DAPI strategy {config.dapi_strategy}, seed {config.seed}, "
        f"torch threads {config.num_threads or 'default'}"
    )
    data = _load_training_set([str(train_dir)])
    on_progress, close = _train_progress_printer()
    try:
        result = _with_data_context(
            [str(train_dir)], lambda: train(config, data=data, progress=on_progress)
        )
    finally:
        close()
    _print_metrics(result.metrics, "validation (training domain, best epoch):")

    _info("[3/4] classifying the shifted-optics export from bright-field only")
    stream, predictions, _ = _classify_paths(
        [str(test_dir)], str(model_path), 64, overrides.get("device"), "classify"
    )
    _write_predictions_csv(csv_path, stream, predictions)

    from napari_deparray_ctc.core.metrics import classification_metrics

    _info("[4/4] scoring against the synthetic ground truth")
    metrics = classification_metrics(stream.labels, predictions.p_ctc, predictions.threshold)
    _print_metrics(
        metrics, "held-out SHIFTED-optics domain (BF only, threshold stored in the model):"
    )
    n_ctc = sum(1 for label in predictions.labels if label == "CTC")
    n_all = len(predictions.labels)
    print(f"  called CTC: {n_ctc} of {n_all} cells (true CTC: {metrics['n_ctc']})")
    print(f"files in {out}:")
    print(f"  training export       {train_dir}")
    print(f"  shifted test export   {test_dir}")
    print(f"  model                 {model_path}")
    print(f"  predictions (CSV)     {csv_path}")
    print(f"done in {_format_duration(time.perf_counter() - t0)} (min:s)")
    print(
        f"next: napari {test_dir}   or   {PROG} classify YOUR_EXPORT --model {model_path} --out results.csv"
    )
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# parser and entry point
# --------------------------------------------------------------------------------------------


def _add_channel_map_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--channel-map",
        default=None,
        metavar="FILE",
        help="channel map file (channels.csv/.txt); default: the one beside the files, if any",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``deparray-ctc`` argument parser (cheap: imports nothing heavy)."""
    from napari_deparray_ctc import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Classify DEPArray bright-field single-cell images as circulating tumour cells (CTC) "
            "or leukocytes (WBC). DATA is any export layout the reader accepts (files or "
            "folders); labels come from class folders (CTC/, WBC/) or a labels.csv."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("synth", help="write a synthetic DEPArray-like export")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--cells", type=int, default=100, help="number of cells (default: 100)")
    p.add_argument(
        "--ctc-fraction", type=float, default=0.2, help="fraction of CTCs (default: 0.2)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--layout", choices=LAYOUTS, default="multipage", help="export layout")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    p.add_argument(
        "--shifted", action="store_true", help="use the shifted ('other hospital') optics"
    )
    p.add_argument("--image-size", type=int, default=None, help="image size in pixels")
    p.add_argument("--samples", type=int, default=None, help="number of samples (patients)")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser(
        "train",
        help="train a BF-only classifier (BF + DAPI in training)",
        add_help=False,
    )
    p.add_argument("-h", "--help", action=_HelpWithTrainDefaults, help="show this help")
    p.add_argument("data", nargs="+", metavar="DATA", help="labelled export(s)")
    p.add_argument("--out", required=True, help="model file to write (atomically)")
    _add_channel_map_option(p)
    _add_train_options(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("classify", help="classify every cell of DATA, write a CSV")
    p.add_argument("data", nargs="+", metavar="DATA")
    p.add_argument("--model", required=True, help="model file from 'train'")
    p.add_argument("--out", required=True, help="CSV to write: cell_id,path,p_ctc,label,threshold")
    p.add_argument("--batch-size", type=int, default=64, help="inference batch (default: 64)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: automatic)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    _add_channel_map_option(p)
    p.set_defaults(func=_cmd_classify)

    p = sub.add_parser(
        "evaluate",
        help="metrics of a model on labelled DATA, or k-fold cross-validation (--cv K)",
        add_help=False,
    )
    p.add_argument("-h", "--help", action=_HelpWithTrainDefaults, help="show this help")
    p.add_argument("data", nargs="+", metavar="DATA")
    p.add_argument("--model", default=None, help="model file to evaluate")
    p.add_argument(
        "--cv", type=int, default=None, metavar="K", help="train and evaluate K folds instead"
    )
    p.add_argument(
        "--threshold", type=float, default=None, help="override the model's stored threshold"
    )
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    _add_channel_map_option(p)
    _add_train_options(p)  # used by --cv; --device/--threads also apply to --model
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "demo",
        help="synthesise, train, classify a shifted-optics export, print metrics",
        add_help=False,
        description=(
            "The main job on synthetic data: writes a labelled synthetic export (default "
            "optics) and a held-out export with SHIFTED optics (another instrument), trains "
            f"the default pipeline (TrainConfig defaults, but {DEMO_EPOCHS} epochs unless "
            "--epochs is given, and one torch thread on machines with "
            f"<= {DEMO_SINGLE_THREAD_CPUS} CPUs unless --threads is given), classifies the shifted export from bright-field only and "
            "prints the metrics and where the files are."
        ),
    )
    p.add_argument("-h", "--help", action=_HelpWithTrainDefaults, help="show this help")
    p.add_argument(
        "--out",
        default=None,
        help="new or empty folder for all files (default: ./deparray-ctc-demo, or -2, -3...)",
    )
    p.add_argument("--gui", action="store_true", help="run the demo in napari instead")
    p.add_argument("--cells", type=int, default=600, help="training cells (default: 600)")
    p.add_argument(
        "--test-cells", type=int, default=300, help="shifted-optics test cells (default: 300)"
    )
    p.add_argument("--samples", type=int, default=4, help="training samples (default: 4)")
    p.add_argument("--ctc-fraction", type=float, default=0.2, help="(default: 0.2)")
    _add_train_options(p)
    p.train_default_overrides = {"epochs": DEMO_EPOCHS}  # type: ignore[attr-defined]
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``deparray-ctc``.

    Parameters
    ----------
    argv
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 for bad usage or a user error (one line on stderr),
        130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args))
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if isinstance(exc, _user_error_types()):
            _err(_one_line(exc))
            return EXIT_USAGE
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
