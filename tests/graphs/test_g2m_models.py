"""The exact speed-ups of the node models and the training loop compute what they replace."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from condense.utils import UserError
from graphs.data.csbm import csbm
from graphs.g2m.losses import ce_loss, hfd_loss, kd_loss, lfd_loss
from graphs.g2m.student import DistillationObjective
from graphs.g2m.train import accuracy, fit
from graphs.models.node import SparseAggregation, build_node_model, dropout

# a graph with a repeated edge, an isolated node (5) and a node with a self-loop (2)
EDGES = torch.tensor([[0, 1, 1, 2, 3, 0, 2, 4], [1, 0, 2, 1, 0, 1, 2, 3]])


@pytest.mark.parametrize("shape, p, dtype", [((3000, 128), 0.5, torch.float32), ((33, 7), 0.6, torch.float64), ((5,), 0.1, torch.float32)])
def test_dropout_is_f_dropout_bit_for_bit_with_the_same_draws(shape, p, dtype):
    h = torch.randn(shape, dtype=dtype)
    torch.manual_seed(7)
    ref, ref_next = F.dropout(h, p, True), torch.rand(3)
    torch.manual_seed(7)
    out, out_next = dropout(h, p, True), torch.rand(3)
    assert torch.equal(out, ref) and torch.equal(out_next, ref_next)
    assert dropout(h, p, False) is h and torch.equal(dropout(h, 1.0, True), torch.zeros_like(h))


@pytest.mark.parametrize("name, conv_kwargs", [("gcn", {}), ("sage", dict(aggr="mean", root_weight=False))])
def test_sparse_aggregation_equals_the_pyg_layer(name, conv_kwargs):
    """Each layer of our GCN / GraphSAGE computes its PyG conv's forward (scatter path), values and gradients."""
    from torch_geometric.nn import GCNConv, SAGEConv
    from torch_geometric.utils import add_remaining_self_loops

    torch.manual_seed(0)
    model = build_node_model(name, 4, 3, hidden=8, num_layers=1).double()
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    ref_layer = (GCNConv(4, 3) if name == "gcn" else SAGEConv(4, 3, **conv_kwargs)).double()
    ref_layer.load_state_dict(model.layers[0].state_dict())
    ref_ei = EDGES if name == "gcn" else add_remaining_self_loops(EDGES, num_nodes=6)[0]
    ours, ref = model(x, EDGES), ref_layer(x, ref_ei)
    assert torch.allclose(ours, ref, atol=1e-12)
    g_ours = torch.autograd.grad(ours.square().sum(), x)[0]
    g_ref = torch.autograd.grad(ref.square().sum(), x)[0]
    assert torch.allclose(g_ours, g_ref, atol=1e-12)


def test_prepared_graph_is_reused_and_checked():
    data = csbm(60, 5, seed=0)
    gcn = build_node_model("gcn", 5, 3, hidden=8).eval()
    graph = gcn.graph(data.edge_index, 60)
    assert isinstance(graph, SparseAggregation) and gcn.graph(graph, 60) is graph
    assert torch.equal(gcn(data.x, graph), gcn(data.x, data.edge_index))
    with pytest.raises(UserError, match="prepared by GCN"):
        build_node_model("sage", 5, 3, hidden=8)(data.x, graph)
    with pytest.raises(UserError, match="60 nodes"):
        gcn(data.x[:10], graph)


@pytest.mark.parametrize("name, norm, mode_free", [("gcn", "none", True), ("sage", "layer", True), ("mlp", "none", True),
                                                   ("gcn", "batch", False), ("gat", "none", False)])  # fmt: skip
def test_trunk_head_split_is_the_forward_pass(name, norm, mode_free):
    data = csbm(60, 5, seed=0)
    model = build_node_model(name, 5, 3, hidden=8, num_layers=3, dropout=0.5, norm=norm, num_heads=2)
    assert model.trunk_is_mode_free is mode_free
    graph = model.graph(data.edge_index, 60)
    for mode in (model.train, model.eval):
        mode()
        torch.manual_seed(1)
        full = model(data.x, data.edge_index)
        torch.manual_seed(1)
        assert torch.equal(model.head(model.trunk(data.x, graph), graph), full)
    if mode_free:
        trunk_eval = model.trunk(data.x, graph)
        assert torch.equal(model.train().trunk(data.x, graph), trunk_eval)
    else:
        assert model.trunk(data.x, graph) is data.x


def _reference_fit(model, x, graph, y, train, val, epochs):
    """The former loop: train forward, step, then a separate eval-mode forward, every epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    best, state = -1.0, None
    for _ in range(epochs):
        model.train()
        opt.zero_grad()
        ce_loss(model(x, graph)[train], y[train]).backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            score = accuracy(model(x, graph)[val], y[val])
        if score >= best:
            best, state = score, copy.deepcopy(model.state_dict())
    return best, state


@pytest.mark.parametrize("name", ["gcn", "gat"])
def test_fit_with_shared_trunk_equals_separate_train_and_eval_passes(name):
    data = csbm(200, 10, seed=0)
    train, val = torch.arange(0, 40), torch.arange(40, 120)
    torch.manual_seed(0)
    model = build_node_model(name, 10, 2, hidden=16, dropout=0.5, num_heads=2)
    twin = copy.deepcopy(model)
    graph = model.graph(data.edge_index, 200)
    torch.manual_seed(3)
    best_ref, state_ref = _reference_fit(twin, data.x, graph, data.y, train, val, 25)
    torch.manual_seed(3)
    result = fit(model, lambda: model.trunk(data.x, graph), lambda h: ce_loss(model.head(h, graph)[train], data.y[train]),
                 lambda h: accuracy(model.head(h, graph)[val], data.y[val]), lr=0.01, weight_decay=5e-4, max_epochs=25, patience=100)  # fmt: skip
    assert result.best_val == best_ref and result.epochs == 25
    assert all(torch.equal(model.state_dict()[k], state_ref[k]) for k in state_ref)


@pytest.mark.parametrize("method", ["mlp", "glnn", "lfd", "hfd", "ff-g2m"])
def test_objective_with_prepared_targets_equals_the_losses(method):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    y, train = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 2, 4])
    lamb, tau = 0.3, 1.5
    edges = EDGES[:, EDGES[0] != EDGES[1]]
    loops = torch.cat([edges, torch.arange(6).repeat(2, 1)], 1)
    distill = {"mlp": None, "glnn": kd_loss(s, t), "lfd": lfd_loss(s, t, loops), "hfd": hfd_loss(s, t, edges, tau),
               "ff-g2m": lfd_loss(s, t, loops) + hfd_loss(s, t, edges, tau)}[method]  # fmt: skip
    ce = ce_loss(s[train], y[train])
    expected = ce if distill is None else lamb * ce + (1 - lamb) * distill
    objective = DistillationObjective(method, t, y, train, EDGES, lamb=lamb, tau=tau)
    assert torch.equal(objective(s), expected)
    assert torch.equal(objective(s), objective(s))  # the prepared targets are not consumed
