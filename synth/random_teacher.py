r"""Self-distillation from a random teacher (Sarnthein et al., "Random Teachers are Good Teachers", ICML 2023).

A randomly initialised, frozen teacher :math:`g_T \circ f_T` (backbone + DINO head) provides targets
on unlabelled images; a student :math:`g_S \circ f_S` of the same architecture is trained with the
DINO objective (Sec. 3, Eq. 1)

.. math:: \min_S\; -\tfrac1B \textstyle\sum_i \mathrm{softmax}(g_T f_T(x_i)/\tau_t)\cdot\log\mathrm{softmax}(g_S f_S(a(x_i))/\tau_s)

without labels and (by default, as in the paper's main setting) without augmentation ``a``. The
student is initialised close to the teacher (Sec. 5, "locality"):
:math:`\theta_S = \theta_T + \varepsilon\,(\theta' - \theta_T)` with a fresh random init :math:`\theta'`
(``init_eps = 1`` is an independent init). The quality of the learned representation :math:`f_S`
is measured by k-NN and linear-probe accuracy, against the random teacher's own :math:`f_T`.

Design choices (CPU scale; the paper uses ResNet/VGG on CIFAR): the DINO head is smaller (hidden
256, bottleneck 64, 1024 prototypes instead of 2048/256/65536); temperatures are DINO's
(:math:`\tau_s = 0.1, \tau_t = 0.04`); no centering (the teacher is fixed, so there is no collapse
to guard against); Adam instead of AdamW with DINO's schedule.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from condense.checkpoint import Checkpointer
from condense.utils import UserError, check_positive, resolve_device

from .common import LoopResult, check_choice, check_images, check_int, epoch_batches, run_loop
from .losses import dino_loss
from .meta import _aug_params, random_crop_flip
from .teachers import Model, build_network

__all__ = ["DinoHead", "RandomTeacherConfig", "SelfDistilled", "train_from_random_teacher", "embed", "knn_accuracy", "linear_probe_accuracy"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


class DinoHead(nn.Module):
    """DINO projection head: MLP (GELU) -> L2-normalised bottleneck -> weight-normalised prototypes (norm fixed to 1)."""

    def __init__(self, in_dim: int, hidden: int = 256, bottleneck: int = 64, out_dim: int = 1024) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Parameter(torch.randn(out_dim, bottleneck) / bottleneck**0.5)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(h), dim=1) @ F.normalize(self.prototypes, dim=1).T


class SelfDistilled(nn.Module):
    """Backbone (a registry network, used through ``embed``) + DINO head."""

    def __init__(self, backbone: nn.Module, head: DinoHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.embed(x))


@dataclass
class RandomTeacherConfig:
    """Hyper-parameters of :func:`train_from_random_teacher`."""

    epochs: int = field(default=20, metadata=_help("passes over the unlabelled data"))
    batch_size: int = field(default=128, metadata=_help("batch size"))
    lr: float = field(default=1e-3, metadata=_help("Adam learning rate"))
    student_temp: float = field(default=0.1, metadata=_help("student temperature tau_s"))
    teacher_temp: float = field(default=0.04, metadata=_help("teacher temperature tau_t"))
    init_eps: float = field(default=0.0, metadata=_help("student init: teacher + eps * (fresh init - teacher); 1 = independent"))
    hidden: int = field(default=256, metadata=_help("DINO head hidden width"))
    bottleneck: int = field(default=64, metadata=_help("DINO head bottleneck"))
    out_dim: int = field(default=1024, metadata=_help("number of DINO prototypes"))
    augment: str = field(default="none", metadata=_help("none (paper's main setting) or crop (2-px padded random crops)"))

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "hidden", "bottleneck", "out_dim"):
            check_int(name, getattr(self, name))
        for name in ("lr", "student_temp", "teacher_temp"):
            check_positive(name, getattr(self, name))
        check_positive("init_eps", self.init_eps, allow_zero=True)
        check_choice("augment", self.augment, ("none", "crop"))


def train_from_random_teacher(
    teacher: Model,
    images: torch.Tensor,
    config: RandomTeacherConfig,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    checkpoint: Checkpointer | None = None,
) -> tuple[SelfDistilled, SelfDistilled, LoopResult]:
    """Distil a student from the (random) ``teacher`` on unlabelled ``images``; returns ``(teacher, student, loop)``.

    The teacher's DINO head is seeded from ``seed``; the student starts at the teacher plus
    ``init_eps`` times a fresh initialisation offset.
    """
    config.validate()
    cfg = config
    device = resolve_device(device)
    check_images(images, teacher.input_shape)
    backbone = teacher.net
    if not hasattr(backbone, "embed"):
        raise UserError(f"{teacher.arch} has no embed() to put a DINO head on")
    with torch.no_grad():
        dim = backbone.eval().embed(torch.zeros(1, *teacher.input_shape, device=next(backbone.parameters()).device)).shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        t_model = SelfDistilled(copy.deepcopy(backbone), DinoHead(dim, cfg.hidden, cfg.bottleneck, cfg.out_dim)).to(device)
        fresh = SelfDistilled(build_network(teacher.arch, teacher.input_shape, teacher.num_classes, teacher.arch_kwargs),
                              DinoHead(dim, cfg.hidden, cfg.bottleneck, cfg.out_dim)).to(device)  # fmt: skip
    student = copy.deepcopy(t_model).train()
    with torch.no_grad():
        for p_s, p_f in zip(student.parameters(), fresh.parameters()):
            p_s.add_(cfg.init_eps * (p_f - p_s))
    t_model.eval().requires_grad_(False)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    rng = torch.Generator().manual_seed(seed + 1)
    batches = epoch_batches(images, cfg.batch_size, rng)

    def step(i: int) -> dict[str, float]:
        x = batches(i).to(device)
        with torch.no_grad():
            target = t_model(x)
        if cfg.augment == "crop":
            x = random_crop_flip(x, _aug_params(len(x), 2, False, rng, device), 2, x.amin())
        loss = dino_loss(student(x), target, cfg.student_temp, cfg.teacher_temp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    loop = run_loop(step, cfg.epochs * batches.per_epoch, state={"student": student, "opt": opt}, generators={"rng": rng},
                    checkpoint=checkpoint, progress=progress, desc="random-teacher")  # fmt: skip
    return t_model, student.eval(), loop


@torch.no_grad()
def embed(net: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 1024) -> torch.Tensor:
    """``net.embed`` (or ``net.backbone.embed``) features of ``x`` in eval mode, on the CPU."""
    f = net.backbone.embed if isinstance(net, SelfDistilled) else net.embed
    was = net.training
    net.eval()
    out = torch.cat([f(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
    net.train(was)
    return out


def knn_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, k: int = 20, temperature: float = 0.07) -> float:
    """DINO's weighted k-NN classifier: cosine similarity, votes weighted by ``exp(sim / T)``."""
    check_int("k", k)
    a, b = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    sims, idx = (b @ a.T).topk(min(k, len(a)), dim=1)
    votes = torch.zeros(len(b), int(train_y.max()) + 1).scatter_add_(1, train_y[idx], (sims / temperature).exp())
    return float((votes.argmax(1) == test_y).float().mean())


def linear_probe_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, seed: int = 0) -> float:
    """Multinomial logistic regression (L-BFGS) on standardised frozen features."""
    from sklearn.linear_model import LogisticRegression  # here, not at the top: scikit-learn's import costs ~3 s

    mu, sd = train_f.mean(0), train_f.std(0).clamp_min(1e-6)
    clf = LogisticRegression(max_iter=500, random_state=seed)
    clf.fit(((train_f - mu) / sd).numpy(), train_y.numpy())
    return float(np.mean(clf.predict(((test_f - mu) / sd).numpy()) == test_y.numpy()))
