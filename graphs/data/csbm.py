r"""Contextual stochastic block model (CSBM), Deshpande, Montanari, Mossel & Sen, NeurIPS 2018.

Two balanced communities :math:`v_i \in \{\pm 1\}`. Graph (Section 2, eq. 2): an undirected edge
joins :math:`i \ne j` with probability

.. math::
    P(A_{ij} = 1) = \begin{cases} c_\mathrm{in}/n & v_i = v_j \\ c_\mathrm{out}/n & v_i \ne v_j \end{cases},
    \qquad c_\mathrm{in} = d + \lambda\sqrt d,\quad c_\mathrm{out} = d - \lambda\sqrt d,

so the expected degree is :math:`d`; :math:`\lambda > 0` is homophilous, :math:`\lambda < 0`
heterophilous. Features (eq. 3): with a shared direction :math:`u \sim \mathcal N(0, I_p/p)`,

.. math::
    b_i = \sqrt{\mu/n}\, v_i\, u + z_i/\sqrt p,\qquad z_i \sim \mathcal N(0, I_p).

Sampling is vectorised and runs in :math:`O(n p + n d)`: the number of within- and
between-community edges is drawn from its exact binomial law and the endpoints uniformly inside
the blocks. Self-pairs and the (rare, :math:`O(d^2)` in expectation) repeated pairs are dropped,
which lowers the edge count by a vanishing fraction for sparse graphs.

Note on scale: with Deshpande et al.'s normalisation the per-node feature signal-to-noise ratio is
about :math:`\mu p / n`, so ``mu`` must grow with ``n/p`` to keep features informative.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch_geometric.data import Data

from condense.utils import UserError, check_positive

__all__ = ["csbm", "csbm_stream", "homophily"]


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _block_pairs(rng: np.random.Generator, members_a: np.ndarray, members_b: np.ndarray, count: int) -> np.ndarray:
    """``count`` uniform (i, j) pairs with i from ``members_a`` and j from ``members_b``."""
    i = members_a[rng.integers(0, len(members_a), size=count)]
    j = members_b[rng.integers(0, len(members_b), size=count)]
    return np.stack([i, j])


def csbm(
    num_nodes: int = 2000,
    num_features: int = 500,
    avg_degree: float = 5.0,
    lam: float = 1.5,
    mu: float = 4.0,
    *,
    seed: int = 0,
) -> Data:
    r"""Sample a CSBM graph.

    Args:
        num_nodes: :math:`n`.
        num_features: :math:`p`.
        avg_degree: :math:`d` (expected degree), > 0.
        lam: graph signal :math:`\lambda`, with :math:`|\lambda| \le \sqrt d`; negative values
            give heterophilous graphs.
        mu: feature signal :math:`\mu \ge 0`.
        seed: seeds a dedicated :class:`numpy.random.Generator`; same seed, same graph.

    Returns:
        :class:`~torch_geometric.data.Data` with ``x`` (float32 ``[n, p]``), ``y`` in {0, 1}
        (``(v+1)/2``) and a symmetric ``edge_index`` (both directions, no self-loops).
    """
    n = _check_int("num_nodes", num_nodes, 4)
    p = _check_int("num_features", num_features, 1)
    d = check_positive("avg_degree", avg_degree)
    mu = check_positive("mu", mu, allow_zero=True)
    try:
        lam = float(lam)
    except (TypeError, ValueError) as exc:
        raise UserError(f"lam must be a number, got {lam!r}") from exc
    if not math.isfinite(lam) or abs(lam) > math.sqrt(d):
        raise UserError(f"lam must satisfy |lam| <= sqrt(avg_degree) = {math.sqrt(d):.3g}, got {lam!r}")
    c_in, c_out = d + lam * math.sqrt(d), d - lam * math.sqrt(d)
    if max(c_in, c_out) > n:
        raise UserError(f"avg_degree {d} is too large for {n} nodes (edge probability would exceed 1)")

    rng = np.random.default_rng(int(seed))
    v = rng.choice(np.array([-1, 1], dtype=np.int8), size=n)
    blocks = [np.flatnonzero(v == -1), np.flatnonzero(v == 1)]
    sizes = [len(b) for b in blocks]

    # Within-community unordered pairs and between-community pairs, each with its exact binomial count.
    pairs_in = [s * (s - 1) // 2 for s in sizes]
    m_in = [int(rng.binomial(pairs, c_in / n)) if pairs > 0 else 0 for pairs in pairs_in]
    m_out = int(rng.binomial(sizes[0] * sizes[1], c_out / n)) if min(sizes) > 0 else 0
    parts = [_block_pairs(rng, b, b, m) for b, m in zip(blocks, m_in)]
    parts.append(_block_pairs(rng, blocks[0], blocks[1], m_out))
    pairs = np.concatenate(parts, axis=1)
    pairs = pairs[:, pairs[0] != pairs[1]]
    lo, hi = np.minimum(pairs[0], pairs[1]), np.maximum(pairs[0], pairs[1])
    key = np.unique(lo.astype(np.int64) * n + hi)
    lo, hi = key // n, key % n
    edge_index = torch.from_numpy(np.stack([np.concatenate([lo, hi]), np.concatenate([hi, lo])]))

    u = rng.standard_normal(p, dtype=np.float32) / math.sqrt(p)
    x = rng.standard_normal((n, p), dtype=np.float32)
    x /= math.sqrt(p)
    x += np.float32(math.sqrt(mu / n)) * v[:, None].astype(np.float32) * u[None, :]
    y = torch.from_numpy(((v + 1) // 2).astype(np.int64))
    return Data(x=torch.from_numpy(x), y=y, edge_index=edge_index, num_nodes=n)


def csbm_stream(
    num_nodes: int,
    num_edges: int,
    num_features: int = 100,
    num_classes: int = 47,
    *,
    p_in: float = 0.8,
    signal: float = 0.2,
    seed: int = 0,
    chunk: int = 1 << 22,
) -> Data:
    r"""A multi-class CSBM of any size, streamed in chunks of edges (no dense step, no per-node loop).

    The :math:`K`-class analogue of :func:`csbm` (a stochastic block model with Gaussian class
    means), sized by edge count so that it can take ogbn-products' shape (2,449,029 nodes, ~62M
    directed edges, 100 features, 47 classes). Labels are uniform over ``num_classes``. Edges:
    ``num_edges / 2`` undirected pairs are drawn ``chunk`` at a time: a uniform source :math:`i`, and
    with probability ``p_in`` a uniform target of :math:`i`'s class, otherwise a uniform target of
    any class, so the edge homophily is about :math:`p_{in} + (1 - p_{in})/K`; self-pairs are
    dropped, both directions stored and repeated pairs merged (so slightly fewer than
    ``num_edges`` remain). Features: :math:`x_i = s\,m_{y_i} + z_i` with class means
    :math:`m_c \sim \mathcal N(0, I_p)` and noise :math:`z_i \sim \mathcal N(0, I_p)`
    (``signal`` :math:`s`: weak alone, strong once averaged over homophilous neighbours).
    Peak memory is about ``num_nodes * num_features * 4`` bytes plus ``40`` bytes per directed edge.
    The draws depend on ``seed`` and ``chunk``: the same pair gives the same graph.
    """
    n = _check_int("num_nodes", num_nodes, 4)
    m = _check_int("num_edges", num_edges, 2) // 2
    p = _check_int("num_features", num_features, 1)
    k = _check_int("num_classes", num_classes, 2)
    check_positive("signal", signal, allow_zero=True)
    if not 0.0 <= float(p_in) <= 1.0:
        raise UserError(f"p_in must be in [0, 1], got {p_in!r}")
    rng = np.random.default_rng(int(seed))
    y = rng.integers(0, k, size=n)
    order = np.argsort(y, kind="stable")
    start = np.searchsorted(y[order], np.arange(k + 1))
    sizes = np.diff(start)
    codes = []
    for lo in range(0, m, chunk):
        c = min(chunk, m - lo)
        src = rng.integers(0, n, size=c)
        dst = rng.integers(0, n, size=c)
        same = rng.random(c) < p_in
        cls = y[src[same]]
        dst[same] = order[start[cls] + (rng.random(int(same.sum())) * sizes[cls]).astype(np.int64)]
        keep = src != dst
        a, b = np.minimum(src[keep], dst[keep]), np.maximum(src[keep], dst[keep])
        codes.append(torch.from_numpy(a.astype(np.int64) * n + b))
    code = torch.unique(torch.cat(codes))
    del codes
    lo_, hi_ = code // n, code % n
    del code
    edge_index = torch.stack([torch.cat([lo_, hi_]), torch.cat([hi_, lo_])])
    del lo_, hi_
    means = rng.standard_normal((k, p), dtype=np.float32)
    x = torch.empty(n, p)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        z = rng.standard_normal((b - a, p), dtype=np.float32)
        z += np.float32(signal) * means[y[a:b]]
        x[a:b] = torch.from_numpy(z)
    return Data(x=x, y=torch.from_numpy(y.astype(np.int64)), edge_index=edge_index, num_nodes=n)


def homophily(edge_index: torch.Tensor, y: torch.Tensor) -> float:
    """Edge homophily: the fraction of edges whose endpoints share a label."""
    if edge_index.numel() == 0:
        return float("nan")
    return (y[edge_index[0]] == y[edge_index[1]]).float().mean().item()
