"""Class 4: corrupt or inconsistent data is rejected with one line naming the file, never trained on."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from condense.data import read_idx
from condense.safeio import check_finite_state, check_labels
from condense.utils import UserError
from graphs.data.ogb import load_ogb
from graphs.data.tu import load_tu
from tests.graphs._generated import fake_ogb, write_csv


def _idx(path: Path, values: bytes, dims: tuple[int, ...]) -> Path:
    header = b"\x00\x00\x08" + bytes([len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(gzip.compress(header + values))
    return path


def test_idx_damage_is_named(tmp_path):
    good = _idx(tmp_path / "ok.gz", bytes(range(12)), (3, 2, 2))
    assert read_idx(good).shape == (3, 2, 2)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(UserError, match="cut.gz cannot be read .truncated gzip"):
        read_idx(cut)
    plain = tmp_path / "plain.gz"
    plain.write_bytes(b"\x00\x00\x08\x01" + bytes(8))
    with pytest.raises(UserError, match="plain.gz cannot be read .not a valid gzip"):
        read_idx(plain)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00\x00"))
    with pytest.raises(UserError, match="short.gz is truncated: its header declares 3 dimensions"):
        read_idx(short)
    few = _idx(tmp_path / "few.gz", bytes(5), (3, 2, 2))
    with pytest.raises(UserError, match="few.gz is truncated"):
        read_idx(few)


def _mutag(tmp_path: Path, shared: Path) -> Path:
    root = tmp_path / "tu"
    shutil.copytree(shared / "tu" / "MUTAG" / "raw", root / "MUTAG" / "raw")
    return root


@pytest.mark.parametrize(
    "part,damage,message",
    [
        ("A", lambda t: t[: len(t) // 2] + "\n17, x\n", "MUTAG_A.txt is garbled"),
        ("A", lambda t: t + "99999, 1\n", "MUTAG_A.txt refers to node 99999"),
        ("graph_labels", lambda t: "\n".join(t.splitlines()[:-5]) + "\n", "MUTAG_graph_labels.txt has 183 labels"),
        ("graph_indicator", lambda t: "\n".join(t.splitlines()[::-1]) + "\n", "graph ids must be sorted"),
        ("node_labels", lambda t: "\n".join(t.splitlines()[:-3]) + "\n", "MUTAG_node_labels.txt has"),
        ("edge_labels", lambda t: "", "MUTAG_edge_labels.txt is empty"),
    ],
)
def test_tu_damage_is_named(shared_data, tmp_path, part, damage, message):
    root = _mutag(tmp_path, shared_data)
    path = root / "MUTAG" / "raw" / f"MUTAG_{part}.txt"
    path.write_text(damage(path.read_text()))
    with pytest.raises(UserError, match=message):
        load_tu("MUTAG", root)


def test_stale_tu_cache_is_rebuilt_or_refused(shared_data, tmp_path):
    root = _mutag(tmp_path, shared_data)
    assert len(load_tu("MUTAG", root).graphs) == 188
    raw = root / "MUTAG" / "raw" / "MUTAG_graph_labels.txt"
    original = raw.read_text()
    raw.write_text("garbage\n")  # the old processed/ cache must not hide this
    with pytest.raises(UserError, match="MUTAG_graph_labels.txt is garbled"):
        load_tu("MUTAG", root)
    flipped = "\n".join("1" if v.strip() == "-1" else "-1" for v in original.split()) + "\n"
    raw.write_text(flipped)  # valid but different raw files: the cache is rebuilt from them
    ds = load_tu("MUTAG", root)
    assert ds.labels().tolist() != [int(g.y) for g in load_tu("MUTAG", _mutag(tmp_path / "b", shared_data)).graphs]


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-8]), "edge.csv.gz is truncated"),
        (lambda p: p.write_bytes(b"0,1\n1,2\n"), "edge.csv.gz is not a valid gzip file"),
        (lambda p: write_csv(p, [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]), "edge.csv.gz has 3 columns, expected 2"),
        (lambda p: write_csv(p, [[0, 1], [1, 2], [2, 0], [0, 7]]), "edge.csv.gz has node ids outside their graph"),
        (lambda p: write_csv(p, [[0, 1], [1, 2], [2, 0], [0, "x"]]), "edge.csv.gz is garbled"),
    ],
)
def test_ogb_damage_is_named(tmp_path, damage, message):
    base = fake_ogb(tmp_path, "ogbg-molbace")
    assert len(load_ogb("ogbg-molbace", tmp_path).graphs) == 2  # builds the cache
    damage(base / "raw" / "edge.csv.gz")
    with pytest.raises(UserError, match=message):
        load_ogb("ogbg-molbace", tmp_path)


def test_boundary_tensor_checks():
    check_labels(torch.tensor([0, 9]), 10)
    check_labels(torch.full((2, 4), 0.25), 4)
    for labels, message in ((torch.tensor([0, 10]), "class id 10 is outside"), (torch.tensor([-1]), "class id -1"),
                            (torch.tensor([[0.5, 0.6]]), "must sum to 1"), (torch.tensor([[1.5, -0.5]]), "negative"),
                            (torch.tensor([[float("nan"), 1.0]]), "NaN")):  # fmt: skip
        with pytest.raises(UserError, match=message):
            check_labels(labels, 10 if labels.dim() == 1 else 2)
    with pytest.raises(UserError, match="'w'.*NaN"):
        check_finite_state({"w": torch.tensor([1.0, float("inf")])}, what="teacher")
