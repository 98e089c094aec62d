"""Training a GNN on a (distilled or real) training set and evaluating it on real graphs.

Mirage trains with **root pooling** (Section 3.3): a distilled graph is a union of computation
trees and its embedding sums the root nodes only, which equals the sum-pooled embedding of a
real graph whose trees these are; evaluation uses ordinary sum pooling over all nodes with the
same weights.  Graphs without ``root_mask`` (full data, random, herding) pool over all nodes.

Protocol (official ``train_and_test.py``): each restart evaluates validation and test before
every epoch and keeps the test score at the best validation score; the paper reports the mean
and std over the 5 restarts with the best validation scores out of 10 (``top``).  We report
that (labelled "top-k"), the mean over all restarts, and the final-epoch test score.

Itemset sampling (``sampling``): ``"list"`` = every distilled graph once per epoch, shuffled
(what the released code does in effect -- its support-weighted draw is overwritten);
``"support"`` = draw ``len(train)`` graphs per epoch with replacement, proportional to
``weight`` (the paper's description).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor
from torch_geometric.data import Batch, Data
from tqdm.auto import tqdm

from condense.utils import UserError, check_positive, make_generator, resolve_device
from graphs.models.graph import get_graph_model

__all__ = ["TrainConfig", "RestartSummary", "train_restarts", "score", "SAMPLING"]

SAMPLING = ("list", "support")


@dataclass
class TrainConfig:
    """Optimiser and model settings; defaults are the official molbace config (``configs/molbace.py``)."""

    model: str = "gin"
    hidden: int = 128
    layers: int = 3
    dropout: float = 0.6
    jk: str = "last"
    pooling: str = "sum"
    lr: float = 1e-3
    weight_decay: float = 1e-2
    epochs: int = 100
    batch_size: int = 32
    restarts: int = 10
    top: int = 5
    sampling: str = "list"

    def validate(self) -> None:
        check_positive("lr", self.lr)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        for name in ("epochs", "batch_size", "restarts", "top"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sampling not in SAMPLING:
            raise UserError(f"sampling must be one of {SAMPLING}, got {self.sampling!r}")

    def build_model(self, dims: tuple, num_classes: int) -> torch.nn.Module:
        """A fresh model for ``dims = (in_dim, edge_dim)``; raises :class:`UserError` for bad model options."""
        return get_graph_model(self.model, dims[0], num_classes, hidden=self.hidden, layers=self.layers,
                               pooling=self.pooling, edge_dim=dims[1], dropout=self.dropout, jk=self.jk)


@dataclass
class RestartSummary:
    """Scores of all restarts: ``best_val``, ``test_at_best_val`` and ``final_test`` per restart."""

    metric: str
    best_val: list[float]
    test_at_best_val: list[float]
    final_test: list[float]
    top: int
    train_time_s: float
    extra: dict = field(default_factory=dict)

    def _top_idx(self) -> np.ndarray:
        return np.argsort(-np.asarray(self.best_val), kind="stable")[: self.top]

    @property
    def top_mean_std(self) -> tuple[float, float]:
        t = np.asarray(self.test_at_best_val)[self._top_idx()]
        return float(t.mean()), float(t.std())

    @property
    def all_mean_std(self) -> tuple[float, float]:
        t = np.asarray(self.test_at_best_val)
        return float(t.mean()), float(t.std())

    @property
    def final_mean_std(self) -> tuple[float, float]:
        t = np.asarray(self.final_test)
        return float(t.mean()), float(t.std())


def score(logits: Tensor, y: Tensor, metric: str) -> float:
    """ROC-AUC of the class-1 probability (binary) or accuracy."""
    if metric == "rocauc":
        if y.unique().numel() < 2:
            return float("nan")
        return float(roc_auc_score(y.numpy(), logits.softmax(-1)[:, 1].numpy()))
    return float((logits.argmax(-1) == y).float().mean())


@torch.no_grad()
def _evaluate(model: torch.nn.Module, batch: Batch, metric: str) -> float:
    model.eval()
    return score(model(batch).cpu(), batch.y.cpu(), metric)


def _epoch_order(n: int, weights: Tensor, sampling: str, gen: torch.Generator) -> Tensor:
    if sampling == "support":
        return torch.multinomial(weights, n, replacement=True, generator=gen)
    return torch.randperm(n, generator=gen)


def _train_one(train: list[Data], weights: Tensor, evals: dict[str, Batch], *, dims: tuple, num_classes: int,
               metric: str, config: TrainConfig, seed: int, device: torch.device, root_pooling: bool, bar) -> tuple[float, float, float]:
    torch.manual_seed(seed)
    gen = make_generator(seed)
    model = config.build_model(dims, num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_val, test_at_best = -math.inf, float("nan")
    for _ in range(config.epochs):
        val, test = _evaluate(model, evals["valid"], metric), _evaluate(model, evals["test"], metric)
        if val > best_val:
            best_val, test_at_best = val, test
        model.train()
        order = _epoch_order(len(train), weights, config.sampling, gen)
        for chunk in order.split(config.batch_size):
            batch = Batch.from_data_list([train[i] for i in chunk.tolist()]).to(device)
            mask = batch.root_mask if root_pooling else None
            loss = torch.nn.functional.cross_entropy(model(batch, pool_mask=mask), batch.y.view(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        bar.update(1)
    final_test = _evaluate(model, evals["test"], metric)
    val = _evaluate(model, evals["valid"], metric)
    if val > best_val:
        best_val, test_at_best = val, final_test
    return best_val, test_at_best, final_test


def _strip(graphs: Sequence[Data], keep_roots: bool) -> list[Data]:
    """Only the attributes a model needs, so real and distilled graphs batch together."""
    out = []
    for g in graphs:
        d = Data(x=g.x, edge_index=g.edge_index, y=torch.as_tensor(g.y).view(1).long(), num_nodes=g.num_nodes)
        if getattr(g, "edge_attr", None) is not None:
            d.edge_attr = g.edge_attr
        if keep_roots:
            d.root_mask = g.root_mask
        out.append(d)
    return out


def train_restarts(
    train: Sequence[Data],
    valid: Sequence[Data],
    test: Sequence[Data],
    *,
    dims: tuple,
    num_classes: int,
    metric: str,
    config: TrainConfig,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    progress: bool = True,
    desc: str = "train",
    threads: int | None = 1,
) -> RestartSummary:
    """Train ``config.restarts`` fresh models (seeds ``seed, seed+1, ...``) and summarise them.

    ``dims`` = ``(in_dim, edge_dim)`` as accepted by :func:`get_graph_model`.  Root pooling is
    used iff every training graph carries a ``root_mask``.  ``threads``: torch intra-op threads
    while training (restored afterwards; ``None`` keeps the current setting) -- 1 is fastest for
    these small sparse graphs, multi-threaded ``scatter_add_`` is orders of magnitude slower on
    a loaded CPU.
    """
    config.validate()
    if not train or not valid or not test:
        raise UserError(f"need non-empty train/valid/test sets, got {len(train)}/{len(valid)}/{len(test)} graphs")
    dev = resolve_device(device)
    root_pooling = all(getattr(g, "root_mask", None) is not None for g in train)
    train_s = _strip(train, root_pooling)
    weights = torch.tensor([float(getattr(g, "weight", 1.0)) for g in train], dtype=torch.float64)
    evals = {k: Batch.from_data_list(_strip(v, False)).to(dev) for k, v in (("valid", valid), ("test", test))}
    bar = tqdm(total=config.restarts * config.epochs, desc=desc, disable=not progress, leave=False)
    t0 = time.perf_counter()
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        runs = [
            _train_one(train_s, weights, evals, dims=dims, num_classes=num_classes, metric=metric, config=config,
                       seed=seed + r, device=dev, root_pooling=root_pooling, bar=bar)
            for r in range(config.restarts)
        ]
    finally:
        torch.set_num_threads(previous)
        bar.close()
    best_val, test_at_best, final = (list(x) for x in zip(*runs))
    return RestartSummary(metric, best_val, test_at_best, final, min(config.top, config.restarts), time.perf_counter() - t0)
