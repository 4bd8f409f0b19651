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
    "ModelDestination",
    "decide_model_destination",
    "in_progress_path",
    "is_not_worse",
    "recover_leftover",
    "stored_val_metrics",
    "validation_sizes",
    "validation_too_small",
]

#: Fewest validation cells of each class for a model's stored figures to mean something.
MIN_VALIDATION_PER_CLASS = 10


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


def decide_model_destination(
    out: str | os.PathLike, new: Mapping[str, Any], overwrite_if_worse: bool = False
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
            f"the new model ({figures}) was saved as {sibling.name}. Tick 'Overwrite even if "
            "worse' to replace it.",
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
            f"new model was saved as {sibling.name}. Label more cells, or tick 'Overwrite even "
            "if worse' to replace it.",
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
        f"was kept and the new model was saved as {sibling.name}. Tick 'Overwrite even if "
        "worse' to replace it.",
    )
