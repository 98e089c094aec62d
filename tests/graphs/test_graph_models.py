"""GNN zoo for graph classification: shapes, gradients, encoders, edge features, masked pooling."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from condense.utils import UserError
from graphs.models.graph import GRAPH_MODELS, FeatureEncoder, get_graph_model

CARDS, EDGE_CARDS = (5, 3), (4,)


def _graph(n: int, seed: int) -> Data:
    g = torch.Generator().manual_seed(seed)
    src = torch.arange(n - 1)
    ei = torch.stack([torch.cat([src, src + 1]), torch.cat([src + 1, src])])
    return Data(x=torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], 1), edge_index=ei,
                edge_attr=torch.randint(0, EDGE_CARDS[0], (ei.size(1), 1), generator=g), y=torch.tensor([seed % 2]))


@pytest.fixture()
def batch() -> Batch:
    return Batch.from_data_list([_graph(n, i) for i, n in enumerate((4, 7, 5))])


@pytest.mark.parametrize("name", GRAPH_MODELS)
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_shapes_and_gradients_reach_every_parameter(name, pooling, batch):
    torch.manual_seed(0)
    model = get_graph_model(name, CARDS, 3, hidden=8, layers=2, pooling=pooling, edge_dim=EDGE_CARDS)
    out = model(batch)
    assert out.shape == (3, 3)
    out.sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname


def test_same_seed_same_model(batch):
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(get_graph_model("gat", CARDS, 2, hidden=8, layers=2, edge_dim=EDGE_CARDS)(batch))
    assert torch.equal(outs[0], outs[1])


def test_categorical_encoder_is_sum_of_column_embeddings():
    enc = FeatureEncoder((5, 3), 4)
    x = torch.tensor([[1, 2], [4, 0]])
    expected = enc.tables[0].weight[x[:, 0]] + enc.tables[1].weight[x[:, 1]]
    assert torch.allclose(enc(x), expected)
    lin = FeatureEncoder(6, 4)
    assert lin(torch.randn(3, 6)).shape == (3, 4)
    with pytest.raises(UserError, match="outside the cardinalities"):  # 5 would silently read table 1's row 0
        enc(torch.tensor([[5, 0]]))
    # off the CPU there is no host-side check (a sync per step): a bad id is sent past the table's end,
    # so the lookup fails on the device instead of reading the next column (meta: shapes only, no values)
    meta = FeatureEncoder((5, 3), 4).to("meta")
    assert meta(torch.tensor([[5, 0]], device="meta")).shape == (1, 4)
    assert enc.rows == 8
    assert enc.flat_ids(torch.tensor([[1, 2], [4, 0]])).tolist() == [[1, 7], [4, 5]]
    bad = enc.flat_ids(torch.tensor([[5, 0], [-1, 3]]))  # what an accelerator's lookup receives
    assert bad.tolist() == [[8, 5], [8, 8]]
    with pytest.raises(RuntimeError, match="not in the valid range|index_size"):
        torch.nn.functional.embedding_bag(bad, torch.cat([t.weight for t in enc.tables]), mode="sum")


def test_gin_edge_messages_are_ogb_and_mirage_relu_of_sum(batch):
    """OGB's / Mirage's GINConv: message ReLU(h_u + BondEncoder(e_uv)), no Linear on the edge embedding."""
    torch.manual_seed(0)
    model = get_graph_model("gin", CARDS, 2, hidden=8, layers=1, edge_dim=EDGE_CARDS).eval()
    conv, h = model.convs[0], model.encoder(batch.x)
    e = model.edge_encoders[0](batch.edge_attr)
    src, dst = batch.edge_index
    agg = torch.zeros_like(h).index_add_(0, dst, torch.relu(h[src] + e))
    torch.testing.assert_close(conv(h, batch.edge_index, e), conv.nn((1 + conv.eps) * h + agg))
    assert getattr(conv, "lin", None) is None


@pytest.mark.parametrize("readout_dropout,calls", [(True, 3), (False, 2)])
def test_readout_dropout_is_mirage_only(monkeypatch, batch, readout_dropout, calls):
    """Mirage's model drops the pooled vector before its head, OGB's GNN does not: 2 layers -> 2 or 3 active dropouts."""
    import graphs.models.graph as graph

    seen = []
    real = graph.nn.functional.dropout
    monkeypatch.setattr(graph.nn.functional, "dropout", lambda h, p, training: seen.append(training) or real(h, p, training))
    get_graph_model("gin", CARDS, 2, hidden=8, layers=2, dropout=0.5, readout_dropout=readout_dropout).train()(batch)
    assert sum(seen) == calls


@pytest.mark.parametrize("name,uses", [("gin", True), ("gat", True), ("gcn", False), ("sage", False)])
def test_edge_features_reach_messages_only_where_pyg_supports_them(name, uses, batch):
    torch.manual_seed(0)
    model = get_graph_model(name, CARDS, 2, hidden=8, layers=2, edge_dim=EDGE_CARDS).eval()
    other = batch.clone()
    other.edge_attr = (other.edge_attr + 1) % EDGE_CARDS[0]
    changed = not torch.allclose(model(batch), model(other))
    assert changed == uses


def test_masked_pooling_equals_pooling_over_the_selected_nodes(batch):
    torch.manual_seed(0)
    model = get_graph_model("gin", CARDS, 2, hidden=8, layers=2, edge_dim=EDGE_CARDS).eval()
    mask = torch.zeros(batch.num_nodes, dtype=torch.bool)
    mask[::2] = True
    h = model.node_embeddings(batch.x, batch.edge_index, batch.edge_attr)
    pooled = torch.zeros(3, h.size(1)).index_add_(0, batch.batch[mask], h[mask])
    assert torch.allclose(model(batch, pool_mask=mask), model.heads[0](pooled), atol=1e-6)


def test_jk_sum_reads_out_the_sum_of_every_layer_including_the_input(batch):
    torch.manual_seed(0)
    model = get_graph_model("gin", CARDS, 2, hidden=8, layers=3, jk="sum").eval()
    h, expected = model.encoder(batch.x), model.encoder(batch.x)
    for i, conv in enumerate(model.convs):  # explicit loop over the layers
        h = conv(h, batch.edge_index)
        h = torch.relu(h) if i < 2 else h
        expected = expected + h
    torch.testing.assert_close(model.node_embeddings(batch.x, batch.edge_index), expected)
    last = get_graph_model("gin", CARDS, 2, hidden=8, layers=3)
    last.load_state_dict(model.state_dict())
    torch.testing.assert_close(last.eval().node_embeddings(batch.x, batch.edge_index), h)


def test_validation_errors():
    with pytest.raises(UserError, match="unknown graph model"):
        get_graph_model("gnn", CARDS, 2)
    with pytest.raises(UserError, match="pooling"):
        get_graph_model("gin", CARDS, 2, pooling="max")
    with pytest.raises(UserError):
        get_graph_model("gin", (0, 3), 2)
    with pytest.raises(UserError):
        get_graph_model("gin", CARDS, 1)
    with pytest.raises(UserError, match="jk must be one of last, sum"):
        get_graph_model("gin", CARDS, 2, jk="max")


@pytest.mark.parametrize("name,calls", [("gat", 3), ("gcn", 2), ("mlp", 2)])
def test_node_models_apply_dropout_once_per_layer(monkeypatch, name, calls):
    """GAT drops each layer's input (DGL feat_drop) and nothing else: 3 layers -> 3 dropouts, not 5;
    the other stacks drop after each hidden activation (2 for 3 layers)."""
    import graphs.models.node as node

    seen = []
    real = node.dropout
    monkeypatch.setattr(node, "dropout", lambda h, p, training: seen.append(p) or real(h, p, training))
    model = node.build_node_model(name, 5, 3, hidden=8, num_layers=3, dropout=0.4, num_heads=2).train()
    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    model(torch.randn(4, 5), ei)
    assert seen == [0.4] * calls  # (GATConv drops attention coefficients itself, with F.dropout)
