"""Caches we read but did not write: a library's ``processed/`` files behind a valid marker are
validated against the hashes the marker recorded and rebuilt when they differ, never unpickled.

PyG reads ``processed/pre_transform.pt`` with ``weights_only=False`` and falls back to it for
``data.pt`` when the safe load fails, so a planted pickle there would run code; a truncated one
ended in a raw traceback. OGB's cache (our own ``atomic_save`` artifact) is checked by its checksum
and rebuilt when damaged or foreign.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from tests.graphs._generated import fake_ogb, size_dataset, write_tu

from .fuzz_table import _pickle_payload


@pytest.fixture()
def tu_root(tmp_path: Path) -> Path:
    return write_tu(tmp_path / "data", "TOY", size_dataset(12).graphs)


@pytest.mark.parametrize("victim,damage", [
    ("data.pt", "truncate"), ("data.pt", "payload"), ("pre_transform.pt", "payload"), ("pre_filter.pt", "payload"),
])  # fmt: skip
def test_tu_cache_behind_a_valid_marker_is_rebuilt(tu_root: Path, tmp_path: Path, monkeypatch, victim: str, damage: str) -> None:
    from graphs.data.tu import load_tu

    monkeypatch.chdir(tmp_path)
    first = load_tu("TOY", tu_root)
    processed = tu_root / "TOY" / "processed"
    target = processed / victim
    assert target.is_file() and (processed / "condense_raw.sha256").is_file()
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    else:
        target.write_bytes(_pickle_payload(Path("PWNED")))
    again = load_tu("TOY", tu_root)  # no traceback, no code run, same data
    assert not (tmp_path / "PWNED").exists()
    assert len(again.graphs) == len(first.graphs)
    assert all(torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index) for a, b in zip(first.graphs, again.graphs))
    assert target.read_bytes()[:2] == b"PK"  # rebuilt by torch.save


def test_ogb_cache_damaged_or_foreign_is_rebuilt(tmp_path: Path, monkeypatch) -> None:
    from graphs.data.ogb import load_ogb

    monkeypatch.chdir(tmp_path)
    base = fake_ogb(tmp_path)
    first = load_ogb("ogbg-molbbbp", tmp_path)
    cache = base / "processed" / "condense_graphs.pt"
    assert cache.is_file()
    for bad in (cache.read_bytes()[:200], _pickle_payload(Path("PWNED")), pickle.dumps({"format": "other"})):
        cache.write_bytes(bad)
        again = load_ogb("ogbg-molbbbp", tmp_path)
        assert not (tmp_path / "PWNED").exists()
        assert [int(g.y) for g in again.graphs] == [int(g.y) for g in first.graphs]
