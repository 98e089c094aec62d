r"""Node classifiers on PyG layers (GCN, GraphSAGE, GAT) and the graph-free MLP student.

All models share one layer stack, as in the GLNN / FF-G2M official ``models.py``: for every layer
but the last, ``h = dropout(act(norm(layer(h))))``; the last layer outputs logits.

* **GCN** (Kipf & Welling 2017): :math:`H' = \hat D^{-1/2}(A+I)\hat D^{-1/2} H W`.
* **GraphSAGE** with the ``gcn`` aggregator used by both official codes (DGL ``SAGEConv(...,
  "gcn")``): :math:`h_i' = W\,\mathrm{mean}_{j \in N(i)\cup\{i\}} h_j + b`.
* **GAT** (Velickovic et al. 2018): ``num_heads`` concatenated heads in hidden layers (each of
  width ``hidden // num_heads``, as in the official code), one head in the output layer, dropout
  once on every layer's input (and not between layers) and ``attn_dropout`` on the attention
  coefficients.
* **MLP**: ``Linear`` layers only; ``forward(x, edge_index=None)`` ignores the graph.

Speed, without changing what is computed:

* GCN and GraphSAGE aggregate with a sparse matrix built once per graph (:meth:`_Stack.prepare`,
  :class:`SparseAggregation`: PyG's own ``gcn_norm`` weights, resp. ``1/|N(i) ∪ {i}|``) instead
  of PyG's per-layer gather-multiply-scatter (which also recomputes the GCN normalisation in
  every layer of every forward). The sum over a node's neighbours is the same; its floating-point
  order is not, so results differ from the scatter path in the last bits. The parameters (and
  their initialisation) are PyG's ``GCNConv`` / ``SAGEConv`` ones, so artifacts are unchanged.
* :func:`dropout` is ``F.dropout`` bit for bit, ~2.5x faster on CPUs where torch samples Bernoulli
  masks one element at a time (it then draws the same uniforms with ``torch.rand``).
* :meth:`_Stack.trunk` / :meth:`_Stack.head` split the forward pass before the first dropout, so a
  training loop can share the first layer between an evaluation and the next training step when
  that part is the same in both modes (``trunk_is_mode_free``).

Deviation: GLNN's GCN applies the activation before the (optional) norm; here norm precedes the
activation for every model. The presets for the citation graphs use ``norm="none"``, where both
orders coincide.
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, SAGEConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import add_remaining_self_loops, degree

from condense.utils import UserError, check_probability

__all__ = ["NODE_MODELS", "NORMS", "SparseAggregation", "dropout", "GCN", "GraphSAGE", "GAT", "MLP", "build_node_model"]

NORMS = ("none", "batch", "layer")


@functools.cache
def _rand_is_bernoulli() -> bool:
    """Whether ``rand(float64) < q`` reproduces ``bernoulli_(q)`` here (torch's serial CPU sampler;
    not its MKL one, used on Intel CPUs): checked once on a private generator."""
    a = torch.empty(257).bernoulli_(0.3, generator=torch.Generator().manual_seed(1))
    b = torch.rand(257, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) < 0.3
    return torch.equal(a, b.to(a.dtype))


def dropout(h: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout(h, p, training)``, bit for bit and with the same draws from the global generator.

    ATen's CPU dropout is ``h * empty_like(h).bernoulli_(1 - p).div_(1 - p)``; where its Bernoulli
    sampler is the serial one (double uniform ``< 1 - p``, :func:`_rand_is_bernoulli`), the same
    mask comes ~2.5x faster from ``torch.rand``. Elsewhere (CUDA, MKL sampler) this is ``F.dropout``.
    """
    if not training or p == 0.0 or p == 1.0 or h.device.type != "cpu" or not _rand_is_bernoulli():
        return F.dropout(h, p, training)
    keep = 1 - p
    return h * (torch.rand(h.shape, dtype=torch.float64) < keep).to(h.dtype).div_(keep)


class _SpMM(torch.autograd.Function):
    """``agg.adj @ h`` for a constant sparse matrix; the backward pass multiplies by ``agg.adj_t``."""

    @staticmethod
    def forward(ctx, agg: SparseAggregation, h: Tensor) -> Tensor:  # type: ignore[override]
        ctx.agg = agg
        return agg.adj @ h

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor | None]:  # type: ignore[override]
        if not ctx.needs_input_grad[1]:  # e.g. the raw features of a first aggregating layer
            return None, None
        return None, ctx.agg.adj_t @ grad.contiguous()


