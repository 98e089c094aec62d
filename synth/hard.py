r"""HARD: learned hard augmentations for robust distillation (Nix, Burg & Sinz, 2023).

A learned augmenter :math:`A_\phi` transforms real inputs so that the student disagrees with the
teacher while the teacher keeps its prediction; the student distils on clean and augmented data:

.. math::
    \max_\phi\; \mathrm{KL}\big(T(A_\phi(x)) \Vert S(A_\phi(x))\big) - \lambda\, \mathrm{KL}\big(T(x) \Vert T(A_\phi(x))\big), \qquad
    \min_S\; \mathrm{KL}(T(x) \Vert S(x)) + \mathrm{KL}\big(T(A_\phi(x)) \Vert S(A_\phi(x))\big).

The official code is unreleased, so this module separates the paper from design choices:

* **Paper:** the two-player game (augmenter maximises teacher-student disagreement, a teacher term
  keeps augmented samples inside the teacher's "domain of competence"); a spatial-transformer
  augmenter (HARD-Affine) that predicts an affine transform per sample, applied with
  ``affine_grid`` / ``grid_sample``; a noise input so that one image gets different augmentations;
  the student trained on real together with augmented inputs; the shift-equivariance toy (CNN
  teacher -> MLP student).
* **Design choices here:** the augmenter is an MLP on (flattened image, 8-d Gaussian noise);
  the transform is bounded as :math:`\theta = [I + s_A \tanh(a) \mid s_t \tanh(t)]`
  (``max_linear = 0.1``, ``max_shift = 0.4`` in normalised coordinates, i.e. up to 20 % of the
  width); KL(T(x) || T(x')) with weight ``lam = 1`` as the teacher-consistency term; one augmenter
  step per student step, both Adam; padding with the background value (the minimum of the batch).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from condense.checkpoint import Checkpointer
from condense.utils import check_positive, resolve_device

from .common import LoopResult, check_images, check_int, epoch_batches, run_loop
from .losses import kd_kl
from .teachers import Model, check_student

__all__ = ["AffineAugmenter", "HardConfig", "train_hard", "translate"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


class AffineAugmenter(nn.Module):
    """Predicts a bounded affine transform per sample from (image, noise) and applies it differentiably."""

    def __init__(self, input_shape: tuple[int, int, int], *, hidden: int = 128, noise_dim: int = 8,
                 max_shift: float = 0.4, max_linear: float = 0.1) -> None:  # fmt: skip
        super().__init__()
        check_positive("max_shift", max_shift, allow_zero=True)
        check_positive("max_linear", max_linear, allow_zero=True)
        c, h, w = input_shape
        self.noise_dim, self.max_shift, self.max_linear = noise_dim, max_shift, max_linear
        self.net = nn.Sequential(nn.Linear(c * h * w + noise_dim, hidden), nn.ReLU(), nn.Linear(hidden, 6))
        nn.init.zeros_(self.net[-1].weight)  # start at the identity transform
        nn.init.zeros_(self.net[-1].bias)

    def theta(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``(B, 2, 3)`` affine matrices, each entry within its bound of the identity."""
        raw = torch.tanh(self.net(torch.cat([x.flatten(1), noise], 1)))
        eye = torch.eye(2, device=x.device).expand(len(x), 2, 2)
        linear = eye + self.max_linear * raw[:, :4].view(-1, 2, 2)
        return torch.cat([linear, self.max_shift * raw[:, 4:].view(-1, 2, 1)], 2)

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return warp(x, self.theta(x, noise))


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply affine ``theta`` with bilinear sampling; outside pixels take the background (batch minimum)."""
    bg = x.detach().amin()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - bg, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + bg


def translate(x: torch.Tensor, max_pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Shift every image by an integer offset in ``[-max_pixels, max_pixels]`` per axis (the toy's test set)."""
    h, w = x.shape[-2:]
    shift = torch.randint(-max_pixels, max_pixels + 1, (len(x), 2), generator=generator).float()
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2 * shift[:, 0] / w
    theta[:, 1, 2] = -2 * shift[:, 1] / h
    return warp(x, theta)


@dataclass
class HardConfig:
    """Hyper-parameters of :func:`train_hard`."""

    epochs: int = field(default=30, metadata=_help("passes over the real training inputs"))
    batch_size: int = field(default=128, metadata=_help("batch size"))
    lr_s: float = field(default=1e-3, metadata=_help("student Adam learning rate"))
    lr_a: float = field(default=1e-3, metadata=_help("augmenter Adam learning rate"))
    lam: float = field(default=1.0, metadata=_help("teacher-consistency weight"))
    max_shift: float = field(default=0.4, metadata=_help("translation bound (normalised coordinates, 2 = full width)"))
    max_linear: float = field(default=0.1, metadata=_help("bound of the linear part's deviation from identity"))
    temperature: float = field(default=1.0, metadata=_help("KD temperature"))
    augment: bool = field(default=True, metadata=_help("use the learned augmenter (off = plain KD on real inputs)"))

    def validate(self) -> None:
        check_int("epochs", self.epochs)
        check_int("batch_size", self.batch_size)
        for name in ("lr_s", "lr_a", "temperature"):
            check_positive(name, getattr(self, name))
        for name in ("lam", "max_shift", "max_linear"):
            check_positive(name, getattr(self, name), allow_zero=True)


def train_hard(
    teacher: Model,
    student: nn.Module,
    images: torch.Tensor,
    config: HardConfig,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    checkpoint: Checkpointer | None = None,
) -> tuple[nn.Module, AffineAugmenter, LoopResult]:
    """Distil ``student`` (in place) from ``teacher`` on real ``images`` with (or, ``augment=False``, without) HARD."""
    config.validate()
    cfg = config
    device = resolve_device(device)
    check_images(images, teacher.input_shape)
    t_net = teacher.frozen().to(device)
    student = student.to(device).train()
    check_student(student, teacher, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        aug = AffineAugmenter(teacher.input_shape, max_shift=cfg.max_shift, max_linear=cfg.max_linear).to(device)
    opt_s = torch.optim.Adam(student.parameters(), lr=cfg.lr_s)
    opt_a = torch.optim.Adam(aug.parameters(), lr=cfg.lr_a)
    rng = torch.Generator().manual_seed(seed + 1)
    batches = epoch_batches(images, cfg.batch_size, rng)

    def kl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return kd_kl(s, t, cfg.temperature)

    def step(i: int) -> dict[str, float]:
        x = batches(i).to(device)
        with torch.no_grad():
            t = t_net(x)
        out: dict[str, float] = {}
        if cfg.augment:
            noise = torch.randn(len(x), aug.noise_dim, generator=rng).to(device)
            xa = aug(x, noise)
            ta = t_net(xa)
            loss_a = -kl(student(xa), ta) + cfg.lam * kd_kl(ta, t)
            opt_a.zero_grad(set_to_none=True)
            loss_a.backward()
            opt_a.step()
            out["loss_a"] = loss_a.item()
            x, t = torch.cat([x, xa.detach()]), torch.cat([t, ta.detach()])
        loss_s = kl(student(x), t)
        opt_s.zero_grad(set_to_none=True)
        loss_s.backward()
        opt_s.step()
        out["loss_s"] = loss_s.item()
        return out

    loop = run_loop(step, cfg.epochs * batches.per_epoch, state={"student": student, "augmenter": aug, "opt_s": opt_s, "opt_a": opt_a},
                    generators={"rng": rng}, checkpoint=checkpoint, progress=progress, desc="hard" if cfg.augment else "kd")  # fmt: skip
    return student.eval(), aug, loop
