"""Prefetching the next batch: order, one item ahead at most, early stop, errors, no thread left."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_deparray_ctc.core.inference.classify import classify, predict_batches
from napari_deparray_ctc.core.inference.prefetch import Prefetcher
from napari_deparray_ctc.core.model.loaded import LoadedModel, build_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")


#: the names of the threads these tests start (the default, predict_batches', a test's)
PREFETCH_THREADS = ("deparray-ctc-prefetch", "deparray-ctc-prepare", "deparray-ctc-test")


def _threads() -> list[threading.Thread]:
    """Prefetch threads still alive."""
    return [t for t in threading.enumerate() if t.name in PREFETCH_THREADS]


class Source:
    """A generator-like source that records how far it was read and whether it was closed."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n = n
        self.fail_at = fail_at
        self.produced = 0
        self.closed = False
        self.threads: set[str] = set()

    def __iter__(self):
        try:
            for i in range(self.n):
                self.threads.add(threading.current_thread().name)
                if i == self.fail_at:
                    raise OSError(f"cell {i} went away")
                self.produced += 1
                yield i
        finally:
            self.closed = True


def test_items_arrive_in_order_from_one_background_thread():
    source = Source(7)
    with Prefetcher(iter(source), name="deparray-ctc-test") as items:
        assert list(items) == list(range(7))
        assert not items.alive
    assert source.threads == {"deparray-ctc-test"}
    assert _threads() == []


def test_never_more_than_one_item_ahead_of_the_caller():
    source = Source(20)
    ahead = []
    with Prefetcher(iter(source)) as items:
        for taken, _item in enumerate(items, start=1):
            ahead.append(source.produced - taken)
    assert max(ahead) <= 1
    assert _threads() == []


def test_early_stop_joins_the_thread_and_closes_the_source():
    source = Source(1000)
    items = Prefetcher(iter(source))
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert not items.alive and _threads() == []
    assert source.produced <= 4  # the three taken and at most the one made ahead
    assert source.closed  # the generator's finally block ran at close
    with pytest.raises(StopIteration):
        next(items)
    items.close()  # twice is harmless


def test_closing_before_the_first_item_starts_nothing():
    source = Source(5)
    with Prefetcher(iter(source)):
        pass
    assert source.produced == 0 and _threads() == []


def test_an_error_in_the_source_is_raised_in_the_caller():
    source = Source(10, fail_at=4)
    seen = []
    with pytest.raises(OSError, match="cell 4 went away") as caught:
        for item in Prefetcher(iter(source)):
            seen.append(item)
    assert seen == [0, 1, 2, 3]  # every item before the failing one was handed over
    assert caught.value.__traceback__ is not None
    assert _threads() == []


def test_predict_batches_stops_between_batches_and_leaves_no_thread():
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(rng.random((3, 1, 4, 4), dtype=np.float32)) for _ in range(6)]
    progress = []
    outputs, done, cancelled = predict_batches(
        iter(batches),
        lambda b: b.mean(dim=(1, 2, 3)).numpy(),
        18,
        progress=lambda d, t: progress.append((d, t)),
        should_stop=lambda: len(progress) >= 2,
    )
    assert cancelled and done == 6 and progress == [(3, 18), (6, 18)]
    np.testing.assert_array_equal(np.concatenate(outputs), torch.cat(batches[:2]).mean((1, 2, 3)))
    assert _threads() == []


def test_predict_batches_an_error_in_predict_stops_the_prefetcher():
    batches = (torch.zeros(2, 1, 4, 4) for _ in range(100))

    def predict(batch):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        predict_batches(batches, predict, None)
    assert _threads() == []


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    torch.manual_seed(0)
    network = build_network("resnet18").eval()
    return LoadedModel(network, {"arch": "resnet18", "threshold": 0.5, "image_size": 16})


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 4096, (14 + i % 5, 16)).astype(np.uint16) for i in range(n)]


def test_classify_surfaces_a_read_error_and_leaves_no_thread(model):
    images = _images(9)

    def read():
        for i, image in enumerate(images):
            if i == 6:
                raise OSError("export.tif: file went away")
            yield image

    with pytest.raises(OSError, match="file went away"):
        classify(read(), model, batch_size=2)
    assert _threads() == []


def test_classify_cancelled_early_reads_at_most_one_batch_ahead(model):
    images = _images(40)
    read = 0

    def generate():
        nonlocal read
        for image in images:
            read += 1
            yield image

    done_batches = []
    result = classify(
        generate(),
        model,
        batch_size=4,
        progress=lambda done, total: done_batches.append(done),
        should_stop=lambda: len(done_batches) >= 2,
    )
    assert result.cancelled and len(result) == 8
    assert read <= 12  # two batches classified, at most one more read ahead
    full = classify(images, model, batch_size=4)
    np.testing.assert_array_equal(result.p_ctc, full.p_ctc[:8])  # the same numbers
    assert _threads() == []
