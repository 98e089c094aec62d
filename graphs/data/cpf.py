"""GLNN's CPF ``.npz`` graphs (cora, citeseer, pubmed, a-computer, a-photo) with GLNN's split rule.

Format (``snap-research/graphless-neural-networks`` ``dataloader.load_npz_to_sparse_graph``): a
NumPy ``.npz`` with the CSR adjacency ``adj_data, adj_indices, adj_indptr, adj_shape``, the
attributes as CSR ``attr_data, attr_indices, attr_indptr, attr_shape`` or dense ``attr_matrix``, and
``labels`` (one class per node). The file is read with ``allow_pickle=False``.

Preprocessing as ``load_cpf_data`` (``SparseGraph.standardize``): unweighted, symmetrised
(``A + A^T`` binarised), self-loops removed, restricted to the largest connected component (nodes
kept in index order); labels are mapped to ``0..C-1`` in sorted order (``LabelBinarizer`` then
``argmax``); features are the raw attribute matrix as float32.

Split (``get_train_val_test_split`` with ``labelrate_train=20, labelrate_val=30``): a
``np.random.RandomState(seed)`` draws, class by class, 20 training nodes
(``random_state.choice(members, 20, replace=False)``), then 30 validation nodes per class among the
rest; every remaining node is a test node. Same draws as the official code, so the same seed gives
GLNN's split.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from torch_geometric.data import Data

from condense.safeio import check_root
from condense.utils import UserError
from graphs.data.node_graph import masks_from_indices, node_data

__all__ = ["CPF_NAMES", "cpf_split", "load_cpf", "read_cpf_npz"]

CPF_NAMES = ("cora", "citeseer", "pubmed", "a-computer", "a-photo")


def read_cpf_npz(path: str | os.PathLike) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """``(adjacency, features, labels)`` as stored; a missing key or bad shape is one line."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            need = {"adj_data", "adj_indices", "adj_indptr", "adj_shape", "labels"}
            if not need <= keys or not ({"attr_data", "attr_matrix"} & keys):
                raise UserError(f"{path} is not a CPF graph: it lacks {', '.join(sorted(need - keys)) or 'attr_data/attr_matrix'}")
            adj = sp.csr_matrix((f["adj_data"], f["adj_indices"], f["adj_indptr"]), shape=tuple(f["adj_shape"]))
            if "attr_data" in keys:
                attr = sp.csr_matrix((f["attr_data"], f["attr_indices"], f["attr_indptr"]), shape=tuple(f["attr_shape"])).toarray()
            else:
                attr = np.asarray(f["attr_matrix"])
            labels = np.asarray(f["labels"])
    except UserError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        raise UserError(f"{path} is not a readable CPF .npz ({str(exc).splitlines()[0][:160]})") from None
    if adj.shape[0] != adj.shape[1] or attr.shape[0] != adj.shape[0] or labels.shape != (adj.shape[0],):
        raise UserError(f"{path}: adjacency {adj.shape}, attributes {attr.shape} and labels {labels.shape} do not agree")
    return adj, attr, labels


def _sample_per_class(rs: np.random.RandomState, labels: np.ndarray, k: int, forbidden: np.ndarray | None) -> np.ndarray:
    picks = []
    for c in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == c)
        if forbidden is not None:
            members = members[~np.isin(members, forbidden)]
        if len(members) < k:
            raise UserError(f"class {c} has {len(members)} nodes left, fewer than the {k} the split needs")
        picks.append(rs.choice(members, k, replace=False))
    return np.concatenate(picks)


def cpf_split(labels: np.ndarray, seed: int, train_per_class: int = 20, val_per_class: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GLNN's CPF split: ``(train, val, test)`` indices from ``np.random.RandomState(seed)``."""
    rs = np.random.RandomState(seed)
    train = _sample_per_class(rs, labels, train_per_class, None)
    val = _sample_per_class(rs, labels, val_per_class, train)
    test = np.setdiff1d(np.arange(len(labels)), np.concatenate([train, val]))
    return train, val, test


def load_cpf(name: str, root: str | os.PathLike, *, seed: int = 0) -> Data:
    """Load ``root/<name>.npz`` (GLNN's ``--data_path``) preprocessed and split as GLNN does."""
    if name not in CPF_NAMES:
        raise UserError(f"unknown CPF dataset {name!r} (expected one of {', '.join(CPF_NAMES)})")
    path = check_root(root, f"CPF dataset {name!r}") / f"{name}.npz"
    if not path.is_file():
        raise UserError(f"CPF dataset {name!r}: {path} not found (GLNN ships it as data/{name}.npz; nothing is downloaded)")
    adj, attr, raw_labels = read_cpf_npz(path)
    n_in = adj.shape[0]
    adj.data = np.ones_like(adj.data)
    adj = ((adj + adj.T) != 0).astype(np.float32).tolil()
    adj.setdiag(0)
    adj = adj.tocsr()
    adj.eliminate_zeros()
    _, comp = connected_components(adj)
    keep = np.flatnonzero(comp == np.argmax(np.bincount(comp)))
    adj, attr, raw_labels = adj[keep][:, keep].tocoo(), attr[keep], raw_labels[keep]
    classes, labels = np.unique(raw_labels, return_inverse=True)
    train, val, test = cpf_split(labels, seed)
    n = len(keep)
    masks = masks_from_indices(n, {"train": torch.from_numpy(train), "val": torch.from_numpy(val), "test": torch.from_numpy(test)}, name)
    code = torch.from_numpy(adj.row.astype(np.int64) * n + adj.col).sort().values  # symmetric: (row, col) == (target, source) order
    edge_index = torch.stack([code % n, code // n])
    note = (f"{edge_index.size(1)} directed edges (CPF standardize: unweighted, symmetrised, self-loops removed, "
            f"largest connected component {n} of {n_in} nodes)")  # fmt: skip
    x = torch.from_numpy(np.ascontiguousarray(attr, dtype=np.float32))
    return node_data(f"{name} (CPF)", x, torch.from_numpy(labels.astype(np.int64)), edge_index, masks, note,
                     f"GLNN CPF rule (20 train / 30 val per class, rest test, seed {seed})", [str(c) for c in classes])  # fmt: skip
