"""Mirage distillation (Algorithm 1 of Gupta et al., ICLR 2024) and the distilled-set artifact.

1. Discretise node/edge features (:mod:`.labels`).
2. Decompose every training graph into its nodes' ``hops``-hop computation trees, one integer
   item per tree isomorphism class (:mod:`.wl` fast path or :mod:`.trees` reference path).
3. Per class ``c``: transactions = the item sets of the class's graphs; FP-Growth with absolute
   support ``theta_c`` (a count, or a fraction of the class's graphs).
4. Optionally drop itemsets frequent in more than one class (``filter_shared``: the official
   NCI1/molbace notebooks do this, the packaged molhiv ``mine_trees.py`` does not).
5. Each surviving itemset becomes one training graph: the disjoint union of its trees (a
   representative occurrence of each, with its original features), edges child -> root, a
   ``root_mask``, label = the class it was mined from, ``weight`` = its support.

Deviation: single-node trees (isolated nodes) are kept; the official code drops them because
it finds roots as "nodes with in-edges and no out-edges", whereas the artifact stores the root
mask explicitly.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data
from tqdm.auto import tqdm

from condense.utils import UserError, atomic_save, package_versions, safe_load
from graphs.data.graphsets import graphs_nbytes
from graphs.mirage.labels import graph_labels
from graphs.mirage.mining import TooManyItemsets, fp_growth, support_threshold
from graphs.mirage.trees import computation_tree, in_neighbours, tree_codes, tree_to_data
from graphs.mirage.wl import wl_tree_items

__all__ = ["MirageConfig", "Decomposition", "decompose", "DistilledSet", "mirage_distill", "load_set", "check_reduction",
           "smallest_fitting_support", "byte_share", "FORMAT", "NO_REDUCTION",
           "MISSING_CLASSES", "missing_classes", "check_classes"]

FORMAT = "condense.mirage-distilled/v1"
CODERS = ("wl", "trees")


@dataclass
class MirageConfig:
    """Mining parameters (Section 3; published values in :data:`graphs.mirage.presets.PRESETS`)."""

    hops: int = 2
    support: tuple[float, ...] = (0.3,)  # per class (or one for all); >= 1: count, (0, 1): fraction
    filter_shared: bool = False
    coder: str = "wl"
    label_columns: tuple[int, ...] | None = None
    bins: int | None = None
    bin_columns: tuple[int, ...] | None = None  # node columns ``bins`` cuts (default: the non-integral ones)
    max_itemsets: int = 20000  # per class; a guard against exponential output at too-low support

    def validate(self, num_classes: int) -> None:
        if int(self.hops) < 0:
            raise UserError(f"hops must be >= 0, got {self.hops}")
        if self.coder not in CODERS:
            raise UserError(f"coder must be one of {CODERS}, got {self.coder!r}")
        if len(self.support) not in (1, num_classes):
            raise UserError(f"give one support value or one per class ({num_classes}), got {list(self.support)}")
        if any(not s > 0 for s in self.support):
            raise UserError(f"support values must be > 0 (a count >= 1 or a fraction in (0, 1)), got {list(self.support)}")

    def thresholds(self, class_sizes: Sequence[int]) -> list[int]:
        values = self.support * len(class_sizes) if len(self.support) == 1 else self.support
        return [support_threshold(v, n) for v, n in zip(values, class_sizes)]


@dataclass
class Decomposition:
    """Tree item of every node of every graph, and one occurrence ``(graph, node)`` per item."""

    items: list[Tensor]
    representative: dict[int, tuple[int, int]]

    @property
    def num_items(self) -> int:
        return len(self.representative)


def decompose(graphs: Sequence[Data], config: MirageConfig) -> Decomposition:
    """Steps 1-2: label the graphs and code every node's computation tree as an item."""
    node_labels, edge_labels = graph_labels(graphs, columns=config.label_columns, bins=config.bins,
                                             bin_columns=config.bin_columns)
    if config.coder == "wl":
        items = wl_tree_items(graphs, node_labels, edge_labels, config.hops)
    else:
        ids: dict[str, int] = {}
        items = [
            torch.tensor([ids.setdefault(c, len(ids)) for c in tree_codes(g.edge_index, g.num_nodes, config.hops, nl, el)], dtype=torch.long)
            for g, nl, el in zip(graphs, node_labels, edge_labels)
        ]
    representative: dict[int, tuple[int, int]] = {}
    for gi, its in enumerate(items):
        for v, it in enumerate(its.tolist()):
            representative.setdefault(it, (gi, v))
    return Decomposition(items, representative)


