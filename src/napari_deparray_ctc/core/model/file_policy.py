"""Where a newly trained model goes: the one policy for the widget and the command line.

* Training writes to ``<name>.in-progress.pt`` beside the chosen file (:func:`in_progress_path`);
  the finished model is renamed into place, so a crash leaves the chosen file as it was.
  A file left by an interrupted run is moved aside before the next run
  (:func:`recover_leftover`).
* **Never replace a better model** (:func:`decide_model_destination`), but compare only what
  can be compared:

  - a model that *learned nothing* (``metadata["learned"] is False``) never replaces a file;
  - figures that rest on fewer than :data:`MIN_VALIDATION_PER_CLASS` validation cells of a
    class are too few to compare (:func:`validation_too_small`): an old model with such
    figures never blocks a new one, and a new one with such figures never replaces an old
    one with real figures; the message says why;
  - otherwise the higher validation PR-AUC wins, ties broken by the higher F1 (both as stored
    in the file: out-of-fold figures for models of this version).

The whole policy around one training is two calls, made by the widget's worker and by
``deparray-ctc train`` alike: :func:`start_model_file` before training (the in-progress file
to give ``TrainConfig.out``; a leftover moved aside) and :func:`place_trained_model` after it
(the decision, the rename, the message). Under ``torchrun`` only rank 0 moves files.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MIN_VALIDATION_PER_CLASS",
    "WIDGET_OVERWRITE_HINT",
    "ModelDestination",
    "ModelFileStart",
    "PlacedModel",
    "decide_model_destination",
    "in_progress_path",
    "is_not_worse",
    "place_trained_model",
    "recover_leftover",
    "site_model_path",
    "start_model_file",
    "stored_val_metrics",
    "validation_sizes",
    "validation_too_small",
    "writes_files",
]

#: Fewest validation cells of each class for a model's stored figures to mean something.
MIN_VALIDATION_PER_CLASS = 10
#: How the widget tells the user to replace a kept model anyway (the CLI names its option).
WIDGET_OVERWRITE_HINT = "tick 'Overwrite even if worse'"


def in_progress_path(out: str | os.PathLike) -> Path:
    """Where the best-so-far model is written during training (beside ``out``).

    ``model.pt`` -> ``model.in-progress.pt`` in the same folder, so moving it onto ``out``
    at the end is an atomic rename, and a crash mid-training leaves the chosen file as it
    was (and the best model so far recoverable).
    """
    out = Path(out).expanduser()
    suffix = out.suffix or ".pt"
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}.in-progress{suffix}")


def recover_leftover(path: str | os.PathLike) -> Path | None:
    """Move a model left by an interrupted run aside, so a new run cannot overwrite it.

    ``model.in-progress.pt`` becomes ``model.recovered-<YYYYmmdd-HHMMSS>.pt`` (stamped with
    its modification time). Returns the new path, or ``None`` when there was nothing.
    """
    path = Path(path)
    if not path.exists():
        return None
    stamp = _dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(path.name.replace(".in-progress", f".recovered-{stamp}"))
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(path.name.replace(".in-progress", f".recovered-{stamp}-{n}"))
    os.replace(path, aside)
    return aside


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def validation_sizes(meta: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """``(CTC, WBC)`` validation cells the stored figures rest on (``None`` when unknown)."""
    metrics = meta.get("metrics") or {}
    n_val = metrics.get("n_val")
    if isinstance(n_val, Mapping):
        n_ctc, n_wbc = n_val.get("CTC"), n_val.get("WBC")
    else:
        n_ctc, n_wbc = metrics.get("n_ctc"), metrics.get("n_wbc")
    if isinstance(n_ctc, int) and isinstance(n_wbc, int):
        return n_ctc, n_wbc
    summary = meta.get("data_summary") or {}
    n_val, n_val_ctc = summary.get("n_val"), summary.get("n_val_ctc")
    if isinstance(n_val, int) and isinstance(n_val_ctc, int):
        return n_val_ctc, n_val - n_val_ctc
    return None, None


def validation_too_small(meta: Mapping[str, Any]) -> str | None:
    """A sentence when a model's stored figures rest on too few validation cells, else ``None``.

    Parameters
    ----------
    meta
        A model's metadata (``LoadedModel.metadata``).
    """
    n_ctc, n_wbc = validation_sizes(meta)
    if n_ctc is None or n_wbc is None:
        return "The model file does not say how many cells its validation figures rest on."
    if min(n_ctc, n_wbc) < MIN_VALIDATION_PER_CLASS:
        return (
            f"Its validation figures rest on only {n_ctc} CTC and {n_wbc} WBC cells, fewer than "
            f"{MIN_VALIDATION_PER_CLASS} of each class: too few to trust them or to compare "
            "models by them. Check the calls on your own cells."
        )
    return None


def stored_val_metrics(path: str | os.PathLike) -> tuple[float | None, float | None]:
    """Validation PR-AUC and F1 stored in a model file (``metadata["metrics"]``).

    Raises
    ------
    napari_deparray_ctc.core.errors.ModelFileError
        When the file is not a readable model file.
    """
    from napari_deparray_ctc.core.model.loaded import load_model

    metrics = load_model(path, device="cpu").metadata.get("metrics") or {}
    return _number(metrics.get("average_precision")), _number(metrics.get("f1"))


def _scores(meta: Mapping[str, Any]) -> tuple[float | None, float | None]:
    metrics = meta.get("metrics") or {}
    return _number(metrics.get("average_precision")), _number(metrics.get("f1"))


def is_not_worse(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Whether a new model is at least as good as an old one, by their stored figures.

    The higher validation PR-AUC wins; a tie (within 0.001) is broken by the higher F1.
    Figures missing on the old side never count against the new model; missing on the new
    side, they count as worse. Sizes are not checked here (see
    :func:`decide_model_destination`).
    """
    new_ap, new_f1 = _scores(new)
    old_ap, old_f1 = _scores(old)
    if old_ap is not None and new_ap is not None and abs(new_ap - old_ap) > 1e-3:
        return new_ap > old_ap
    if old_ap is not None and new_ap is None:
        return False
    if old_f1 is None:
        return True
    if new_f1 is None:
        return False
    return new_f1 >= old_f1 - 1e-9


