"""Planetoid loader, CSBM generator, node splits and the node model zoo."""
from __future__ import annotations

import math
import shutil

import pytest
import torch

from condense.utils import UserError
from graphs.data.csbm import csbm, homophily
from graphs.data.node_splits import make_split, observed_graph, per_class_split, split_from_masks
from graphs.data.planetoid import PLANETOID_NAMES, load_planetoid, planetoid_available
from graphs.models.node import GraphSAGE, build_node_model


@pytest.mark.shared_data
@pytest.mark.parametrize("name, nodes, edges, classes", [("cora", 2708, 10556, 7), ("citeseer", 3327, 9104, 6)])
def test_planetoid_public_split(writable_shared, name, nodes, edges, classes):
    data = load_planetoid(name, writable_shared("planetoid"))
    train, val, test = split_from_masks(data)
    assert (data.num_nodes, data.edge_index.size(1), int(data.y.max()) + 1) == (nodes, edges, classes)
    assert (len(train), len(val), len(test)) == (20 * classes, 500, 1000)
    assert torch.bincount(data.y[train]).tolist() == [20] * classes
    nonzero = data.x.sum(1) > 0
    assert torch.allclose(data.x.sum(1)[nonzero], torch.ones(int(nonzero.sum())))


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["cora", "citeseer"])
def test_planetoid_reader_equals_pyg_and_writes_nothing(shared_data, tmp_path, name):
    """Our reader (restricted unpickler, one read) builds exactly PyG's Planetoid graph, from the read-only root."""
    from torch_geometric.datasets import Planetoid

    src = shared_data / "planetoid"
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    ours = load_planetoid(name, src, normalize_features=False)
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before  # no processed/ next to raw/
    folder = PLANETOID_NAMES[name]
    shutil.copytree(src / folder / "raw", tmp_path / folder / "raw")
    ref = Planetoid(str(tmp_path), folder, split="public")[0]
    assert torch.equal(ours.x, ref.x.float()) and torch.equal(ours.y, ref.y)
    assert torch.equal(ours.edge_index, ref.edge_index)  # same edges in the same order
    for m in ("train_mask", "val_mask", "test_mask"):
        assert torch.equal(ours[m], ref[m])


@pytest.mark.shared_data
def test_planetoid_out_of_range_indices_are_one_line_errors(shared_data, tmp_path):
    raw = tmp_path / "Cora" / "raw"
    shutil.copytree(shared_data / "planetoid" / "Cora" / "raw", raw)
    index = (raw / "ind.cora.test.index").read_text().split()
    (raw / "ind.cora.test.index").write_text("\n".join(index[:-1] + ["99999"]))
    with pytest.raises(UserError, match=r"ind\.cora\.test\.index names nodes outside the 2708 nodes"):
        load_planetoid("cora", tmp_path)


@pytest.mark.shared_data
def test_planetoid_missing_raw_file_names_dataset_root_and_file(writable_shared, tmp_path):
    root = tmp_path / "pl"
    shutil.copytree(writable_shared("planetoid") / "Cora" / "raw", root / "Cora" / "raw")
    (root / "Cora" / "raw" / "ind.cora.graph").unlink()
    assert not planetoid_available("cora", root)
    with pytest.raises(UserError) as err:
        load_planetoid("cora", root)
    msg = str(err.value)
    assert "'cora'" in msg and str(root) in msg and "ind.cora.graph" in msg
    assert not (root / "Cora" / "processed").exists()  # nothing attempted, nothing downloaded
    with pytest.raises(UserError, match="pubmed"):
        load_planetoid("pubmed", root)
    with pytest.raises(UserError, match="unknown Planetoid"):
        load_planetoid("reddit", root)


def test_csbm_seeded_symmetric_and_degree():
    a, b = csbm(3000, 40, avg_degree=6.0, lam=1.5, mu=2.0, seed=3), csbm(3000, 40, avg_degree=6.0, lam=1.5, mu=2.0, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index) and torch.equal(a.y, b.y)
    c = csbm(3000, 40, avg_degree=6.0, lam=1.5, mu=2.0, seed=4)
    assert not torch.equal(a.edge_index, c.edge_index)
    ei = a.edge_index
    assert a.x.shape == (3000, 40) and a.x.dtype == torch.float32
    assert (ei[0] != ei[1]).all()
    keys = set((ei[0] * 3000 + ei[1]).tolist())
    assert keys == set((ei[1] * 3000 + ei[0]).tolist()) and len(keys) == ei.size(1)  # symmetric, no duplicates
    assert ei.size(1) / 3000 == pytest.approx(6.0, rel=0.05)


