"""torchrun: two gloo processes train like one, stop together, and a failed rank ends the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not TORCHRUN.exists() and shutil.which("torchrun") is None,
        reason="torchrun is not installed",
    ),
]
SIZE = 32


def _torchrun() -> str:
    return str(TORCHRUN) if TORCHRUN.exists() else str(shutil.which("torchrun"))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A learnable class-folder export: CTC = filled disc, WBC = thin ring."""
    import tifffile

    out = tmp_path_factory.mktemp("ddp") / "export"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(48):
        ctc = i % 2 == 0
        cy, cx = SIZE / 2 + rng.normal(0, 1.5, 2)
        r = np.hypot(yy - cy, xx - cx)
        radius = rng.uniform(0.25, 0.32) * SIZE
        shape = r < radius if ctc else (r < radius) & (r > radius - 3)
        image = (1000 + 2000 * shape + rng.normal(0, 100, (SIZE, SIZE))).astype(np.uint16)
        folder = out / ("CTC" if ctc else "WBC")
        folder.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(
            folder / f"cell{i:04d}.tif",
            image,
            photometric="minisblack",
            description="BF",
            metadata=None,
        )
    return out


def _train_args(export: Path, out: Path) -> list[str]:
    return [
        "train",
        str(export),
        "--out",
        str(out),
        "--epochs",
        "3",
        "--size",
        str(SIZE),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--seed",
        "0",
        "--batch-size",
        "8",
    ]


def test_two_gloo_ranks_train_like_one_process(export, tmp_path) -> None:
    from napari_deparray_ctc.core.model.loaded import load_model

    ddp, single = tmp_path / "ddp.pt", tmp_path / "single.pt"
    run = subprocess.run(
        [
            _torchrun(),
            "--nproc-per-node",
            "2",
            "--master-port",
            "29517",
            "-m",
            "napari_deparray_ctc",
            *_train_args(export, ddp),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    alone = subprocess.run(
        [sys.executable, "-m", "napari_deparray_ctc", *_train_args(export, single)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    a, b = load_model(ddp, device="cpu"), load_model(single, device="cpu")
    assert a.metadata["ensemble"] == b.metadata["ensemble"] == 3
    assert a.metadata["data_summary"]["split"] == b.metadata["data_summary"]["split"]
    assert a.metadata["metrics"]["n_val"] == b.metadata["metrics"]["n_val"]  # same folds
    assert abs(a.metadata["metrics"]["f1"] - b.metadata["metrics"]["f1"]) <= 0.1
    assert (
        abs(a.metadata["metrics"]["average_precision"] - b.metadata["metrics"]["average_precision"])
        <= 0.1
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.pt", "single.pt"]  # no temp files


CHILD = textwrap.dedent(
    """
    import os, sys
    from napari_deparray_ctc.core.training.training_set import load_training_set
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    rank = int(os.environ["RANK"])
    calls = 0

    def should_stop():
        global calls
        calls += 1
        if rank == 1 and calls == 4:
            if sys.argv[3] == "fail":
                raise RuntimeError("rank 1 breaks")
            return True
        return False

    config = TrainConfig(epochs=50, patience=50, image_size=32, batch_size=8, folds=2,
                         device="cpu", num_threads=1, out=sys.argv[2])
    result = train(config, load_training_set(sys.argv[1]), should_stop=should_stop)
    # one write(2) of less than PIPE_BUF bytes is atomic: the two ranks share the pipe, and
    # print() unbuffered writes the text and its newline apart, so lines could interleave
    os.write(1, f"RESULT {rank} {result.cancelled} {len(result.history)}\\n".encode())
    """
)


def _child(tmp_path: Path, export: Path, mode: str, port: int) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return subprocess.run(
        [
            _torchrun(),
            "--nproc-per-node",
            "2",
            "--master-port",
            str(port),
            str(script),
            str(export),
            str(tmp_path / "m.pt"),
            mode,
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )


def test_a_stop_on_one_rank_stops_both_at_the_same_batch(export, tmp_path) -> None:
    from napari_deparray_ctc.core.model.loaded import load_model

    run = _child(tmp_path, export, "stop", 29518)
    assert run.returncode == 0, run.stderr[-3000:]
    results = sorted(line.split() for line in run.stdout.splitlines() if line.startswith("RESULT"))
    assert [r[1] for r in results] == ["0", "1"]
    assert all(r[2] == "True" for r in results)  # both cancelled
    assert results[0][3] == results[1][3]  # after the same epochs
    assert load_model(tmp_path / "m.pt", device="cpu").arch == "resnet18"  # rank 0 wrote it


def test_a_failed_rank_ends_the_other_and_leaves_no_half_file(export, tmp_path) -> None:
    start = time.monotonic()
    run = _child(tmp_path, export, "fail", 29519)
    assert run.returncode != 0
    assert "rank 1 breaks" in run.stderr
    assert time.monotonic() - start < 300  # rank 0 did not wait for the collective timeout
    left = [p.name for p in tmp_path.iterdir() if p.name not in ("child.py", "m.pt")]
    assert all(name.startswith(".m.pt.") for name in left), left