def _csr(rows: Tensor, cols: Tensor, values: Tensor, n: int, n_rows: int | None = None) -> Tensor:
    shape = (n if n_rows is None else n_rows, n)
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape, check_invariants=False).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


class SparseAggregation:
    """The fixed neighbourhood aggregation of one graph: ``out_i = sum_e w_e h_{src_e}`` over the
    edges ``e = (src_e, i)`` (PyG's ``source_to_target`` flow), as a CSR matrix; its transpose, for
    the backward pass, is built on first use.

    Repeated edges add up, as in PyG's scatter. ``kind`` names the model that built it. With
    ``num_dst`` the matrix is rectangular ``[num_dst, num_nodes]``: a sampled block whose targets are
    the first ``num_dst`` of its ``num_nodes`` sources (:mod:`graphs.g2m.sampling`).
    """

    def __init__(self, edge_index: Tensor, weight: Tensor, num_nodes: int, kind: str, num_dst: int | None = None) -> None:
        self._edges, self._weight, self.num_dst = edge_index, weight, num_dst
        self.adj = _csr(edge_index[1], edge_index[0], weight, num_nodes, num_dst)
        self.num_nodes, self.kind = num_nodes, kind

    @functools.cached_property
    def adj_t(self) -> Tensor:
        if self.num_dst is None:
            return _csr(self._edges[0], self._edges[1], self._weight, self.num_nodes)
        return _csr(self._edges[0], self._edges[1], self._weight, self.num_dst, self.num_nodes)

    def __call__(self, h: Tensor) -> Tensor:
        if h.size(0) != self.num_nodes:
            raise UserError(f"the prepared graph has {self.num_nodes} nodes, the features {h.size(0)}")
        return _SpMM.apply(self, h)


def _norm(kind: str, dim: int) -> nn.Module:
    return {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[kind](dim) if kind != "none" else nn.Identity()


class _Stack(nn.Module):
    """``num_layers`` layers with norm -> ReLU -> dropout between them (subclasses build the layers)."""

    uses_graph = True
    #: dropout after each hidden activation; GAT drops each layer's *input* instead (feat_drop)
    inter_dropout = True

    def __init__(self, layers: list[nn.Module], hidden: int, dropout: float, norm: str) -> None:
        if norm not in NORMS:
            raise UserError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norms = nn.ModuleList(_norm(norm, hidden) for _ in layers[:-1])
        self.dropout = check_probability("dropout", dropout)
        #: whether the first layer and its activation compute the same in train and eval mode (no
        #: dropout and no batch norm before the first inter-layer dropout), see :meth:`trunk`
        self.trunk_is_mode_free = self.inter_dropout and not (norm == "batch" and len(layers) > 1)

    def _layer(self, layer: nn.Module, h: Tensor, graph) -> Tensor:
        return layer(h, graph)

    def prepare(self, edge_index: Tensor, num_nodes: int):
        """What the layers aggregate over, computed once per graph (here: ``edge_index`` itself)."""
        return edge_index

    def graph(self, edge_index, num_nodes: int):
        """``edge_index`` prepared for this model (passed through if already prepared for it)."""
        if not self.uses_graph:
            return None
        if edge_index is None:
            raise UserError(f"{type(self).__name__} needs edge_index")
        if isinstance(edge_index, SparseAggregation):
            if edge_index.kind != type(self).__name__:
                raise UserError(f"a graph prepared by {edge_index.kind} cannot be used by {type(self).__name__}")
            return edge_index
        return self.prepare(edge_index, num_nodes)

    def _block(self, i: int, h: Tensor, graph) -> Tensor:
        h = self._layer(self.layers[i], h, graph)
        return F.relu(self.norms[i](h)) if i < len(self.layers) - 1 else h

    def trunk(self, x: Tensor, graph=None) -> Tensor:
        """The first layer and its activation when :attr:`trunk_is_mode_free`, else ``x`` unchanged."""
        return self._block(0, x, graph) if self.trunk_is_mode_free else x

    def head(self, h: Tensor, graph=None) -> Tensor:
        """The rest of the forward pass after :meth:`trunk`: ``forward(x) = head(trunk(x))``."""
        start = 1 if self.trunk_is_mode_free else 0
        for i in range(start, len(self.layers)):
            if i > 0 and self.inter_dropout:
                h = dropout(h, self.dropout, self.training)
            h = self._block(i, h, graph)
        return h

    def forward(self, x: Tensor, edge_index=None) -> Tensor:
        graph = self.graph(edge_index, x.size(0))
        return self.head(self.trunk(x, graph), graph)

    def prepare_block(self, block):
        """What layer ``i`` aggregates over on a sampled :class:`graphs.g2m.sampling.Block`
        (here: its local ``edge_index``; GAT adds the targets' self-loops itself)."""
        return block

    def block_layer(self, i: int, h: Tensor, block) -> Tensor:
        """Layer ``i`` (with its norm and activation unless last) from the block's sources ``h``
        to its targets; the dropout before it, if any, is the caller's (:meth:`forward_blocks`)."""
        return self._block(i, h, self.prepare_block(block))

    def forward_blocks(self, x: Tensor, blocks: list) -> Tensor:
        """Mini-batch forward pass: ``x`` holds the features of ``blocks[0]``'s sources, one block per
        layer (input layer first); returns the logits of the last block's targets. With every
        neighbour in the blocks this is :meth:`forward` restricted to those targets."""
        if len(blocks) != len(self.layers):
            raise UserError(f"{type(self).__name__} has {len(self.layers)} layers but {len(blocks)} sampled blocks were given")
        h = x
        for i, block in enumerate(blocks):
            if i > 0 and self.inter_dropout and self.training and self.dropout > 0:
                # float32 uniforms: half the draws' cost of :func:`dropout` (no full-batch result to reproduce here)
                h = h * (torch.rand(h.shape, dtype=h.dtype, device=h.device) >= self.dropout).to(h.dtype).div_(1 - self.dropout)
            h = self.block_layer(i, h, block)
        return h


def _dims(in_dim: int, hidden: int, out_dim: int, num_layers: int) -> list[tuple[int, int]]:
    if num_layers < 1:
        raise UserError(f"num_layers must be >= 1, got {num_layers}")
    sizes = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
    return list(zip(sizes[:-1], sizes[1:]))


class MLP(_Stack):
    """Graph-free student: ``Linear`` stack; ``edge_index`` is accepted and ignored."""

    uses_graph = False

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int = 2, dropout: float = 0.0, norm: str = "none") -> None:
        super().__init__([nn.Linear(a, b) for a, b in _dims(in_dim, hidden, out_dim, num_layers)], hidden, dropout, norm)

    def _layer(self, layer: nn.Module, h: Tensor, graph) -> Tensor:
        return layer(h)


