"""Cross-fitting: one network per fold, out-of-fold scores, calibration, threshold, checks.

The procedure is described in ``core.train``; this module runs it for :func:`core.train.train`.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from napari_deparray_ctc.core.constants import CLASS_NAMES
from napari_deparray_ctc.core.training.outcome import TrainProgress, TrainResult
from napari_deparray_ctc.core.training.training_set import TrainingSet

__all__ = ["fold_plan", "run_crossfit"]


def fold_plan(ts: TrainingSet, config) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """The (train, held-out) index pairs for a checked set, and a description of the split.

    ``config.folds`` folds when the set allows it (at most the cells of the rarer class and
    the number of samples); with ``folds=1``, or too few cells or samples for two folds, one
    validation split of ``config.val_fraction``.
    """
    from napari_deparray_ctc.core.training.splits import kfold_splits, split_train_val, to_groups

    labels = list(ts.labels)
    n_ctc = sum(1 for v in labels if v == "CTC")
    k = min(int(config.folds), n_ctc, len(labels) - n_ctc)
    codes = to_groups(ts.groups, len(labels))
    n_groups = 0 if codes is None else len(np.unique(codes))
    by = "by sample" if n_groups >= 2 else "by cell"
    if n_groups >= 2:
        k = min(k, n_groups)
    if config.folds >= 2 and k >= 2:
        return kfold_splits(labels, ts.groups, k, config.seed), f"{k}-fold {by}"
    train_idx, val_idx = split_train_val(labels, ts.groups, config.val_fraction, config.seed)
    return [(train_idx, val_idx)], f"one validation split {by}"


def _best_record(outcome) -> dict:
    return next(h for h in outcome.history if h["epoch"] == outcome.best_epoch)


def _samples_per_epoch(n_train: int, n_dapi: int, strategy: str) -> int:
    return n_train + (n_dapi if strategy in ("substitute", "blend") else 0)


#: training cells measured at a time for their morphology (bounds the temporary memory)
_FEATURE_CHUNK = 512


class _Run:
    """State of one cross-fitting run (members so far, out-of-fold logits, the file)."""

    def __init__(
        self,
        config,
        ts: TrainingSet,
        y: np.ndarray,
        plan,
        split: str,
        summary: dict,
        normalisation: dict,
        inputs: Any,
    ):
        from napari_deparray_ctc.core.training.distributed import DistContext

        self.dist = DistContext(device=config.device)
        self.config = config
        self.ts = ts
        self.y = y
        self.plan = plan
        self.split = split
        self.summary = summary
        self.oof = np.full(len(y), np.nan)
        self.outcomes: list = []
        self.history: list[dict] = []
        self.pretrained_source: str | None = None
        self.out_path: str | None = None
        self._feature_summary: dict | None = None
        self._feature_summary_done = False
        self.normalisation = normalisation  # the spec the cells were prepared with, stored
        self.inputs = inputs  # the training cells' network inputs (N, 1, S, S), unaugmented
        self._morphology: np.ndarray | None = None

    def feature_summary(self) -> dict | None:
        """The training cells' image-feature summary (``core.shift``), computed once: every
        model file carries it, so classifying cells unlike them can warn."""
        if not self._feature_summary_done:
            from napari_deparray_ctc.core.inference.shift import training_feature_summary

            self._feature_summary_done = True
            try:
                self._feature_summary = training_feature_summary(self.ts.bf, self.ts.groups)
            except ValueError:  # too few or degenerate images: no warning, not a failure
                self._feature_summary = None
        return self._feature_summary

    def morphology_features(self) -> np.ndarray:
        """The training cells' morphology features, measured once on their network inputs
        (prepared as classification prepares them: same size, normalisation, scale rule)."""
        if self._morphology is None:
            from napari_deparray_ctc.core.inference.morphology import morphology_features

            chunks = [
                morphology_features(self.inputs[start : start + _FEATURE_CHUNK])
                for start in range(0, len(self.inputs), _FEATURE_CHUNK)
            ]
            self._morphology = np.concatenate(chunks)
        return self._morphology

    def morphology_stack(self, oof: np.ndarray, done: np.ndarray) -> tuple[dict, np.ndarray]:
        """Fit the morphology stack on the cells scored so far (``core.training.stacking``).

        Returns the stored spec and the stacked out-of-fold logit of every cell (cross-fitted;
        ``nan`` where ``done`` is false).
        """
        from napari_deparray_ctc.core.training.stacking import (
            fit_morphology_stack,
            stacked_oof_logits,
        )

        config, y = self.config, self.y
        features = self.morphology_features()[done]
        spec = fit_morphology_stack(oof[done], y[done], features, config.seed)
        stacked = np.full(len(oof), np.nan)
        stacked[done] = stacked_oof_logits(oof[done], y[done], features, config.seed)
        return spec, stacked

    def model_parts(self, current=None) -> tuple[Any, dict]:
        """The network (ensemble or best member) and its metadata from the folds so far."""
        from napari_deparray_ctc.core.evaluation.metrics import classification_metrics
        from napari_deparray_ctc.core.model.file_format import FORMAT_VERSION, package_versions
        from napari_deparray_ctc.core.model.network import build_ensemble
        from napari_deparray_ctc.core.training.calibration import (
            apply_calibration,
            assess_learning,
            choose_threshold,
            fit_calibration,
        )

        config, y = self.config, self.y
        outcomes = [*self.outcomes, *([current] if current is not None else [])]
        oof = self.oof.copy()
        if current is not None:
            oof[self.plan[len(self.outcomes)][1]] = current.val_logits
        done = ~np.isnan(oof)

        def calibrated(scores: np.ndarray) -> tuple[dict, np.ndarray, float]:
            calibration = fit_calibration(scores, y[done], config.calibration)
            p = apply_calibration(calibration, scores)
            return calibration, p, choose_threshold(y[done], p, config.threshold_rule)[0]

        stack = None
        if config.morphology:
            # the stack replaces the network's own calibration and threshold: kept beside it
            calibration, _, threshold = calibrated(oof[done])
            stack, stacked = self.morphology_stack(oof, done)
            stack["network_only"] = {"calibration": calibration, "threshold": threshold}
            oof = np.where(done, stacked, np.nan)
        calibration, p, threshold = calibrated(oof[done])
        fold_thresholds = []
        for (_, held), _outcome in zip(self.plan, outcomes, strict=False):
            y_fold = y[held]
            if 0 < y_fold.sum() < len(y_fold):
                fold_p = apply_calibration(calibration, oof[held])
                fold_thresholds.append(choose_threshold(y_fold, fold_p, config.threshold_rule)[0])
        check = assess_learning(y[done], p, threshold, calibrated=calibration["method"] != "none")
        metrics = classification_metrics(y[done], p, threshold)
        best_epochs = [o.best_epoch for o in outcomes]
        metrics.update(
            split="out-of-fold" if len(self.plan) > 1 else "validation",
            n_val={"CTC": int(y[done].sum()), "WBC": int(done.sum() - y[done].sum())},
            trivial=check["trivial"],
            p_value=check["p_value"],
            best_epoch=int(statistics.median(best_epochs)),
            best_epochs=best_epochs,
            epochs_run=len(self.history),
            val_loss=float(np.mean([_best_record(o)["val_loss"] for o in outcomes])),
            final=current is None,
        )
        if config.ensemble or len(outcomes) == 1:
            network = build_ensemble([o.network for o in outcomes])
        else:
            scores = [_best_record(o)["val_calibrated_loss"] for o in outcomes]
            network = outcomes[int(np.argmin(scores))].network
        meta = {
            "arch": config.arch,
            "image_size": config.image_size,
            "normalisation": dict(self.normalisation),
            "input_channel": "BF",
            "class_names": list(CLASS_NAMES),
            "threshold": threshold,
            "threshold_rule": config.threshold_rule,
            "threshold_sd": float(np.std(fold_thresholds, ddof=1))
            if len(fold_thresholds) > 1
            else None,
            "threshold_folds": fold_thresholds,
            "calibration": calibration,
            "learned": check["learned"],
            "warning": check["warning"],
            "train_config": config.to_dict(),
            "seed": config.seed,
            "dapi_strategy": self.summary.get("dapi_strategy", config.dapi_strategy),
            "augment": list(config.augment),
            "pretrained": self.pretrained_source,
            "data_summary": self.summary,
            "feature_summary": self.feature_summary(),
            "morphology_stack": stack,
            "metrics": metrics,
            "history": self.history + (current.history if current is not None else []),
            "device": config.device,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": package_versions(),
            "format_version": FORMAT_VERSION,
        }
        return network, meta

    def oof_record(self) -> dict:
        """The out-of-fold logits, labels and fold numbers of the held-out cells."""
        fold = np.zeros(len(self.y), dtype=int)
        for i, (_, held) in enumerate(self.plan, start=1):
            fold[held] = i
        done = ~np.isnan(self.oof)
        return {
            "logits": self.oof[done].tolist(),
            "y": self.y[done].tolist(),
            "fold": fold[done].tolist(),
        }

    def write(self, current=None) -> None:
        """Save the model so far to ``config.out`` (atomically)."""
        from napari_deparray_ctc.core.model.loaded import save_model

        if self.config.out is None:
            return
        self.out_path = self.config.out
        if not self.dist.is_main:  # only rank 0 writes
            return
        network, meta = self.model_parts(current)
        save_model(self.config.out, network, meta)


def _summary(ts: TrainingSet, n_dropped: int, plan, split: str, y: np.ndarray) -> dict:
    summary = ts.summary()
    held = np.concatenate([val for _, val in plan])
    summary.update(
        n_unlabelled_dropped=n_dropped,
        n_train=round(float(np.mean([len(tr) for tr, _ in plan]))),
        n_val=len(held),
        n_val_ctc=int(y[held].sum()),
        n_train_ctc=round(float(np.mean([y[tr].sum() for tr, _ in plan]))),
        split=split,
        folds=len(plan),
    )
    if ts.groups is not None:
        summary["val_groups"] = sorted(
            {str(ts.groups[i]) for i in held if ts.groups[i] is not None}
        )[:100]
    return summary


def run_crossfit(
    config,
    ts: TrainingSet,
    n_dropped: int,
    progress: Callable[[Any], Any] | None,
    should_stop: Callable[[], bool] | None,
):
    """Train and check one model on a checked set; returns a ``TrainResult``."""
    import torch

    from napari_deparray_ctc.core.inference.preprocess import training_normalisation
    from napari_deparray_ctc.core.model.loaded import LoadedModel
    from napari_deparray_ctc.core.model.network import build_network, select_device
    from napari_deparray_ctc.core.training.distributed import from_environment
    from napari_deparray_ctc.core.training.fit import (
        Schedule,
        fit_network,
        n_batches,
        torch_session,
    )
    from napari_deparray_ctc.core.training.samples import prepare_tensors

    dist = from_environment(select_device(config.device))
    device = dist.device
    config = dataclasses.replace(config, device=device)
    if not dist.is_main:
        progress = None  # rank 0 reports for everyone
    plan, split = fold_plan(ts, config)
    started = time.perf_counter()
    normalisation = training_normalisation(
        config.pixel_size_um, ts.pixel_sizes, len(ts.bf), config.flat_field
    )
    with torch_session(config.seed, device, config.num_threads):
        prepared = prepare_tensors(
            ts, config.image_size, normalisation, with_dapi=config.dapi_strategy != "none"
        )
        y = prepared.y.numpy().astype(np.int64)
        strategy = config.dapi_strategy if prepared.dapi is not None else "none"
        has_dapi = (
            prepared.has_dapi.numpy() if prepared.has_dapi is not None else np.zeros(len(y), bool)
        )
        summary = _summary(ts, n_dropped, plan, split, y)
        summary["dapi_strategy"] = strategy
        per_fold = [
            config.epochs
            * n_batches(
                _samples_per_epoch(len(tr), int(has_dapi[tr].sum()), strategy), config.batch_size
            )
            for tr, _ in plan
        ]
        schedule = Schedule(steps_before=0, steps_total=sum(per_fold), started=started)
        run = _Run(config, ts, y, plan, split, summary, normalisation, prepared.bf)
        run.dist = dist
        cancelled = False
        # batches trained in the current fold (the run-wide step is the fold's start plus
        # these), and the last run-wide step reported
        fold_steps, last_step = [0], [0]
        for i, (train_idx, val_idx) in enumerate(plan):
            fold = (i + 1, len(plan))
            fold_steps[0] = 0

            def report(fold=fold, **kwargs: Any) -> None:
                if progress is None:
                    return
                if kwargs.get("phase") == "batch":
                    fold_steps[0] += 1
                step = min(schedule.steps_before + fold_steps[0], schedule.steps_total)
                last_step[0] = step
                progress(
                    TrainProgress(
                        fold=fold[0],
                        folds=fold[1],
                        step=step,
                        steps=schedule.steps_total,
                        **kwargs,
                    )
                )

            torch.manual_seed(config.seed + i)  # each member its own initialisation
            # a fine-tuning start that is an ensemble gives fold i its network i
            network = build_network(config.arch, config.pretrained, member=i).to(device)
            torch.manual_seed(config.seed + i + 7919 * dist.rank)  # augmentation draws per rank
            run.pretrained_source = getattr(network, "pretrained_source", None)
            first = i == 0 and config.out is not None
            outcome = fit_network(
                dataclasses.replace(config, seed=config.seed + i),
                network,
                prepared.subset(train_idx),
                prepared.subset(val_idx),
                report=report,
                should_stop=should_stop,
                schedule=schedule,
                on_epoch=(lambda o: run.write(o)) if first else None,
                dist=dist,
            )
            for record in outcome.history:
                record["fold"] = i + 1
            run.oof[val_idx] = outcome.val_logits
            run.outcomes.append(outcome)
            run.history.extend(outcome.history)
            schedule.steps_before += per_fold[i]
            if outcome.cancelled:
                cancelled = True
                break
            if i + 1 < len(plan):
                run.write()
        network, meta = run.model_parts()
        network.eval()
        if config.out is not None:
            run.write()
        dist.barrier()  # the file is complete before any rank returns
        model = LoadedModel(network=network, metadata=meta, device=device)
        metrics = meta["metrics"]
        if progress is not None:
            last = run.history[-1] if run.history else {}
            progress(
                TrainProgress(
                    epoch=last.get("epoch", 0),
                    epochs=config.epochs,
                    batch=0,
                    batches=0,
                    phase="done",
                    train_loss=last.get("train_loss"),
                    val_loss=metrics["log_loss"],
                    val_f1=metrics["f1"],
                    best_f1=metrics["f1"],
                    elapsed_s=time.perf_counter() - started,
                    eta_s=0.0,
                    fold=len(run.outcomes),
                    folds=len(plan),
                    step=last_step[0] if cancelled else schedule.steps_total,
                    steps=schedule.steps_total,
                )
            )
    return TrainResult(
        model=model,
        metrics=metrics,
        history=run.history,
        stopped_early=all(o.stopped_early for o in run.outcomes),
        cancelled=cancelled,
        out_path=run.out_path,
        learned=bool(meta["learned"]),
        warning=meta["warning"],
        oof=run.oof_record(),
    )
