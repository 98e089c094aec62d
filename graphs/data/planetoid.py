"""Planetoid citation graphs (Cora, CiteSeer, PubMed) from local raw files, public split.

Reads the eight ``ind.<name>.*`` raw files of Yang, Cohen & Salakhutdinov (ICML 2016) under
``root/<Name>/raw/`` itself: each pickle goes through the restricted unpickler
(:func:`condense.safeio.safe_unpickle`) exactly once, and the graph is built from those objects as
``torch_geometric.io.planetoid.read_planetoid_data`` builds it (test rows moved to their indices,
CiteSeer's isolated test nodes as zero rows, self-loops removed, duplicate edges merged, edges
ordered by (target, source)) -- equal to :class:`torch_geometric.datasets.Planetoid` on the same
files, tested.  Nothing is written: ``root`` may be read-only, and no file is unpickled by code we
have not checked.  A missing file is a :class:`~condense.utils.UserError` naming the dataset, the
root and the files, never a download.

The split is the public GCN split (Kipf & Welling 2017): 20 labelled nodes per class for training,
500 validation and 1000 test nodes. This is also the split the FF-G2M code uses (DGL's
``CoraGraphDataset`` et al. carry the same masks).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from condense.safeio import check_root, check_values, safe_unpickle
from condense.utils import UserError

__all__ = ["PLANETOID_NAMES", "RAW_SUFFIXES", "load_planetoid", "planetoid_available"]

#: lower-case dataset name -> directory name PyG expects under ``root``.
PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
RAW_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def _canonical(name: str) -> str:
    key = str(name).lower()
    if key not in PLANETOID_NAMES:
        raise UserError(f"unknown Planetoid dataset {name!r} (expected one of {', '.join(PLANETOID_NAMES)})")
    return key


def _missing_raw_files(name: str, root: Path) -> list[Path]:
    raw = root / PLANETOID_NAMES[name] / "raw"
    return [raw / f"ind.{name}.{suffix}" for suffix in RAW_SUFFIXES if not (raw / f"ind.{name}.{suffix}").is_file()]


def _read_raw(key: str, files: list[Path]) -> dict:
    """Every ``ind.<name>.*`` file, pickles through the restricted unpickler, checked for type and consistent sizes."""
    objs = {}
    for path, suffix in zip(files, RAW_SUFFIXES):
        if suffix == "test.index":
            try:
                objs[suffix] = [int(line) for line in path.read_text().split()]
            except (ValueError, UnicodeDecodeError):
                raise UserError(f"{path} must hold one integer node index per line") from None
            continue
        obj = safe_unpickle(path, what="Planetoid raw file")
        ok = isinstance(obj, dict) if suffix == "graph" else getattr(obj, "ndim", 0) == 2
        if not ok:
            raise UserError(f"{path} holds a {type(obj).__name__}, not the {'adjacency dict' if suffix == 'graph' else 'matrix'} expected")
        objs[suffix] = obj
    for a, b in (("x", "y"), ("tx", "ty"), ("allx", "ally"), ("tx", "test.index")):
        na, nb = objs[a].shape[0], len(objs[b]) if b == "test.index" else objs[b].shape[0]
        if na != nb:
            raise UserError(f"dataset {key!r}: ind.{key}.{a} has {na} rows but ind.{key}.{b} {nb} ({files[0].parent})")
    return objs


def _dense(m) -> torch.Tensor:
    return torch.from_numpy(np.asarray(m.todense() if hasattr(m, "todense") else m)).float()


def _build(key: str, objs: dict, where: Path) -> Data:
    """The public-split graph from the raw objects (``read_planetoid_data``'s construction)."""
    tx, allx, ty, ally = (_dense(objs[k]) for k in ("tx", "allx", "ty", "ally"))
    n_train = objs["y"].shape[0]  # the public split: the first len(y) nodes train, the next 500 validate
    test_index = torch.tensor(objs["test.index"], dtype=torch.long)
    sorted_test = test_index.sort().values
    if key == "citeseer":  # isolated test nodes have no row in tx/ty: zero rows keep the indices consecutive
        lo, span = int(test_index.min()), int(test_index.max() - test_index.min()) + 1
        tx_ext, ty_ext = tx.new_zeros(span, tx.size(1)), ty.new_zeros(span, ty.size(1))
        tx_ext[sorted_test - lo], ty_ext[sorted_test - lo] = tx, ty
        tx, ty = tx_ext, ty_ext
    feats = torch.cat([allx, tx])
    labels = torch.cat([ally, ty]).max(dim=1).indices
    n = labels.numel()
    if int(test_index.min()) < 0 or int(test_index.max()) >= n:
        raise UserError(f"dataset {key!r}: ind.{key}.test.index names nodes outside the {n} nodes of {where}")
    feats[test_index], labels[test_index] = feats[sorted_test], labels[sorted_test]
    rows = [int(u) for u, vs in objs["graph"].items() for _ in vs]
    cols = [int(v) for vs in objs["graph"].values() for v in vs]
    row, col = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)
    if row.numel() and (min(row.min(), col.min()) < 0 or max(row.max(), col.max()) >= n):
        raise UserError(f"dataset {key!r}: ind.{key}.graph names nodes outside the {n} nodes of {where}")
    keep = row != col  # self-loops removed; duplicates merged, ordered by (target, source) as PyG's coalesce
    code = torch.unique(col[keep] * n + row[keep])
    edge_index = torch.stack([code % n, code // n])
    mask = lambda idx: torch.zeros(n, dtype=torch.bool).index_fill_(0, idx, True)  # noqa: E731
    data = Data(x=feats, edge_index=edge_index, y=labels)
    data.train_mask = mask(torch.arange(n_train))
    data.val_mask = mask(torch.arange(n_train, n_train + 500))
    data.test_mask = mask(test_index)
    return data


def planetoid_available(name: str, root: str | Path) -> bool:
    """True when all raw files of ``name`` are present under ``root`` (used to skip PubMed)."""
    return not _missing_raw_files(_canonical(name), Path(root))


def load_planetoid(name: str, root: str | Path, *, normalize_features: bool = True) -> Data:
    """Load ``name`` from ``root/<Name>/raw`` with the public split; never downloads.

    Args:
        name: ``"cora"``, ``"citeseer"`` or ``"pubmed"`` (case-insensitive).
        root: directory holding ``<Name>/raw/ind.<name>.*`` (only read; nothing is written).
        normalize_features: row-normalise the bag-of-words features to sum 1 (what DGL's
            citation datasets, and hence the FF-G2M and GLNN code, feed to the models).

    Returns:
        A :class:`~torch_geometric.data.Data` with ``x`` (float32), ``y``, an undirected
        ``edge_index`` without self-loops, and ``train_mask``/``val_mask``/``test_mask``.
    """
    key = _canonical(name)
    root = Path(root)
    check_root(root, f"Planetoid dataset {key!r}")
    missing = _missing_raw_files(key, root)
    if missing:
        listed = ", ".join(p.name for p in missing)
        raise UserError(
            f"dataset {key!r}: raw files missing under {str(root / PLANETOID_NAMES[key] / 'raw')!r}: {listed} "
            f"(expected ind.{key}.{{{','.join(RAW_SUFFIXES)}}}; copy them there, nothing is downloaded)"
        )
    raw = root / PLANETOID_NAMES[key] / "raw"
    data = _build(key, _read_raw(key, [raw / f"ind.{key}.{suffix}" for suffix in RAW_SUFFIXES]), raw)
    check_values(data.x, f"dataset {key!r} node features ({raw})")
    if normalize_features:
        data.x = data.x / data.x.sum(dim=1, keepdim=True).clamp_min(1e-12)
    data.name = key
    return data
