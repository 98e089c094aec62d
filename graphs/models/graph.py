r"""Graph classifiers on PyG layers: GCN, GIN, GAT and GraphSAGE.

.. math::
    \mathbf{h}_v^{(0)} = \mathrm{Enc}(\mathbf{x}_v), \qquad
    \mathbf{h}_v^{(\ell)} = \sigma\big(\mathrm{Conv}^{(\ell)}(\mathbf{h}^{(\ell-1)},
        \{\mathrm{Enc}_e^{(\ell)}(\mathbf{e}_{uv})\})_v\big), \qquad
    \hat{\mathbf{y}}_G = \mathbf{W}\,\mathrm{dropout}\Big(\bigoplus_{v \in R(G)} \mathbf{h}_v^{(L)}\Big)

with :math:`\bigoplus` sum or mean and :math:`R(G)` all nodes of :math:`G` (evaluation) or only
the root nodes of Mirage's computation trees (``pool_mask``, training on a distilled set).
:math:`\sigma` is ReLU between layers and the identity after the last one, followed by dropout
(the layout of OGB's ``GNN_node`` that the Mirage code builds on).  The dropout on the pooled
vector is the Mirage model's (``model/model.py``: ``F.dropout`` then ``lin``); OGB's ``GNN``
(``examples/graphproppred/mol/gnn.py``) feeds the pooled vector to its linear head directly
(``readout_dropout=False``, the ``ogb-mol`` recipe).  Jumping knowledge as in
``GNN_node``: ``jk="last"`` reads out :math:`\mathbf{h}^{(L)}`, ``jk="sum"`` the sum
:math:`\sum_{\ell=0}^{L}\mathbf{h}^{(\ell)}` including the encoded input (the official Mirage
molbace notebook's setting; its NCI1 script uses ``last``).

Two published full-data layouts (``norm=True``):

* OGB's ``GNN_node`` (``examples/graphproppred/mol/conv.py``): GIN MLPs
  ``Linear(d, 2d)-BN-ReLU-Linear(2d, d)``, BatchNorm after every convolution, then ReLU (not after
  the last) and dropout; ``jk="last"``, mean readout, linear head without dropout.
* The GIN paper's ``GraphCNN`` (Xu et al., ICLR 2019, Section 7; ``models/graphcnn.py`` of
  weihua916/powerful-gnns), ``jk="layers"``: GIN MLPs ``Linear-BN-ReLU-Linear``, BatchNorm and
  ReLU after every layer (the last included), no dropout between layers, and the prediction
  :math:`\sum_{\ell=0}^{L} \mathrm{dropout}(\mathbf{W}_\ell \bigoplus_v \mathbf{h}_v^{(\ell)})`
  -- one linear head per layer, the input layer included, dropout on each head's output.
  ``train_eps=False`` is GIN-0 (the paper's best variant, the code's default).  Deviation: the
  one-hot input is embedded (``Enc``, a linear map of the one-hot vector) before the first GIN
  layer instead of entering its MLP directly; the composition is still linear in the one-hot.

Categorical features (integer columns) are encoded AtomEncoder-style as a sum of one embedding
per column (one ``embedding_bag`` over the concatenated tables); float features by a linear layer.
Edge features reach the messages in GIN (:class:`~torch_geometric.nn.GINEConv`, message
``ReLU(h_u + Enc_e(e_uv))`` as OGB's and Mirage's ``GINConv``: the encoders already give width
``d``, so PyG's optional ``Linear`` on the edge embedding, which neither code has, is not used)
and GAT (``edge_dim``); GCN and GraphSAGE have no edge-feature form in PyG and ignore them.
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
JK_MODES = ("last", "sum", "layers")
FeatureSpec = int | Sequence[int]


class FeatureEncoder(nn.Module):
    """Sum of per-column embeddings (``spec`` = cardinalities) or a linear map (``spec`` = width).

    Multi-column ids are range-checked per forward: on CPU with a :class:`UserError`; on accelerators
    (where a check would be a host sync per step) an id outside its column is sent past the end of the
    concatenated table, so the lookup itself fails (a device-side index assert) instead of reading
    the next column's rows. :class:`~graphs.data.graphsets.GraphDataset` checks every id once at
    construction with a clear message.
    """

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
            self.register_buffer("cards", torch.tensor(cards), persistent=False)
            self.register_buffer("offsets", torch.tensor([0] + cards[:-1]).cumsum(0), persistent=False)
            self.rows = sum(cards)  # a Python int: no device read in forward
        else:
            if spec < 1:
                raise UserError(f"feature width must be >= 1, got {spec}")
            self.linear = nn.Linear(spec, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if not self.categorical:
            return self.linear(x.float())
        x = x.view(x.size(0), -1)
        if len(self.tables) == 1:
            return self.tables[0](x[:, 0])
        ids = self.flat_ids(x)
        if x.device.type == "cpu" and bool((ids == self.rows).any()):  # free on CPU: a clear message
            raise UserError(f"categorical feature ids outside the cardinalities {self.cards.tolist()}")
        weight = torch.cat([t.weight for t in self.tables])  # one lookup-and-sum instead of one per column
        return nn.functional.embedding_bag(ids, weight, mode="sum")

    def flat_ids(self, x: Tensor) -> Tensor:
        """Row of each id in the concatenated table; an id outside its column maps to ``self.rows`` (out of range)."""
        return torch.where((x < 0) | (x >= self.cards), self.rows, x + self.offsets)


def _gin_mlp(hidden: int, inner: int, norm: bool) -> nn.Sequential:
    mid = [nn.BatchNorm1d(inner)] if norm else []
    return nn.Sequential(nn.Linear(hidden, inner), *mid, nn.ReLU(), nn.Linear(inner, hidden))


def _make_conv(name: str, hidden: int, with_edges: bool, *, norm: bool = False, paper_gin: bool = False,
               train_eps: bool = True) -> nn.Module:
    if name == "gcn":
        return GCNConv(hidden, hidden)
    if name == "gin":
        mlp = _gin_mlp(hidden, hidden if paper_gin else 2 * hidden, norm)  # GIN paper: hidden units at all layers
        if with_edges:
            return GINEConv(mlp, train_eps=train_eps)  # edge embeddings have width hidden: no extra Linear
        return GINConv(mlp, train_eps=train_eps)
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
        norm: bool = False,
        train_eps: bool = True,
        readout_dropout: bool = True,
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
        self.readout_dropout = bool(readout_dropout)
        self.uses_edges = edge_dim is not None and conv in ("gin", "gat")
        self.encoder = FeatureEncoder(in_dim, hidden)
        self.edge_encoders = nn.ModuleList(FeatureEncoder(edge_dim, hidden) for _ in range(layers)) if self.uses_edges else None
        self.convs = nn.ModuleList(_make_conv(conv, hidden, self.uses_edges, norm=norm, paper_gin=jk == "layers",
                                              train_eps=train_eps) for _ in range(layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(layers)) if norm else None
        n_heads = layers + 1 if jk == "layers" else 1
        self.heads = nn.ModuleList(nn.Linear(hidden, num_classes) for _ in range(n_heads))

    def layer_embeddings(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None) -> list[Tensor]:
        r"""Node states :math:`\mathbf{h}^{(0)}, \dots, \mathbf{h}^{(L)}` (encoded input first)."""
        h = self.encoder(x)
        states = [h]
        paper_gin = self.jk == "layers"
        for i, conv in enumerate(self.convs):
            if self.uses_edges:
                if edge_attr is None:
                    raise UserError("this model was built with edge features but the graph has no edge_attr")
                h = conv(h, edge_index, self.edge_encoders[i](edge_attr))
            else:
                h = conv(h, edge_index)
            if self.norms is not None:
                h = self.norms[i](h)
            if paper_gin or i < len(self.convs) - 1:
                h = torch.relu(h)
            if not paper_gin:
                h = nn.functional.dropout(h, self.dropout, self.training)
            states.append(h)
        return states

    def node_embeddings(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None) -> Tensor:
        """The node representation that ``jk="last"``/``"sum"`` pools."""
        states = self.layer_embeddings(x, edge_index, edge_attr)
        return states[-1] if self.jk != "sum" else torch.stack(states).sum(0)

    def forward(self, data: Batch, pool_mask: Tensor | None = None) -> Tensor:
        """Logits per graph of ``data``; pool over ``pool_mask`` nodes only when given."""
        edge_attr = getattr(data, "edge_attr", None)
        states = self.layer_embeddings(data.x, data.edge_index, edge_attr)
        if self.jk != "layers":
            states = [states[-1] if self.jk == "last" else torch.stack(states).sum(0)]
        batch = data.batch if getattr(data, "batch", None) is not None else states[0].new_zeros(states[0].size(0), dtype=torch.long)
        size = int(data.num_graphs) if hasattr(data, "num_graphs") else int(batch.max()) + 1
        if pool_mask is not None:
            states, batch = [h[pool_mask] for h in states], batch[pool_mask]
        logits = 0
        for head, h in zip(self.heads, states):
            g = scatter(h, batch, dim=0, dim_size=size, reduce=self.pooling)
            if self.jk == "layers":  # GIN paper: dropout on each layer's prediction
                logits = logits + nn.functional.dropout(head(g), self.dropout, self.training)
            else:  # Mirage: dropout on the pooled vector; OGB (readout_dropout=False): none
                logits = logits + head(nn.functional.dropout(g, self.dropout, self.training and self.readout_dropout))
        return logits


def get_graph_model(name: str, in_dim: FeatureSpec, num_classes: int, **kwargs) -> GraphClassifier:
    """Build a graph classifier by name (``gcn``, ``gin``, ``gat``, ``sage``).

    ``in_dim``/``edge_dim``: an ``int`` width for float features or a sequence of
    cardinalities for integer (categorical) columns; ``edge_dim=None`` ignores edge features.
    Keyword arguments (``hidden``, ``layers``, ``pooling``, ``edge_dim``, ``dropout``, ``jk``,
    ``norm``, ``train_eps``, ``readout_dropout``) are those of :class:`GraphClassifier`.
    """
    return GraphClassifier(name.lower(), in_dim, num_classes, **kwargs)
