"""Class 1: loading a data file never executes code (restricted unpickler; weights_only artifacts)."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch

from condense.data import load_dataset
from condense.safeio import safe_unpickle
from condense.synset import SyntheticSet
from condense.utils import UserError
from graphs.data.planetoid import RAW_SUFFIXES, load_planetoid

from .fuzz_table import _pickle_payload


def _cifar10(root, n=20, labels=None, batch=None):
    """A tiny cifar-10-batches-py directory (n images per batch)."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        obj = batch if batch is not None and name == "data_batch_1" else {
            "data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
            "labels": list(labels if labels is not None else np.arange(n) % 10)}  # fmt: skip
        with open(base / name, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    return base


def test_restricted_unpickler_reads_data_and_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good.pkl"
    import scipy.sparse as sp
    from collections import defaultdict

    graph = defaultdict(list, {0: [1]})
    with open(good, "wb") as fh:
        pickle.dump({"a": np.arange(3), "m": sp.csr_matrix(np.eye(2)), "g": graph}, fh, protocol=2)
    obj = safe_unpickle(good)
    assert obj["a"].tolist() == [0, 1, 2] and obj["m"].toarray().tolist() == [[1, 0], [0, 1]] and obj["g"][0] == [1]
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(_pickle_payload(tmp_path / "PWNED"))
    with pytest.raises(UserError, match=r"bad.pkl: refusing .*io.open"):
        safe_unpickle(bad)
    assert not (tmp_path / "PWNED").exists()
    (tmp_path / "cut.pkl").write_bytes(good.read_bytes()[:40])
    with pytest.raises(UserError, match="cut.pkl is not a readable"):
        safe_unpickle(tmp_path / "cut.pkl")


def test_cifar_payload_never_runs_and_bad_batches_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = _cifar10(tmp_path / "ok")
    ds = load_dataset("cifar10", tmp_path / "ok")
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.fingerprint
    base = _cifar10(tmp_path / "evil")
    (base / "data_batch_1").write_bytes(_pickle_payload(tmp_path / "PWNED"))
    with pytest.raises(UserError, match="data_batch_1: refusing"):
        load_dataset("cifar10", tmp_path / "evil")
    assert not (tmp_path / "PWNED").exists()
    _cifar10(tmp_path / "short", batch={"data": np.zeros((20, 3072), np.uint8), "labels": [0] * 19})
    with pytest.raises(UserError, match="data_batch_1: 20 images but 19 labels"):
        load_dataset("cifar10", tmp_path / "short")
    _cifar10(tmp_path / "keys", batch={"pixels": np.zeros((20, 3072), np.uint8)})
    with pytest.raises(UserError, match="data_batch_1 is not a CIFAR batch: expected keys"):
        load_dataset("cifar10", tmp_path / "keys")
    _cifar10(tmp_path / "range", labels=[12] * 20)
    with pytest.raises(UserError, match=r"class id 12 is outside|labels must be in \[0, 10\), found 12"):
        load_dataset("cifar10", tmp_path / "range")
    base = _cifar10(tmp_path / "cut")
    (base / "test_batch").write_bytes((base / "test_batch").read_bytes()[:500])
    with pytest.raises(UserError, match="test_batch is not a readable CIFAR batch"):
        load_dataset("cifar10", tmp_path / "cut")


def test_planetoid_payload_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "Cora" / "raw"
    raw.mkdir(parents=True)
    for suffix in RAW_SUFFIXES:
        (raw / f"ind.cora.{suffix}").write_bytes(_pickle_payload(tmp_path / "PWNED") if suffix != "test.index" else b"1\n")
    with pytest.raises(UserError, match=r"ind\.cora\.\w+: refusing"):
        load_planetoid("cora", tmp_path)
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "Cora" / "processed").exists()


@pytest.mark.shared_data
def test_real_planetoid_pickles_pass_the_restricted_unpickler(shared_data, tmp_path):
    """Then a payload swapped into a cached copy is caught too (the raw fingerprint marks the cache stale)."""
    root = tmp_path / "pl"
    shutil.copytree(shared_data / "planetoid" / "Cora", root / "Cora")
    data = load_planetoid("cora", root)
    assert data.num_nodes == 2708
    (root / "Cora" / "raw" / "ind.cora.x").write_bytes(_pickle_payload(tmp_path / "PWNED"))
    with pytest.raises(UserError, match="ind.cora.x: refusing"):
        load_planetoid("cora", root)
    assert not (tmp_path / "PWNED").exists()


def test_pt_payload_error_does_not_advise_disabling_the_protection(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "PWNED"), "w"))

    torch.save({"format": "condense.SyntheticSet/1", "images": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError) as err:
        SyntheticSet.load(tmp_path / "evil.pt")
    msg = str(err.value)
    assert "refusing" in msg and "weights_only" not in msg and "\n" not in msg
    assert not (tmp_path / "PWNED").exists()
