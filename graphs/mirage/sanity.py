"""Sanity baselines no paper reports: how much of a score graph size alone explains.

* :func:`size_only` -- the node count as a classifier of the test graphs: ROC-AUC of |V| as the
  class-1 score (two classes; below 0.5 means larger graphs lean to class 0), and the accuracy of
  predicting the class whose training median |V| is nearest.
* :func:`roots_per_class` -- tree roots per class in a Mirage set: trained with root pooling, a
  set whose classes differ mainly in root counts teaches a size classifier.
* Spearman(score, |V|) of every trained model is recorded by :func:`graphs.mirage.train.train_restarts`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch_geometric.data import Data

from graphs.mirage.train import score

__all__ = ["size_only", "roots_per_class"]


def _sizes_labels(graphs: Sequence[Data]) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor([float(g.num_nodes) for g in graphs], dtype=torch.float64),
            torch.tensor([int(g.y) for g in graphs], dtype=torch.long))


def size_only(train: Sequence[Data], test: Sequence[Data], num_classes: int) -> dict:
    """``{"rocauc": ..., "accuracy": ...}`` of the node count on ``test`` (ROC-AUC only for two classes)."""
    n_tr, y_tr = _sizes_labels(train)
    n_te, y_te = _sizes_labels(test)
    medians = torch.stack([n_tr[y_tr == c].median() if bool((y_tr == c).any()) else torch.tensor(float("inf"), dtype=torch.float64)
                           for c in range(num_classes)])
    pred = (n_te.view(-1, 1) - medians.view(1, -1)).abs().argmin(1)
    out = {"accuracy": float((pred == y_te).double().mean())}
    if num_classes == 2:
        logits = torch.stack([torch.zeros_like(n_te), n_te], 1)  # softmax(...)[:, 1] is monotone in |V|
        out["rocauc"] = score(logits, y_te, "rocauc")
    return out


def roots_per_class(graphs: Sequence[Data], num_classes: int) -> list[int]:
    """Number of root nodes (``root_mask``) over the graphs of each class."""
    counts = [0] * num_classes
    for g in graphs:
        counts[int(g.y)] += int(g.root_mask.sum())
    return counts
