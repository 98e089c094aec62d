"""LeNet-5 / LeNet-5-half of DAFL appended to the model zoo."""
import pytest
import torch

from condense.nets import get_network
from condense.utils import UserError


@pytest.mark.parametrize("size", [8, 16, 28, 32])
@pytest.mark.parametrize("name", ["lenet5", "lenet5_half"])
def test_any_input_size(name, size):
    net = get_network(name, 1, 10, size)
    x = torch.randn(3, 1, size, size)
    assert net(x).shape == (3, 10)
    feats = net.features(x)
    assert len(feats) == 3 and net.embed(x).shape == (3, net.feature_dim)


def test_published_sizes_at_32():
    teacher, student = get_network("lenet5", 1, 10, 32), get_network("lenet5_half", 1, 10, 32)
    assert sum(p.numel() for p in teacher.parameters()) == 61706  # LeNet-5 on 32x32 MNIST
    assert teacher.feature_dim == 120 and student.feature_dim == 60
    assert [f.shape[1] for f in student.features(torch.zeros(1, 1, 32, 32))] == [3, 8, 60]


def test_batchnorm_option_and_bad_norm():
    net = get_network("lenet5", 3, 10, 16, norm="batchnorm")
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 3
    with pytest.raises(UserError):
        get_network("lenet5", 1, 10, 32, norm="groupnorm")
