"""The three augmentation families: each changes images, keeps shape, range and label."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from napari_deparray_ctc.core.training.augment import (
    FAMILIES,
    RandomConvolution,
    RandomRotate90,
    augment_batch,
    build_augmentation,
    check_families,
    is_identity,
)

SIZE = 32


def _discs_and_rings(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Normalised toy cells: label 1 = filled disc ("CTC"), 0 = thin ring ("WBC")."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images, labels = [], []
    for i in range(n):
        r = np.hypot(yy - SIZE / 2 + rng.normal(0, 1), xx - SIZE / 2 + rng.normal(0, 1))
        radius = rng.uniform(0.26, 0.32) * SIZE
        label = i % 2
        shape = r < radius if label else (r < radius) & (r > radius - 3)
        images.append(0.2 + 0.6 * shape + rng.normal(0, 0.02, shape.shape))
        labels.append(label)
    x = torch.from_numpy(np.clip(np.stack(images), 0, 1).astype(np.float32))[:, None]
    return x, np.asarray(labels)


def _centre_brightness(x: torch.Tensor) -> np.ndarray:
    """Mean intensity of the central region: high for discs, low for rings."""
    c = SIZE // 2
    return x[:, 0, c - 4 : c + 4, c - 4 : c + 4].mean(dim=(1, 2)).numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_changes_images_and_keeps_shape_range_and_label(family):
    x, labels = _discs_and_rings(16)
    torch.manual_seed(0)
    transform = build_augmentation([family])
    out = augment_batch(x, transform)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    changed = (out - x).abs().flatten(1).amax(dim=1) > 1e-4
    assert changed.sum() >= 12, f"{family} left {16 - int(changed.sum())} of 16 images unchanged"
    # The label-defining morphology survives: every augmented disc is still brighter in the
    # centre than every augmented ring (the cells stay in the same order, labels untouched).
    centre = _centre_brightness(out)
    assert centre[labels == 1].min() > centre[labels == 0].max()


def test_all_families_together_keep_the_label():
    x, labels = _discs_and_rings(16, seed=3)
    torch.manual_seed(1)
    out = augment_batch(x, build_augmentation(FAMILIES))
    centre = _centre_brightness(out)
    assert centre[labels == 1].min() > centre[labels == 0].max()


def test_no_family_is_identity():
    x, _ = _discs_and_rings(4)
    for selection in ((), None, "none", []):
        transform = build_augmentation(selection)
        assert is_identity(transform)
        assert augment_batch(x, transform) is x
        torch.testing.assert_close(transform(x[0]), x[0], rtol=0, atol=0)


def test_check_families():
    assert check_families("all") == FAMILIES
    assert check_families("noise, geometric") == ("geometric", "noise")
    assert check_families(["photometric", "photometric"]) == ("photometric",)
    with pytest.raises(ValueError, match="unknown augmentation family 'colour'"):
        check_families(["geometric", "colour"])


def test_same_seed_same_augmentation():
    x, _ = _discs_and_rings(6)
    transform = build_augmentation(FAMILIES)
    torch.manual_seed(42)
    a = augment_batch(x, transform)
    torch.manual_seed(42)
    b = augment_batch(x, transform)
    torch.manual_seed(43)
    c = augment_batch(x, transform)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_geometric_moves_a_mask_target_with_the_image_and_others_leave_it():
    x, _ = _discs_and_rings(8)
    # exact geometric ops: the target follows the image pixel for pixel
    torch.manual_seed(0)
    exact = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), RandomRotate90()])
    images, targets = augment_batch(x, exact, targets=x.clone())
    torch.testing.assert_close(images, targets, rtol=0, atol=0)
    assert not torch.equal(images, x)
    # the full geometric family (with interpolation) keeps them aligned approximately
    torch.manual_seed(0)
    images, targets = augment_batch(x, build_augmentation(["geometric"]), targets=x.clone())
    assert float((images - targets).abs().mean()) < 0.05
    # intensity families never touch the target
    torch.manual_seed(0)
    images, targets = augment_batch(
        x, build_augmentation(["photometric", "noise"]), targets=x.clone()
    )
    torch.testing.assert_close(targets, x, rtol=0, atol=0)
    assert not torch.equal(images, x)


def test_rotate90_is_lossless():
    img = torch.arange(16.0).reshape(1, 4, 4)
    seen = set()
    torch.manual_seed(0)
    for _ in range(40):
        out = RandomRotate90()(img)
        assert sorted(out.flatten().tolist()) == list(range(16))
        seen.add(tuple(out.flatten().tolist()))
    assert len(seen) == 4
    mask = tv_tensors.Mask(img.clone())
    a, b = RandomRotate90()(img, mask)
    torch.testing.assert_close(a, b.as_subclass(torch.Tensor))


def test_random_convolution_keeps_shape_mean_and_sd_and_leaves_masks():
    x, _ = _discs_and_rings(6)
    torch.manual_seed(2)
    transform = RandomConvolution(p=1.0)
    changed = 0
    for img in x:
        out = transform(img)
        assert out.shape == img.shape and torch.isfinite(out).all()
        # the filtered image is rescaled to the image's mean and sd before the mix
        assert float(out.mean()) == pytest.approx(float(img.mean()), abs=1e-4)
        assert float(out.std()) <= float(img.std()) + 1e-4
        changed += int(not torch.allclose(out, img, atol=1e-3))
        mask = tv_tensors.Mask(img.clone())
        _, kept = transform(img, mask)
        torch.testing.assert_close(kept.as_subclass(torch.Tensor), img, rtol=0, atol=0)
    assert changed >= 4
    # p = 0 never changes anything; an even kernel side is refused in words
    torch.testing.assert_close(RandomConvolution(p=0.0)(x[0]), x[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="odd"):
        RandomConvolution(kernel_sizes=(2, 3))


def test_random_convolution_comes_first_only_when_asked_and_is_a_probability():
    plain = build_augmentation(FAMILIES)
    assert not any(isinstance(t, RandomConvolution) for t in plain.transforms)
    with_rc = build_augmentation(FAMILIES, random_convolution=0.5)
    assert isinstance(with_rc.transforms[0], RandomConvolution)
    assert with_rc.transforms[0].p == 0.5
    assert len(with_rc.transforms) == len(plain.transforms) + 1
    # part of augmentation: no family chosen, no augmentation at all
    assert is_identity(build_augmentation((), random_convolution=1.0))
    always = build_augmentation(("noise",), random_convolution=1.0)
    x = torch.rand(1, 24, 24)
    torch.manual_seed(3)
    filtered = always.transforms[0](x)  # the random filter alone
    assert filtered.shape == x.shape and not torch.equal(filtered, x)
    y = always(x)
    assert y.shape == x.shape and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    with pytest.raises(ValueError, match="probability"):
        build_augmentation(FAMILIES, random_convolution=1.5)
