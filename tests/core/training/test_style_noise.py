"""Feature-statistics noise (DSU) during training: what it changes and what it leaves alone."""

from __future__ import annotations

import pytest
import torch
from test_train import fast_config, toy_set

from napari_deparray_ctc.core.model.network import build_network
from napari_deparray_ctc.core.training.style_noise import (
    STYLE_NOISE_LAYERS,
    StyleNoise,
    perturb_statistics,
)
from napari_deparray_ctc.core.training.train import TrainConfig, train


def test_perturbation_redraws_each_images_channel_statistics_around_its_own():
    torch.manual_seed(0)
    # 64 images, 3 channels: channel means spread by about 1, sds around 2
    x = torch.randn(64, 3, 8, 8) * 2.0 + torch.randn(64, 3, 1, 1)
    out = perturb_statistics(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    mean_in, mean_out = x.mean(dim=(2, 3)), out.mean(dim=(2, 3))
    # the means move, by about the batch's spread of means (~1), not by orders more
    moved = (mean_out - mean_in).abs()
    assert 0.3 < float(moved.mean()) < 2.0

    # each image keeps its pattern: per image and channel, output and input are perfectly
    # correlated (a drawn sd that came out negative flips the sign, as in DSU)
    def centred(t):
        return t - t.mean(dim=(2, 3), keepdim=True)

    a, b = centred(x), centred(out)
    corr = (a * b).sum(dim=(2, 3)) / (a.norm(dim=(2, 3)) * b.norm(dim=(2, 3)))
    assert torch.allclose(corr.abs(), torch.ones_like(corr), atol=1e-4)


def test_a_single_image_or_a_flat_tensor_is_left_as_it_is():
    one = torch.randn(1, 4, 5, 5)
    assert perturb_statistics(one) is one
    flat = torch.randn(6, 4)
    assert perturb_statistics(flat) is flat


def test_hooks_act_in_training_mode_only_and_are_removed_on_close():
    net = build_network("resnet18", None)
    x = torch.randn(4, 1, 32, 32)
    net.eval()
    with torch.no_grad():
        before = net(x)
    with StyleNoise(net, p=1.0) as noise:
        with torch.no_grad():
            assert torch.equal(net(x), before)  # eval: no noise
            assert noise.applied == 0
            state = {k: v.clone() for k, v in net.state_dict().items()}
            net.train()
            net(x)
        assert noise.applied == len(STYLE_NOISE_LAYERS)
    net.load_state_dict(state)  # undo the training pass's BatchNorm statistics
    net.eval()
    for name in STYLE_NOISE_LAYERS:
        assert not getattr(net, name)._forward_hooks
    with torch.no_grad():
        assert torch.equal(net(x), before)


def test_training_with_style_noise_changes_the_fit_but_not_the_model_file(tmp_path):
    data = toy_set(16)
    plain = train(fast_config(epochs=1, folds=1, out=str(tmp_path / "a.pt")), data)
    noisy = train(
        fast_config(epochs=1, folds=1, style_noise=True, out=str(tmp_path / "b.pt")), data
    )
    a = plain.model.network.state_dict()
    b = noisy.model.network.state_dict()
    assert a.keys() == b.keys()  # the same architecture: no layer added to the file
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    for name in STYLE_NOISE_LAYERS:  # no hook left behind on the trained network
        assert not getattr(noisy.model.network, name)._forward_hooks
    assert noisy.model.metadata["train_config"]["style_noise"] is True


@pytest.mark.parametrize("value", [True, False])
def test_the_setting_has_one_default_and_is_off(value):
    assert fast_config(style_noise=value).style_noise is value
    assert TrainConfig().style_noise is False
