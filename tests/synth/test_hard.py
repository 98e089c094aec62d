"""HARD: the affine augmenter (identity at init, bounded), teacher-label preservation and the shift toy."""
import torch

from condense.nets import get_network
from synth.hard import AffineAugmenter, HardConfig, train_hard, translate
from synth.teachers import Model


def test_augmenter_identity_and_bounds():
    aug = AffineAugmenter((1, 8, 8), max_shift=0.3, max_linear=0.1)
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(aug(x, torch.randn(4, aug.noise_dim)), x, atol=1e-5)  # zero-initialised head -> identity
    torch.nn.init.normal_(aug.net[-1].weight, std=10.0)
    theta = aug.theta(x, torch.randn(4, aug.noise_dim))
    eye = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert ((theta[:, :, :2] - eye).abs() <= 0.1 + 1e-6).all() and (theta[:, :, 2].abs() <= 0.3 + 1e-6).all()
    out = aug(x.requires_grad_(), torch.randn(4, aug.noise_dim))
    out.sum().backward()
    assert aug.net[0].weight.grad is not None and x.grad is not None  # differentiable in φ and x


def test_translate_shifts_by_whole_pixels():
    x = torch.zeros(6, 1, 8, 8)
    x[:, 0, 3, 3] = 1.0
    y = translate(x, 2, torch.Generator().manual_seed(0))
    assert torch.allclose(y.sum((1, 2, 3)), torch.ones(6), atol=1e-5) and torch.allclose(y.amax((1, 2, 3)), torch.ones(6), atol=1e-5)
    moved = [(y[i, 0] > 0.5).nonzero().tolist() != [[3, 3]] for i in range(6)]
    assert any(moved)


def test_augmenter_keeps_teacher_label(teacher, digits):
    torch.manual_seed(0)
    student = get_network("mlp", 1, 10, 8)
    cfg = HardConfig(epochs=3, batch_size=128, lam=1.0)
    student, aug, loop = train_hard(teacher, student, digits.train_x, cfg, progress=False)
    x = digits.test_x[:256]
    with torch.no_grad():
        xa = aug(x, torch.randn(len(x), aug.noise_dim, generator=torch.Generator().manual_seed(0)))
        t, ta = teacher.net(x).argmax(1), teacher.net(xa).argmax(1)
    assert not torch.allclose(xa, x, atol=1e-3)  # the augmenter learned a non-trivial transform
    assert (t == ta).float().mean() > 0.8
    assert any("loss_a" in h for h in loop.history)
