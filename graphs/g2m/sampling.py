"""Seeded, vectorised neighbour sampling over CSR tensors (GraphSAGE, Hamilton et al. 2017, Alg. 2).

PyG's ``NeighborLoader`` needs ``pyg-lib`` or ``torch-sparse`` for its sampling kernels, neither of
which has a wheel for every platform; this module needs neither. It samples as DGL's
``MultiLayerNeighborSampler`` does for GLNN's SAGE teacher: per layer, each target node keeps
``min(fan_out, degree)`` of its in-neighbours drawn uniformly *without replacement* (``-1``: all),
and the next layer's targets are those targets followed by the newly reached nodes
(:class:`Block`: targets first). Everything is one torch call per layer, no Python loop over nodes:
for a node with ``degree > 2 * fan_out`` the draw is ``fan_out`` uniform positions with the
duplicates redrawn (each round keeps a duplicate with probability < 1/2); for ``fan_out < degree
<= 2 * fan_out`` it is the ``fan_out`` smallest of ``degree`` uniform keys. Both give every subset
of size ``fan_out`` the same probability (tested against exhaustive enumeration). A
:class:`torch.Generator` makes every draw reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from condense.utils import UserError

__all__ = ["CSR", "Block", "sample_neighbors", "sample_blocks", "full_block"]


@dataclass(frozen=True)
class CSR:
    """In-neighbours of every node: the sources of node ``i``'s incoming edges are
    ``col[rowptr[i]:rowptr[i + 1]]`` (sorted by source)."""

    rowptr: Tensor
    col: Tensor

    @classmethod
    def from_edge_index(cls, edge_index: Tensor, num_nodes: int) -> CSR:
        src, dst = edge_index
        order = torch.argsort(dst * num_nodes + src)
        counts = torch.bincount(dst, minlength=num_nodes)
        rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
        torch.cumsum(counts, 0, out=rowptr[1:])
        return cls(rowptr, src[order].contiguous())

    @property
    def num_nodes(self) -> int:
        return self.rowptr.numel() - 1

    @property
    def degree(self) -> Tensor:
        return self.rowptr[1:] - self.rowptr[:-1]


@dataclass(frozen=True)
class Block:
    """One layer's bipartite graph: ``nodes`` (global ids) are its sources, the first ``num_dst`` of
    them its targets; ``edge_index`` holds local ``(source, target)`` positions; ``degree`` is each
    source's in-degree in the full graph (GCN's normalisation)."""

    nodes: Tensor
    num_dst: int
    edge_index: Tensor
    degree: Tensor


def _positions(deg: Tensor, k: int, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """For rows with degrees ``deg`` (all ``> k``): ``(row, offset)`` of ``k`` distinct offsets each."""
    rows, offs = [], []
    small = deg <= 2 * k
    if bool(small.any()):  # k smallest of deg uniform keys
        d = deg[small]
        total = int(d.sum())
        row = torch.repeat_interleave(torch.arange(len(d)), d)
        start = torch.cumsum(d, 0) - d
        off = torch.arange(total) - start[row]
        keys = torch.rand(total, generator=gen, dtype=torch.float64) + row.double() * 2.0
        order = torch.argsort(keys)
        rank = torch.arange(total) - start[row[order]]
        take = order[rank < k]
        rows.append(small.nonzero().view(-1)[row[take]])
        offs.append(off[take])
    big = ~small
    if bool(big.any()):  # k uniform draws, duplicates redrawn until none is left
        d = deg[big].unsqueeze(1)
        pick = (torch.rand((len(d), k), generator=gen, dtype=torch.float64) * d).long()
        while True:
            pick = pick.sort(dim=1).values
            dup = torch.zeros_like(pick, dtype=torch.bool)
            dup[:, 1:] = pick[:, 1:] == pick[:, :-1]
            if not bool(dup.any()):
                break
            r = dup.nonzero()
            pick[r[:, 0], r[:, 1]] = (torch.rand(len(r), generator=gen, dtype=torch.float64) * d[r[:, 0], 0]).long()
        rows.append(big.nonzero().view(-1).repeat_interleave(k))
        offs.append(pick.reshape(-1))
    return torch.cat(rows), torch.cat(offs)


def sample_neighbors(csr: CSR, nodes: Tensor, fan_out: int, gen: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``(neighbour, i)`` pairs: up to ``fan_out`` in-neighbours of each ``nodes[i]`` without
    replacement (``-1``: all of them), grouped by ``i`` ascending."""
    if fan_out == 0 or fan_out < -1:
        raise UserError(f"a fan-out must be a positive integer or -1 (all neighbours), got {fan_out}")
    start, deg = csr.rowptr[nodes], csr.degree[nodes]
    keep_all = deg <= fan_out if fan_out > 0 else torch.ones_like(deg, dtype=torch.bool)
    d_all = deg[keep_all]
    row_all = torch.repeat_interleave(keep_all.nonzero().view(-1), d_all)
    off_all = torch.arange(int(d_all.sum())) - torch.repeat_interleave(torch.cumsum(d_all, 0) - d_all, d_all)
    if bool((~keep_all).any()):
        row_s, off_s = _positions(deg[~keep_all], fan_out, gen)
        row_s = (~keep_all).nonzero().view(-1)[row_s]
        row, off = torch.cat([row_all, row_s]), torch.cat([off_all, off_s])
        order = torch.argsort(row, stable=True)
        row, off = row[order], off[order]
    else:
        row, off = row_all, off_all
    return csr.col[start[row] + off], row


def _relabel(targets: Tensor, reached: Tensor, scratch: Tensor) -> tuple[Tensor, Tensor]:
    """Block sources ``targets + new reached nodes`` and the local positions of ``reached``."""
    scratch[targets] = torch.arange(len(targets))
    new = reached[scratch[reached] < 0].unique()
    scratch[new] = torch.arange(len(targets), len(targets) + len(new))
    local = scratch[reached]
    nodes = torch.cat([targets, new])
    scratch[nodes] = -1
    return nodes, local


def sample_blocks(csr: CSR, seeds: Tensor, fan_outs: list[int], gen: torch.Generator | None = None,
                  scratch: Tensor | None = None) -> list[Block]:  # fmt: skip
    """One :class:`Block` per layer, input layer first (``fan_outs[0]`` is the input layer's, as in
    DGL's ``MultiLayerNeighborSampler``); the last block's targets are ``seeds``. ``scratch`` (a
    ``-1``-filled int64 tensor of ``num_nodes``, returned to ``-1``) saves one allocation per call."""
    scratch = torch.full((csr.num_nodes,), -1, dtype=torch.long) if scratch is None else scratch
    blocks, targets = [], seeds
    deg = csr.degree
    for fan_out in reversed(fan_outs):
        nbr, dst = sample_neighbors(csr, targets, fan_out, gen)
        nodes, src = _relabel(targets, nbr, scratch)
        blocks.append(Block(nodes, len(targets), torch.stack([src, dst]), deg[nodes]))
        targets = nodes
    return blocks[::-1]


def full_block(csr: CSR, targets: Tensor, scratch: Tensor | None = None) -> Block:
    """The block of ``targets`` with all their in-neighbours (layer-wise full-graph inference)."""
    return sample_blocks(csr, targets, [-1], None, scratch)[0]
