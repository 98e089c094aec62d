"""Losses against hand computations on a 4-node graph, reductions, signs and gradients."""
from __future__ import annotations

import math

import pytest
import torch

from condense.utils import UserError
from graphs.g2m.losses import ce_loss, hfd_loss, kd_loss, kl_rows, lfd_loss

# 4-node path 0-1-2-3 (both directions), 3 classes.
EDGES = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
S = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 2.0, 0.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
T = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 3.0]], dtype=torch.float64)


def softmax(v):
    e = [math.exp(a) for a in v]
    return [a / sum(e) for a in e]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_ce_matches_hand_computation():
    labels = torch.tensor([0, 1, 1, 2])
    expected = -sum(math.log(softmax(S[i].tolist())[labels[i]]) for i in range(4)) / 4
    assert ce_loss(S, labels).item() == pytest.approx(expected, rel=1e-10)


def test_kd_matches_hand_computation():
    expected = sum(kl(softmax(T[i].tolist()), softmax(S[i].tolist())) for i in range(4)) / 4
    assert kd_loss(S, T).item() == pytest.approx(expected, rel=1e-10)


def test_lfd_matches_hand_computation_student_at_source_teacher_at_target():
    expected = sum(kl(softmax(T[j].tolist()), softmax(S[i].tolist())) for i, j in EDGES.t().tolist()) / EDGES.size(1)
    assert lfd_loss(S, T, EDGES).item() == pytest.approx(expected, rel=1e-10)


def test_hfd_matches_hand_computation():
    tau = 1.5
    total = 0.0
    for i, j in EDGES.t().tolist():
        pt = softmax([abs(a - b) / tau for a, b in zip(T[i].tolist(), T[j].tolist())])
        ps = softmax([abs(a - b) / tau for a, b in zip(S[i].tolist(), S[j].tolist())])
        total += kl(pt, ps)
    assert hfd_loss(S, T, EDGES, tau).item() == pytest.approx(total / EDGES.size(1), rel=1e-10)


def test_lfd_with_only_self_loops_is_node_wise_kd():
    loops = torch.arange(4).repeat(2, 1)
    assert lfd_loss(S, T, loops).item() == pytest.approx(kd_loss(S, T).item(), rel=1e-12)


def test_hfd_zero_when_student_equals_teacher_and_positive_otherwise():
    assert hfd_loss(T.clone(), T, EDGES, 1.5).item() == pytest.approx(0.0, abs=1e-12)
    assert hfd_loss(S, T, EDGES, 1.5).item() > 1e-3


@pytest.mark.parametrize("seed", range(5))
def test_losses_non_negative_on_random_logits(seed):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(4, 3, generator=g) * 3, torch.randn(4, 3, generator=g) * 3
    for value in (kd_loss(s, t), lfd_loss(s, t, EDGES), hfd_loss(s, t, EDGES, 0.7)):
        assert value.item() >= -1e-7


def test_kl_in_log_space_handles_saturated_teacher():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[200.0, -200.0]])  # softmax underflows to an exact 0 in probability space
    assert torch.isfinite(kd_loss(s, t)) and kd_loss(s, t).item() == pytest.approx(math.log(2), rel=1e-6)
    assert kl_rows(torch.zeros(0, 2), torch.zeros(0, 2)).item() == 0.0


@pytest.mark.parametrize("loss", ["kd", "lfd", "hfd"])
def test_gradients_to_student_match_finite_differences(loss):
    fn = {
        "kd": lambda s: kd_loss(s, T),
        "lfd": lambda s: lfd_loss(s, T, EDGES),
        "hfd": lambda s: hfd_loss(s, T, EDGES, 1.5),
    }[loss]
    s = S.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (s,), eps=1e-6, atol=1e-6)
    t = T.clone().requires_grad_(True)
    fn(s).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_hfd_rejects_bad_tau():
    with pytest.raises(UserError):
        hfd_loss(S, T, EDGES, 0.0)