@dataclass
class DistilledSet:
    """The distilled training set: graphs with ``root_mask``, ``y`` and ``weight``, plus metadata."""

    graphs: list[Data]
    meta: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes of x, edge_index, edge_attr and root mask of all graphs (what a trainer needs)."""
        return graphs_nbytes(self.graphs)

    def to_dict(self) -> dict:
        def cat(key: str):
            parts = [getattr(g, key) for g in self.graphs]
            return torch.cat(parts) if parts and parts[0] is not None else None

        return {
            "format": FORMAT,
            "x": cat("x"),
            "edge_index": torch.cat([g.edge_index for g in self.graphs], dim=1) if self.graphs else None,
            "edge_attr": cat("edge_attr") if self.graphs and getattr(self.graphs[0], "edge_attr", None) is not None else None,
            "root_mask": cat("root_mask"),
            "num_nodes": torch.tensor([g.num_nodes for g in self.graphs], dtype=torch.long),
            "num_edges": torch.tensor([g.edge_index.size(1) for g in self.graphs], dtype=torch.long),
            "y": torch.tensor([int(g.y) for g in self.graphs], dtype=torch.long),
            "weight": torch.tensor([float(g.weight) for g in self.graphs], dtype=torch.float64),
            "nbytes": self.nbytes,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "DistilledSet":
        graphs, n0, e0 = [], 0, 0
        for i, (n, m) in enumerate(zip(d["num_nodes"].tolist(), d["num_edges"].tolist())):
            g = Data(x=d["x"][n0:n0 + n], edge_index=d["edge_index"][:, e0:e0 + m], root_mask=d["root_mask"][n0:n0 + n],
                     y=d["y"][i], weight=d["weight"][i].item(), num_nodes=n)
            if d["edge_attr"] is not None:
                g.edge_attr = d["edge_attr"][e0:e0 + m]
            graphs.append(g)
            n0, e0 = n0 + n, e0 + m
        return cls(graphs, dict(d["meta"]))

    def save(self, path: str | os.PathLike) -> None:
        atomic_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DistilledSet":
        d = safe_load(path, expected_format=FORMAT, what="Mirage distilled set")
        try:
            return cls.from_dict(d)
        except (KeyError, IndexError, AttributeError, RuntimeError) as exc:
            raise UserError(f"{path} is a damaged Mirage distilled set ({type(exc).__name__}: {exc})") from exc


def load_set(path: str | os.PathLike) -> DistilledSet:
    """Load a Mirage distilled set written by ``python -m graphs.mirage --out PATH`` (or :meth:`DistilledSet.save`).

    The graphs carry ``x``, ``edge_index`` (child -> root), optional ``edge_attr``, ``root_mask``, ``y``
    and ``weight``; ``meta`` holds the mining config, dataset, seed and split they were distilled from.
    Train a GNN on it with ``python -m graphs.mirage train PATH --model gin`` or
    :func:`graphs.mirage.train.train_restarts`.
    """
    return DistilledSet.load(path)


#: the label a distilled set at or above the training set's bytes carries in every output
NO_REDUCTION = "NO REDUCTION"
MISSING_CLASSES = "MISSING CLASSES"


def check_reduction(nbytes: int, train_nbytes: int, *, allow: bool, hint: str = "raise --support or lower --hops") -> str:
    """``""`` for a real reduction; a distilled set of ``>= train_nbytes`` bytes is refused, or with ``allow``
    returns the label (``"NO REDUCTION: 131 % of the training bytes"``) that every output must carry.

    Such a set distils nothing, and an equal-bytes baseline of real graphs is then the whole training set.
    """
    if nbytes < train_nbytes:
        return ""
    share = f"{byte_share(nbytes / train_nbytes)} % of the training bytes"
    if not allow:
        raise UserError(f"the distilled set takes {nbytes} bytes, {share} ({train_nbytes}): no reduction, and an equal-bytes "
                        f"baseline would be the whole training set; {hint} (--allow-no-reduction runs it anyway, labelled)")
    return f"{NO_REDUCTION}: {share}"


def missing_classes(graphs: list, num_classes: int) -> list[int]:
    """Classes without a graph in ``graphs``."""
    present = {int(g.y) for g in graphs}
    return [c for c in range(num_classes) if c not in present]


def check_classes(graphs: list, num_classes: int, *, allow: bool, hint: str = "lower their support (--support, one value per class)",
                  allow_flag: str | None = "--allow-missing-classes") -> str:
    """``""`` when every class has a graph; a set lacking a class is refused, or with ``allow`` returns the
    label (``"MISSING CLASSES: [1]"``) that every output must carry. ``allow_flag``: the caller's flag that
    sets ``allow``, named in the refusal (``None``: the caller has none).

    A classifier trained on such a set can never predict the missing classes.
    """
    missing = missing_classes(graphs, num_classes)
    if not missing:
        return ""
    if not allow:
        raise UserError(f"the distilled set has no graph of class(es) {missing}: a network trained on it can never predict them; "
                        f"{hint}" + (f" ({allow_flag} runs it anyway, labelled)" if allow_flag else ""))
    return f"{MISSING_CLASSES}: {missing}"


def byte_share(fraction: float) -> str:
    """A byte fraction in percent to three significant digits (0.0101, 9.56, 131; 1280 above 1000), never rounded to zero."""
    pct = 100 * fraction
    return f"{pct:.0f}" if pct >= 100 else f"{pct:.3g}"


def smallest_fitting_support(transactions: list[set[int]], start: int, max_itemsets: int) -> int | None:
    """The smallest absolute support ``>= start`` at which FP-Growth mines at most ``max_itemsets`` sets.

    The number of frequent itemsets falls as the support rises, so a binary search over
    ``start .. len(transactions)`` finds it; every probe stops at the cap, so each costs at most
    ``max_itemsets`` sets.  ``None`` when even a support of every graph exceeds the cap.
    """
    def fits(k: int) -> bool:
        try:
            fp_growth(transactions, k, max_itemsets=max_itemsets)
            return True
        except TooManyItemsets:
            return False

    lo, hi = int(start), len(transactions)
    if lo > hi or not fits(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return lo


def _cap_advice(failed: int, transactions: list[list[set[int]]], thresholds: list[int], cap: int) -> str:
    """The cap error: per class, the smallest support at or above its threshold that fits (classes before
    ``failed`` fitted already), as the ``--support`` counts to pass."""
    fits = [thresholds[c] if c < failed else smallest_fitting_support(t, thresholds[c] + (c == failed), cap)
            for c, t in enumerate(transactions)]
    n = len(transactions[failed])
    head = (f"class {failed}: more than {cap} frequent itemsets at support {thresholds[failed]} "
            f"({thresholds[failed] / max(n, 1):.4g} of its {n} graphs)")
    hopeless = [c for c, f in enumerate(fits) if f is None]
    if hopeless:
        return f"{head}; class(es) {hopeless} exceed it even at a support of all their graphs: raise --max-itemsets or lower --hops"
    fractions = ", ".join(f"{f / max(len(t), 1):.4g}" for f, t in zip(fits, transactions))
    return (f"{head}; the smallest supports that fit are {fits} graphs per class (fractions {fractions}): pass "
            f"--support {','.join(str(f) for f in fits)}, or raise --max-itemsets")


def _union(trees: list[Data], label: int, weight: int) -> Data:
    offsets = torch.tensor([0] + [t.num_nodes for t in trees]).cumsum(0)
    root_mask = torch.zeros(int(offsets[-1]), dtype=torch.bool)
    root_mask[offsets[:-1]] = True  # every tree's root is its node 0
    g = Data(x=torch.cat([t.x for t in trees]), edge_index=torch.cat([t.edge_index + o for t, o in zip(trees, offsets[:-1].tolist())], dim=1),
             root_mask=root_mask, y=torch.tensor(label), weight=float(weight), num_nodes=int(offsets[-1]))
    if getattr(trees[0], "edge_attr", None) is not None:
        g.edge_attr = torch.cat([t.edge_attr for t in trees])
    return g


def mirage_distill(graphs: Sequence[Data], num_classes: int, config: MirageConfig, *, progress: bool = True) -> DistilledSet:
    """Run Algorithm 1 on the training ``graphs`` (each with a class ``y``)."""
    if not graphs:
        raise UserError("Mirage needs at least one training graph")
    config.validate(num_classes)
    t0 = time.perf_counter()
    y = [int(g.y) for g in graphs]
    bar = tqdm(total=3 + num_classes, desc="mirage", disable=not progress)
    bar.set_postfix_str("decompose")
    dec = decompose(graphs, config)
    bar.update(1)
    t_dec = time.perf_counter() - t0
    class_sizes = [y.count(c) for c in range(num_classes)]
    thresholds = config.thresholds(class_sizes)
    mined: list[dict[frozenset[int], int]] = []
    unique_trees = []
    transactions = [[set(items.tolist()) for items, yc in zip(dec.items, y) if yc == c] for c in range(num_classes)]
    for c in range(num_classes):
        bar.set_postfix_str(f"mine class {c}")
        unique_trees.append(len(set().union(*transactions[c])) if transactions[c] else 0)
        try:
            mined.append(fp_growth(transactions[c], thresholds[c], max_itemsets=config.max_itemsets) if transactions[c] else {})
        except TooManyItemsets as exc:
            bar.close()
            raise UserError(_cap_advice(c, transactions, thresholds, config.max_itemsets)) from exc
        bar.update(1)
    t_mine = time.perf_counter() - t0 - t_dec
    empty = [c for c, m in enumerate(mined) if not m]
    if empty:
        warnings.warn(f"Mirage mined no itemset for classes {empty} at thresholds {thresholds}; "
                      "the distilled set cannot represent them (lower their support)", stacklevel=2)
    if config.filter_shared:
        keep = [{s: n for s, n in m.items() if not any(s in other for j, other in enumerate(mined) if j != c)} for c, m in enumerate(mined)]
    else:
        keep = mined
    bar.set_postfix_str("build graphs")
    adjs: dict[int, list] = {}
    tree_cache: dict[int, Data] = {}

    def tree_of(item: int) -> Data:
        if item not in tree_cache:
            gi, v = dec.representative[item]
            if gi not in adjs:
                adjs[gi] = in_neighbours(graphs[gi].edge_index, graphs[gi].num_nodes)
            tree_cache[item] = tree_to_data(graphs[gi], computation_tree(adjs[gi], v, config.hops))
        return tree_cache[item]

    out = [
        _union([tree_of(it) for it in sorted(itemset)], c, support)
        for c, sets in enumerate(keep)
        for itemset, support in sorted(sets.items(), key=lambda kv: (-kv[1], sorted(kv[0])))
    ]
    bar.update(1)
    bar.close()
    meta = {
        "method": "mirage",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "thresholds": thresholds,
        "class_sizes": class_sizes,
        "unique_trees_total": dec.num_items,
        "unique_trees_per_class": unique_trees,
        "itemsets_mined_per_class": [len(m) for m in mined],
        "itemsets_kept_per_class": [len(k) for k in keep],
        "train_graphs": len(graphs),
        "train_nbytes": graphs_nbytes(graphs),
        "time_decompose_s": t_dec,
        "time_mine_s": t_mine,
        "time_total_s": time.perf_counter() - t0,
        "versions": package_versions(),
    }
    return DistilledSet(out, meta)
