"""GNN-to-MLP at scale: OGB node layout, CPF .npz and user-graph loaders, the neighbour sampler,
mini-batch teacher/student, the full-batch memory refusal and an ogbn-arxiv-layout run end to end."""
from __future__ import annotations

import gzip
import itertools
import re
from collections import Counter

import numpy as np
import pytest
import torch

from condense.utils import UserError, safe_load
from graphs.data.cpf import cpf_split, load_cpf
from graphs.data.csbm import csbm, csbm_stream
from graphs.data.files import graph_from_tensors, load_graph_files, load_graph_pt
from graphs.data.node_graph import read_csv_gz
from graphs.data.node_splits import make_split, split_from_masks
from graphs.data.ogbn import load_ogbn
from graphs.g2m.__main__ import STUDENT_FORMAT, main
from graphs.g2m.minibatch import MiniBatchConfig, distill_mini_batch, layerwise_inference, train_teacher_mini_batch
from graphs.g2m.pipeline import load_task, run
from graphs.g2m.presets import get_preset
from graphs.g2m.sampling import CSR, sample_blocks, sample_neighbors
from graphs.models.node import build_node_model
from tests.graphs._ogbn_layout import write_arxiv_layout


# ----------------------------------------------------------------------------------------- data
def test_ogbn_arxiv_layout_is_made_undirected_with_official_split_and_cached(tmp_path):
    ref = write_arxiv_layout(tmp_path, nodes=400, edges=3000)
    data = load_ogbn("ogbn-arxiv", tmp_path)
    n = 400
    ei = data.edge_index
    assert (ei[0] != ei[1]).all()  # self-loops removed
    code = ei[1] * n + ei[0]
    assert torch.equal(code, code.unique())  # duplicates merged, coalesced order
    assert torch.equal(torch.sort(ei[0] * n + ei[1]).values, code)  # symmetric
    assert ei.size(1) == 2 * ref["undirected"].size(1)
    assert torch.allclose(data.x, ref["x"], atol=1e-6) and torch.equal(data.y, ref["y"])
    assert torch.equal(split_from_masks(data)[0], torch.from_numpy(ref["train"]))
    assert "3 self-loops removed" in data.summary and "made undirected as GLNN does" in data.summary
    cache = tmp_path / "ogbn_arxiv" / "processed" / "condense_nodes.pt"
    assert cache.is_file()
    again = load_ogbn("ogbn-arxiv", tmp_path)
    assert torch.equal(again.edge_index, ei)


def test_ogbn_bad_files_are_one_line(tmp_path):
    write_arxiv_layout(tmp_path, nodes=200, edges=1000)
    raw = tmp_path / "ogbn_arxiv" / "raw"
    with gzip.open(raw / "edge.csv.gz", "at") as fh:
        fh.write("5,999\n")
    with pytest.raises(UserError, match=r"outside the node range \[0, 200\)"):
        load_ogbn("ogbn-arxiv", tmp_path, cache=False)
    with gzip.open(raw / "edge.csv.gz", "wt") as fh:
        fh.write("1,2\n3,x\n")
    with pytest.raises(UserError, match="garbled"):
        read_csv_gz(raw / "edge.csv.gz", np.int64, 2)
    with gzip.open(raw / "edge.csv.gz", "wt") as fh:
        fh.write("1,2\n3,4,5\n")
    with pytest.raises(UserError, match="mis-shaped"):
        read_csv_gz(raw / "edge.csv.gz", np.int64, 2)
    (raw / "node-label.csv.gz").unlink()
    with pytest.raises(UserError, match="raw/node-label.csv.gz"):
        load_ogbn("ogbn-arxiv", tmp_path)


def _glnn_reference_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GLNN's get_train_val_test_split(random_state, binarized labels, 20, 30), written out as its loops."""
    rs = np.random.RandomState(seed)
    onehot = np.eye(labels.max() + 1)[labels]

    def per_class(k, forbidden):
        by_class = {c: [i for i in range(len(labels)) if onehot[i, c] > 0 and (forbidden is None or i not in forbidden)]
                    for c in range(onehot.shape[1])}  # fmt: skip
        return np.concatenate([rs.choice(by_class[c], k, replace=False) for c in range(onehot.shape[1])])

    train = per_class(20, None)
    val = per_class(30, train)
    return train, val, np.setdiff1d(np.arange(len(labels)), np.concatenate([train, val]))


