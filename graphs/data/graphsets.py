"""Shared pieces of the graph-classification data layer.

A :class:`GraphDataset` is a plain list of PyG :class:`~torch_geometric.data.Data` graphs plus
its split and a description of its features.  Categorical features are stored as integer
columns (``LongTensor [N, k]``) with their cardinalities, so models can embed them
(AtomEncoder-style embedding sum) and Mirage can discretise them exactly; continuous features
stay ``float`` and ``node_cardinalities`` is ``None``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data

from condense.safeio import check_count, check_type, check_values
from condense.utils import UserError, make_generator

__all__ = [
    "GraphDataset",
    "categorical_columns",
    "random_split",
    "graph_nbytes",
    "graphs_nbytes",
]

SPLITS = ("train", "valid", "test")


def _check_ids(name: str, attr: str, columns: list[Tensor | None], cards: Sequence[int]) -> None:
    """Every categorical id within its column's cardinality, checked once where the data enters
    (the models' embedding lookups do not re-check on accelerators, where a check is a host sync)."""
    present = [c.view(c.size(0), -1) for c in columns if c is not None and c.numel()]
    if not present:
        return
    ids = torch.cat(present)
    if ids.is_floating_point() or ids.size(1) != len(cards):
        raise UserError(f"{name}: categorical {attr} must be integer ids in {len(cards)} column(s), got {ids.dtype} x {ids.size(1)}")
    bad = (ids < 0) | (ids >= torch.tensor(list(cards)))
    if bool(bad.any()):
        col = int(bad.any(0).nonzero()[0])
        raise UserError(f"{name}: {attr} column {col} holds ids outside [0, {cards[col]}) (cardinalities {list(cards)})")


@dataclass
class GraphDataset:
    """Graphs, labels, split and feature description of one graph-classification dataset.

    Attributes:
        name: dataset name (``"MUTAG"``, ``"ogbg-molbace"``, ``"motifs"``, ...).
        graphs: one :class:`Data` per graph with ``x``, ``edge_index``, optional ``edge_attr``
            and a scalar ``y``.
        num_classes: number of graph classes.
        split: ``{"train", "valid", "test"} -> LongTensor`` of graph indices.
        node_cardinalities: categories per integer ``x`` column, or ``None`` for float ``x``.
        edge_cardinalities: categories per integer ``edge_attr`` column, ``None`` when the
            graphs have no (categorical) edge features.
        info: free-form provenance (root, seed, split kind).
    """

    name: str
    graphs: list[Data]
    num_classes: int
    split: dict[str, Tensor]
    node_cardinalities: tuple[int, ...] | None
    edge_cardinalities: tuple[int, ...] | None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_type(self.graphs, (list, tuple), f"{self.name}: graphs")
        for i, g in enumerate(self.graphs):  # the public API validates as the CLIs do
            check_type(g, Data, f"{self.name}: graph {i}")
            y = g.y if isinstance(g.y, Tensor) else torch.as_tensor(g.y) if isinstance(g.y, (int, float)) else None
            if y is None or y.numel() != 1 or (y.is_floating_point() and not float(y) == math.floor(float(y))):
                raise UserError(f"{self.name}: graph {i} needs one integer class label y, got {g.y!r}")  # never truncated
        check_count(f"{self.name}: num_classes", self.num_classes)
        check_type(self.split, dict, f"{self.name}: split")
        missing = [s for s in SPLITS if s not in self.split]
        if missing:
            raise UserError(f"{self.name}: split is missing parts {missing}")
        for part in SPLITS:
            idx = check_type(self.split[part], Tensor, f"{self.name}: split[{part!r}]")
            if idx.is_floating_point() or idx.dim() != 1 or (idx.numel() and not 0 <= int(idx.min()) <= int(idx.max()) < len(self.graphs)):
                raise UserError(f"{self.name}: split[{part!r}] must be a 1-D tensor of graph indices in [0, {len(self.graphs)})")
        for attr, cards in (("x", self.node_cardinalities), ("edge_attr", self.edge_cardinalities)):
            if cards is not None:
                _check_ids(self.name, attr, [getattr(g, attr) for g in self.graphs], cards)
        for i, g in enumerate(self.graphs):  # float features / edge attributes: finite and not absurd
            for attr in ("x", "edge_attr"):
                check_values(getattr(g, attr, None), f"{self.name}: graph {i} {attr}")
        y = torch.tensor([int(g.y) for g in self.graphs], dtype=torch.long)
        bad = (y < 0) | (y >= self.num_classes)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise UserError(f"{self.name}: graph {i} has label {int(y[i])}, outside the {self.num_classes} declared classes "
                            f"[0, {self.num_classes}) ({int(bad.sum())} such graph(s))")

    def check_splits(self) -> None:
        """Refuse a split nothing can be trained or scored on: an empty part, parts sharing graphs,
        or a training part holding a single class (one line naming the part)."""
        for part in SPLITS:
            if len(self.split[part]) == 0:
                raise UserError(f"{self.name}: the {part} split is empty ({self.split_sizes()}); a score on it would be meaningless")
        for i, a in enumerate(SPLITS):
            for b in SPLITS[i + 1:]:
                shared = set(self.split[a].tolist()) & set(self.split[b].tolist())
                if shared:
                    raise UserError(f"{self.name}: the {a} and {b} splits share {len(shared)} graph(s) (e.g. graph {min(shared)})")
        present = self.labels("train").unique().tolist()
        if len(present) < 2:
            raise UserError(f"{self.name}: the training split holds only class {present} of {self.num_classes}; "
                            "a classifier needs at least two classes to train on")

    def split_sizes(self) -> str:
        return "/".join(str(len(self.split[s])) for s in SPLITS) + " train/valid/test graphs"

    @property
    def metric(self) -> str:
        """ROC-AUC for binary tasks (as in the Mirage paper and OGB), accuracy otherwise."""
        return "rocauc" if self.num_classes == 2 else "accuracy"

    @property
    def in_dim(self) -> int | tuple[int, ...]:
        """What :func:`graphs.models.graph.get_graph_model` expects as ``in_dim``."""
        if self.node_cardinalities is not None:
            return self.node_cardinalities
        return int(self.graphs[0].x.size(1))

    @property
    def edge_dim(self) -> tuple[int, ...] | None:
        return self.edge_cardinalities

    def subset(self, part: str) -> list[Data]:
        """The graphs of one split part (``"train"``, ``"valid"`` or ``"test"``)."""
        if part not in SPLITS:
            raise UserError(f"unknown split part {part!r} (expected one of {SPLITS})")
        return [self.graphs[i] for i in self.split[part].tolist()]

    def labels(self, part: str | None = None) -> Tensor:
        idx = range(len(self.graphs)) if part is None else self.split[part].tolist()
        return torch.tensor([int(self.graphs[i].y) for i in idx], dtype=torch.long)

    def summary(self) -> str:
        sizes = "/".join(str(len(self.split[s])) for s in SPLITS)
        feats = f"categorical {list(self.node_cardinalities)}" if self.node_cardinalities else f"float[{self.in_dim}]"
        if self.info.get("node_labels") == "degree":
            feats += " (node degrees: the dataset has no node labels)"
        n_attr = int(self.info.get("node_attributes") or 0)
        if n_attr and self.info.get("attribute_columns"):
            feats += f" = {n_attr} continuous attribute(s) + one-hot node labels"
        elif n_attr:
            feats += (f"; {n_attr} continuous node attribute(s) dropped (as the official Mirage and GIN code: node labels "
                      "only; node_attr='concat' / --node-attr concat feeds them to the GNNs)")
        edges = f", edge categories {list(self.edge_cardinalities)}" if self.edge_cardinalities else ""
        return f"{self.name}: {len(self.graphs)} graphs, {self.num_classes} classes, split {sizes}, node features {feats}{edges}"


def categorical_columns(values: Tensor) -> tuple[Tensor, int] | None:
    """One integer id per distinct row of ``values`` (``[N, d]``), or ``None`` if not integral.

    This is the feature discretisation of Mirage (Section 3, "one label per distinct feature
    tuple"): rows that are equal get the same id, ids are assigned in sorted row order so the
    mapping does not depend on the order of the graphs.
    """
    if values.dim() == 1:
        values = values.view(-1, 1)
    if values.is_floating_point() and not bool(torch.all(values == values.round())):
        return None
    values = values.long()
    if values.size(0) == 0:
        return values.new_zeros(0, 1), 0
    # rows -> one mixed-radix key (first column most significant, so key order = sorted row order);
    # torch.unique(dim=0) gives the same ids but is ~100x slower on a million rows
    lo = values.min(0).values
    span = (values.max(0).values - lo + 1).tolist()
    if math.prod(span) < 2**62:
        key = torch.zeros(values.size(0), dtype=torch.long)
        for col, width in enumerate(span):
            key = key * width + (values[:, col] - lo[col])
        uniq, inverse = torch.unique(key, return_inverse=True)
    else:
        uniq, inverse = torch.unique(values, dim=0, return_inverse=True)
    return inverse.view(-1, 1), int(uniq.size(0))


def random_split(num_graphs: int, seed: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, Tensor]:
    """Seeded random train/valid/test split (the usual 80/10/10 for TU datasets)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    perm = torch.randperm(num_graphs, generator=make_generator(seed))
    n_train = int(round(fractions[0] * num_graphs))
    n_valid = int(round(fractions[1] * num_graphs))
    return {
        "train": perm[:n_train].sort().values,
        "valid": perm[n_train:n_train + n_valid].sort().values,
        "test": perm[n_train + n_valid:].sort().values,
    }


_COUNTED = ("x", "edge_index", "edge_attr", "root_mask")


def graph_nbytes(data: Data) -> int:
    """Bytes of the tensors that make up a training graph (x, edge_index, edge_attr, root mask)."""
    total = 0
    for key in _COUNTED:
        t = getattr(data, key, None)
        if isinstance(t, Tensor):
            total += t.numel() * t.element_size()
    return total


def graphs_nbytes(graphs: Sequence[Data]) -> int:
    return sum(graph_nbytes(g) for g in graphs)
