"""Network building, normalisation, device choice and the safe model file."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_deparray_ctc.core.model.loaded import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LoadedModel,
    ModelFileError,
    build_network,
    find_imagenet_weights,
    load_model,
    normalise_image,
    pad_to_square,
    prepare_batch,
    save_model,
    select_device,
)
from napari_deparray_ctc.core.model.network import (
    download_imagenet_weights as REAL_DOWNLOAD,  # tests replace it; one test calls it
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cell(size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = np.hypot(yy - size / 2, xx - size / 2) < size / 3
    return 0.3 + 0.5 * disc + rng.normal(0, 0.02, (size, size))


# --------------------------------------------------------------------------- normalisation
def test_normalise_makes_bit_depths_and_illumination_comparable():
    base = _cell()
    as_8bit = np.round(base * 255 / base.max()).astype(np.uint8)
    as_16bit = as_8bit.astype(np.uint16) * 257  # same picture, 16-bit range
    as_12bit = (as_8bit.astype(np.uint16) << 4).astype(np.uint16)
    brighter = as_8bit.astype(np.float32) * 3.7 + 1200.0  # other exposure and offset
    ref = normalise_image(as_8bit)
    assert ref.dtype == np.float32
    assert ref.min() == 0.0 and ref.max() == 1.0
    for other in (as_16bit, as_12bit, brighter):
        np.testing.assert_allclose(normalise_image(other), ref, atol=1e-5)


def test_normalise_is_robust_to_outliers_and_non_finite_pixels():
    img = _cell().astype(np.float64)
    ref = normalise_image(img)
    spoiled = img.copy()
    spoiled[0, 0] = 1e9  # a hot pixel barely changes the scaling (99th percentile)
    spoiled[0, 1] = np.nan
    spoiled[0, 2] = np.inf
    spoiled[0, 3] = -np.inf
    out = normalise_image(spoiled)
    assert np.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out[1:], ref[1:], atol=0.02)
    assert not normalise_image(np.full((8, 8), 7.0)).any()  # constant -> zeros
    assert not normalise_image(np.full((8, 8), np.nan)).any()  # nothing finite -> zeros


def test_pad_to_square_uses_background_and_keeps_content():
    img = np.full((10, 20), 5.0)
    img[4:6, 8:12] = 9.0
    out = pad_to_square(img)
    assert out.shape == (20, 20)
    assert np.all(out[:5] == 5.0) and np.all(out[15:] == 5.0)
    np.testing.assert_array_equal(out[5:15], img)
    square = np.zeros((7, 7))
    assert pad_to_square(square) is square


def test_prepare_batch_shapes_and_errors():
    images = [_cell(32), np.random.default_rng(1).integers(0, 4096, (48, 30)).astype(np.uint16)]
    batch = prepare_batch(images, image_size=24)
    assert batch.shape == (2, 1, 24, 24)
    assert batch.dtype == torch.float32
    assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
    assert prepare_batch([], 16).shape == (0, 1, 16, 16)
    assert prepare_batch([np.zeros((1, 8, 8)) + np.eye(8)], 8).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"image 1 has shape \(3, 8, 8\)"):
        prepare_batch([np.ones((8, 8)), np.ones((3, 8, 8))], 8)
    with pytest.raises(ValueError, match="normalisation"):
        prepare_batch([np.ones((8, 8))], 8, normalisation={"method": "zscore"})


# --------------------------------------------------------------------------- device, network
def test_select_device():
    auto = select_device(None)
    assert auto in ("cuda", "mps", "cpu")
    assert select_device("auto") == auto
    assert select_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"is not known|is not supported"):
        select_device("tpu7")
    if not torch.cuda.is_available():
        assert auto != "cuda"
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_build_network_one_channel_in_one_logit_out(arch):
    network = build_network(arch)
    assert network.conv1.in_channels == 1
    assert network.fc.out_features == 1
    network.eval()
    with torch.no_grad():
        out = network(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 1)
    assert network.pretrained_source is None


def test_build_network_rejects_unknown_arch():
    with pytest.raises(ValueError, match="architecture vgg16 is not known"):
        build_network("vgg16")


def _fake_imagenet_file(path: Path) -> dict:
    import torchvision

    state = torchvision.models.resnet18(weights=None).state_dict()  # 3-channel conv1, 1000 fc
    torch.save(state, path)
    return state


def test_imagenet_weights_from_file_sum_rgb_filters(tmp_path):
    path = tmp_path / "weights.pth"
    state = _fake_imagenet_file(path)
    network = build_network("resnet18", pretrained=path)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = (state["conv1.weight"] / std).sum(dim=1, keepdim=True)
    torch.testing.assert_close(network.conv1.weight.detach(), expected)
    torch.testing.assert_close(
        network.layer3[0].conv1.weight.detach(), state["layer3.0.conv1.weight"]
    )
    assert network.fc.out_features == 1
    assert network.pretrained_source == "imagenet:weights.pth"
    # replicating grey to RGB with ImageNet normalisation == one channel with summed filters,
    # up to a per-channel constant (absorbed by the BatchNorm after conv1)
    grey = torch.rand(1, 1, 16, 16)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    rgb_out = torch.nn.functional.conv2d(
        (grey.expand(1, 3, 16, 16) - mean) / std, state["conv1.weight"], padding=3
    )
    one_out = torch.nn.functional.conv2d(grey, expected, padding=3)
    diff = (rgb_out - one_out)[..., 3:-3, 3:-3]  # away from zero padding
    torch.testing.assert_close(
        diff, diff.mean(dim=(2, 3), keepdim=True).expand_as(diff), atol=1e-4, rtol=0
    )


def test_pretrained_auto_uses_local_cache_or_warns(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        assert find_imagenet_weights("resnet18") is None
        with pytest.warns(UserWarning, match="not found in the local torch cache"):
            network = build_network("resnet18", pretrained="auto")
        assert network.pretrained_source is None
        checkpoints = tmp_path / "hub" / "checkpoints"
        checkpoints.mkdir(parents=True)
        _fake_imagenet_file(checkpoints / "resnet18-f37072fd.pth")
        assert find_imagenet_weights("resnet18") == checkpoints / "resnet18-f37072fd.pth"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            network = build_network("resnet18", pretrained="auto")
        assert network.pretrained_source == "imagenet:resnet18-f37072fd.pth"
    finally:
        torch.hub.set_dir(old)


def test_pretrained_explicit_path_errors(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist") as info:
        build_network("resnet18", pretrained=tmp_path / "nope.pth")
    assert str(tmp_path / "nope.pth") in str(info.value)
    wrong = tmp_path / "resnet34.pth"
    import torchvision

    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(ModelFileError, match="do not fit a resnet18"):
        build_network("resnet18", pretrained=wrong)


# --------------------------------------------------------------------------- model file
def _loaded(threshold: float = 0.3, image_size: int = 32) -> LoadedModel:
    torch.manual_seed(0)
    network = build_network("resnet18").eval()
    return LoadedModel(
        network, {"arch": "resnet18", "threshold": threshold, "image_size": image_size}
    )


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    model = _loaded(threshold=0.37)
    images = [_cell(32, seed=s) for s in range(5)] + [_cell(40, seed=9)[:, :30]]
    batch = prepare_batch(images, 32)
    before = model.predict_proba(batch)
    path = tmp_path / "model.pt"
    save_model(path, model.network, {**model.metadata, "metrics": {"f1": np.float64(0.9)}})
    loaded = load_model(path, device="cpu")
    after = loaded.predict_proba(batch)
    # weights are stored as float16 (half the file): P(CTC) moves by ~1e-4, calls do not
    np.testing.assert_allclose(after, before, rtol=0, atol=2e-3)
    assert ((after >= 0.37) == (before >= 0.37)).all()
    meta = loaded.metadata
    assert meta["weights_dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.network.parameters())
    assert loaded.threshold == pytest.approx(0.37)
    assert loaded.image_size == 32 and loaded.arch == "resnet18" and loaded.device == "cpu"
    assert meta["input_channel"] == "BF"
    assert meta["class_names"] == ["WBC", "CTC"]
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["normalisation"]["method"] == "percentile"
    assert set(meta["versions"]) == {
        "napari_deparray_ctc",
        "torch",
        "torchvision",
        "numpy",
        "python",
    }
    assert meta["metrics"]["f1"] == 0.9
    json.dumps(meta)
    assert not loaded.network.training
    # a LoadedModel can be saved again as is (e.g. after changing its threshold)
    loaded.metadata["threshold"] = 0.6
    save_model(tmp_path / "again.pt", loaded)
    again = load_model(tmp_path / "again.pt")
    assert again.threshold == 0.6
    np.testing.assert_array_equal(again.predict_proba(batch), after)  # float16 again: same


def _old_float32_file(path: Path, network, meta: dict) -> None:
    """A model file as versions before float16 storage wrote it (float32 weights)."""
    from napari_deparray_ctc.core.model.file_format import package_versions

    state = {
        k: (v.detach().float() if v.is_floating_point() else v)
        for k, v in network.state_dict().items()
    }
    members = len(network.members) if hasattr(network, "members") else 1
    meta = {**meta, "ensemble": members, "format_version": 2, "versions": package_versions()}
    payload = {"format": FORMAT_NAME, "format_version": 2, "metadata": meta, "state_dict": state}
    torch.save(payload, path)


def test_model_files_are_half_the_size_with_the_same_calls(tmp_path):
    """Three resnet18s (the default ensemble): float16 on disk, float32 in memory."""
    from napari_deparray_ctc.core.model.loaded import build_ensemble

    torch.manual_seed(1)
    members = [build_network("resnet18") for _ in range(3)]
    with torch.no_grad():  # BatchNorm statistics as after training, not the 0/1 defaults
        for m in (mod for net in members for mod in net.modules()):
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.2, 2.0)
    network = build_ensemble(members).eval()
    meta = {"arch": "resnet18", "threshold": 0.5, "image_size": 32}
    old, new = tmp_path / "fp32.pt", tmp_path / "fp16.pt"
    _old_float32_file(old, network, meta)
    save_model(new, network, meta)
    assert new.stat().st_size < 0.52 * old.stat().st_size
    images = [_cell(32, seed=s) + 0.05 * s for s in range(40)]
    batch = prepare_batch(images, 32)
    reference = LoadedModel(network, meta).predict_proba(batch)
    from_old = load_model(old, "cpu")  # an older float32 file still loads, unchanged
    np.testing.assert_array_equal(from_old.predict_proba(batch), reference)
    assert "weights_dtype" not in from_old.metadata
    from_new = load_model(new, "cpu")
    p = from_new.predict_proba(batch)
    assert np.max(np.abs(p - reference)) < 1e-3
    assert ((p >= 0.5) == (reference >= 0.5)).all()
    assert all(
        t.dtype == torch.float32
        for t in from_new.network.state_dict().values()
        if t.is_floating_point()
    )


def test_fine_tuning_from_an_ensemble_gives_each_fold_its_own_network(tmp_path):
    """``build_network(pretrained=model file, member=i)``: network ``i`` of the ensemble
    (modulo its size), so fold ``i`` of ``train --init-from`` starts from network ``i``."""
    from napari_deparray_ctc.core.model.loaded import build_ensemble

    torch.manual_seed(3)
    path = tmp_path / "ensemble.pt"
    save_model(path, build_ensemble([build_network("resnet18") for _ in range(2)]).eval(), {
        "arch": "resnet18", "threshold": 0.5, "image_size": 32
    })  # fmt: skip
    stored = load_model(path, "cpu").network.members
    for member, expected in ((0, 0), (1, 1), (2, 0), (5, 1)):
        network = build_network("resnet18", pretrained=path, member=member)
        assert network.pretrained_source == "model:ensemble.pt"
        want = stored[expected].state_dict()
        assert all(torch.equal(v, want[k]) for k, v in network.state_dict().items())
    first, second = (build_network("resnet18", pretrained=path, member=m) for m in (0, 1))
    assert not torch.equal(first.conv1.weight, second.conv1.weight)


def test_a_weight_beyond_float16_stays_float32(tmp_path):
    model = _loaded()
    with torch.no_grad():
        model.network.fc.weight[0, 0] = 1e6
    path = tmp_path / "big.pt"
    save_model(path, model)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert state["fc.weight"].dtype == torch.float32
    assert state["conv1.weight"].dtype == torch.float16
    assert load_model(path, "cpu").network.fc.weight[0, 0].item() == 1e6


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path):
    model = _loaded()
    path = tmp_path / "model.pt"
    save_model(path, model.network, model.metadata)
    original = path.read_bytes()
    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        save_model(path, model.network, {**model.metadata, "bad": object()})
    with pytest.raises(ValueError, match="threshold"):
        save_model(path, model.network, {**model.metadata, "threshold": 1.5})
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp files left


class _Payload:
    """Pickles to a call that creates ``marker`` when unpickled by a full unpickler."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_no_code_runs(tmp_path):
    # the payload is live: a plain unpickler does create its marker
    proof = tmp_path / "proof-marker"
    pickle.loads(pickle.dumps(_Payload(proof))).close()
    assert proof.exists()

    marker = tmp_path / "pwned-marker"
    plain = tmp_path / "plain-pickle.pt"
    plain.write_bytes(pickle.dumps({"format": FORMAT_NAME, "state_dict": _Payload(marker)}))
    zipped = tmp_path / "torch-zip.pt"
    torch.save({"format": FORMAT_NAME, "metadata": _Payload(marker)}, zipped)
    for path in (plain, zipped):
        with pytest.raises(ModelFileError, match="refused") as info:
            load_model(path)
        assert str(path) in str(info.value)
        assert "nothing in it was executed" in str(info.value)
    assert not marker.exists()