def test_cpf_npz_standardised_and_split_as_glnn(tmp_path):
    g = csbm(400, 12, avg_degree=6, seed=3)
    half = g.edge_index[:, g.edge_index[0] < g.edge_index[1]].numpy()
    n = 403  # three extra nodes: a pair joined by one directed edge (a second component) and a lone node
    rows = np.concatenate([half[0], [0, 400, 401]])  # one self-loop, one directed edge 400 -> 401
    cols = np.concatenate([half[1], [0, 401, 401]])
    import scipy.sparse as sp

    adj = sp.csr_matrix((np.full(len(rows), 2.0), (rows, cols)), shape=(n, n))
    labels = np.concatenate([g.y.numpy() * 3 + 1, [1, 1, 4]])  # classes {1, 4} -> 0, 1
    np.savez(tmp_path / "cora.npz", adj_data=adj.data, adj_indices=adj.indices, adj_indptr=adj.indptr, adj_shape=adj.shape,
             attr_matrix=np.concatenate([g.x.numpy(), np.zeros((3, 12), np.float32)]), labels=labels)  # fmt: skip
    data = load_cpf("cora", tmp_path, seed=7)
    from scipy.sparse.csgraph import connected_components

    sym = ((adj + adj.T) != 0).astype(np.int8).tolil()
    sym.setdiag(0)
    _, comp = connected_components(sym.tocsr())
    keep = np.flatnonzero(comp == np.bincount(comp).argmax())
    assert data.num_nodes == len(keep) and f"largest connected component {len(keep)} of 403" in data.summary
    ei = data.edge_index
    assert (ei[0] != ei[1]).all() and ei.size(1) == sym.tocsr()[keep][:, keep].nnz
    assert torch.equal(data.x, torch.from_numpy(g.x.numpy()[keep]))
    assert data.class_names == ["1", "4"]
    train, val, test = split_from_masks(data)
    ref = _glnn_reference_split(data.y.numpy(), 7)
    for ours, theirs in zip((train, val, test), ref):
        assert torch.equal(ours, torch.from_numpy(np.sort(theirs)))
    assert torch.bincount(data.y[train]).tolist() == [20, 20] and torch.bincount(data.y[val]).tolist() == [30, 30]
    assert not torch.equal(torch.from_numpy(np.sort(cpf_split(data.y.numpy(), 8)[0])), train)
    np.savez(tmp_path / "citeseer.npz", labels=labels)
    with pytest.raises(UserError, match="not a CPF graph"):
        load_cpf("citeseer", tmp_path)


def _user_graph(tmp_path, **over):
    g = csbm(200, 8, avg_degree=5, seed=1)
    arrays = dict(features=g.x.numpy(), labels=g.y.numpy(), edges=g.edge_index.t().numpy())
    arrays.update(over)
    for k, v in arrays.items():
        np.save(tmp_path / f"{k}.npy", v)
    return g


def test_user_graph_files_csv_and_pt(tmp_path):
    g = _user_graph(tmp_path)
    a = load_graph_files(tmp_path)
    assert a.edge_index.size(1) == g.edge_index.size(1) and "GLNN CPF rule" in a.summary
    (tmp_path / "edges.npy").unlink()
    (tmp_path / "edges.csv").write_text("src,dst\n" + "\n".join(f"{s},{d}" for s, d in g.edge_index[:, ::2].t().tolist()) + "\n5 5\n")
    b = load_graph_files(tmp_path)
    assert "1 self-loops removed" in b.summary
    masks = {k: torch.zeros(200, dtype=torch.bool) for k in ("train", "val", "test")}
    masks["train"][:50], masks["val"][50:100], masks["test"][100:] = True, True, True
    torch.save(dict(x=g.x, y=g.y, edge_index=g.edge_index, **{f"{k}_mask": v for k, v in masks.items()}), tmp_path / "graph.pt")
    c = load_graph_pt(tmp_path / "graph.pt")
    assert torch.equal(c.train_mask, masks["train"]) and "given masks" in c.summary
    data, (train, _, _) = load_task("files", tmp_path)  # graph.pt wins over the file layout
    assert len(train) == 50


