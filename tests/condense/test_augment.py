import pytest
import torch

from condense.augment import DSA
from condense.utils import UserError

OPS = ["color", "crop", "cutout", "flip", "scale", "rotate"]


@pytest.mark.parametrize("op", OPS)
def test_each_op_is_differentiable_and_keeps_shape(op):
    dsa = DSA(op)
    x = torch.randn(4, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    params = dsa.sample(4, (12, 12), torch.Generator().manual_seed(0))
    y = dsa.apply(x, params)
    assert y.shape == x.shape
    # the transformation is linear in x for fixed parameters except for data-dependent means; check gradients numerically
    assert torch.autograd.gradcheck(lambda t: dsa.apply(t, params), (x,), eps=1e-6, atol=1e-5)


def test_siamese_same_transformation_for_both_batches():
    dsa = DSA()
    real = torch.randn(6, 1, 8, 8)
    gen = torch.Generator().manual_seed(3)
    a, b = dsa.siamese(real, real[:2].clone(), generator=gen)
    assert torch.allclose(a[:2], b)  # identical images, identical outputs => identical parameters
    params = dsa.sample(1, (8, 8), torch.Generator().manual_seed(5))
    assert all(v.shape[0] == 1 for v in params.values.values())
    out = dsa.apply(real, params)
    assert out.shape == real.shape


def test_seeded_determinism_and_variation():
    dsa = DSA(mode="all")
    x = torch.randn(5, 3, 16, 16)
    a = dsa(x, torch.Generator().manual_seed(0))
    b = dsa(x, torch.Generator().manual_seed(0))
    c = dsa(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_single_mode_picks_one_group_and_none_is_identity():
    dsa = DSA("color_flip", mode="single")
    ops = {dsa.sample(2, (8, 8), torch.Generator().manual_seed(s)).ops for s in range(30)}
    assert ops == {("brightness", "saturation", "contrast"), ("flip",)}
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(DSA("none")(x), x)


def test_known_values_of_simple_ops():
    dsa = DSA("flip_crop")
    x = torch.arange(16.0).view(1, 1, 4, 4)
    flipped = dsa._flip(x, torch.zeros(1, 1, 1, 1))
    assert torch.equal(flipped, x.flip(3))
    shifted = dsa._crop(x, torch.tensor([[1, 0]]))  # move content up by one row, zero-fill at the bottom
    assert torch.equal(shifted[0, 0, :3], x[0, 0, 1:]) and shifted[0, 0, 3].abs().sum() == 0
    cut = DSA("cutout")._cutout(torch.ones(1, 1, 4, 4), torch.tensor([[2, 2]]))
    assert int((cut == 0).sum()) == 4  # a 2x2 square (ratio 0.5)
    rot0 = dsa._rotate(x, torch.zeros(1))
    assert torch.allclose(rot0, x, atol=1e-5)


def test_bad_strategy():
    with pytest.raises(UserError, match="unknown DSA operation"):
        DSA("color_warp")
    with pytest.raises(UserError, match="mode"):
        DSA(mode="sometimes")


def test_auto_strategy_drops_flip_on_digit_datasets_only():
    """DatasetCondensation readme: no flip for digit datasets (MNIST, SVHN); flip for Fashion-MNIST/CIFAR."""
    from condense.augment import DEFAULT_STRATEGY, DIGITS_STRATEGY, make_dsa, resolve_strategy

    assert DIGITS_STRATEGY == "color_crop_cutout_scale_rotate" and "flip" in DEFAULT_STRATEGY
    assert resolve_strategy("auto", "digits") == resolve_strategy("auto", "mnist") == DIGITS_STRATEGY
    assert resolve_strategy("auto", "fashion_mnist") == resolve_strategy("auto", "cifar10") == DEFAULT_STRATEGY
    assert resolve_strategy("crop", "digits") == "crop"
    assert not make_dsa("none", "digits", align_corners=False).enabled


def test_align_corners_is_the_grid_convention_of_scale_and_rotate():
    """Both conventions map pixel i to s (i - c) + c for a centred scale/rotation of a square image, so they
    agree there (all datasets here are square); a rotation of a non-square image tells them apart."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(1)
    square, wide = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, 1, 8, 12, dtype=torch.float64)
    for op in ("scale", "rotate"):
        params = DSA(op).sample(2, (8, 8), gen)
        assert torch.allclose(DSA(op, align_corners=False).apply(square, params), DSA(op, align_corners=True).apply(square, params))
    params = DSA("rotate").sample(2, (8, 12), gen)
    assert not torch.allclose(DSA("rotate", align_corners=False).apply(wide, params), DSA("rotate", align_corners=True).apply(wide, params))
    theta = torch.tensor([[[1.1, 0.0, 0.0], [0.0, 0.9, 0.0]]], dtype=torch.float64).repeat(2, 1, 1)
    expected = F.grid_sample(wide, F.affine_grid(theta, list(wide.shape), align_corners=False), align_corners=False)
    assert torch.allclose(DSA("scale")._scale(wide, torch.tensor([[1.1, 0.9]] * 2, dtype=torch.float64)), expected)


def test_method_dsa_defaults_follow_their_official_code():
    """align_corners False for DC/DSA/DM/DataDAM (DatasetCondensation/DataDAM utils.py), True for MTT/AST."""
    from condense.methods import get_method

    for name, align in (("dc", False), ("dsa", False), ("dm", False), ("datadam", False), ("mtt", True), ("ast", True)):
        cfg = get_method(name).config_cls()
        assert cfg.dsa_align_corners is align, name
        assert cfg.dsa_strategy == ("none" if name == "dc" else "auto"), name
