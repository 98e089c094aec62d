"""Frequent itemset mining with FP-Growth (Han, Pei & Yin, SIGMOD 2000), written from scratch.

Mirage (Section 3.2) mines, per class, the sets of computation trees that co-occur in at least
``min_support`` graphs of that class; one transaction = the set of tree items of one graph.
Returns every frequent itemset (singletons included, as ``pyfpgrowth`` used by the official
code) with its absolute support (number of transactions containing it, ``>= min_support``).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Sequence

__all__ = ["fp_growth", "support_threshold", "TooManyItemsets"]


class _Node:
    __slots__ = ("item", "count", "parent", "children")

    def __init__(self, item: int | None, parent: "_Node | None") -> None:
        self.item, self.count, self.parent = item, 0, parent
        self.children: dict[int, _Node] = {}


def _build(weighted: Sequence[tuple[Sequence[int], int]], min_support: int) -> tuple[dict[int, list[_Node]], dict[int, int]]:
    """FP-tree of weighted transactions: header table item -> its nodes, and item supports."""
    support: dict[int, int] = defaultdict(int)
    for items, w in weighted:
        for it in items:
            support[it] += w
    support = {it: s for it, s in support.items() if s >= min_support}
    header: dict[int, list[_Node]] = defaultdict(list)
    root = _Node(None, None)
    for items, w in weighted:
        path = sorted((it for it in items if it in support), key=lambda it: (-support[it], it))
        node = root
        for it in path:
            child = node.children.get(it)
            if child is None:
                child = node.children[it] = _Node(it, node)
                header[it].append(child)
            child.count += w
            node = child
    return header, support


class TooManyItemsets(RuntimeError):
    """Raised when mining would return more than ``max_itemsets`` sets (support set too low)."""


def _mine(weighted, min_support, suffix: frozenset, out: dict[frozenset, int], max_len: int | None, max_itemsets: int | None) -> None:
    header, support = _build(weighted, min_support)
    for it in sorted(support, key=lambda i: (support[i], i)):  # least frequent first
        itemset = suffix | {it}
        out[itemset] = support[it]
        if max_itemsets is not None and len(out) > max_itemsets:
            raise TooManyItemsets(f"more than {max_itemsets} frequent itemsets at support {min_support}")
        if max_len is not None and len(itemset) >= max_len:
            continue
        conditional = []
        for node in header[it]:
            path, p = [], node.parent
            while p is not None and p.item is not None:
                path.append(p.item)
                p = p.parent
            if path:
                conditional.append((path, node.count))
        if conditional:
            _mine(conditional, min_support, itemset, out, max_len, max_itemsets)


def fp_growth(
    transactions: Iterable[Iterable[int]], min_support: int, *, max_len: int | None = None, max_itemsets: int | None = None
) -> dict[frozenset[int], int]:
    """All itemsets contained in at least ``min_support`` transactions, with their supports.

    ``max_itemsets`` stops with :class:`TooManyItemsets` instead of enumerating an exponential
    number of sets when the support is too low for the data.
    """
    if int(min_support) < 1:
        raise ValueError(f"min_support must be >= 1, got {min_support}")
    weighted = [(list(set(t)), 1) for t in transactions]
    out: dict[frozenset[int], int] = {}
    _mine(weighted, int(min_support), frozenset(), out, max_len, max_itemsets)
    return out


def support_threshold(value: float, num_transactions: int) -> int:
    """Absolute support count: ``value >= 1`` is a count, ``0 < value < 1`` a fraction (ceil)."""
    if value >= 1:
        return int(value)
    if value <= 0:
        raise ValueError(f"support must be > 0, got {value}")
    return max(1, math.ceil(value * num_transactions - 1e-9))
