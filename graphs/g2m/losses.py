r"""Losses for GNN-to-MLP distillation: CE, GLNN KD, FF-G2M's LFD and HFD.

Notation: :math:`z^s_i` student (MLP) logits, :math:`z^t_i` teacher (GNN) logits, :math:`\sigma`
the softmax, :math:`D_{KL}(p \| q) = \sum_c p_c(\log p_c - \log q_c)`. Every KL is computed from
log-probabilities (``log_softmax``) so no ``log(0)`` can occur, and averaged over the rows (nodes
or edges), which is ``nn.KLDivLoss(reduction="batchmean", log_target=True)`` as used by both
official codes. Edge lists are PyG ``edge_index`` tensors ``[2, E]``.

Each distillation loss is split into its teacher side, a :class:`Target` that depends only on the
teacher and the graph (``*_target``), and the student side (``*_from``), so a training loop builds
the target once instead of every epoch; ``kd_loss`` / ``lfd_loss`` / ``hfd_loss`` compose the two.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from condense.utils import check_positive

__all__ = ["Target", "kl_rows", "kl_from", "ce_loss", "kd_target", "kd_from", "kd_loss", "lfd_target", "lfd_from", "lfd_loss",
           "hfd_target", "hfd_from", "hfd_loss"]  # fmt: skip


@dataclass(frozen=True)
class Target:
    """A fixed row-wise distribution ``[R, C]``: its log-probabilities and probabilities."""

    log_p: Tensor
    p: Tensor

    @classmethod
    def of(cls, log_p: Tensor) -> Target:
        return cls(log_p, log_p.exp())


def kl_from(target: Target, log_q: Tensor) -> Tensor:
    r""":math:`\frac1R\sum_r D_{KL}(p_r \| q_r)` for a :class:`Target` ``p`` (0 if ``R = 0``)."""
    if target.log_p.size(0) == 0:
        return log_q.sum() * 0.0
    return (target.p * (target.log_p - log_q)).sum(dim=1).mean()


def kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    r""":math:`\frac1R\sum_r D_{KL}(p_r \| q_r)` from row-wise log-probabilities ``[R, C]`` (0 if ``R = 0``)."""
    return kl_from(Target.of(log_p), log_q)


def ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    r"""Supervised term :math:`\mathcal L_{CE} = -\frac{1}{|V_L|}\sum_{i \in V_L} \log \sigma(z^s_i)_{y_i}`."""
    return F.cross_entropy(logits, labels)


def kd_target(teacher_logits: Tensor) -> Target:
    r""":math:`\sigma(z^t_i)` for every node (the teacher's soft labels)."""
    return Target.of(F.log_softmax(teacher_logits, dim=1))


def kd_from(target: Target, student_logits: Tensor) -> Tensor:
    """:func:`kd_loss` against a prepared :func:`kd_target`."""
    return kl_from(target, F.log_softmax(student_logits, dim=1))


def kd_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    r"""GLNN node-wise distillation (Zhang et al. 2022, eq. 1):

    .. math:: \mathcal L_{KD} = \frac{1}{|V|}\sum_{i \in V} D_{KL}\big(\sigma(z^t_i) \,\|\, \sigma(z^s_i)\big).

    Rows of the two tensors are paired node by node (GLNN uses no temperature).
    """
    return kd_from(kd_target(teacher_logits), student_logits)


def lfd_target(teacher_logits: Tensor, edge_index: Tensor) -> Target:
    r""":math:`\sigma(z^t_j)` for every edge :math:`(i, j)`, ``j = edge_index[1]``."""
    return Target.of(F.log_softmax(teacher_logits, dim=1)[edge_index[1]])


def lfd_from(target: Target, student_logits: Tensor, edge_index: Tensor) -> Tensor:
    """:func:`lfd_loss` against a prepared :func:`lfd_target` of the same ``edge_index``."""
    return kl_from(target, F.log_softmax(student_logits, dim=1)[edge_index[0]])


def lfd_loss(student_logits: Tensor, teacher_logits: Tensor, edge_index: Tensor) -> Tensor:
    r"""FF-G2M low-frequency distillation (Wu et al. 2024, Section 4.1):

    .. math:: \mathcal L_{LFD} = \frac{1}{|E|}\sum_{(i,j) \in E} D_{KL}\big(\sigma(z^t_j) \,\|\, \sigma(z^s_i)\big),

    the student at ``i = edge_index[0]`` is pulled toward the teacher at ``j = edge_index[1]``.
    Pass an edge set *with* self-loops (the official code does), so each node also matches its own
    teacher output; with self-loops only this is exactly :func:`kd_loss`.
    """
    return lfd_from(lfd_target(teacher_logits, edge_index), student_logits, edge_index)


def _edge_difference_log_dist(logits: Tensor, edge_index: Tensor, tau: float) -> Tensor:
    r""":math:`\log\sigma(|z_i - z_j| / \tau)` for every edge (i, j)."""
    return F.log_softmax((logits[edge_index[0]] - logits[edge_index[1]]).abs() / tau, dim=1)


def hfd_target(teacher_logits: Tensor, edge_index: Tensor, tau: float = 1.0) -> Target:
    r""":math:`\sigma(|z^t_i - z^t_j| / \tau)` for every edge :math:`(i, j)`."""
    return Target.of(_edge_difference_log_dist(teacher_logits, edge_index, check_positive("tau", tau)))


def hfd_from(target: Target, student_logits: Tensor, edge_index: Tensor, tau: float = 1.0) -> Tensor:
    """:func:`hfd_loss` against a prepared :func:`hfd_target` of the same ``edge_index`` and ``tau``."""
    return kl_from(target, _edge_difference_log_dist(student_logits, edge_index, check_positive("tau", tau)))


def hfd_loss(student_logits: Tensor, teacher_logits: Tensor, edge_index: Tensor, tau: float = 1.0) -> Tensor:
    r"""FF-G2M high-frequency distillation (Wu et al. 2024, Section 4.2):

    .. math::
        \mathcal L_{HFD} = \frac{1}{|E|}\sum_{(i,j) \in E} D_{KL}\Big(
            \sigma\big(|z^t_i - z^t_j| / \tau\big) \,\Big\|\, \sigma\big(|z^s_i - z^s_j| / \tau\big)\Big).

    Pass an edge set *without* self-loops (a self-loop has a zero difference and carries no
    high-frequency signal). Computed on raw logits, as in the official code; zero when the
    student's logits equal the teacher's.
    """
    return hfd_from(hfd_target(teacher_logits, edge_index, tau), student_logits, edge_index, tau)
