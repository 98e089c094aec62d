r"""Graph classifiers on PyG layers: GCN, GIN, GAT and GraphSAGE.

.. math::
    \mathbf{h}_v^{(0)} = \mathrm{Enc}(\mathbf{x}_v), \qquad
    \mathbf{h}_v^{(\ell)} = \sigma\big(\mathrm{Conv}^{(\ell)}(\mathbf{h}^{(\ell-1)},
        \{\mathrm{Enc}_e^{(\ell)}(\mathbf{e}_{uv})\})_v\big), \qquad
    \hat{\mathbf{y}}_G = \mathbf{W}\,\mathrm{dropout}\Big(\bigoplus_{v \in R(G)} \mathbf{h}_v^{(L)}\Big)

with :math:`\bigoplus` sum or mean and :math:`R(G)` all nodes of :math:`G` (evaluation) or only
the root nodes of Mirage's computation trees (``pool_mask``, training on a distilled set).
:math:`\sigma` is ReLU between layers and the identity after the last one, followed by dropout
(the layout of OGB's ``GNN_node`` that the Mirage code builds on).  Jumping knowledge as in
``GNN_node``: ``jk="last"`` reads out :math:`\mathbf{h}^{(L)}`, ``jk="sum"`` the sum
:math:`\sum_{\ell=0}^{L}\mathbf{h}^{(\ell)}` including the encoded input (the official Mirage NCI1
notebook's setting).

Categorical features (integer columns) are encoded AtomEncoder-style as a sum of one embedding
per column; float features by a linear layer.  Edge features reach the messages in GIN
(:class:`~torch_geometric.nn.GINEConv`) and GAT (``edge_dim``); GCN and GraphSAGE have no
edge-feature form in PyG and ignore them.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import GATConv, GCNConv, GINConv, GINEConv, SAGEConv
from torch_geometric.utils import scatter

from condense.utils import UserError

__all__ = ["FeatureEncoder", "GraphClassifier", "get_graph_model", "GRAPH_MODELS", "JK_MODES"]

GRAPH_MODELS = ("gcn", "gin", "gat", "sage")
JK_MODES = ("last", "sum")
FeatureSpec = int | Sequence[int]


class FeatureEncoder(nn.Module):
    """Sum of per-column embeddings (``spec`` = cardinalities) or a linear map (``spec`` = width)."""

    def __init__(self, spec: FeatureSpec, out_dim: int) -> None:
        super().__init__()
        self.categorical = not isinstance(spec, int)
        if self.categorical:
            cards = [int(c) for c in spec]
            if not cards or min(cards) < 1:
                raise UserError(f"categorical cardinalities must be positive integers, got {list(spec)}")
            self.tables = nn.ModuleList(nn.Embedding(c, out_dim) for c in cards)
            for t in self.tables:
                nn.init.xavier_uniform_(t.weight)
        else:
            if spec < 1:
                raise UserError(f"feature width must be >= 1, got {spec}")
            self.linear = nn.Linear(spec, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if not self.categorical:
            return self.linear(x.float())
        x = x.view(x.size(0), -1)
        return sum(table(x[:, i]) for i, table in enumerate(self.tables))


def _gin_mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden))


def _make_conv(name: str, hidden: int, with_edges: bool) -> nn.Module:
    if name == "gcn":
        return GCNConv(hidden, hidden)
    if name == "gin":
        return GINEConv(_gin_mlp(hidden), train_eps=True, edge_dim=hidden) if with_edges else GINConv(_gin_mlp(hidden), train_eps=True)
    if name == "gat":
        return GATConv(hidden, hidden, heads=1, edge_dim=hidden if with_edges else None)
    return SAGEConv(hidden, hidden)


class GraphClassifier(nn.Module):
    """Encoder, ``layers`` message-passing layers, sum/mean readout (optionally masked), linear head."""

    def __init__(
        self,
        conv: str,
        in_dim: FeatureSpec,
        num_classes: int,
        *,
        hidden: int = 128,
        layers: int = 3,
        pooling: str = "sum",
        edge_dim: FeatureSpec | None = None,
        dropout: float = 0.0,
        jk: str = "last",
    ) -> None:
        if conv not in GRAPH_MODELS:
            raise UserError(f"unknown graph model {conv!r} (expected one of {', '.join(GRAPH_MODELS)})")
        if pooling not in ("sum", "mean"):
            raise UserError(f"pooling must be 'sum' or 'mean', got {pooling!r}")
        if int(hidden) < 1 or int(layers) < 1 or int(num_classes) < 2:
            raise UserError(f"need hidden >= 1, layers >= 1, num_classes >= 2 (got {hidden}, {layers}, {num_classes})")
        if not 0 <= dropout < 1:
            raise UserError(f"dropout must lie in [0, 1), got {dropout}")
        if jk not in JK_MODES:
            raise UserError(f"jk must be one of {', '.join(JK_MODES)}, got {jk!r}")
        super().__init__()
        self.conv_name, self.pooling, self.dropout, self.jk = conv, pooling, float(dropout), jk
        self.uses_edges = edge_dim is not None and conv in ("gin", "gat")
        self.encoder = FeatureEncoder(in_dim, hidden)
        self.edge_encoders = nn.ModuleList(FeatureEncoder(edge_dim, hidden) for _ in range(layers)) if self.uses_edges else None
        self.convs = nn.ModuleList(_make_conv(conv, hidden, self.uses_edges) for _ in range(layers))
        self.head = nn.Linear(hidden, num_classes)

    def node_embeddings(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None) -> Tensor:
        h = self.encoder(x)
        readout = h if self.jk == "sum" else None
        for i, conv in enumerate(self.convs):
            if self.uses_edges:
                if edge_attr is None:
                    raise UserError("this model was built with edge features but the graph has no edge_attr")
                h = conv(h, edge_index, self.edge_encoders[i](edge_attr))
            else:
                h = conv(h, edge_index)
            if i < len(self.convs) - 1:
                h = torch.relu(h)
            h = nn.functional.dropout(h, self.dropout, self.training)
            if readout is not None:
                readout = readout + h
        return h if readout is None else readout

    def forward(self, data: Batch, pool_mask: Tensor | None = None) -> Tensor:
        """Logits per graph of ``data``; pool over ``pool_mask`` nodes only when given."""
        h = self.node_embeddings(data.x, data.edge_index, getattr(data, "edge_attr", None))
        batch = data.batch if getattr(data, "batch", None) is not None else h.new_zeros(h.size(0), dtype=torch.long)
        size = int(data.num_graphs) if hasattr(data, "num_graphs") else int(batch.max()) + 1
        if pool_mask is not None:
            h, batch = h[pool_mask], batch[pool_mask]
        g = scatter(h, batch, dim=0, dim_size=size, reduce=self.pooling)
        return self.head(nn.functional.dropout(g, self.dropout, self.training))


def get_graph_model(name: str, in_dim: FeatureSpec, num_classes: int, **kwargs) -> GraphClassifier:
    """Build a graph classifier by name (``gcn``, ``gin``, ``gat``, ``sage``).

    ``in_dim``/``edge_dim``: an ``int`` width for float features or a sequence of
    cardinalities for integer (categorical) columns; ``edge_dim=None`` ignores edge features.
    Keyword arguments (``hidden``, ``layers``, ``pooling``, ``edge_dim``, ``dropout``, ``jk``) are
    those of :class:`GraphClassifier`.
    """
    return GraphClassifier(name.lower(), in_dim, num_classes, **kwargs)
