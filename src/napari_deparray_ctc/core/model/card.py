"""The model card: what a model file says about itself, as lines a person can read.

Works on a model's metadata dict (``LoadedModel.metadata``), so it needs no torch.
``deparray-ctc info M.pt`` prints :func:`model_card_lines`, and the classify widget shows
:func:`model_summary_lines` as soon as a model file is chosen.
"""

from __future__ import annotations

from typing import Any

__all__ = ["model_card_lines", "model_summary_lines", "site_profile_lines", "validation_note"]


def _number(value: Any, digits: int = 3) -> str:
    return (
        f"{value:.{digits}f}"
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else "n/a"
    )


def _validation_sizes(meta: dict) -> tuple[int | None, int | None]:
    """``(CTC, WBC)`` validation cells the stored figures rest on (``None`` when unknown)."""
    from napari_deparray_ctc.core.model.file_policy import validation_sizes

    return validation_sizes(meta)


def validation_note(meta: dict) -> str | None:
    """A sentence when the stored figures rest on too few validation cells (else ``None``):
    the one rule, ``core.model_files.validation_too_small``."""
    from napari_deparray_ctc.core.model.file_policy import validation_too_small

    return validation_too_small(meta)


def model_summary_lines(meta: dict) -> list[str]:
    """Three or four short lines: network, training data, validation, threshold."""
    lines = [f"{meta.get('arch', '?')}, {meta.get('image_size', '?')} px bright-field input"]
    summary = meta.get("data_summary") or {}
    if summary:
        lines.append(
            f"trained on {summary.get('n_cells', '?')} cells ({summary.get('n_ctc', '?')} CTC, "
            f"{summary.get('n_wbc', '?')} WBC) from {summary.get('n_groups') or 1} sample(s)"
        )
    metrics = meta.get("metrics") or {}
    n_ctc, n_wbc = _validation_sizes(meta)
    sizes = f" on {n_ctc} CTC + {n_wbc} WBC" if n_ctc is not None else ""
    lines.append(
        f"validation{sizes}: F1 {_number(metrics.get('f1'))}, precision "
        f"{_number(metrics.get('precision'))}, recall {_number(metrics.get('recall'))}"
    )
    threshold = f"threshold {_number(meta.get('threshold'))}"
    site = _site(meta)
    if site is not None:
        source = site.get("source_model") or {}
        threshold += f" (site calibration; the model's own: {_number(source.get('threshold'))})"
    elif isinstance(meta.get("threshold_sd"), (int, float)):
        threshold += f" (± {meta['threshold_sd']:.3f} across folds)"
    if meta.get("calibration"):
        method = (meta["calibration"] or {}).get("method", "yes")
        threshold += f", calibrated ({method})"
    lines.append(threshold)
    if site is not None:
        lines.append(_site_headline(site))
    warning = meta.get("warning") or (
        None if meta.get("learned", True) else "training learned nothing"
    )
    if warning:
        lines.append(f"warning: {warning}")
    note = validation_note(meta)
    if note:
        lines.append(f"note: {note}")
    return lines


def _site(meta: dict) -> dict | None:
    profile = meta.get("site_profile")
    return profile if isinstance(profile, dict) else None


def _site_headline(site: dict) -> str:
    counts = site.get("n_labelled") or {}
    where = site.get("data_name") or "a site"
    return (
        f"calibrated for a site: {where}, on {site.get('created', '?')}, from "
        f"{counts.get('CTC', '?')} CTC + {counts.get('WBC', '?')} WBC labelled cells of "
        f"{site.get('n_cells', '?')}"
    )


