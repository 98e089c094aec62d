"""Shared full-batch training loop with early stopping on validation accuracy (both official codes).

Each epoch takes one Adam step on the training loss and then scores the validation set in eval
mode. The best validation weights are kept (ties go to the later epoch, ``>=`` as in GLNN / FF-G2M)
and restored at the end; training stops after ``patience`` epochs without improvement or at
``max_epochs``.

One pass shared: the forward pass is split into a trunk that computes the same in train
and eval mode (:meth:`graphs.models.node._Stack.trunk`, the first layer before the first dropout)
and the rest. After each step the trunk is computed once, with the new weights: it is that
epoch's validation input and the next epoch's training input. The numbers are those of separate
evaluation and training passes, one first-layer pass per epoch cheaper.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn
from tqdm.auto import trange

from condense.checkpoint import Stages, rng_state, set_rng_state
from graphs.data.node_splits import NodeSplit, ObservedGraph

__all__ = ["FitResult", "RunResult", "fit", "fit_epochs", "accuracy", "split_scores", "assemble"]


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
    trunk_fn: Callable[[], Tensor],
    loss_fn: Callable[[Tensor], Tensor],
    val_fn: Callable[[Tensor], float],
    *,
    lr: float,
    weight_decay: float,
    max_epochs: int = 500,
    patience: int = 50,
    progress: bool = False,
    desc: str = "train",
    stages: Stages | None = None,
) -> FitResult:
    """Train ``model`` in place; returns the best epoch and its validation score.

    ``trunk_fn()`` must compute the same in train and eval mode (and draw no random numbers);
    ``loss_fn(h)`` finishes the forward pass in train mode and returns the loss, ``val_fn(h)`` finishes
    it in eval mode (without gradients) and returns the validation score. ``stages``: see :func:`fit_epochs`.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    h: Tensor | None = None

    def epoch_fn(epoch: int) -> float:
        nonlocal h
        if h is None:  # the first epoch (of this process): the trunk of the current weights
            h = trunk_fn()
        optimizer.zero_grad()
        loss = loss_fn(h)
        loss.backward()
        optimizer.step()
        with torch.set_grad_enabled(epoch < max_epochs):
            h = trunk_fn()  # the new weights: this epoch's validation input, the next epoch's training input
        return loss.item() if progress else 0.0

    return fit_epochs(model, optimizer, epoch_fn, lambda: val_fn(h.detach()), max_epochs=max_epochs, patience=patience,
                      progress=progress, desc=desc, stages=stages)  # fmt: skip


def fit_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch_fn: Callable[[int], float],
    val_fn: Callable[[], float],
    *,
    max_epochs: int,
    patience: int,
    progress: bool,
    desc: str,
    stages: Stages | None = None,
    generators: dict[str, torch.Generator] | None = None,
    extra: dict[str, Any] | None = None,
) -> FitResult:
    """The early-stopping loop: ``epoch_fn(epoch)`` trains one epoch in train mode (returns its loss),
    ``val_fn()`` scores it in eval mode without gradients; ``>=`` keeps the later of equal epochs and
    the best weights are restored at the end.

    ``stages`` (:class:`condense.checkpoint.Stages`, stage name ``desc``) makes the loop resumable bit
    for bit: after every epoch the weights, the optimiser, the early-stopping counters, the best
    weights, torch's RNG and ``generators`` are saved when due, and the contents of ``extra`` (a dict
    the caller updates in place, e.g. the best epoch's outputs); a finished stage is not trained again.
    """
    if stages is not None and (kept := stages.finished(desc)) is not None:
        model.load_state_dict(kept["model"])
        model.eval()
        (extra if extra is not None else {}).update(kept["extra"])
        return FitResult(*kept["fit"])
    best_val, best_epoch, bad, epoch = -float("inf"), 0, 0, 0
    state = copy.deepcopy(model.state_dict())
    if stages is not None and (saved := stages.resumed(desc)) is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        best_val, best_epoch, bad, epoch = saved["loop"]
        state = saved["best"]
        (extra if extra is not None else {}).update(saved["extra"])
        set_rng_state(saved["rng"], generators)
    bar = trange(epoch + 1, max_epochs + 1, desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        loss = epoch_fn(epoch)
        model.eval()
        with torch.no_grad():
            val = val_fn()
        if val >= best_val:
            best_val, best_epoch, bad = val, epoch, 0
            state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
        if progress:
            bar.set_postfix(loss=f"{loss:.4f}", val=f"{val:.4f}", best=f"{best_val:.4f}", refresh=False)
        if bad >= patience:
            break
        if stages is not None:
            stages.step(desc, lambda: {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "best": state,
                                       "loop": (best_val, best_epoch, bad, epoch), "rng": rng_state(generators),
                                       "extra": dict(extra or {})})  # fmt: skip
    model.load_state_dict(state)
    model.eval()
    fitted = FitResult(best_epoch, best_val, epoch)
    if stages is not None:
        stages.finish(desc, {"model": state, "fit": (best_epoch, best_val, epoch), "extra": dict(extra or {})})
    return fitted
