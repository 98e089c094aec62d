"""Teacher GNN training (GLNN Section 5 / FF-G2M Section 5.1): full batch, CE on labelled nodes,
Adam, early stopping on validation accuracy, best-validation weights; exports logits of all nodes.

Inductive splits: the teacher trains and is validated on the observed subgraph only. Its logits for
observed nodes come from the observed graph; held-out nodes are scored with the full graph (the
teacher may see their edges at test time, as in both official codes). The student only ever reads
the observed rows.
"""
from __future__ import annotations

import torch
from torch import nn
from torch_geometric.data import Data

from condense.checkpoint import Stages
from condense.utils import resolve_device
from graphs.data.node_splits import NodeSplit, observed_graph
from graphs.g2m.losses import ce_loss
from graphs.g2m.train import RunResult, accuracy, assemble, fit

__all__ = ["train_teacher"]


def train_teacher(
    model: nn.Module,
    data: Data,
    split: NodeSplit,
    *,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    max_epochs: int = 500,
    patience: int = 50,
    progress: bool = False,
    device: str | torch.device | None = "cpu",
    stages: Stages | None = None,
) -> RunResult:
    """Fit ``model`` (a :mod:`graphs.models.node` GNN) on ``split``; returns logits of all nodes."""
    device = resolve_device(device)
    view = observed_graph(data.x, data.y, data.edge_index, split)
    model.to(device)
    x, y = view.x.to(device), view.y.to(device)
    graph = model.graph(view.edge_index.to(device), x.size(0))  # prepared once (GCN/SAGE: the sparse aggregation)
    train, val = view.train.to(device), view.val.to(device)
    result = fit(
        model,
        lambda: model.trunk(x, graph),
        lambda h: ce_loss(model.head(h, graph)[train], y[train]),
        lambda h: accuracy(model.head(h, graph)[val], y[val]),
        lr=lr,
        weight_decay=weight_decay,
        max_epochs=max_epochs,
        patience=patience,
        progress=progress,
        stages=stages,
        desc="teacher",
    )
    with torch.no_grad():
        obs_logits = model(x, graph).cpu()
        full = model(data.x.to(device), data.edge_index.to(device)).cpu() if split.inductive else None
    return assemble(obs_logits, None if full is None else full[split.test_ind], data.y, view, split, result)
