"""Generator output shapes and ranges."""
import pytest
import torch

from condense.utils import UserError
from synth.generators import Generator, sample_latents


@pytest.mark.parametrize("head", ["tanh_bn", "bn", "sigmoid"])
@pytest.mark.parametrize("size", [8, (16, 12)])
def test_shapes(head, size):
    torch.manual_seed(0)
    g = Generator(10, 3, size, ngf=4, head=head, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = g(torch.randn(6, 10))
    h, w = (size, size) if isinstance(size, int) else size
    assert x.shape == (6, 3, h, w) and torch.isfinite(x).all()


def test_ranges():
    torch.manual_seed(0)
    z = torch.randn(64, 10)
    x = Generator(10, 1, 8, ngf=4, head="sigmoid", mean=(0.3,), std=(0.5,))(z)
    assert x.min() >= (0 - 0.3) / 0.5 - 1e-6 and x.max() <= (1 - 0.3) / 0.5 + 1e-6
    y = Generator(10, 1, 8, ngf=4, head="tanh_bn")(z)  # tanh then affine-free BN: standardised per channel
    assert y.mean().abs() < 1e-4 and (y.std() - 1).abs() < 0.05


def test_dafl_bn_eps_quirk_only_in_conv_blocks():
    """DAFL's code passes eps=0.8 to the two conv blocks' BNs; its first and output BNs keep 1e-5."""
    g = Generator(10, 1, 8, ngf=4, bn_eps=0.8)
    eps = [m.eps for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert eps == [1e-5, 0.8, 0.8, 1e-5]


def test_bad_inputs():
    with pytest.raises(UserError):
        Generator(10, 1, 10)  # not a multiple of 4
    with pytest.raises(UserError):
        Generator(10, 1, 8, head="relu")
    with pytest.raises(UserError):
        Generator(10, 1, 8)(torch.randn(2, 11))


def test_latents_seeded():
    a = sample_latents(4, 3, torch.Generator().manual_seed(1))
    b = sample_latents(4, 3, torch.Generator().manual_seed(1))
    assert a.shape == (4, 3) and torch.equal(a, b)