def _write_payload(path: Path, **changes) -> Path:
    model = _loaded()
    save_model(path, model.network, model.metadata)
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if key.startswith("meta_"):
            payload["metadata"][key[5:]] = value
        elif value is None:
            payload.pop(key)
        else:
            payload[key] = value
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_text("hello, not a model"), "not a model file"),
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: torch.save([1, 2, 3], p), "it holds a list"),
        (lambda p: torch.save({"a": 1}, p), "no format marker"),
        (lambda p: torch.save({"w": torch.zeros(2)}, p), "bare state dict"),
        (lambda p: _write_payload(p, meta_arch="alexnet"), "architecture alexnet is not known"),
        (lambda p: _write_payload(p, format_version=FORMAT_VERSION + 1), "newer"),
        (lambda p: _write_payload(p, state_dict=None), "has no weights"),
        (lambda p: _write_payload(p, meta_threshold="high"), "threshold"),
        (lambda p: _write_payload(p, meta_image_size=4), "image size 4"),
        (lambda p: _write_payload(p, meta_arch="resnet34"), "do not fit a one-channel resnet34"),
        (
            lambda p: _write_payload(p, state_dict={"conv1.weight": torch.zeros(64, 3, 7, 7)}),
            "do not fit",
        ),
    ],
)
def test_bad_model_files_give_clear_errors(tmp_path, make, reason):
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(ModelFileError, match=reason) as info:
        load_model(path)
    assert str(info.value).startswith(str(path))
    assert isinstance(info.value, ValueError)


