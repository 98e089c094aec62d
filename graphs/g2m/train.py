"""Shared full-batch training loop with early stopping on validation accuracy (both official codes).

Each epoch takes one Adam step on ``loss_fn()`` and then scores ``val_fn()`` in eval mode. The best
validation weights are kept (ties go to the later epoch, ``>=`` as in GLNN / FF-G2M) and restored at
the end; training stops after ``patience`` epochs without improvement or at ``max_epochs``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import trange

from graphs.data.node_splits import NodeSplit, ObservedGraph

__all__ = ["FitResult", "RunResult", "fit", "accuracy", "split_scores", "assemble"]


@dataclass(frozen=True)
class FitResult:
    best_epoch: int
    best_val: float
    epochs: int


@dataclass(frozen=True)
class RunResult:
    """A trained model's logits for all nodes (full-graph ids), its split scores and fit record."""

    logits: Tensor
    scores: dict[str, float]
    fit: FitResult


def split_scores(obs_logits: Tensor, view: ObservedGraph, ind_logits: Tensor, ind_labels: Tensor, split: NodeSplit) -> dict[str, float]:
    """``val`` and ``tran`` on the observed graph; for inductive splits also ``ind`` and GLNN's
    production mix ``prod = (1 - rate) * tran + rate * ind``."""
    out = {"val": accuracy(obs_logits[view.val], view.y[view.val]), "tran": accuracy(obs_logits[view.test], view.y[view.test])}
    if split.inductive:
        out["ind"] = accuracy(ind_logits, ind_labels)
        out["prod"] = (1 - split.rate) * out["tran"] + split.rate * out["ind"]
    return out


def assemble(obs_logits: Tensor, ind_logits: Tensor | None, labels: Tensor, view: ObservedGraph, split: NodeSplit, fitted: FitResult) -> RunResult:
    """Scatter observed and held-out logits into full-graph order (``labels`` of all nodes) and score them."""
    logits = obs_logits.new_zeros(labels.size(0), obs_logits.size(1))
    logits[split.observed] = obs_logits
    if ind_logits is not None:
        logits[split.test_ind] = ind_logits
    scores = split_scores(obs_logits, view, logits[split.test_ind], labels[split.test_ind], split)
    return RunResult(logits, scores, fitted)


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of rows whose argmax equals the label (nan for an empty set)."""
    if labels.numel() == 0:
        return float("nan")
    return (logits.argmax(dim=1) == labels).float().mean().item()


def fit(
    model: nn.Module,
    loss_fn: Callable[[], Tensor],
    val_fn: Callable[[], float],
    *,
    lr: float,
    weight_decay: float,
    max_epochs: int = 500,
    patience: int = 50,
    progress: bool = False,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` in place; returns the best epoch and its validation score."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best_val, best_epoch, bad = -float("inf"), 0, 0
    state = copy.deepcopy(model.state_dict())
    epoch = 0
    bar = trange(1, max_epochs + 1, desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            val = val_fn()
        if val >= best_val:
            best_val, best_epoch, bad = val, epoch, 0
            state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
        bar.set_postfix(loss=f"{loss.item():.4f}", val=f"{val:.4f}", best=f"{best_val:.4f}", refresh=False)
        if bad >= patience:
            break
    model.load_state_dict(state)
    model.eval()
    return FitResult(best_epoch, best_val, epoch)
