"""The main job on synthetic cells: synthesise -> train -> classify a shifted export -> score.

Used by ``deparray-ctc demo`` (which prints what :func:`run_demo` returns) and, for its export,
by ``deparray-ctc demo --gui``. Everything is written into one new folder; by default a
time-stamped folder under the user cache (``$DEPARRAY_CTC_CACHE_DIR`` overrides), never the
current directory.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEMO_EPOCHS",
    "DEMO_SINGLE_THREAD_CPUS",
    "DemoPaths",
    "DemoResult",
    "default_demo_folder",
    "demo_threads",
    "new_demo_folder",
    "run_demo",
    "write_demo_export",
]

#: the demo trains the default pipeline for fewer epochs (unless asked otherwise), so that it
#: finishes in minutes on a CPU
DEMO_EPOCHS = 8
#: on machines with at most this many CPUs the demo uses one torch thread (measured: on two
#: busy cores, two torch threads make augmentation and small convolutions several times slower)
DEMO_SINGLE_THREAD_CPUS = 2
#: environment variable of the cache root (shared with the sample data)
CACHE_DIR_ENV = "DEPARRAY_CTC_CACHE_DIR"


def _cache_root() -> Path:
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-deparray-ctc", appauthor=False))


def default_demo_folder(kind: str = "demo") -> Path:
    """A new, time-stamped folder name under the user cache (not created)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = _cache_root() / kind / stamp
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{stamp}-{n}")
    return candidate