@dataclass
class ModelDestination:
    """Where a newly trained model goes, and what to tell the user.

    Attributes
    ----------
    path
        The file to move the new model to.
    replaces
        ``True`` when ``path`` is the chosen file and a previous model there is replaced.
    kept_previous
        ``True`` when the chosen file holds a model (or another file) that is kept.
    message
        One or two sentences for the user.
    """

    path: Path
    replaces: bool
    kept_previous: bool
    message: str


def _sibling(out: Path) -> Path:
    """``<stem>-<YYYYmmdd-HHMMSS><suffix>`` beside ``out``, not yet taken."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    suffix = out.suffix or ".pt"
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    candidate = out.with_name(f"{stem}-{stamp}{suffix}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = out.with_name(f"{stem}-{stamp}-{n}{suffix}")
    return candidate


def site_model_path(model: str | os.PathLike, site: str) -> Path:
    """Where a model calibrated for a site goes: beside the original, never over a file.

    ``<model stem>.site-<site><suffix>`` (the site's name reduced to letters, digits, ``-``
    and ``_``), or a dated sibling of it when that name is taken.

    Parameters
    ----------
    model
        The original model file (left untouched).
    site
        The site's name, e.g. the export's folder name.
    """
    model = Path(model).expanduser()
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in site).strip("-") or "site"
    suffix = model.suffix or ".pt"
    stem = model.name[: -len(model.suffix)] if model.suffix else model.name
    target = model.with_name(f"{stem}.site-{slug[:60]}{suffix}")
    return _sibling(target) if target.exists() else target


def _figures(meta: Mapping[str, Any]) -> str:
    ap, f1 = _scores(meta)
    n_ctc, n_wbc = validation_sizes(meta)
    parts = []
    if ap is not None:
        parts.append(f"PR-AUC {ap:.3f}")
    if f1 is not None:
        parts.append(f"F1 {f1:.3f}")
    text = ", ".join(parts) or "no stored figures"
    if n_ctc is not None:
        text += f" on {n_ctc} CTC + {n_wbc} WBC"
    return text


def _sentence(hint: str) -> str:
    return hint[:1].upper() + hint[1:]


def decide_model_destination(
    out: str | os.PathLike,
    new: Mapping[str, Any],
    overwrite_if_worse: bool = False,
    overwrite_hint: str = WIDGET_OVERWRITE_HINT,
) -> ModelDestination:
    """Decide where a finished (or stopped) training's model is written.

    Parameters
    ----------
    out
        The model file the user chose.
    new
        The new model's metadata (``TrainResult.model.metadata``).
    overwrite_if_worse
        The user's "overwrite even if worse". It never lets a model that learned nothing
        replace a file.
    overwrite_hint
        How the user asks for that, as the messages say it (``"tick 'Overwrite even if
        worse'"``, ``"give --overwrite-if-worse"``).

    Returns
    -------
    ModelDestination
        The chosen file when it is free, when the user asked to overwrite, when the old
        model's figures are too few to compare (or it learned nothing), or when the new model
        is not worse (:func:`is_not_worse`); otherwise a new file beside it
        (``<stem>-<YYYYmmdd-HHMMSS><suffix>``), leaving the existing one byte for byte intact.
        An existing file that is not a readable model is never replaced unasked.
    """
    from napari_deparray_ctc.core.errors import ModelFileError
    from napari_deparray_ctc.core.model.loaded import load_model

    out = Path(out).expanduser()
    figures = _figures(new)
    learned = bool(new.get("learned", True))
    nothing = (
        "Training learned nothing that could be shown (see the warning), so its calls must not "
        "be used. "
    )
    if not out.exists():
        prefix = "" if learned else nothing
        return ModelDestination(out, False, False, f"{prefix}Model saved to {out} ({figures}).")
    if not learned:
        sibling = _sibling(out)
        return ModelDestination(
            sibling,
            False,
            True,
            f"{nothing}{out.name} was left as it was; the new model was saved as "
            f"{sibling.name} for inspection only.",
        )
    if overwrite_if_worse:
        return ModelDestination(
            out, True, False, f"Model saved to {out} ({figures}), replacing the previous one."
        )
    try:
        old = load_model(out, device="cpu").metadata
    except ModelFileError as exc:
        sibling = _sibling(out)
        return ModelDestination(
            sibling,
            False,
            True,
            f"{out} is not a readable model file ({exc.reason}), so it was left untouched; "
            f"the new model ({figures}) was saved as {sibling.name}. "
            f"{_sentence(overwrite_hint)} to replace it.",
        )
    old_figures = _figures(old)
    if not bool(old.get("learned", True)) or validation_too_small(old):
        why = (
            "learned nothing"
            if not bool(old.get("learned", True))
            else "rested on too few validation cells to compare"
        )
        return ModelDestination(
            out,
            True,
            False,
            f"Model saved to {out} ({figures}), replacing the previous one, whose figures "
            f"({old_figures}) {why}.",
        )
    if validation_too_small(new):
        sibling = _sibling(out)
        return ModelDestination(
            sibling,
            False,
            True,
            f"The new model's figures ({figures}) rest on too few validation cells to show "
            f"that it is as good as {out.name} ({old_figures}), so {out.name} was kept and the "
            f"new model was saved as {sibling.name}. Label more cells, or {overwrite_hint} to "
            "replace it.",
        )
    if is_not_worse(new, old):
        return ModelDestination(
            out,
            True,
            False,
            f"Model saved to {out} ({figures}), replacing the previous one ({old_figures}).",
        )
    sibling = _sibling(out)
    return ModelDestination(
        sibling,
        False,
        True,
        f"The new model ({figures}) is worse than {out.name} ({old_figures}), so {out.name} "
        f"was kept and the new model was saved as {sibling.name}. "
        f"{_sentence(overwrite_hint)} to replace it.",
    )


def _rank() -> int:
    """This process's rank under ``torchrun`` (``RANK``; 0 alone)."""
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def writes_files() -> bool:
    """Whether this process writes and moves model files.

    Returns
    -------
    bool
        ``True`` alone, or on rank 0 under ``torchrun`` (``RANK``).
    """
    return _rank() == 0


@dataclass
class ModelFileStart:
    """What :func:`start_model_file` prepared.

    Attributes
    ----------
    in_progress
        Where training writes (``TrainConfig.out``): ``<name>.in-progress<suffix>``.
    recovered
        Where a model left there by an interrupted run was moved, or ``None``.
    """

    in_progress: Path
    recovered: Path | None = None


def start_model_file(out: str | os.PathLike) -> ModelFileStart:
    """Before training to ``out``: the in-progress file, a leftover there moved aside.

    Parameters
    ----------
    out
        The model file the user chose.

    Returns
    -------
    ModelFileStart
        Give ``in_progress`` to ``TrainConfig.out``, and ``recovered`` to
        :func:`place_trained_model`. Under ``torchrun`` only rank 0 moves a leftover.
    """
    working = in_progress_path(out)
    recovered = recover_leftover(working) if writes_files() else None
    return ModelFileStart(working, recovered)


@dataclass
class PlacedModel:
    """Where a finished training's model went (:func:`place_trained_model`).

    Attributes
    ----------
    path
        The model file now holding the new model, or ``None`` when none was written (or on a
        ``torchrun`` rank other than 0, which leaves the files to rank 0).
    destination
        The policy's decision (``None`` when no model was written).
    message
        Sentences for the user: the training's warning, a stop, where the model went and why,
        a recovered leftover.
    """

    path: Path | None
    destination: ModelDestination | None
    message: str


def place_trained_model(
    result: Any,
    out: str | os.PathLike,
    overwrite_if_worse: bool = False,
    recovered: str | os.PathLike | None = None,
    overwrite_hint: str = WIDGET_OVERWRITE_HINT,
) -> PlacedModel:
    """After training: apply the whole policy to the model written to the in-progress file.

    Parameters
    ----------
    result
        The ``TrainResult`` of a training whose ``config.out`` was
        ``start_model_file(out).in_progress`` (its ``out_path``, ``model.metadata``,
        ``cancelled`` and ``warning`` are read).
    out
        The model file the user chose.
    overwrite_if_worse
        The user's "overwrite even if worse" (:func:`decide_model_destination`).
    recovered
        ``start_model_file(out).recovered``: named in the message.
    overwrite_hint
        How the user asks to overwrite, for the messages.

    Returns
    -------
    PlacedModel
        The new model renamed to :func:`decide_model_destination`'s file (the chosen one, or
        one beside it: a better model is never replaced), and the message.

    Raises
    ------
    OSError
        The rename failed (the in-progress file is left where it is).
    """
    out = Path(out).expanduser()
    if not writes_files():
        return PlacedModel(None, None, f"Rank {_rank()}: rank 0 writes the model file.")
    aside = (
        f" A model left by an interrupted run was kept as {Path(recovered).name}."
        if recovered is not None
        else ""
    )
    written = Path(result.out_path) if getattr(result, "out_path", None) else None
    if written is None or not written.exists():
        return PlacedModel(None, None, f"No model was written; {out} was left as it was.{aside}")
    destination = decide_model_destination(
        out, result.model.metadata, overwrite_if_worse, overwrite_hint
    )
    if written.absolute() != destination.path.absolute():
        os.replace(written, destination.path)
    message = destination.message
    if getattr(result, "cancelled", False):
        message = "Stopped; the best model so far was kept. " + message
    warning = getattr(result, "warning", None)
    if warning:
        message = f"{warning} {message}"
    return PlacedModel(destination.path, destination, message + aside)
