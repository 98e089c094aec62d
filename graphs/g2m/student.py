r"""Student MLP training: vanilla MLP, GLNN, and FF-G2M with its LFD / HFD ablations.

Objective (GLNN eq. 2; FF-G2M eq. 12 with ``ablation_mode`` 0-4 of the official code):

.. math::
    \mathcal L = \lambda\,\mathcal L_{CE} + (1 - \lambda)\,\mathcal L_{distill},\qquad
    \mathcal L_{distill} = \begin{cases}
        \mathcal L_{KD} & \texttt{glnn} \\
        \mathcal L_{LFD} & \texttt{lfd} \\
        \mathcal L_{HFD} & \texttt{hfd} \\
        \mathcal L_{LFD} + \mathcal L_{HFD} & \texttt{ff-g2m}
    \end{cases}

and ``mlp`` uses :math:`\mathcal L_{CE}` alone (unscaled, as in the official code). CE is over the
labelled training nodes, KD over every observed node, LFD over the observed edges plus self-loops,
HFD over the observed edges without self-loops. Training is full batch with early stopping on
validation accuracy (:func:`graphs.g2m.train.fit`).

Inductive splits: the student sees the observed nodes' features, the teacher's logits on those
nodes and the observed edges; held-out nodes are predicted from their features alone.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.utils import add_self_loops, remove_self_loops

from condense.utils import UserError, check_positive, check_probability, resolve_device
from graphs.data.node_splits import NodeSplit, observed_graph
from graphs.g2m.losses import ce_loss, hfd_loss, kd_loss, lfd_loss
from graphs.g2m.train import RunResult, accuracy, assemble, fit

__all__ = ["METHODS", "distillation_objective", "distill"]

METHODS = ("mlp", "glnn", "lfd", "hfd", "ff-g2m")


def distillation_objective(
    method: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    train: Tensor,
    edge_index: Tensor,
    *,
    lamb: float,
    tau: float = 1.0,
) -> Tensor:
    """The student loss for ``method`` on one graph (``edge_index`` with or without self-loops)."""
    ce = ce_loss(student_logits[train], labels[train])
    if method == "mlp":
        return ce
    if method == "glnn":
        distill_term = kd_loss(student_logits, teacher_logits)
    else:
        edges = remove_self_loops(edge_index)[0]
        distill_term = student_logits.new_zeros(())
        if method in ("lfd", "ff-g2m"):
            with_loops = add_self_loops(edges, num_nodes=student_logits.size(0))[0]
            distill_term = distill_term + lfd_loss(student_logits, teacher_logits, with_loops)
        if method in ("hfd", "ff-g2m"):
            distill_term = distill_term + hfd_loss(student_logits, teacher_logits, edges, tau)
    return lamb * ce + (1 - lamb) * distill_term


def distill(
    student: nn.Module,
    data: Data,
    split: NodeSplit,
    teacher_logits: Tensor,
    *,
    method: str = "ff-g2m",
    lamb: float = 0.0,
    tau: float = 1.0,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    max_epochs: int = 500,
    patience: int = 50,
    progress: bool = False,
    device: str | torch.device | None = "cpu",
) -> RunResult:
    """Train ``student`` (graph-free) from ``teacher_logits`` (``[N, C]``, full-graph node ids)."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r} (expected one of {', '.join(METHODS)})")
    lamb, tau = check_probability("lamb", lamb), check_positive("tau", tau)
    if tuple(teacher_logits.shape) != (data.num_nodes, int(data.y.max()) + 1):
        raise UserError(f"teacher logits have shape {tuple(teacher_logits.shape)}, expected ({data.num_nodes}, {int(data.y.max()) + 1})")
    device = resolve_device(device)
    view = observed_graph(data.x, data.y, data.edge_index, split)
    student.to(device)
    x, y, ei = view.x.to(device), view.y.to(device), view.edge_index.to(device)
    t_logits = teacher_logits[split.observed].to(device)
    train, val = view.train.to(device), view.val.to(device)
    result = fit(
        student,
        lambda: distillation_objective(method, student(x), t_logits, y, train, ei, lamb=lamb, tau=tau),
        lambda: accuracy(student(x[val]), y[val]),
        lr=lr,
        weight_decay=weight_decay,
        max_epochs=max_epochs,
        patience=patience,
        progress=progress,
        desc=f"student:{method}",
    )
    with torch.no_grad():
        obs_logits = student(x).cpu()
        ind_logits = student(data.x[split.test_ind].to(device)).cpu() if split.inductive else None
    return assemble(obs_logits, ind_logits, data.y, view, split, result)
