"""Node-classification splits: per-class labelled split, transductive, inductive and production.

Settings follow GLNN (Zhang et al., ICLR 2022, Section 5 and its ``utils.graph_split``):

* **transductive** (``tran``): the whole graph is observed; test nodes are scored in place.
* **inductive** (``ind``): a fraction ``rate`` (default 0.2) of the test nodes is held out
  *with all their edges*. Teacher and student are trained on the observed subgraph only; the
  student then predicts held-out nodes from their features alone.
* **production** (``prod``): the inductive split scored as GLNN's Table 3 does,
  ``prod = (1 - rate) * tran + rate * ind`` where ``tran`` is accuracy on the observed test nodes.

Which nodes are "observed" (``observed="all"`` vs ``"split"``): the GLNN paper partitions
*all* nodes into observed and held-out (``V = V^L + V^U_obs + V^U_ind``), and its CPF splits put every
non-training node into val/test, so the code's ``idx_obs = train + val + test_tran`` equals that.
The FF-G2M code reuses ``graph_split`` on the Planetoid public split, where ~40% of the nodes are in
no split, so its observed graph silently drops them. ``"all"`` (this function's default) follows the
GLNN paper, ``"split"`` reproduces the FF-G2M code and is the FF-G2M presets' default
(:attr:`graphs.g2m.presets.Preset.observed`; ``--observed`` overrides it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.utils import subgraph

from condense.utils import UserError, check_probability, make_generator

__all__ = ["SETTINGS", "NodeSplit", "per_class_split", "split_from_masks", "make_split", "ObservedGraph", "observed_graph"]

SETTINGS = ("tran", "ind", "prod")


@dataclass(frozen=True)
class NodeSplit:
    """Indices in the *full* graph. ``test`` are observed test nodes, ``test_ind`` held-out ones."""

    setting: str
    train: Tensor
    val: Tensor
    test: Tensor
    test_ind: Tensor
    observed: Tensor
    rate: float = 0.0

    @property
    def inductive(self) -> bool:
        return self.setting != "tran"


def per_class_split(
    y: Tensor, num_train_per_class: int = 20, num_val: int = 500, num_test: int = 1000, *, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Planetoid-style random split: ``num_train_per_class`` per class, then val and test at random."""
    gen = make_generator(seed)
    num_classes = int(y.max()) + 1
    train = []
    for c in range(num_classes):
        members = (y == c).nonzero().view(-1)
        if len(members) < num_train_per_class:
            raise UserError(f"class {c} has only {len(members)} nodes, fewer than num_train_per_class={num_train_per_class}")
        train.append(members[torch.randperm(len(members), generator=gen)[:num_train_per_class]])
    train = torch.cat(train)
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[train] = False
    rest = rest.nonzero().view(-1)
    if num_val + num_test > len(rest):
        raise UserError(f"num_val + num_test = {num_val + num_test} exceeds the {len(rest)} unlabelled nodes")
    rest = rest[torch.randperm(len(rest), generator=gen)]
    return train.sort().values, rest[:num_val].sort().values, rest[num_val : num_val + num_test].sort().values


def split_from_masks(data) -> tuple[Tensor, Tensor, Tensor]:
    """``(train, val, test)`` indices from ``train_mask``/``val_mask``/``test_mask``."""
    return tuple(getattr(data, f"{k}_mask").nonzero().view(-1) for k in ("train", "val", "test"))


def make_split(
    num_nodes: int,
    train: Tensor,
    val: Tensor,
    test: Tensor,
    setting: str = "tran",
    *,
    rate: float = 0.2,
    seed: int = 0,
    observed: str = "all",
) -> NodeSplit:
    """Build a :class:`NodeSplit` for ``setting`` in ``tran | ind | prod`` (see module docstring)."""
    if setting not in SETTINGS:
        raise UserError(f"unknown setting {setting!r} (expected one of {', '.join(SETTINGS)})")
    if observed not in ("all", "split"):
        raise UserError(f"observed must be 'all' or 'split', got {observed!r}")
    if setting == "tran":
        return NodeSplit("tran", train, val, test, test.new_empty(0), torch.arange(num_nodes), 0.0)
    rate = check_probability("split rate", rate)
    perm = torch.randperm(len(test), generator=make_generator(seed))
    cut = int(len(test) * rate)
    test_ind, test_tran = test[perm[:cut]].sort().values, test[perm[cut:]].sort().values
    if observed == "all":
        keep = torch.ones(num_nodes, dtype=torch.bool)
        keep[test_ind] = False
        obs = keep.nonzero().view(-1)
    else:
        obs = torch.cat([train, val, test_tran]).unique()
    return NodeSplit(setting, train, val, test_tran, test_ind, obs, rate)


@dataclass(frozen=True)
class ObservedGraph:
    """What training may see: the observed subgraph, relabelled to ``0..len(split.observed)-1``."""

    x: Tensor
    y: Tensor
    edge_index: Tensor
    train: Tensor
    val: Tensor
    test: Tensor


def observed_graph(x: Tensor, y: Tensor, edge_index: Tensor, split: NodeSplit) -> ObservedGraph:
    """Restrict to ``split.observed``: drops held-out nodes, their features and every incident edge."""
    n = x.size(0)
    local = torch.full((n,), -1, dtype=torch.long)
    local[split.observed] = torch.arange(len(split.observed))
    idx = [local[i] for i in (split.train, split.val, split.test)]
    if any(bool((i < 0).any()) for i in idx):
        raise UserError("train/val/test nodes must be observed")
    if len(split.observed) == n:
        ei = edge_index
    else:
        ei, _ = subgraph(split.observed, edge_index, relabel_nodes=True, num_nodes=n)
    return ObservedGraph(x[split.observed], y[split.observed], ei, *idx)
