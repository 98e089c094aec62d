r"""Losses for GNN-to-MLP distillation: CE, GLNN KD, FF-G2M's LFD and HFD.

Notation: :math:`z^s_i` student (MLP) logits, :math:`z^t_i` teacher (GNN) logits, :math:`\sigma`
the softmax, :math:`D_{KL}(p \| q) = \sum_c p_c(\log p_c - \log q_c)`. Every KL is computed from
log-probabilities (``log_softmax``) so no ``log(0)`` can occur, and averaged over the rows (nodes
or edges), which is ``nn.KLDivLoss(reduction="batchmean", log_target=True)`` as used by both
official codes. Edge lists are PyG ``edge_index`` tensors ``[2, E]``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from condense.utils import check_positive

__all__ = ["kl_rows", "ce_loss", "kd_loss", "lfd_loss", "hfd_loss"]


def kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    r""":math:`\frac1R\sum_r D_{KL}(p_r \| q_r)` from row-wise log-probabilities ``[R, C]`` (0 if ``R = 0``)."""
    if log_p.size(0) == 0:
        return log_q.sum() * 0.0
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


def ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    r"""Supervised term :math:`\mathcal L_{CE} = -\frac{1}{|V_L|}\sum_{i \in V_L} \log \sigma(z^s_i)_{y_i}`."""
    return F.cross_entropy(logits, labels)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    r"""GLNN node-wise distillation (Zhang et al. 2022, eq. 1):

    .. math:: \mathcal L_{KD} = \frac{1}{|V|}\sum_{i \in V} D_{KL}\big(\sigma(z^t_i) \,\|\, \sigma(z^s_i)\big).

    Rows of the two tensors are paired node by node (GLNN uses no temperature).
    """
    return kl_rows(F.log_softmax(teacher_logits, dim=1), F.log_softmax(student_logits, dim=1))


def lfd_loss(student_logits: Tensor, teacher_logits: Tensor, edge_index: Tensor) -> Tensor:
    r"""FF-G2M low-frequency distillation (Wu et al. 2024, Section 4.1):

    .. math:: \mathcal L_{LFD} = \frac{1}{|E|}\sum_{(i,j) \in E} D_{KL}\big(\sigma(z^t_j) \,\|\, \sigma(z^s_i)\big),

    the student at ``i = edge_index[0]`` is pulled toward the teacher at ``j = edge_index[1]``.
    Pass an edge set *with* self-loops (the official code does), so each node also matches its own
    teacher output; with self-loops only this is exactly :func:`kd_loss`.
    """
    log_s = F.log_softmax(student_logits, dim=1)
    log_t = F.log_softmax(teacher_logits, dim=1)
    return kl_rows(log_t[edge_index[1]], log_s[edge_index[0]])


def _edge_difference_log_dist(logits: Tensor, edge_index: Tensor, tau: float) -> Tensor:
    r""":math:`\log\sigma(|z_i - z_j| / \tau)` for every edge (i, j)."""
    return F.log_softmax((logits[edge_index[0]] - logits[edge_index[1]]).abs() / tau, dim=1)


def hfd_loss(student_logits: Tensor, teacher_logits: Tensor, edge_index: Tensor, tau: float = 1.0) -> Tensor:
    r"""FF-G2M high-frequency distillation (Wu et al. 2024, Section 4.2):

    .. math::
        \mathcal L_{HFD} = \frac{1}{|E|}\sum_{(i,j) \in E} D_{KL}\Big(
            \sigma\big(|z^t_i - z^t_j| / \tau\big) \,\Big\|\, \sigma\big(|z^s_i - z^s_j| / \tau\big)\Big).

    Pass an edge set *without* self-loops (a self-loop has a zero difference and carries no
    high-frequency signal). Computed on raw logits, as in the official code; zero when the
    student's logits equal the teacher's.
    """
    tau = check_positive("tau", tau)
    return kl_rows(_edge_difference_log_dist(teacher_logits, edge_index, tau), _edge_difference_log_dist(student_logits, edge_index, tau))