@pytest.mark.parametrize("over, needle", [
    (dict(edges=np.array([[0, 1], [2, 200]])), r"edge endpoint 200 is outside the node range \[0, 200\)"),
    (dict(labels=np.zeros(199, dtype=np.int64)), "features have 200 rows but labels 199"),
    (dict(features=np.full((200, 8), np.nan, dtype=np.float32)), "finite"),
    (dict(labels=np.full(200, 0.5)), "integer class ids"),
    (dict(train_mask=np.zeros(200, bool), val_mask=np.ones(200, bool), test_mask=np.ones(200, bool)), "the train split is empty"),
    (dict(train_mask=np.arange(200) < 60, val_mask=np.arange(200) >= 50, test_mask=np.arange(200) >= 150), "overlap"),
])  # fmt: skip
def test_user_graph_bad_inputs_are_one_line_and_write_nothing(tmp_path, capsys, over, needle):
    root = tmp_path / "g"
    root.mkdir()
    _user_graph(root, **over)
    out = tmp_path / "out" / "s.pt"
    assert main(["--dataset", "files", "--root", str(root), "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert re.search(needle, err[0])
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_labels_beyond_the_class_names_are_refused(tmp_path):
    _user_graph(tmp_path)
    (tmp_path / "class_names.txt").write_text("only-one\n")
    with pytest.raises(UserError, match="1 class names for labels up to 1"):
        load_graph_files(tmp_path)


# -------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("k", [2, 5])  # 2: draw-and-redraw branch (deg > 2k); 5: smallest-keys branch (k < deg <= 2k)
def test_sampler_draws_every_subset_uniformly(k):
    """Exhaustive reference: the 9 neighbours of a star's centre, every k-subset equally likely."""
    star = CSR.from_edge_index(torch.tensor([list(range(1, 10)), [0] * 9]), 10)
    draws = 12000
    nbr, row = sample_neighbors(star, torch.zeros(draws, dtype=torch.long), k, torch.Generator().manual_seed(0))
    assert torch.equal(torch.bincount(row), torch.full((draws,), k))
    subsets = Counter(tuple(sorted(s)) for s in nbr.view(draws, k).tolist())
    expected = {tuple(c) for c in itertools.combinations(range(1, 10), k)}
    assert set(subsets) == expected  # without replacement, only real neighbours, every subset reachable
    mean = draws / len(expected)
    assert max(abs(c - mean) for c in subsets.values()) < 6 * mean**0.5  # within 6 sigma of uniform


def test_blocks_are_seeded_real_edges_with_capped_counts():
    g = csbm(300, 4, avg_degree=8, seed=2)
    csr = CSR.from_edge_index(g.edge_index, 300)
    edges = set(map(tuple, g.edge_index.t().tolist()))
    seeds = torch.tensor([3, 10, 250])
    blocks = sample_blocks(csr, seeds, [4, 3], torch.Generator().manual_seed(1))
    assert torch.equal(blocks[-1].nodes[:3], seeds) and blocks[-1].num_dst == 3
    assert torch.equal(blocks[0].nodes[: blocks[0].num_dst], blocks[1].nodes)  # targets first
    for block, k in zip(blocks, (4, 3)):
        src, dst = block.nodes[block.edge_index[0]], block.nodes[block.edge_index[1]]
        assert all((s, d) in edges for s, d in zip(src.tolist(), dst.tolist()))
        counts = torch.bincount(block.edge_index[1], minlength=block.num_dst)
        assert torch.equal(counts, csr.degree[block.nodes[: block.num_dst]].clamp(max=k))
    again = sample_blocks(csr, seeds, [4, 3], torch.Generator().manual_seed(1))
    assert all(torch.equal(a.edge_index, b.edge_index) and torch.equal(a.nodes, b.nodes) for a, b in zip(blocks, again))


@pytest.mark.parametrize("name", ["gcn", "sage", "gat"])
def test_blocks_with_every_neighbour_and_layerwise_inference_equal_the_full_forward(name):
    g = csbm(250, 10, avg_degree=6, seed=4)
    torch.manual_seed(0)
    model = build_node_model(name, 10, 2, hidden=8, num_layers=3, norm="batch").eval()
    model.norms[0].running_mean.normal_()  # non-trivial eval-mode batch norm
    full = model(g.x, g.edge_index)
    csr = CSR.from_edge_index(g.edge_index, 250)
    seeds = torch.tensor([7, 0, 120, 249])
    blocks = sample_blocks(csr, seeds, [-1, -1, -1])
    torch.testing.assert_close(model.forward_blocks(g.x[blocks[0].nodes], blocks), full[seeds], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layerwise_inference(model, g.x, csr, chunk=64), full, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------- training
def test_mini_batch_student_learns_the_teacher_with_every_loss():
    g = csbm_stream(1500, 12000, 16, 3, p_in=0.9, signal=0.6, seed=0)
    split = make_split(1500, torch.arange(300), torch.arange(300, 600), torch.arange(600, 1500), "ind", seed=0)
    perfect = 4 * torch.nn.functional.one_hot(g.y, 3).float()
    cfg = MiniBatchConfig((3, 3), 64, 128, 3)
    scores = {}
    for method in ("mlp", "glnn", "lfd", "hfd", "ff-g2m"):
        torch.manual_seed(0)
        student = build_node_model("mlp", 16, 3, hidden=32)
        scores[method] = distill_mini_batch(student, g, split, perfect, cfg, method=method, lamb=0.0 if method != "mlp" else 1.0,
                                            max_epochs=5, patience=5, seed=0).scores  # fmt: skip
    assert set(scores["glnn"]) == {"val", "tran", "ind", "prod"}
    assert scores["glnn"]["tran"] > scores["mlp"]["tran"] and scores["ff-g2m"]["tran"] > scores["mlp"]["tran"]


def test_full_batch_too_large_is_refused_before_training_and_suggests_mini_batch(tmp_path, capsys):
    out = tmp_path / "o" / "s.pt"
    assert main(["--nodes", "300", "--features", "20", "--memory-budget", "0.000001", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rerun with --mini-batch" in err[0]
    assert not out.exists()
    assert main(["--fan-out", "5,5", "--no-progress", "--out", str(out)]) == 2
    assert "--mini-batch training only" in capsys.readouterr().err


@pytest.mark.slow
def test_arxiv_layout_end_to_end_mini_batch(tmp_path, capsys):
    """Loader -> neighbour-sampled SAGE teacher (GLNN's arxiv preset, fan-outs 5,10,15) -> FF-G2M student in node batches."""
    write_arxiv_layout(tmp_path, nodes=1000, edges=8000, features=16, classes=5)
    out = tmp_path / "run" / "student.pt"
    argv = ["--dataset", "ogbn-arxiv", "--root", str(tmp_path), "--teacher", "sage", "--preset", "glnn", "--mini-batch",
            "--method", "ff-g2m", "--max-epochs", "3", "--batch-size", "256", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "ogbn-arxiv: 1000 nodes" in text and "training: mini-batch, teacher fan-outs 5,10,15" in text
    art = safe_load(out, expected_format=STUDENT_FORMAT)
    assert art["class_names"] == [str(c) for c in range(5)] and len(art["teacher_checksum"]) == 64
    teacher = safe_load(tmp_path / "run" / "teacher.pt")
    assert teacher["scores"]["tran"] > 0.5  # 5 classes: chance is 0.2


def test_pipeline_run_mini_batch_exposes_serving_metadata():
    g = csbm_stream(600, 4000, 8, 3, p_in=0.9, signal=0.6, seed=1)
    g = graph_from_tensors(g.x, g.y, g.edge_index, name="toy")
    data, labelled = g, split_from_masks(g)
    split = make_split(data.num_nodes, *labelled, "tran")
    preset = get_preset("files", "gcn")
    from dataclasses import replace

    preset = replace(preset, teacher=replace(preset.teacher, max_epochs=3), student=replace(preset.student, max_epochs=3))
    res = run(data, split, "gcn", preset, ("glnn",), mini_batch=preset.mini_batch_config())
    assert set(res.serving) >= {"in_dim", "num_classes", "class_names", "feature_preprocessing", "student_config", "teacher_checksum", "training"}
    assert res.serving["training"].startswith("training: mini-batch")
    student = res.students["glnn"][0]
    assert student(data.x[:4]).shape == (4, 3)
    t = train_teacher_mini_batch(build_node_model("gat", 8, 3, hidden=8), data, split, MiniBatchConfig((2, 2), 64), max_epochs=1)
    assert t.logits.shape == (600, 3)


@pytest.mark.slow
def test_two_gloo_ranks_train_identical_replicas(tmp_path):
    """Data parallel over node batches (what torchrun runs): 2 gloo ranks end with the same weights."""
    import torch.multiprocessing as mp

    from tests.graphs._g2m_ddp import train_rank

    ctx = mp.start_processes(train_rank, args=(2, str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = __import__("time").monotonic() + 120
    while not ctx.join(timeout=5):
        if __import__("time").monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("2-rank gloo training did not finish in 120 s")
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for part in ("teacher", "student"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])


def test_streamed_csbm_is_seeded_undirected_and_homophilous():
    from graphs.data.csbm import homophily

    a = csbm_stream(2000, 40000, 6, 4, p_in=0.8, seed=5, chunk=3000)  # several chunks
    b = csbm_stream(2000, 40000, 6, 4, p_in=0.8, seed=5, chunk=3000)
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    ei = a.edge_index
    assert (ei[0] != ei[1]).all() and 39000 < ei.size(1) <= 40000
    assert torch.equal(torch.sort(ei[0] * 2000 + ei[1]).values, torch.sort(ei[1] * 2000 + ei[0]).values)
    assert abs(homophily(ei, a.y) - (0.8 + 0.2 / 4)) < 0.02
