"""Mirage distillation: distilled graphs, class filter, artifact round trip, root pooling."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from condense.utils import UserError, atomic_save
from graphs.data.motifs import make_motif_dataset
from graphs.mirage.distill import DistilledSet, MirageConfig, _union, decompose, mirage_distill
from graphs.mirage.labels import discretise
from graphs.mirage.trees import computation_tree, in_neighbours, tree_to_data
from graphs.models.graph import get_graph_model


@pytest.fixture(scope="module")
def motifs():
    return make_motif_dataset(120, seed=0)


@pytest.fixture(scope="module")
def distilled(motifs):
    return mirage_distill(motifs.subset("train"), 2, MirageConfig(hops=2, support=(0.5,)), progress=False)


def test_distilled_graphs_are_unions_of_trees_with_roots(motifs, distilled):
    meta = distilled.meta
    assert len(distilled.graphs) == sum(meta["itemsets_kept_per_class"]) > 0
    assert meta["unique_trees_total"] >= max(meta["unique_trees_per_class"]) > 0
    for g in distilled.graphs:
        # edges point child -> parent: roots have no outgoing edge, every other node exactly one
        out_deg = torch.bincount(g.edge_index[0], minlength=g.num_nodes)
        assert torch.equal(out_deg == 0, g.root_mask)
        assert g.edge_index.size(1) == g.num_nodes - int(g.root_mask.sum())
        assert g.weight >= meta["thresholds"][int(g.y)]
        assert g.x.dtype == torch.long and g.x.shape[1] == 1  # original features restored


def test_itemset_support_is_exact(motifs):
    """Re-count each itemset's support from the per-graph tree sets of its class."""
    train = motifs.subset("train")
    cfg = MirageConfig(hops=1, support=(0.5,))
    dec = decompose(train, cfg)
    ds = mirage_distill(train, 2, cfg, progress=False)
    tree_item = {}
    for item, (gi, v) in dec.representative.items():
        t = tree_to_data(train[gi], computation_tree(in_neighbours(train[gi].edge_index, train[gi].num_nodes), v, 1))
        tree_item[(tuple(t.x.view(-1).tolist()), t.num_nodes)] = item
    for g in ds.graphs:
        c = int(g.y)
        starts = g.root_mask.nonzero().view(-1).tolist() + [g.num_nodes]
        items = {tree_item[(tuple(g.x[a:b].view(-1).tolist()), b - a)] for a, b in zip(starts[:-1], starts[1:])}
        support = sum(1 for it, d in zip(dec.items, train) if int(d.y) == c and items <= set(it.tolist()))
        assert support == g.weight


def test_filter_shared_drops_itemsets_frequent_in_both_classes(motifs):
    train = motifs.subset("train")
    plain = mirage_distill(train, 2, MirageConfig(hops=1, support=(0.3,)), progress=False)
    filt = mirage_distill(train, 2, MirageConfig(hops=1, support=(0.3,), filter_shared=True), progress=False)
    assert plain.meta["itemsets_mined_per_class"] == filt.meta["itemsets_mined_per_class"]
    assert sum(filt.meta["itemsets_kept_per_class"]) < sum(plain.meta["itemsets_kept_per_class"])


def test_wl_and_tree_coders_give_the_same_distilled_set(motifs):
    train = motifs.subset("train")[:40]
    a = mirage_distill(train, 2, MirageConfig(hops=2, support=(0.4,)), progress=False)
    b = mirage_distill(train, 2, MirageConfig(hops=2, support=(0.4,), coder="trees"), progress=False)
    assert a.meta["itemsets_kept_per_class"] == b.meta["itemsets_kept_per_class"]
    assert sorted(g.num_nodes for g in a.graphs) == sorted(g.num_nodes for g in b.graphs)


