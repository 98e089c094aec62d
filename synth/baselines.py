"""Reference students for every synth experiment: the lower bound (KD on Gaussian-noise inputs)."""
from __future__ import annotations

import torch
import torch.nn as nn

from condense.utils import check_positive, resolve_device

from .common import check_int
from .losses import kd_kl
from .teachers import Model, check_student

__all__ = ["train_on_noise"]


def train_on_noise(
    teacher: Model,
    student: nn.Module,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 2e-3,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> nn.Module:
    """KD (``KL(T || S)``, Adam) on standard-normal inputs: what a student learns without any data prior."""
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    check_positive("lr", lr)
    device = resolve_device(device)
    t_net = teacher.frozen().to(device)
    student = student.to(device).train()
    check_student(student, teacher, device)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    rng = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(batch_size, *teacher.input_shape, generator=rng).to(device)
        with torch.no_grad():
            t = t_net(x)
        loss = kd_kl(student(x), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return student.eval()
