"""Continuous TU node attributes: dropped by default (the official codes), concatenated for the
GNNs on request, discretised for mining with quantile bins, and said in the summary line."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from condense.utils import UserError
from graphs.data.tu import load_tu
from graphs.mirage.distill import MirageConfig, mirage_distill
from graphs.mirage.labels import discretise
from graphs.mirage.presets import mining_features
from graphs.mirage.train import TrainConfig, train_restarts
from tests.graphs._generated import size_graph, write_tu


def _attributed(tmp_path: Path, n: int = 120) -> Path:
    """Both classes have the same sizes and random labels; only the node attribute (around y) tells them apart."""
    gen = torch.Generator().manual_seed(0)
    graphs, attrs = [], []
    for i in range(n):
        y = i % 2
        g = size_graph(int(torch.randint(6, 12, (1,), generator=gen)), y, gen)
        graphs.append(g)
        attrs.append((3.0 * y + torch.randn(g.num_nodes, 1, generator=gen)).round() + 0.25)
    return write_tu(tmp_path, "ATTR", graphs, node_attr=attrs)


def _auc(ds) -> float:
    cfg = TrainConfig(model="gin", hidden=16, layers=2, dropout=0.0, epochs=15, restarts=1, top=1, weight_decay=0.0, lr=0.01)
    s = train_restarts(ds.subset("train"), ds.subset("valid"), ds.subset("test"), dims=(ds.in_dim, ds.edge_dim),
                       num_classes=2, metric="rocauc", config=cfg, seed=0, progress=False)
    return s.test_at_best_val[0]


def test_attributes_dropped_by_default_and_said(tmp_path: Path):
    root = _attributed(tmp_path)
    drop = load_tu("ATTR", root)
    assert drop.node_cardinalities == (3,) and "1 continuous node attribute(s) dropped" in drop.summary()
    cat = load_tu("ATTR", root, node_attr="concat")
    assert cat.in_dim == 4 and cat.info["attribute_columns"] == 1 and "1 continuous attribute(s) + one-hot" in cat.summary()
    g = cat.graphs[0]
    assert torch.equal(g.x[:, 1:].argmax(1), drop.graphs[0].x.view(-1)) and (g.x[:, 0] % 1 == 0.25).all()
    with pytest.raises(UserError, match="node_attr"):
        load_tu("ATTR", root, node_attr="mean")


def test_gnn_uses_the_concatenated_attribute(tmp_path: Path):
    root = _attributed(tmp_path)
    assert _auc(load_tu("ATTR", root, node_attr="concat")) > 0.9
    assert _auc(load_tu("ATTR", root)) < 0.8  # labels and sizes carry no class signal


def test_bins_change_mining_and_the_summary(tmp_path: Path):
    root = _attributed(tmp_path)
    ds = load_tu("ATTR", root, node_attr="concat")
    labels_only, said = mining_features(ds, None)
    assert labels_only == {"label_columns": (1, 2, 3)} and "not mined" in said
    binned, said = mining_features(ds, 2)
    assert binned["bins"] == 2 and binned["bin_columns"] == (0,) and "2 quantile bins" in said and "training graphs" in said
    train = ds.subset("train")
    plain = mirage_distill(train, 2, MirageConfig(hops=0, support=(0.5,), **labels_only), progress=False).meta
    mined = mirage_distill(train, 2, MirageConfig(hops=0, support=(0.5,), **binned), progress=False).meta
    assert plain["unique_trees_total"] == 3 and mined["unique_trees_total"] == 6  # label x bin
    with pytest.raises(UserError, match="--node-attr concat"):
        mining_features(load_tu("ATTR", root), 2)


def test_quantile_bins_cut_named_integer_columns():
    x = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [4.0, 1.0]])
    assert discretise(x, bins=2).tolist() == [0, 1, 2, 3]  # integral columns kept: 4 distinct rows
    assert discretise(x, bins=2, bin_columns=(0,)).tolist() == [0, 1, 2, 3]
    assert discretise(x[:, :1], bins=2, bin_columns=(0,)).tolist() == [0, 0, 1, 1]


def test_experiment_cli_bins_without_attributes_is_one_line_error(tmp_path: Path, capsys):
    from experiments.mirage import main

    root = _attributed(tmp_path / "data")
    assert main(["--datasets", "ATTR", "--root", str(root), "--bins", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--node-attr concat" in err and len(err.splitlines()) == 1
