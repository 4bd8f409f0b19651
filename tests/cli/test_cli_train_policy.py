"""``deparray-ctc train``: one progress bar over every fold with a steady ETA (issue 19 item 7),
and the widget's model-file policy (issue 19 item 4): in-progress file, leftover recovery,
never replace a better model."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from napari_deparray_ctc.cli import main
from napari_deparray_ctc.cli import output as cli_output
from napari_deparray_ctc.core.training.outcome import TrainProgress

TINY = ["--size", "32", "--batch-size", "16", "--threads", "1"]
BAR_RE = re.compile(r"^train \[[#-]+\] +(\d+)/(\d+) +(\d+)% \S+<(\S+)")


def _bar_lines(text: str) -> list[tuple[int, int, int, str]]:
    """``(done, total, percent, eta)`` of every progress line."""
    found = [BAR_RE.match(line) for line in text.splitlines()]
    return [(int(m[1]), int(m[2]), int(m[3]), m[4]) for m in found if m]


def _seconds(eta: str) -> float:
    parts = [int(p) for p in eta.split(":")]
    return float(sum(p * 60**i for i, p in enumerate(reversed(parts))))


class _Clock:
    """A fake ``time`` module whose clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


def test_one_bar_over_every_fold_with_a_steady_eta(monkeypatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(cli_output, "time", clock)
    stream = io.StringIO()
    on_progress, close = cli_output.train_progress_printer(stream=stream)
    clock.now += 300  # reading the data and preparing it: not part of the pace
    folds, epochs, batches = 3, 2, 4
    steps = folds * epochs * batches
    step = 0
    for fold in range(1, folds + 1):
        for epoch in range(1, epochs + 1):
            for batch in range(1, batches + 1):
                clock.now += 1.0  # one second per batch
                step += 1
                on_progress(
                    TrainProgress(epoch, epochs, batch, batches, "batch", 0.5, fold=fold,
                                  folds=folds, step=step, steps=steps)
                )  # fmt: skip
            on_progress(
                TrainProgress(epoch, epochs, batches, batches, "epoch_end", 0.5, 0.6, 0.7,
                              fold=fold, folds=folds, step=step, steps=steps)
            )  # fmt: skip
    on_progress(TrainProgress(epochs, epochs, 0, 0, "done", fold=folds, folds=folds,
                              step=steps, steps=steps))  # fmt: skip
    close()
    lines = _bar_lines(stream.getvalue())
    assert lines, stream.getvalue()
    assert {total for _, total, _, _ in lines} == {steps}  # one bar, never restarted
    done = [d for d, _, _, _ in lines]
    assert done == sorted(done) and done[-1] == steps and lines[-1][2] == 100
    # the ETA is the remaining batches at one second each, at fold starts too
    for d, _, _, eta in lines[:-1]:
        if eta != "?":
            assert abs(_seconds(eta) - (steps - d)) <= 1, (d, eta)
    assert "fold 3/3" in stream.getvalue()


def test_reports_without_run_steps_still_draw(monkeypatch) -> None:
    stream = io.StringIO()
    on_progress, close = cli_output.train_progress_printer(stream=stream)
    on_progress(TrainProgress(1, 2, 3, 4, "batch", 0.5))
    on_progress(TrainProgress(2, 2, 0, 0, "done"))
    close()
    assert _bar_lines(stream.getvalue())[-1][:3] == (8, 8, 100)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pol") / "export"
    argv = ["synth", str(out), "--cells", "40", "--ctc-fraction", "0.25", "--seed", "4"]
    assert main([*argv, "--samples", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def better_model(tmp_path_factory) -> bytes:
    """A model file whose stored figures no tiny training beats (as bytes)."""
    from napari_deparray_ctc.core.model.loaded import build_network, save_model

    path = tmp_path_factory.mktemp("pol_model") / "good.pt"
    meta = {
        "arch": "resnet18",
        "threshold": 0.5,
        "image_size": 32,
        "metrics": {"average_precision": 0.999, "f1": 0.999, "n_val": {"CTC": 50, "WBC": 150}},
        "learned": True,
    }
    save_model(path, build_network("resnet18"), meta)
    return path.read_bytes()


def test_train_draws_one_bar_and_writes_through_the_in_progress_file(export, tmp_path, capsys):
    out = tmp_path / "m.pt"
    argv = ["train", str(export), "--out", str(out), *TINY, "--epochs", "2"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = _bar_lines(captured.err)
    assert len({total for _, total, _, _ in lines}) == 1, captured.err  # one bar for the run
    done = [d for d, _, _, _ in lines]
    assert done == sorted(done) and lines[-1][2] == 100
    assert "fold 2/2" in captured.err
    assert out.is_file() and f"Model saved to {out}" in captured.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no in-progress file left


def test_train_never_replaces_a_better_model(export, better_model, tmp_path, capsys):
    out = tmp_path / "m.pt"
    out.write_bytes(better_model)
    assert main(["train", str(export), "--out", str(out), *TINY, "--epochs", "1"]) == 0
    captured = capsys.readouterr()
    assert out.read_bytes() == better_model  # byte for byte
    others = sorted(p.name for p in tmp_path.iterdir() if p.name != "m.pt")
    assert len(others) == 1 and re.fullmatch(r"m-\d{8}-\d{6}\.pt", others[0]), others
    assert "in-progress" not in " ".join(others)
    warning = " ".join(captured.err.split())
    # kept as worse, or as a model that learned nothing (a one-epoch run may learn nothing)
    assert "deparray-ctc: warning:" in warning and others[0] in warning
    assert "m.pt was kept" in warning or "m.pt was left as it was" in warning
    assert "Tick" not in warning


def test_train_moves_a_leftover_aside_first(export, tmp_path, capsys):
    out = tmp_path / "m.pt"
    leftover = tmp_path / "m.in-progress.pt"
    leftover.write_bytes(b"the best model of an interrupted run")
    assert main(["train", str(export), "--out", str(out), *TINY, "--epochs", "1"]) == 0
    recovered = list(tmp_path.glob("m.recovered-*.pt"))
    assert len(recovered) == 1
    assert recovered[0].read_bytes() == b"the best model of an interrupted run"
    assert f"kept as {recovered[0]}" in capsys.readouterr().out
    assert out.is_file() and not leftover.exists()
