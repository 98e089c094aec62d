"""Random teachers: seeded DINO self-distillation, locality init, k-NN / linear-probe evaluation."""
import pytest
import torch

from condense.utils import UserError
from synth.random_teacher import RandomTeacherConfig, embed, knn_accuracy, linear_probe_accuracy, train_from_random_teacher
from synth.teachers import random_teacher


def test_knn_and_probe_on_separable_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]])
    y = torch.arange(3).repeat_interleave(20)
    f = centres[y] + 0.3 * torch.randn(60, 2, generator=g)
    assert knn_accuracy(f[::2], y[::2], f[1::2], y[1::2], k=5) == 1.0
    assert linear_probe_accuracy(f[::2], y[::2], f[1::2], y[1::2]) == 1.0


def test_init_eps_zero_starts_at_teacher_and_training_lowers_loss(digits):
    rt = random_teacher("lenet5", (1, 8, 8), 10, seed=0)
    t_model, student, _ = train_from_random_teacher(rt, digits.train_x[:256], RandomTeacherConfig(epochs=1, batch_size=256, lr=1e-12), progress=False)
    assert torch.allclose(t_model(digits.train_x[:8]), student(digits.train_x[:8]), atol=1e-5)  # lr ~ 0: student == teacher
    t_model, student, loop = train_from_random_teacher(rt, digits.train_x, RandomTeacherConfig(epochs=1, batch_size=64, init_eps=1.0), progress=False)
    losses = [h["loss"] for h in loop.history]
    assert losses[-1] < losses[0]
    f = embed(student, digits.test_x)
    assert f.shape == (len(digits.test_x), rt.net.feature_dim) and torch.isfinite(f).all()


def test_seeded_and_validated(digits):
    rt = random_teacher("lenet5", (1, 8, 8), 10, seed=0)
    cfg = RandomTeacherConfig(epochs=1, batch_size=256)
    a = train_from_random_teacher(rt, digits.train_x[:512], cfg, seed=1, progress=False)[1].state_dict()
    b = train_from_random_teacher(rt, digits.train_x[:512], cfg, seed=1, progress=False)[1].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError):
        train_from_random_teacher(rt, digits.train_x[:4], RandomTeacherConfig(teacher_temp=0.0), progress=False)
    with pytest.raises(UserError):
        train_from_random_teacher(rt, torch.zeros(4, 1, 16, 16), cfg, progress=False)