def site_profile_lines(meta: dict) -> list[str]:
    """What the site profile of a site model says (empty for a model as training wrote it)."""
    from napari_deparray_ctc.core.model.file_format import SITE_PROFILE_VERSION

    site = _site(meta)
    if site is None:
        return []
    if isinstance(site.get("version"), int) and site["version"] > SITE_PROFILE_VERSION:
        return [
            f"site profile: written by a newer version (profile version {site['version']}); "
            "its calibration and threshold are used, its details are not shown"
        ]
    source = site.get("source_model") or {}
    digest = source.get("sha256")
    origin = source.get("file") or "a model in memory"
    if digest:
        origin += f" (SHA-256 {str(digest)[:12]}...)"
    lines = [
        f"site profile: calibrated from {origin}, trained on {source.get('created') or '?'}"
        + ("; that model was itself a site model" if source.get("was_site_model") else "")
    ]
    prior = site.get("prior") or {}
    share = prior.get("ctc_fraction")
    share_text = f"{share:.1%}" if isinstance(share, (int, float)) else "?"
    how = (
        "estimated from every cell's P(CTC)"
        if prior.get("method") == "estimate"
        else "as among the labelled cells"
    )
    lines.append(
        f"site calibration: the model's calibration {_calibration_text(source.get('calibration'))}"
        f" and threshold {_number(source.get('threshold'))} were replaced; CTC share {how}, "
        f"expected among this site's cells: {share_text}; threshold rule "
        f"{site.get('threshold_rule', '?')} on all {site.get('n_cells', '?')} cells"
    )
    adapted = site.get("adapted")
    lines.append(
        f"site BatchNorm statistics: re-estimated on {adapted.get('n_cells', '?')} of the site's "
        "cells"
        if isinstance(adapted, dict)
        else "site BatchNorm statistics: the model's own (not adapted)"
    )
    figures = site.get("figures") or {}
    if figures:
        lines.append(
            f"site labelled cells: ROC-AUC {_number(figures.get('roc_auc'))}; log-loss "
            f"{_number(figures.get('log_loss_model'))} with the model's calibration, "
            f"{_number(figures.get('log_loss_site_loo'))} with the site's (leave-one-out); "
            f"cells called CTC: {figures.get('called_ctc_model', '?')} with the model's "
            f"threshold, {figures.get('called_ctc_site', '?')} with the site's"
        )
    ids = site.get("cell_ids") or {}
    for name in ("CTC", "WBC"):
        listed = [str(c) for c in ids.get(name) or []]
        if listed:
            more = f" and {len(listed) - 8} more" if len(listed) > 8 else ""
            lines.append(f"site {name} cells: {', '.join(listed[:8])}{more}")
    features = site.get("feature_summary")
    if isinstance(features, dict):
        lines.append(
            f"site shift check: image features of {features.get('n_cells', '?')} site cells "
            "stored (classify compares new cells with the site's)"
        )
    if site.get("warning"):
        lines.append(f"site warning: {site['warning']}")
    return lines


def _calibration_text(spec: Any) -> str:
    if not isinstance(spec, dict):
        return "(none)"
    if spec.get("method") == "platt":
        a, b = spec.get("a"), spec.get("b")
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return f"(platt a {a:.3f}, b {b:.3f})"
    return f"({spec.get('method', '?')})"


def _per_sample_line(summary: dict) -> str | None:
    """``samples: S01 (12 CTC, 88 WBC), S02 (...)``, or the bare names when counts are absent."""
    per_group = summary.get("per_group")
    if isinstance(per_group, dict) and per_group:
        shown = [
            f"{name} ({counts.get('CTC', '?')} CTC, {counts.get('WBC', '?')} WBC)"
            for name, counts in list(per_group.items())[:20]
            if isinstance(counts, dict)
        ]
        more = f" and {len(per_group) - 20} more" if len(per_group) > 20 else ""
        return f"training cells per sample: {', '.join(shown)}{more}"
    groups = summary.get("groups") or []
    if groups:
        return f"samples: {', '.join(str(g) for g in groups[:20])}"
    return None


def _calibration_line(meta: dict) -> str | None:
    spec = meta.get("calibration")
    if not isinstance(spec, dict):
        return "calibration: none stored (P(CTC) is the network's sigmoid)"
    method = spec.get("method", "?")
    detail = ""
    if method == "platt":
        a, b = spec.get("a"), spec.get("b")
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            sign = "-" if b < 0 else "+"
            detail = f": P = sigmoid({a:.3f} x logit {sign} {abs(b):.3f})"
    elif method == "isotonic":
        detail = f" ({len(spec.get('x') or [])} breakpoints)"
    kind = "labelled site" if _site(meta) is not None else "out-of-fold"
    cells = f", fitted on {spec['n_cells']} {kind} cells" if spec.get("n_cells") else ""
    return f"calibration: {method}{detail}{cells}"