def test_artifact_round_trip_and_size(distilled, tmp_path):
    path = tmp_path / "d.pt"
    distilled.save(path)
    back = DistilledSet.load(path)
    assert back.nbytes == distilled.nbytes == torch.load(path, weights_only=True)["nbytes"]
    assert back.meta["config"]["support"] == [0.5] and back.meta["thresholds"] == distilled.meta["thresholds"]
    for a, b in zip(distilled.graphs, back.graphs):
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index) and torch.equal(a.root_mask, b.root_mask)
        assert int(a.y) == int(b.y) and a.weight == b.weight
    atomic_save({"format": "something-else"}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="Mirage distilled set"):
        DistilledSet.load(tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not found"):
        DistilledSet.load(tmp_path / "missing.pt")


@pytest.mark.parametrize("name", ["gin", "gat", "sage"])
@pytest.mark.parametrize("hops", [1, 2, 3])
def test_root_pooling_on_all_trees_equals_sum_pooling_on_the_graph(name, hops):
    """Training pooling over the roots of ALL computation trees of a graph = evaluation pooling."""
    torch.set_num_threads(1)  # multi-threaded scatter on a shared CPU is ~1000x slower (reset per test by conftest)
    g = make_motif_dataset(20, seed=1).graphs[3]
    g.edge_attr = (torch.arange(g.edge_index.size(1)) % 3).view(-1, 1)
    adj = in_neighbours(g.edge_index, g.num_nodes)
    union = _union([tree_to_data(g, computation_tree(adj, v, hops)) for v in range(g.num_nodes)], 0, 1)
    torch.manual_seed(0)
    model = get_graph_model(name, (3,), 2, hidden=16, layers=hops, edge_dim=(3,)).eval()
    real = model(Batch.from_data_list([g]))
    u = Batch.from_data_list([union])
    assert torch.allclose(model(u, pool_mask=u.root_mask), real, atol=1e-5)
    assert not torch.allclose(model(u), real, atol=1e-3)  # pooling all tree nodes would not match


def test_continuous_features_need_explicit_bins():
    x = torch.tensor([[0.1], [0.5], [0.9], [0.45]])
    with pytest.raises(UserError, match="bins"):
        discretise(x)
    assert discretise(x, bins=2).tolist() == [0, 1, 1, 0]
    g = Data(x=torch.rand(4, 2), edge_index=torch.tensor([[0, 1], [1, 0]]), y=torch.tensor(0), num_nodes=4)
    with pytest.raises(UserError, match="continuous"):
        mirage_distill([g], 2, MirageConfig(hops=1, support=(1,)), progress=False)
    with pytest.warns(UserWarning, match=r"no itemset for classes \[1\]"):  # the one graph is class 0
        assert mirage_distill([g], 2, MirageConfig(hops=1, support=(1,), bins=2), progress=False).graphs


def test_label_columns_select_tree_labels():
    x = torch.tensor([[6, 0], [6, 1], [8, 0]])
    assert discretise(x).tolist() == [0, 1, 2]
    assert discretise(x, columns=(0,)).tolist() == [0, 0, 1]
    with pytest.raises(UserError):
        discretise(x, columns=(3,))


def test_config_validation(motifs):
    train = motifs.subset("train")
    for bad in (MirageConfig(support=(0.5, 0.5, 0.5)), MirageConfig(support=(0,)), MirageConfig(coder="dfs"), MirageConfig(hops=-1)):
        with pytest.raises(UserError):
            mirage_distill(train, 2, bad, progress=False)
    with pytest.raises(UserError):
        mirage_distill([], 2, MirageConfig(), progress=False)


def test_class_without_itemsets_warns(motifs):
    with pytest.warns(UserWarning, match="no itemset for classes"):
        mirage_distill(motifs.subset("train"), 2, MirageConfig(hops=2, support=(0.5, 1000)), progress=False)


def test_gcn_root_pooling_is_only_approximate():
    """Documented deviation: GCN's symmetric normalisation uses the (truncated) degree of leaves."""
    torch.set_num_threads(1)
    g = make_motif_dataset(20, seed=1).graphs[3]
    adj = in_neighbours(g.edge_index, g.num_nodes)
    union = _union([tree_to_data(g, computation_tree(adj, v, 2)) for v in range(g.num_nodes)], 0, 1)
    torch.manual_seed(0)
    model = get_graph_model("gcn", (3,), 2, hidden=16, layers=2).eval()
    u = Batch.from_data_list([union])
    assert not torch.allclose(model(u, pool_mask=u.root_mask), model(Batch.from_data_list([g])), atol=1e-3)
