r"""The losses of data-free distillation, one small function per equation.

Notation: :math:`t, s \in \mathbb{R}^{B\times K}` teacher / student logits, :math:`p = \mathrm{softmax}(t)`,
:math:`f_T` teacher features. All functions are differentiable and reduce to a scalar.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from condense.utils import UserError, check_positive

__all__ = [
    "one_hot_loss",
    "information_entropy_loss",
    "activation_loss",
    "kd_kl",
    "l1_logit_loss",
    "attention_map",
    "attention_transfer_loss",
    "BNStatistics",
    "masked_adversarial_kl",
    "dino_loss",
]

KL_REDUCTIONS = ("batchmean", "mean")


def one_hot_loss(t: torch.Tensor) -> torch.Tensor:
    r"""DAFL Eq. 4: :math:`\mathcal{L}_{oh} = \frac1B\sum_i H_{CE}(t_i, \arg\max_k t_{ik})` (pseudo-labels are constants)."""
    return F.cross_entropy(t, t.detach().argmax(1))


def information_entropy_loss(t: torch.Tensor, log_base: float = math.e) -> torch.Tensor:
    r"""DAFL Eq. 6: :math:`\mathcal{L}_{ie} = -H(\bar p) = \sum_k \bar p_k \log \bar p_k`, :math:`\bar p = \frac1B \sum_i p_i`.

    Minimising it maximises the entropy of the batch-mean prediction (balanced classes). The paper
    uses the natural log; the official code uses ``log10`` (``log_base=10``), i.e. the loss divided by ln 10.
    """
    p_bar = F.softmax(t, dim=1).mean(0)
    return (p_bar * torch.log(p_bar.clamp_min(1e-12))).sum() / math.log(log_base)


def activation_loss(features: torch.Tensor) -> torch.Tensor:
    r"""DAFL Eq. 5: :math:`\mathcal{L}_a = -\frac1B \lVert f_T \rVert_1` (official code: ``-features.abs().mean()``, the mean over all entries)."""
    return -features.abs().mean()


def kd_kl(s: torch.Tensor, t: torch.Tensor, temperature: float = 1.0, reduction: str = "batchmean") -> torch.Tensor:
    r"""Hinton KD: :math:`\mathrm{KL}(\mathrm{softmax}(t/\tau)\,\Vert\,\mathrm{softmax}(s/\tau))`.

    ``reduction="batchmean"`` divides the summed KL by :math:`B` (DAFL's ``kdloss``, the true KL);
    ``"mean"`` divides by :math:`B K` (ZSKT's official ``F.kl_div`` default, against which its
    attention weight :math:`\beta = 250` is calibrated). Gradients flow into both arguments.
    """
    check_positive("temperature", temperature)
    if reduction not in KL_REDUCTIONS:
        raise UserError(f"kl reduction must be one of {KL_REDUCTIONS}, got {reduction!r}")
    log_p = F.log_softmax(t / temperature, dim=1)  # log-space target: finite gradients into t as well
    kl = (log_p.exp() * (log_p - F.log_softmax(s / temperature, dim=1))).sum(1).mean()
    return kl if reduction == "batchmean" else kl / s.shape[1]


def l1_logit_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""DFAD Eq. 3: mean absolute error of logits :math:`\frac{1}{BK}\sum_{i,k}|t_{ik} - s_{ik}|`."""
    return F.l1_loss(s, t)


def attention_map(a: torch.Tensor) -> torch.Tensor:
    r"""Zagoruyko & Komodakis 2017: :math:`Q = \mathrm{vec}(\frac1C \sum_c a_c^2) / \lVert\cdot\rVert_2` per sample."""
    return F.normalize(a.pow(2).mean(1).flatten(1), dim=1)


def attention_transfer_loss(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
    r"""ZSKT Eq. 2 (second term, without :math:`\beta`): :math:`\sum_l \mathrm{mean}\,(Q_S^l - Q_T^l)^2`.

    The official code averages the squared difference over batch and positions (``.pow(2).mean()``);
    pairs whose spatial sizes differ are a user error.
    """
    if len(student_feats) != len(teacher_feats):
        raise UserError(f"attention transfer needs as many student ({len(student_feats)}) as teacher ({len(teacher_feats)}) feature maps")
    total = student_feats[0].new_zeros(())
    for a_s, a_t in zip(student_feats, teacher_feats):
        if a_s.shape[2:] != a_t.shape[2:]:
            raise UserError(f"attention maps differ in size: student {tuple(a_s.shape[2:])} vs teacher {tuple(a_t.shape[2:])}")
        total = total + (attention_map(a_s) - attention_map(a_t)).pow(2).mean()
    return total


class BNStatistics:
    r"""DeepInversion's feature-statistics prior (Yin et al., CVPR 2020, Eq. 4), as in Fast-DFKD:

    :math:`\mathcal{L}_{BN} = \sum_l \lVert \mu_l(x) - \hat\mu_l \rVert_2 + \lVert \sigma^2_l(x) - \hat\sigma^2_l \rVert_2`

    where :math:`\mu_l, \sigma^2_l` are the batch mean / biased variance of the input of the teacher's
    BatchNorm layer :math:`l` and :math:`\hat\mu_l, \hat\sigma^2_l` its running statistics. Use
    ``with stats.collect() as terms: teacher(x)``, then ``sum(terms)``. The teacher must be in eval
    mode, so its running statistics are read, never written.
    """

    def __init__(self, teacher: nn.Module) -> None:
        self.layers = [m for m in teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not self.layers:
            raise UserError("the BN-statistics loss needs a teacher with BatchNorm layers (e.g. --arch lenet5 --norm batchnorm); set bn=0 otherwise")

    @contextmanager
    def collect(self) -> Iterator[list[torch.Tensor]]:
        terms: list[torch.Tensor] = []

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            x = inputs[0]
            dims = [0] + list(range(2, x.dim()))
            mean, var = x.mean(dims), x.var(dims, unbiased=False)
            terms.append(torch.linalg.vector_norm(mean - module.running_mean) + torch.linalg.vector_norm(var - module.running_var))

        handles = [m.register_forward_hook(hook) for m in self.layers]
        try:
            yield terms
        finally:
            for h in handles:
                h.remove()


def masked_adversarial_kl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""Fast-DFKD / CMI adversarial term: :math:`\mathcal{L}_{adv} = -\frac1B\sum_i m_i\,\mathrm{KL}(p^T_i \Vert p^S_i)`.

    :math:`m_i = [\arg\max s_i = \arg\max t_i]`: only samples the student still agrees on are pushed
    towards disagreement (official ``fast_meta.py``).
    """
    mask = (s.argmax(1) == t.argmax(1)).to(s.dtype).detach()
    log_p = F.log_softmax(t, dim=1)
    kl = (log_p.exp() * (log_p - F.log_softmax(s, dim=1))).sum(1)
    return -(kl * mask).mean()


def dino_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, student_temp: float, teacher_temp: float) -> torch.Tensor:
    r"""DINO / random-teacher distillation (Sarnthein et al. 2023, Eq. 1):
    :math:`-\frac1B\sum_i \mathrm{softmax}(g_T(x_i)/\tau_t) \cdot \log \mathrm{softmax}(g_S(x'_i)/\tau_s)`.
    """
    check_positive("student temperature", student_temp)
    check_positive("teacher temperature", teacher_temp)
    target = F.softmax(teacher_out.detach() / teacher_temp, dim=1)
    return -(target * F.log_softmax(student_out / student_temp, dim=1)).sum(1).mean()
