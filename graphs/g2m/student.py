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
validation accuracy (:func:`graphs.g2m.train.fit`); the teacher's side of every term is computed
once per run (:class:`DistillationObjective`), not every epoch.

Inductive splits: the student sees the observed nodes' features, the teacher's logits on those
nodes and the observed edges; held-out nodes are predicted from their features alone.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.utils import add_self_loops, remove_self_loops

from condense.checkpoint import Stages
from condense.utils import UserError, check_positive, check_probability, resolve_device
from graphs.data.node_splits import NodeSplit, observed_graph
from graphs.g2m.losses import ce_loss, hfd_from, hfd_target, kd_from, kd_target, lfd_from, lfd_target
from graphs.g2m.train import RunResult, accuracy, assemble, fit

__all__ = ["METHODS", "DistillationObjective", "distill"]

METHODS = ("mlp", "glnn", "lfd", "hfd", "ff-g2m")


class DistillationObjective:
    """The student loss for ``method`` on one graph (``edge_index`` with or without self-loops):
    ``objective(student_logits)``. The teacher's targets and the edge sets are built here, once."""

    def __init__(self, method: str, teacher_logits: Tensor, labels: Tensor, train: Tensor, edge_index: Tensor, *,
                 lamb: float, tau: float = 1.0) -> None:  # fmt: skip
        if method not in METHODS:
            raise UserError(f"unknown method {method!r} (expected one of {', '.join(METHODS)})")
        self.method, self.lamb, self.tau = method, check_probability("lamb", lamb), check_positive("tau", tau)
        self.train, self.train_labels = train, labels[train]
        edges = remove_self_loops(edge_index)[0]
        self.kd = kd_target(teacher_logits) if method == "glnn" else None
        self.lfd_edges = add_self_loops(edges, num_nodes=teacher_logits.size(0))[0] if method in ("lfd", "ff-g2m") else None
        self.lfd = lfd_target(teacher_logits, self.lfd_edges) if self.lfd_edges is not None else None
        self.hfd_edges = edges if method in ("hfd", "ff-g2m") else None
        self.hfd = hfd_target(teacher_logits, edges, tau) if self.hfd_edges is not None else None

    def __call__(self, student_logits: Tensor) -> Tensor:
        ce = ce_loss(student_logits[self.train], self.train_labels)
        if self.method == "mlp":
            return ce
        if self.kd is not None:
            distill_term = kd_from(self.kd, student_logits)
        else:
            distill_term = student_logits.new_zeros(())
            if self.lfd is not None:
                distill_term = distill_term + lfd_from(self.lfd, student_logits, self.lfd_edges)
            if self.hfd is not None:
                distill_term = distill_term + hfd_from(self.hfd, student_logits, self.hfd_edges, self.tau)
        return self.lamb * ce + (1 - self.lamb) * distill_term


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
    stages: Stages | None = None,
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
    train, val = view.train.to(device), view.val.to(device)
    objective = DistillationObjective(method, teacher_logits[split.observed].to(device), y, train, ei, lamb=lamb, tau=tau)
    result = fit(
        student,
        lambda: student.trunk(x),
        lambda h: objective(student.head(h)),
        lambda h: accuracy(student.head(h[val]), y[val]),
        lr=lr,
        weight_decay=weight_decay,
        max_epochs=max_epochs,
        patience=patience,
        progress=progress,
        stages=stages,
        desc=f"student:{method}",
    )
    with torch.no_grad():
        obs_logits = student(x).cpu()
        ind_logits = student(data.x[split.test_ind].to(device)).cpu() if split.inductive else None
    return assemble(obs_logits, ind_logits, data.y, view, split, result)
