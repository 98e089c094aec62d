"""Each loss on hand-made tensors."""
import math

import pytest
import torch
import torch.nn as nn

from condense.utils import UserError
from synth import losses as L


def test_one_hot_loss():
    t = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-3))) / 2
    assert L.one_hot_loss(t).item() == pytest.approx(expected, rel=1e-6)


def test_information_entropy_loss():
    uniform = torch.zeros(4, 5)
    assert L.information_entropy_loss(uniform).item() == pytest.approx(-math.log(5), rel=1e-6)
    assert L.information_entropy_loss(uniform, 10.0).item() == pytest.approx(-math.log10(5), rel=1e-6)
    collapsed = torch.tensor([[20.0, 0.0], [20.0, 0.0]])
    assert L.information_entropy_loss(collapsed).item() == pytest.approx(0.0, abs=1e-6)  # one class: no entropy


def test_activation_loss():
    assert L.activation_loss(torch.tensor([[1.0, -2.0], [3.0, 0.0]])).item() == pytest.approx(-1.5)


def test_kd_kl_values_and_reductions():
    t = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    s = torch.zeros(1, 2)  # q = (1/2, 1/2)
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert L.kd_kl(s, t).item() == pytest.approx(kl, rel=1e-6)
    assert L.kd_kl(s, t, reduction="mean").item() == pytest.approx(kl / 2, rel=1e-6)
    assert L.kd_kl(t, t).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(UserError):
        L.kd_kl(s, t, temperature=0)
    with pytest.raises(UserError):
        L.kd_kl(s, t, reduction="sum")


def test_l1_logit_loss():
    assert L.l1_logit_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])).item() == pytest.approx(1.5)


def test_attention_transfer():
    a = torch.zeros(1, 2, 1, 2)
    a[0, :, 0, 0] = torch.tensor([1.0, 1.0])  # energy only at the first position
    q = L.attention_map(a)
    assert torch.allclose(q, torch.tensor([[1.0, 0.0]]))
    b = torch.zeros(1, 3, 1, 2)
    b[0, :, 0, 1] = 2.0
    assert L.attention_transfer_loss([a], [b]).item() == pytest.approx(1.0)  # ((1-0)^2 + (0-1)^2) / 2
    assert L.attention_transfer_loss([a], [a]).item() == 0.0
    with pytest.raises(UserError):
        L.attention_transfer_loss([a], [torch.zeros(1, 2, 2, 2)])


def test_bn_statistics_by_hand():
    bn = nn.BatchNorm2d(2).eval()
    bn.running_mean.copy_(torch.tensor([1.0, -1.0]))
    bn.running_var.copy_(torch.tensor([2.0, 1.0]))
    teacher = nn.Sequential(bn)
    stats = L.BNStatistics(teacher)
    x = torch.zeros(2, 2, 3, 3)
    x[1] = 2.0  # channel means (1, 1), biased variances (1, 1)
    with stats.collect() as terms:
        teacher(x)
    expected = math.sqrt(0**2 + 2**2) + math.sqrt(1**2 + 0**2)
    assert torch.stack(terms).sum().item() == pytest.approx(expected, rel=1e-6)
    assert bn.running_mean.tolist() == [1.0, -1.0]  # read, never written
    with pytest.raises(UserError):
        L.BNStatistics(nn.Linear(2, 2))


def test_masked_adversarial_kl_ignores_disagreeing_samples():
    t = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # sample 1 already disagrees -> masked out
    kl0 = L.kd_kl(s[:1], t[:1]).item()
    assert L.masked_adversarial_kl(s, t).item() == pytest.approx(-kl0 / 2, rel=1e-6)


def test_dino_loss():
    out = torch.zeros(3, 4)
    assert L.dino_loss(out, out, 0.1, 0.04).item() == pytest.approx(math.log(4), rel=1e-6)
    with pytest.raises(UserError):
        L.dino_loss(out, out, 0.0, 0.04)
    with pytest.raises(UserError):
        L.dino_loss(out, out, 0.1, -1.0)
