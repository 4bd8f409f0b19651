"""The CUDA path (marked ``cuda``; skipped without a GPU): train, classify, move models across.

Run by ``benchmarks/gpu_check.sh`` on a GPU machine; CI has none, so everything here skips.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _toy(n: int = 32, size: int = 32):
    from napari_deparray_ctc.core.training.training_set import TrainingSet

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    bf, labels = [], []
    for i in range(n):
        ctc = i % 2 == 0
        r = np.hypot(yy - size / 2, xx - size / 2)
        radius = rng.uniform(0.25, 0.32) * size
        shape = r < radius if ctc else (r < radius) & (r > radius - 3)
        bf.append((1000 + 2000 * shape + rng.normal(0, 100, shape.shape)).astype(np.uint16))
        labels.append("CTC" if ctc else "WBC")
    return TrainingSet(bf=bf, labels=labels)


@pytest.fixture(scope="module")
def cuda_result(tmp_path_factory):
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("cuda") / "model.pt"
    config = TrainConfig(
        epochs=4, image_size=32, batch_size=8, augment=(), folds=2, device="cuda", out=str(out)
    )
    return train(config, _toy()), out


def test_training_on_cuda_with_mixed_precision_learns(cuda_result):
    result, _ = cuda_result
    assert result.model.device.startswith("cuda")
    assert result.learned and result.metrics["f1"] >= 0.8


def test_a_cuda_model_classifies_like_on_the_cpu(cuda_result):
    from napari_deparray_ctc.core.inference.classify import classify
    from napari_deparray_ctc.core.model.loaded import load_model

    _, out = cuda_result
    images = _toy(16).bf
    on_gpu = classify(images, load_model(out, device="cuda")).p_ctc
    on_cpu = classify(images, load_model(out, device="cpu")).p_ctc
    np.testing.assert_allclose(on_gpu, on_cpu, atol=2e-2)  # float16 autocast on the GPU


def test_adapt_and_tta_run_on_cuda(cuda_result):
    from napari_deparray_ctc.core.inference.classify import classify

    result, _ = cuda_result
    images = _toy(16).bf
    assert np.isfinite(classify(images, result.model, adapt=True, tta=True).p_ctc).all()


def test_fine_tuning_on_cuda_from_a_cpu_file(cuda_result, tmp_path):
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    _, out = cuda_result
    config = TrainConfig(
        epochs=1,
        image_size=32,
        batch_size=8,
        augment=(),
        folds=2,
        device="cuda",
        pretrained=str(out),
    )
    result = train(dataclasses.replace(config), _toy())
    assert result.history[0]["epoch"] == 0