def test_csbm_homophily_follows_lambda():
    d, lam = 10.0, 2.0
    expected = (d + lam * math.sqrt(d)) / (2 * d)  # c_in / (c_in + c_out)
    homo = homophily(csbm(4000, 8, avg_degree=d, lam=lam, seed=0).edge_index, csbm(4000, 8, avg_degree=d, lam=lam, seed=0).y)
    hetero_data = csbm(4000, 8, avg_degree=d, lam=-lam, seed=0)
    assert homo == pytest.approx(expected, abs=0.02)
    assert homophily(hetero_data.edge_index, hetero_data.y) == pytest.approx(1 - expected, abs=0.02)


def test_csbm_features_carry_mu_signal():
    data = csbm(2000, 50, mu=400.0, seed=1)
    v = data.y.float() * 2 - 1
    direction = (v[:, None] * data.x).mean(0)
    proj = data.x @ direction
    assert ((proj > 0).float() == data.y.float()).float().mean() > 0.9
    noise = csbm(2000, 50, mu=0.0, seed=1)
    assert abs((noise.x.std() - 1 / math.sqrt(50)).item()) < 0.01


def test_csbm_scales_to_large_graphs():
    data = csbm(100_000, 4, avg_degree=10.0, lam=2.0, seed=0)
    assert data.edge_index.size(1) == pytest.approx(1_000_000, rel=0.02)


@pytest.mark.parametrize("kwargs", [dict(lam=10.0), dict(num_nodes=2), dict(avg_degree=0.0), dict(mu=-1.0), dict(num_features=1.5)])
def test_csbm_validates(kwargs):
    with pytest.raises(UserError):
        csbm(**{**dict(num_nodes=100, num_features=4), **kwargs})


def test_per_class_split_counts_and_disjoint():
    y = torch.arange(300) % 3
    train, val, test = per_class_split(y, 20, 50, 100, seed=0)
    assert torch.bincount(y[train]).tolist() == [20, 20, 20]
    assert len(set(train.tolist()) | set(val.tolist()) | set(test.tolist())) == 60 + 50 + 100
    assert torch.equal(per_class_split(y, 20, 50, 100, seed=0)[1], val)
    with pytest.raises(UserError):
        per_class_split(y, 200)


@pytest.mark.parametrize("observed", ["all", "split"])
def test_inductive_split_holds_out_nodes_and_edges(observed):
    data = csbm(500, 6, avg_degree=6.0, seed=0)
    train, val, test = per_class_split(data.y, 20, 100, 200, seed=0)
    split = make_split(500, train, val, test, "ind", rate=0.2, seed=1, observed=observed)
    assert len(split.test_ind) == 40 and len(split.test) == 160
    held = set(split.test_ind.tolist())
    assert held.isdisjoint(split.observed.tolist())
    if observed == "split":
        assert len(split.observed) == 40 + 100 + 160
    else:
        assert len(split.observed) == 460
    view = observed_graph(data.x, data.y, data.edge_index, split)
    original = split.observed[view.edge_index]
    assert not any(int(u) in held or int(v) in held for u, v in original.t())
    assert torch.equal(view.x, data.x[split.observed])
    if observed == "all":
        assert view.edge_index.size(1) == sum(u not in held and v not in held for u, v in data.edge_index.t().tolist())
    with pytest.raises(UserError):
        make_split(500, train, val, test, "semi")


@pytest.mark.parametrize("name", ["gcn", "sage", "gat", "mlp"])
def test_node_models_shapes_and_gradients(name):
    data = csbm(60, 5, seed=0)
    model = build_node_model(name, 5, 3, hidden=8, num_layers=3, dropout=0.5, num_heads=4)
    out = model(data.x, data.edge_index)
    assert out.shape == (60, 3)
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sage_gcn_aggregator_is_mean_over_neighbourhood_and_self():
    torch.manual_seed(0)
    model = GraphSAGE(3, 4, 2, num_layers=1)
    x = torch.randn(4, 3)
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    out = model(x, ei)
    lin = model.layers[0].lin_l
    for i, nbrs in {0: [0, 1], 1: [1, 0, 2], 2: [2, 1], 3: [3]}.items():
        assert torch.allclose(out[i], lin(x[nbrs].mean(0)), atol=1e-6)


def test_gat_heads_and_mlp_ignores_graph():
    gat = build_node_model("gat", 5, 3, hidden=16, num_heads=4)
    assert gat.layers[0].heads == 4 and gat.layers[0].out_channels == 4 and gat.layers[-1].heads == 1
    mlp = build_node_model("mlp", 5, 3, hidden=8).eval()
    x = torch.randn(7, 5)
    assert torch.equal(mlp(x), mlp(x, torch.tensor([[0, 1], [1, 0]])))
    for bad in (dict(name="gin"), dict(name="gat", hidden=10, num_heads=4), dict(name="mlp", norm="group"), dict(name="mlp", dropout=1.5)):
        kwargs = {"name": "mlp", **bad}
        with pytest.raises(UserError):
            build_node_model(kwargs.pop("name"), 5, 3, **kwargs)
    with pytest.raises(UserError):
        build_node_model("gcn", 5, 3)(x)