class GCN(_Stack):
    """GCN with symmetric normalisation and self-loops: ``GCNConv``'s parameters, its ``gcn_norm``
    weights and forward (``A_hat @ lin(h) + bias``), aggregated with a :class:`SparseAggregation`."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int = 2, dropout: float = 0.5, norm: str = "none") -> None:
        super().__init__([GCNConv(a, b) for a, b in _dims(in_dim, hidden, out_dim, num_layers)], hidden, dropout, norm)

    def prepare(self, edge_index: Tensor, num_nodes: int) -> SparseAggregation:
        dtype = self.layers[0].lin.weight.dtype
        ei, weight = gcn_norm(edge_index, None, num_nodes, add_self_loops=True, dtype=dtype)
        return SparseAggregation(ei, weight, num_nodes, "GCN")

    def prepare_block(self, block) -> SparseAggregation:
        """GCN on a block: the full graph's weights ``1/sqrt((d_i + 1)(d_j + 1))``, the neighbour
        terms scaled by ``d_i / s_i`` (``s_i`` sampled of ``d_i`` neighbours: an unbiased estimate
        of the full sum, equal to it when nothing is dropped), plus the self-loop ``1/(d_i + 1)``."""
        dtype = self.layers[0].lin.weight.dtype
        src, dst = block.edge_index
        d_src, d_dst = block.degree.to(dtype) + 1, block.degree[: block.num_dst].to(dtype) + 1
        s = torch.bincount(dst, minlength=block.num_dst).to(dtype)
        w = (d_src[src] * d_dst[dst]).rsqrt() * (d_dst[dst] - 1) / s[dst]
        loops = torch.arange(block.num_dst, device=src.device)
        ei = torch.cat([block.edge_index, torch.stack([loops, loops])], dim=1)
        return SparseAggregation(ei, torch.cat([w, 1.0 / d_dst]), len(block.nodes), "GCN", block.num_dst)

    def _layer(self, layer: nn.Module, h: Tensor, graph: SparseAggregation) -> Tensor:
        return graph(layer.lin(h)) + layer.bias


class GraphSAGE(_Stack):
    """GraphSAGE, ``gcn`` aggregator: mean over the neighbourhood including the node itself
    (``SAGEConv(aggr="mean", root_weight=False)``'s parameters and forward ``lin_l(mean)``)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int = 2, dropout: float = 0.5, norm: str = "none") -> None:
        layers = [SAGEConv(a, b, aggr="mean", root_weight=False) for a, b in _dims(in_dim, hidden, out_dim, num_layers)]
        super().__init__(layers, hidden, dropout, norm)

    def prepare(self, edge_index: Tensor, num_nodes: int) -> SparseAggregation:
        ei = add_remaining_self_loops(edge_index, num_nodes=num_nodes)[0]
        dtype = self.layers[0].lin_l.weight.dtype
        return SparseAggregation(ei, 1.0 / degree(ei[1], num_nodes, dtype=dtype)[ei[1]], num_nodes, "GraphSAGE")

    def prepare_block(self, block) -> SparseAggregation:
        """GraphSAGE on a block: the mean over the sampled neighbours and the node itself (DGL's
        ``SAGEConv(..., "gcn")`` on a sampled block, as in GLNN's mini-batch SAGE)."""
        loops = torch.arange(block.num_dst, device=block.edge_index.device)
        ei = torch.cat([block.edge_index, torch.stack([loops, loops])], dim=1)
        dtype = self.layers[0].lin_l.weight.dtype
        deg = torch.bincount(ei[1], minlength=block.num_dst).to(dtype)
        return SparseAggregation(ei, 1.0 / deg[ei[1]], len(block.nodes), "GraphSAGE", block.num_dst)

    def _layer(self, layer: nn.Module, h: Tensor, graph: SparseAggregation) -> Tensor:
        return layer.lin_l(graph(h))


class GAT(_Stack):
    """GAT: ``num_heads`` heads of width ``hidden // num_heads`` per hidden layer, 1 output head.

    Dropout once per layer, on its input (DGL ``GATConv(feat_drop=dropout)`` in the GLNN/FF-G2M
    code), not also after the activation as the other stacks do.
    """

    inter_dropout = False

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        out_dim: int,
        num_layers: int = 2,
        dropout: float = 0.6,
        norm: str = "none",
        num_heads: int = 4,
        attn_dropout: float = 0.3,
    ) -> None:
        if num_layers < 2:
            raise UserError("GAT needs num_layers >= 2 (as in the official code)")
        if num_heads < 1 or hidden % num_heads:
            raise UserError(f"hidden ({hidden}) must be a positive multiple of num_heads ({num_heads})")
        attn = check_probability("attn_dropout", attn_dropout)
        per_head = hidden // num_heads
        layers = [GATConv(in_dim, per_head, heads=num_heads, dropout=attn)]
        layers += [GATConv(hidden, per_head, heads=num_heads, dropout=attn) for _ in range(num_layers - 2)]
        layers.append(GATConv(hidden, out_dim, heads=1, concat=False, dropout=attn))
        super().__init__(layers, hidden, dropout, norm)

    def _layer(self, layer: nn.Module, h: Tensor, graph) -> Tensor:
        # DGL's GATConv(feat_drop=dropout) drops every layer's input, including the raw features.
        h = dropout(h, self.dropout, self.training)
        if isinstance(graph, Tensor):
            return layer(h, graph)
        # a sampled block: targets are its first num_dst sources; GATConv adds their self-loops
        return layer((h, h[: graph.num_dst]), graph.edge_index)


NODE_MODELS = {"gcn": GCN, "sage": GraphSAGE, "gat": GAT, "mlp": MLP}


def build_node_model(
    name: str,
    in_dim: int,
    out_dim: int,
    *,
    hidden: int = 128,
    num_layers: int = 2,
    dropout: float = 0.5,
    norm: str = "none",
    num_heads: int = 4,
    attn_dropout: float = 0.3,
) -> nn.Module:
    """Construct ``gcn | sage | gat | mlp`` by name (GAT-only arguments are ignored by the others)."""
    key = str(name).lower()
    if key not in NODE_MODELS:
        raise UserError(f"unknown node model {name!r} (expected one of {', '.join(NODE_MODELS)})")
    for arg, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden", hidden)):
        if int(value) < 1:
            raise UserError(f"{arg} must be >= 1, got {value}")
    kwargs = dict(num_layers=num_layers, dropout=dropout, norm=norm)
    if key == "gat":
        kwargs.update(num_heads=num_heads, attn_dropout=attn_dropout)
    return NODE_MODELS[key](in_dim, hidden, out_dim, **kwargs)
