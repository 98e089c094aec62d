import pytest
import torch
from torch.func import functional_call

from condense.nets import NETWORKS, ConvNet, get_network
from condense.utils import UserError

SHAPES = [(1, 8), (1, 28), (3, 32)]


CASES = [(n, c, s) for n in sorted(NETWORKS) for c, s in SHAPES if not (n.startswith("resnet") and s > 8)]


@pytest.mark.parametrize("name,channels,size", CASES + [("resnet18", 3, 16)])
def test_forward_shapes_and_functional_call(name, channels, size):
    torch.manual_seed(0)
    if name in ("convnetd4", "convnetd5", "resnet18") and size < 16:
        with pytest.raises(UserError, match="too small"):
            get_network(name, channels, 7, size)
        return
    net = get_network(name, channels, 7, size)
    x = torch.randn(3, channels, size, size)
    out = net(x)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    buffers = dict(net.named_buffers())
    out_f = functional_call(net, {**params, **buffers}, (x,))
    assert torch.allclose(out, out_f, atol=1e-5)
    grads = torch.autograd.grad(out_f.sum(), list(params.values()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert net.embed(x).shape[0] == 3


@pytest.mark.parametrize("name", ["convnet", "convnetd4", "mlp", "lenet", "alexnet", "resnet18"])
def test_default_configs_have_no_buffers(name):
    assert list(get_network(name, 3, 10, 32).buffers()) == []


def test_convnet_matches_literature_layout():
    net = ConvNet(1, 10, (28, 28))
    assert net.feature_dim == 128 * 4 * 4  # padding 3 on 1-channel input: 28 -> 32 -> 4x4 after three pools
    assert isinstance(net.blocks[0][1], torch.nn.GroupNorm) and net.blocks[0][1].num_groups == 128
    assert ConvNet(3, 10, (32, 32)).feature_dim == 2048
    d4 = get_network("convnetd4", 3, 10, 64)
    assert d4.depth == 4 and d4.feature_dim == 128 * 4 * 4
    feats = net.features(torch.randn(2, 1, 28, 28))
    assert [f.shape[-1] for f in feats] == [32, 16, 8] and all((f >= 0).all() for f in feats)


@pytest.mark.parametrize("norm", ["instancenorm", "batchnorm", "layernorm", "none"])
@pytest.mark.parametrize("pooling", ["avgpooling", "maxpooling", "none"])
def test_convnet_variants(norm, pooling):
    net = get_network("convnet", 3, 5, 16, width=16, norm=norm, pooling=pooling)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 5)


def test_instance_norm_on_a_1x1_map_is_rejected():
    # GroupNorm(C, C) over one pixel outputs its bias whatever the input: such nets cannot learn
    x = torch.randn(4, 1, 1, 1)
    assert torch.nn.GroupNorm(1, 1)(x).abs().max() < 1e-3 * x.abs().max()
    with pytest.raises(UserError, match="1x1 feature map"):
        get_network("resnet18", 1, 10, 8)  # 8 -> 4 -> 2 -> 1 in the last stage
    with pytest.raises(UserError, match="1x1 feature map"):
        get_network("convnetd4", 1, 10, 8)
    assert get_network("resnet18", 1, 10, 9)(torch.randn(2, 1, 9, 9)).shape == (2, 10)
    assert get_network("resnet18_bn", 1, 10, 8)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_bad_model_options():
    with pytest.raises(UserError, match="unknown model"):
        get_network("vgg-1000", 3, 10, 32)
    with pytest.raises(UserError, match="unknown norm"):
        get_network("convnet", 3, 10, 32, norm="weird")
    with pytest.raises(UserError, match="too small"):
        get_network("convnetd5", 3, 10, 8, pooling="avgpooling")
    with pytest.raises(UserError, match="bad options"):
        get_network("mlp", 3, 10, 32, depth=5)
