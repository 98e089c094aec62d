"""DC's own evaluation augmentation (condense.dcaug) against explicit references of the official ops."""
import dataclasses

import pytest
import torch

from condense.data import load_dataset
from condense.dcaug import DCAugment, crop_shift, dc_augment_for, rescale, rotate
from condense.evaluate import evaluate_images
from condense.utils import UserError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_crop_is_a_shift_with_channel_mean_padding():
    img = torch.randn(2, 8, 8)
    mean = torch.tensor([0.5, -1.0])
    assert torch.equal(crop_shift(img, mean, 4, 4, 4), img)  # offset = crop: no shift
    out = crop_shift(img, mean, 4, 1, 6)  # shift down by 3, left by 2
    for ch in range(2):
        for i in range(8):
            for j in range(8):
                si, sj = i - 3, j + 2
                want = img[ch, si, sj] if 0 <= si < 8 and 0 <= sj < 8 else mean[ch]
                assert out[ch, i, j] == want


def test_rescale_is_centred_nearest_resize_on_zero_canvas():
    img = torch.randn(1, 8, 8)
    assert torch.equal(rescale(img, 8, 8), img)
    small = rescale(img, 6, 6)  # nearest: source row floor(i * 8 / 6), placed at offset 1, zero border
    ref = torch.zeros(1, 8, 8)
    for i in range(6):
        for j in range(6):
            ref[0, i + 1, j + 1] = img[0, (i * 8) // 6, (j * 8) // 6]
    assert torch.equal(small, ref)
    big = rescale(img, 10, 9)  # canvas 10 x 10: tmp at (0, 0), crop at (1, 1)
    ref = torch.zeros(1, 10, 10)
    for i in range(10):
        for j in range(9):
            ref[0, i, j] = img[0, (i * 8) // 10, (j * 8) // 9]
    assert torch.equal(big, ref[:, 1:9, 1:9])


def test_rotate_zero_is_identity_and_ninety_is_rot90():
    img = torch.randn(1, 8, 8, dtype=torch.float64)
    assert torch.allclose(rotate(img, 0, 0.0), img, atol=1e-12)
    assert torch.allclose(rotate(img, 90, 0.0), torch.rot90(img, 1, dims=(-2, -1)), atol=1e-12)
    corner = rotate(torch.zeros(1, 8, 8, dtype=torch.float64), 45, 7.0)  # the grown canvas is filled with cval
    assert corner[0, 0, 0] == pytest.approx(7.0) and corner[0, 4, 4] == pytest.approx(0.0, abs=1e-9)


def test_one_op_per_image_uniformly_deterministic_and_input_untouched():
    x = torch.rand(1000, 1, 8, 8)
    keep = x.clone()
    aug = DCAugment("crop_noise")
    a = aug(x, generator=torch.Generator().manual_seed(0))
    b = aug(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and torch.equal(x, keep) and a.shape == x.shape
    diff = (a - x).abs().flatten(1).amax(1)
    noise = int(((diff > 0) & (diff < 0.01)).sum())  # 0.001 N(0, 1) noise; crops move pixels by ~0.3 or not at all
    assert 430 < noise < 570
    assert torch.allclose((a - x)[(diff > 0) & (diff < 0.01)].std(), torch.tensor(0.001), rtol=0.1)
    crops = a[diff >= 0.01]
    mean = x.mean()
    for img, src in zip(crops[:20], x[diff >= 0.01][:20]):  # every other image is some shift in [-4, 3]^2
        assert any(torch.equal(img, crop_shift(src, mean.view(1), 4, r, c)) for r in range(8) for c in range(8))
    with pytest.raises(UserError, match="operations must be among"):
        DCAugment("crop_flip")


def test_get_daparam_mapping():
    assert dc_augment_for("mnist", batchnorm=False).strategy == "crop_scale_rotate"
    assert dc_augment_for("mnist", batchnorm=True).strategy == "crop_noise"  # the BatchNorm rule wins
    assert dc_augment_for("digits", batchnorm=True).strategy == "crop_noise"
    assert dc_augment_for("digits", batchnorm=False) is None and dc_augment_for("fashion_mnist", batchnorm=False) is None


def test_evaluate_images_applies_dc_augmentation_where_dc_does(digits):
    x, y = digits.train_x[:20], digits.train_y[:20]
    kw = dict(num_evals=1, epochs=1, progress=False, model_kwargs={"convnet": {"width": 8}})
    plain = evaluate_images(x, y, digits, models=("convnet", "mlp"), dc_aug=True, **kw)
    assert plain["convnet"].augment == "none" and plain["mlp"].augment == "none"  # digits: DC has none
    mnist = dataclasses.replace(digits, name="mnist")
    res = evaluate_images(x, y, mnist, models=("convnet", "mlp"), dc_aug=True, **kw)
    assert res["convnet"].augment == "DCAugment('crop_scale_rotate')" == res["mlp"].augment
    bn = evaluate_images(x, y, digits, models=("convnet",), dc_aug=True, protocol="datadam", **kw)
    assert bn["convnet"].augment == "DCAugment('crop_noise')"
    with pytest.raises(UserError, match="without DSA"):
        evaluate_images(x, y, digits, dsa=True, dc_aug=True, **kw)