def test_truncated_and_missing_files(tmp_path):
    model = _loaded()
    path = tmp_path / "model.pt"
    save_model(path, model.network, model.metadata)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(truncated)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "absent.pt")
    with pytest.raises(ModelFileError, match="not a file"):
        load_model(tmp_path)


def test_core_imports_neither_qt_nor_eager_torch():
    code = (
        "import sys\n"
        "import napari_deparray_ctc.core.training.train, napari_deparray_ctc.core.inference.classify\n"
        "import napari_deparray_ctc.core.training, napari_deparray_ctc.core.evaluation.metrics\n"
        "import napari_deparray_ctc.core.model.loaded\n"
        "assert 'torch' not in sys.modules, 'torch imported eagerly'\n"
        "import napari_deparray_ctc.core.training.augment\n"
        "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'superqt')\n"
        "       if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- --pretrained imagenet
@pytest.fixture()
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch cache in a temporary TORCH_HOME (and no download unless a test allows)."""
    from napari_deparray_ctc.core.model import network

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() follows TORCH_HOME

    def no_network(arch):
        raise AssertionError("a test must not download anything")

    monkeypatch.setattr(network, "download_imagenet_weights", no_network)
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_pretrained_imagenet_uses_the_torch_cache_without_downloading(torch_home):
    torch_home.mkdir(parents=True)
    state = _fake_imagenet_file(torch_home / "resnet18-f37072fd.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        network = build_network("resnet18", pretrained="imagenet")
    assert network.pretrained_source == "imagenet:resnet18-f37072fd.pth"
    torch.testing.assert_close(
        network.layer2[0].conv1.weight.detach(), state["layer2.0.conv1.weight"]
    )


def test_pretrained_imagenet_downloads_into_the_cache_on_first_use(torch_home, monkeypatch):
    from napari_deparray_ctc.core.model import network as network_module

    fetched = []

    def fake_download(url, dst, progress=True):  # what torch.hub would do, without a network
        fetched.append(url)
        _fake_imagenet_file(Path(dst))

    monkeypatch.setattr(network_module, "download_imagenet_weights", REAL_DOWNLOAD)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    network = build_network("resnet18", pretrained="imagenet")
    assert fetched == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert (torch_home / "resnet18-f37072fd.pth").is_file()
    assert network.pretrained_source == "imagenet:resnet18-f37072fd.pth"
    build_network("resnet18", pretrained="imagenet")  # the second time: from the cache
    assert len(fetched) == 1


def test_pretrained_imagenet_offline_falls_back_to_the_shipped_weights(torch_home, monkeypatch):
    from urllib.error import URLError

    from napari_deparray_ctc.core.model import network as network_module

    def offline(arch):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(network_module, "download_imagenet_weights", offline)
    with pytest.warns(UserWarning) as caught:
        network = build_network("resnet18", pretrained="imagenet")
    (message,) = [str(w.message) for w in caught]
    assert "ImageNet weights for resnet18 could not be downloaded from" in message
    assert "Temporary failure in name resolution" in message and "offline" in message
    assert "starting from the shipped synthetic weights instead" in message
    assert str(torch_home) in message and "resnet18-f37072fd.pth" in message
    assert network.pretrained_source == "weights:synthetic_resnet18.pt"
    with pytest.warns(UserWarning, match="random weights instead"):
        other = build_network("resnet34", pretrained="imagenet")
    assert other.pretrained_source is None