def _scale_line(meta: dict) -> str:
    """How a cell is brought to the network input (the scale rule, ``core.inference.preprocess``)."""
    spec = meta.get("normalisation") or {}
    size = meta.get("image_size", "?")
    pixel = spec.get("pixel_size_um")
    counts = spec.get("training_pixel_sizes")
    counted = isinstance(counts, dict) and isinstance(counts.get("known"), int)
    if not isinstance(pixel, (int, float)) or isinstance(pixel, bool):
        why = (
            " (its training cells declared no pixel size)"
            if counted and not counts.get("known")
            else ""
        )
        return (
            f"network input: every crop resized whole to {size} px{why}; a pixel size that a "
            "file declares is not used"
        )
    line = (
        f"network input: cells whose file declares a pixel size are rescaled to {pixel:g} µm "
        f"per pixel and cut to {size} px; cells without one are resized whole"
    )
    if counted:
        total = counts["known"] + int(counts.get("unknown") or 0)
        line += f" (training: {counts['known']} of {total} cells declared a pixel size)"
    else:
        line += (
            " (written before training recorded its cells' pixel sizes: whether its "
            "training cells declared one is not known)"
        )
    return line


def _training_line(meta: dict) -> str | None:
    config = meta.get("train_config") or {}
    if not config:
        return None
    parts = [f"up to {config.get('epochs', '?')} epochs"]
    if config.get("folds"):
        parts.append(f"{config['folds']} folds")
    members = meta.get("ensemble")
    if isinstance(members, int) and members > 1:
        parts.append(f"ensemble of {members} networks")
    parts.append(f"lr {config.get('lr', '?')}, batch {config.get('batch_size', '?')}")
    parts.append(f"seed {meta.get('seed', config.get('seed', '?'))}")
    start = meta.get("pretrained") or config.get("pretrained")
    parts.append(f"started from {start}" if start else "random initialisation")
    return "training: " + ", ".join(str(p) for p in parts)


def _morphology_line(meta: dict) -> str:
    stack = meta.get("morphology_stack")
    if not isinstance(stack, dict):
        return "cell-shape features: not used (the call is the network's)"
    inputs = list(stack.get("inputs") or [])
    weights = dict(zip(inputs, stack.get("coef") or [], strict=False))
    strongest = sorted(
        (name for name in inputs if name != "network_logit"),
        key=lambda name: -abs(weights.get(name, 0.0)),
    )[:3]
    alone = (stack.get("network_only") or {}).get("threshold")
    return (
        f"cell-shape features: the call combines the network's score (weight "
        f"{_number(weights.get('network_logit'), 2)}) with {len(inputs) - 1} shape features "
        f"(strongest: {', '.join(strongest)}); the network alone had threshold {_number(alone)}"
    )


def model_card_lines(meta: dict) -> list[str]:
    """Everything the card holds (``deparray-ctc info``).

    The summary (:func:`model_summary_lines`), then the training cells per sample, the
    validation PR-AUC, the calibration, the training settings (epochs, folds, ensemble,
    starting weights), augmentation and DAPI strategy, whether cell-shape features take part in
    the call, whether the shift check is possible,
    the package and torch versions with the date, and the trainer's note.
    """
    lines = model_summary_lines(meta)
    summary = meta.get("data_summary") or {}
    per_sample = _per_sample_line(summary)
    if per_sample:
        lines.append(per_sample)
    metrics = meta.get("metrics") or {}
    if isinstance(metrics.get("average_precision"), (int, float)):
        split = metrics.get("split") or summary.get("split") or "validation"
        lines.append(f"validation PR-AUC {_number(metrics['average_precision'])} ({split})")
    calibration = _calibration_line(meta)
    if calibration:
        lines.append(calibration)
    lines.append(_scale_line(meta))
    lines.extend(site_profile_lines(meta))
    training = _training_line(meta)
    if training:
        lines.append(training)
    config = meta.get("train_config") or {}
    augment = list(meta.get("augment") or config.get("augment") or [])
    if augment and config.get("random_convolution"):
        augment.append("random convolutions")
    lines.append(
        f"augmentation: {', '.join(augment) or 'none'}; DAPI strategy: "
        f"{meta.get('dapi_strategy') or config.get('dapi_strategy', '?')}"
    )
    lines.append(_morphology_line(meta))
    features = meta.get("feature_summary")
    if isinstance(features, dict):
        lines.append(
            f"shift check: image features of {features.get('n_cells', '?')} training cells "
            f"from {features.get('n_groups') or 'unknown'} sample(s) stored"
        )
    else:
        lines.append("shift check: not possible (no training-feature summary in the file)")
    versions = meta.get("versions") or {}
    if versions:
        lines.append(
            "written by napari-deparray-ctc "
            f"{versions.get('napari_deparray_ctc', '?')} with torch {versions.get('torch', '?')}"
            f" on {meta.get('created', '?')}"
        )
    lines.append(f"note from the trainer: {meta['note']}" if meta.get("note") else "note: none")
    return lines