def new_demo_folder(requested: str | os.PathLike | None, kind: str = "demo") -> Path:
    """``requested`` (which must be new or an empty folder), or :func:`default_demo_folder`.

    Raises
    ------
    FileExistsError
        ``requested`` exists and is not an empty folder.
    """
    if requested is None:
        folder = default_demo_folder(kind)
    else:
        folder = Path(requested)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise FileExistsError(f"{folder}: exists and is not an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder.absolute()


def demo_threads() -> int | None:
    """Torch threads for the demo: one on small machines (see :data:`DEMO_SINGLE_THREAD_CPUS`)."""
    return 1 if (os.cpu_count() or 1) <= DEMO_SINGLE_THREAD_CPUS else None


@dataclass
class DemoPaths:
    """Where the demo writes its files (all inside :attr:`folder`)."""

    folder: Path

    @property
    def train_export(self) -> Path:
        """The labelled synthetic export, default optics."""
        return self.folder / "train_export"

    @property
    def test_export(self) -> Path:
        """The held-out export, shifted optics (another instrument)."""
        return self.folder / "shifted_test_export"

    @property
    def model(self) -> Path:
        """The trained model file."""
        return self.folder / "model.pt"

    @property
    def predictions(self) -> Path:
        """The per-cell CSV of the shifted export."""
        return self.folder / "shifted_test_predictions.csv"

    @property
    def report(self) -> Path:
        """The HTML report of the model on the shifted export (``core.report``)."""
        return self.folder / "report.html"


@dataclass
class DemoResult:
    """What :func:`run_demo` did.

    Attributes
    ----------
    paths
        The files written.
    train_result
        The core ``TrainResult`` (validation metrics on the training domain).
    metrics
        Metrics on the shifted export at the model's threshold (BF only).
    n_called_ctc, n_cells
        Cells called CTC, and cells classified, in the shifted export.
    seconds
        Wall time of the whole job.
    """

    paths: DemoPaths
    train_result: Any
    metrics: dict
    n_called_ctc: int
    n_cells: int
    seconds: float


def write_demo_export(
    folder: str | os.PathLike,
    n_cells: int,
    ctc_fraction: float,
    seed: int,
    n_samples: int,
    shifted: bool = False,
    image_size: int = 64,
) -> Path:
    """Write one labelled synthetic export (class folders + ``labels.csv``)."""
    from napari_deparray_ctc.core.synth import Optics, write_export

    return write_export(
        folder,
        n_cells=n_cells,
        ctc_fraction=ctc_fraction,
        seed=seed,
        layout="classdirs",
        optics=Optics.shifted() if shifted else Optics.default(),
        n_samples=n_samples,
        image_size=image_size,
    )


def run_demo(
    folder: str | os.PathLike | None,
    config: Any,
    n_cells: int = 600,
    n_test_cells: int = 300,
    n_samples: int = 4,
    ctc_fraction: float = 0.2,
    on_step: Callable[[str], Any] | None = None,
    progress: Callable[[Any], Any] | None = None,
    classify_progress: Callable[[int, int | None], Any] | None = None,
) -> DemoResult:
    """Run the whole demo.

    Parameters
    ----------
    folder
        New or empty folder for every file, or ``None`` for :func:`default_demo_folder`.
    config
        The ``TrainConfig`` to train with (its ``out`` is replaced by the demo's model path).
    n_cells, n_test_cells, n_samples, ctc_fraction
        Size of the synthetic exports (the test export has half the samples, at least one).
    on_step
        Called with a one-line description before each of the four steps.
    progress
        Passed to ``core.train.train``.
    classify_progress
        Passed to ``core.classify.classify``.

    Returns
    -------
    DemoResult
    """
    from napari_deparray_ctc.core.annotations.cell_table import cell_rows, write_cell_table
    from napari_deparray_ctc.core.evaluation.metrics import classification_metrics
    from napari_deparray_ctc.core.inference.classify import classify
    from napari_deparray_ctc.core.io import read_export
    from napari_deparray_ctc.core.training import load_training_set
    from napari_deparray_ctc.core.training.train import train

    start = time.perf_counter()
    say = on_step or (lambda _text: None)
    paths = DemoPaths(new_demo_folder(folder))
    seed = int(config.seed)
    say(
        f"[1/4] synthetic training export: {n_cells} cells, default optics, {n_samples} "
        f"samples -> {paths.train_export}"
    )
    write_demo_export(paths.train_export, n_cells, ctc_fraction, seed, n_samples)
    say(f"      held-out export: {n_test_cells} cells, SHIFTED optics -> {paths.test_export}")
    write_demo_export(
        paths.test_export, n_test_cells, ctc_fraction, seed + 1000, max(1, n_samples // 2), True
    )
    config = dataclasses.replace(config, out=str(paths.model))
    say(
        f"[2/4] training {config.arch}: up to {config.epochs} epochs, {config.image_size} px, "
        f"augment {','.join(config.augment) or 'none'}, DAPI strategy {config.dapi_strategy}, "
        f"seed {config.seed}, torch threads {config.num_threads or 'default'}"
    )
    data = load_training_set([str(paths.train_export)])
    result = train(config, data=data, progress=progress)

    say("[3/4] classifying the shifted-optics export from bright-field only")
    export = read_export(str(paths.test_export))
    cells = [cell for cell in export.cells if "BF" in cell.channels]
    predictions = classify(
        [cell.channels["BF"] for cell in cells],
        result.model,
        cell_ids=[cell.cell_id for cell in cells],
        progress=classify_progress,
    )
    from napari_deparray_ctc.core.inference.counts import calibration_status
    from napari_deparray_ctc.core.inference.shift import shift_warning

    shifted = shift_warning([cell.channels["BF"] for cell in cells], result.model.metadata)
    write_cell_table(
        paths.predictions,
        cell_rows(
            predictions.cell_ids,
            [cell.path for cell in cells],
            predictions.p_ctc,
            predictions.threshold,
            calibration=calibration_status(result.model.metadata, shifted is not None),
        ),
    )
    say("[4/4] scoring against the synthetic ground truth, writing the report")
    labels = [cell.label for cell in cells]
    metrics = classification_metrics(labels, predictions.p_ctc, predictions.threshold)
    from napari_deparray_ctc.core.evaluation.report import write_report

    write_report(
        paths.report,
        [cell.channels["BF"] for cell in cells],
        labels,
        predictions.p_ctc,
        result.model,
        cell_ids=predictions.cell_ids,
        groups=[cell.group for cell in cells],
        title="CTC classifier report: the demo model on the shifted-optics export",
        source=paths.test_export.name,
    )
    n_ctc = sum(1 for label in predictions.labels if label == "CTC")
    return DemoResult(
        paths=paths,
        train_result=result,
        metrics=metrics,
        n_called_ctc=n_ctc,
        n_cells=len(cells),
        seconds=time.perf_counter() - start,
    )
