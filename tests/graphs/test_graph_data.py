"""Graph-classification data layer: TU / OGB loaders, the embedded motif set, shared helpers."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from condense.utils import UserError
from graphs.data.graphsets import categorical_columns, graph_nbytes, random_split
from graphs.data.motifs import make_motif_dataset
from graphs.data.ogb import load_ogb
from graphs.data.tu import load_tu
from tests.graphs._generated import fake_ogb


# --- shared helpers -------------------------------------------------------------------------

def test_random_split_is_seeded_disjoint_and_complete():
    a, b = random_split(50, seed=3), random_split(50, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [len(a[k]) for k in ("train", "valid", "test")] == [40, 5, 5]
    assert sorted(torch.cat(list(a.values())).tolist()) == list(range(50))
    assert not torch.equal(a["train"], random_split(50, seed=4)["train"])
    with pytest.raises(UserError):
        random_split(10, 0, fractions=(0.5, 0.5, 0.5))


def test_categorical_columns_one_id_per_distinct_row():
    rows = torch.tensor([[1, 0], [0, 1], [1, 0], [1, 1]])
    ids, k = categorical_columns(rows)
    assert k == 3 and ids[0] == ids[2] and len({int(ids[0]), int(ids[1]), int(ids[3])}) == 3
    assert categorical_columns(torch.tensor([[0.5], [1.0]])) is None


def test_graph_nbytes_counts_tensors():
    ds = make_motif_dataset(40, seed=0)
    g = ds.graphs[0]
    assert graph_nbytes(g) == g.x.numel() * 8 + g.edge_index.numel() * 8


# --- embedded motifs ------------------------------------------------------------------------

def test_motifs_deterministic_balanced_and_labelled():
    a, b = make_motif_dataset(60, seed=1), make_motif_dataset(60, seed=1)
    assert all(torch.equal(x.edge_index, y.edge_index) and torch.equal(x.x, y.x) for x, y in zip(a.graphs, b.graphs))
    assert a.labels().bincount().tolist() == [30, 30]
    assert a.metric == "rocauc" and a.in_dim == (3,)
    c = make_motif_dataset(60, seed=2)
    assert any(not torch.equal(x.x, y.x) for x, y in zip(a.graphs, c.graphs))


def test_motifs_known_answer_majority_motif():
    """Class 0 graphs carry 2 houses (+1 six-cycle), class 1 graphs 2 six-cycles (+1 house)."""
    ds = make_motif_dataset(40, seed=0)
    for g in ds.graphs:
        motif_nodes = int((g.x.view(-1) == 2).sum())
        assert motif_nodes == (2 * 5 + 6 if int(g.y) == 0 else 2 * 6 + 5)
        edges = g.edge_index
        assert torch.equal(torch.sort(edges.flip(0), dim=1).values, torch.sort(edges, dim=1).values)  # undirected


def test_motifs_validation():
    with pytest.raises(UserError):
        make_motif_dataset(60, base="grid")
    with pytest.raises(UserError):
        make_motif_dataset(60, copies=1, distractors=1)


# --- TU -------------------------------------------------------------------------------------

def test_tu_missing_files_is_a_clear_error_and_never_downloads(tmp_path: Path):
    (tmp_path / "MUTAG" / "raw").mkdir(parents=True)
    (tmp_path / "MUTAG" / "raw" / "MUTAG_A.txt").write_text("1, 2\n")
    with pytest.raises(UserError, match="MUTAG_graph_indicator.txt") as err:
        load_tu("MUTAG", tmp_path)
    assert str(tmp_path) in str(err.value)
    assert sorted(p.name for p in (tmp_path / "MUTAG").iterdir()) == ["raw"]  # nothing processed/downloaded


@pytest.mark.shared_data
def test_tu_mutag_from_shared_data(writable_shared):
    root = writable_shared("tu/MUTAG").parent
    ds = load_tu("MUTAG", root, seed=0)
    assert len(ds.graphs) == 188 and ds.labels().bincount().tolist() == [63, 125]
    assert [len(ds.split[k]) for k in ("train", "valid", "test")] == [150, 19, 19]
    assert ds.node_cardinalities == (7,) and ds.edge_cardinalities == (4,)
    assert sum(g.num_nodes for g in ds.graphs) == 3371
    assert sum(g.edge_index.size(1) for g in ds.graphs) == 7442
    g = ds.graphs[0]
    assert g.x.dtype == torch.long and g.edge_attr.size(0) == g.edge_index.size(1)


# --- OGB ------------------------------------------------------------------------------------

def test_ogb_reader_on_generated_standin(tmp_path: Path):
    base = fake_ogb(tmp_path)
    ds = load_ogb("ogbg-molbbbp", tmp_path)
    assert len(ds.graphs) == 2 and ds.labels().tolist() == [1, 0]
    tri = ds.graphs[0]
    # each bond listed once in the file -> both directions, bond features duplicated
    assert tri.edge_index.tolist() == [[0, 1, 1, 2, 2, 0], [1, 0, 2, 1, 0, 2]]
    assert tri.edge_attr.tolist() == [[0, 0, 1], [0, 0, 1], [1, 0, 0], [1, 0, 0], [0, 2, 1], [0, 2, 1]]
    assert ds.graphs[1].x.tolist() == [[7, 0, 2, 5, 1, 0, 2, 1, 1]] * 2
    assert ds.split["train"].tolist() == [0] and ds.node_cardinalities[0] == 119 and ds.edge_cardinalities == (5, 6, 2)
    assert (base / "processed" / "condense_graphs.pt").is_file()
    again = load_ogb("ogbg-molbbbp", tmp_path)  # from the cache
    assert torch.equal(again.graphs[0].edge_index, tri.edge_index)
    from experiments.mirage import split_name  # records name the scaffold split, whatever --split (a TU flag) says
    assert split_name(ds, "random") == "scaffold" == split_name(again, "official")
    (base / "raw" / "edge.csv.gz").write_bytes(b"garbage")  # the cache is stale now: the raw files are re-read
    with pytest.raises(UserError, match="edge.csv.gz is not a valid gzip file"):
        load_ogb("ogbg-molbbbp", tmp_path)


def test_ogb_missing_files_and_bad_name(tmp_path: Path):
    base = fake_ogb(tmp_path, "ogbg-molhiv")
    (base / "split" / "scaffold" / "valid.csv.gz").unlink()
    with pytest.raises(UserError, match="valid.csv.gz"):
        load_ogb("ogbg-molhiv", tmp_path)
    with pytest.raises(UserError, match="ogbg-"):
        load_ogb("molhiv", tmp_path)


@pytest.mark.shared_data
def test_ogb_molbace_from_shared_data(writable_shared):
    root = writable_shared("ogb/ogbg_molbace").parent
    ds = load_ogb("ogbg-molbace", root)
    assert len(ds.graphs) == 1513 and ds.labels().bincount().tolist() == [822, 691]
    assert [len(ds.split[k]) for k in ("train", "valid", "test")] == [1210, 151, 152]
    assert sum(g.num_nodes for g in ds.graphs) == 51577
    assert sum(g.edge_index.size(1) for g in ds.graphs) == 2 * 55768
    assert ds.graphs[0].x.shape[1] == 9 and ds.graphs[0].edge_attr.shape[1] == 3


def test_categorical_columns_equals_unique_rows():
    import torch

    from graphs.data.graphsets import categorical_columns

    gen = torch.Generator().manual_seed(0)
    for shape, hi in (((1000, 3), 5), ((500, 1), 40), ((300, 9), 3)):
        v = torch.randint(-2, hi, shape, generator=gen)
        uniq, inverse = torch.unique(v, dim=0, return_inverse=True)
        ids, n = categorical_columns(v)
        assert torch.equal(ids.view(-1), inverse) and n == len(uniq)
    assert categorical_columns(torch.tensor([[0.5], [1.0]])) is None


def test_graph_dataset_checks_categorical_ids_once_at_construction():
    from torch_geometric.data import Data

    from graphs.data.graphsets import GraphDataset

    def make(x, edge_attr=None, cards=(3, 2), edge_cards=None):
        g = Data(x=x, edge_index=torch.tensor([[0], [1]]), y=torch.tensor(0), edge_attr=edge_attr)
        split = {s: torch.tensor([0]) for s in ("train", "valid", "test")}
        return GraphDataset("toy", [g], 2, split, cards, edge_cards)

    make(torch.tensor([[2, 1], [0, 0]]))  # within (3, 2)
    with pytest.raises(UserError, match="column 1 holds ids outside \\[0, 2\\)"):
        make(torch.tensor([[2, 2], [0, 0]]))  # id 2 in a 2-category column
    with pytest.raises(UserError, match="column 0"):
        make(torch.tensor([[-1, 0], [0, 0]]))
    with pytest.raises(UserError, match="edge_attr column 0"):
        make(torch.tensor([[0, 0], [0, 0]]), edge_attr=torch.tensor([[4]]), edge_cards=(4,))
    with pytest.raises(UserError, match="integer ids in 2 column"):
        make(torch.rand(2, 2))
    make(torch.rand(2, 5), cards=None)  # float features are not ids


# --- degenerate datasets: one line each -------------------------------------------------------

def test_ogb_label_beyond_the_declared_binary_classes_is_refused(tmp_path: Path):
    from tests.graphs._generated import write_csv

    base = fake_ogb(tmp_path, "ogbg-molbace")
    assert load_ogb("ogbg-molbace", tmp_path).num_classes == 2  # builds the cache
    write_csv(base / "raw" / "graph-label.csv.gz", [2, 0])  # a third "class"
    with pytest.raises(UserError, match="graph 0 has label 2, but OGB declares these molecule sets binary"):
        load_ogb("ogbg-molbace", tmp_path)
    write_csv(base / "raw" / "graph-label.csv.gz", [0.5, 0])  # a regression target read as a class
    with pytest.raises(UserError, match="label 0.5"):
        load_ogb("ogbg-molbace", tmp_path)


def test_tu_edge_joining_two_graphs_is_one_line(tmp_path: Path):
    from tests.graphs._generated import size_dataset, write_tu

    graphs = size_dataset(12, seed=0).graphs
    raw = write_tu(tmp_path, "JOIN", graphs) / "JOIN" / "raw" / "JOIN_A.txt"
    raw.write_text(raw.read_text() + f"1, {graphs[0].num_nodes + 1}\n")  # node 1 (graph 1) -> first node of graph 2
    with pytest.raises(UserError, match=r"JOIN_A.txt line \d+: edge 1, \d+ joins graph 1 to graph 2"):
        load_tu("JOIN", tmp_path)


def test_empty_overlapping_or_single_class_splits_are_refused():
    from graphs.data.graphsets import GraphDataset
    from tests.graphs._generated import size_dataset

    ds = size_dataset(20, seed=0)
    ds.check_splits()

    def variant(**split):
        return GraphDataset("toy", ds.graphs, 2, {**ds.split, **split}, (3,), None)

    with pytest.raises(UserError, match="toy: the test split is empty"):
        variant(test=torch.tensor([], dtype=torch.long)).check_splits()
    with pytest.raises(UserError, match="the train and valid splits share 1 graph"):
        variant(valid=torch.cat([ds.split["valid"], ds.split["train"][:1]])).check_splits()
    class0 = torch.tensor([i for i in ds.split["train"].tolist() if int(ds.graphs[i].y) == 0])
    with pytest.raises(UserError, match="training split holds only class \\[0\\] of 2"):
        variant(train=class0).check_splits()
    with pytest.raises(UserError, match="graph 0 has label 2, outside the 2 declared classes"):
        GraphDataset("toy", [ds.graphs[0].clone().update({"y": torch.tensor(2)})] + ds.graphs[1:], 2, ds.split, (3,), None)
