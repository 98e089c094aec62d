"""Your own graph for GNN-to-MLP distillation: a directory of files, a PyG ``Data`` or a ``.pt`` of tensors.

Directory layout (``--dataset files --root DIR``)::

    DIR/edges.csv | edges.npy      edge list: ``src,dst`` per line (CSV, ``#`` comments and one
                                   header line allowed) or an integer array [E, 2] or [2, E]
    DIR/features.npy               float [N, F]
    DIR/labels.npy                 integer class ids [N]
    DIR/{train,val,test}_mask.npy  optional boolean [N]; without them GLNN's CPF rule splits
                                   the nodes (20 train / 30 val per class, the rest test, seeded)
    DIR/class_names.txt            optional, one name per line

``.npy`` files are read with ``allow_pickle=False``; a ``.pt`` with ``torch.load(weights_only=True)``.
Edges are treated as GLNN treats every graph it trains on: made undirected (reverse edges added),
self-loops removed (the models add their own) and duplicates merged; the summary line counts each.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from condense.safeio import check_root
from condense.utils import UserError
from graphs.data.cpf import cpf_split
from graphs.data.node_graph import check_node_tensors, masks_from_indices, node_data, undirected_edges

__all__ = ["load_graph_files", "graph_from_tensors", "load_graph_pt"]

_PARTS = ("train", "val", "test")


def _npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable .npy array ({str(exc).splitlines()[0][:160]})") from None


def _edge_csv(path: Path) -> np.ndarray:
    rows = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines()):
        parts = re.split(r"[,;\s]+", line.split("#")[0].strip())
        if parts == [""]:
            continue
        try:
            if len(parts) != 2:
                raise ValueError
            rows.append([int(parts[0]), int(parts[1])])
        except ValueError:
            if i == 0:
                continue  # one header line
            raise UserError(f"{path}, line {i + 1}: expected two integer node ids, got {line[:80]!r}") from None
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def _as_edge_index(arr) -> Tensor:
    t = arr if torch.is_tensor(arr) else torch.as_tensor(np.asarray(arr))
    if t.dim() == 2 and t.size(0) != 2 and t.size(1) == 2:
        t = t.t()
    return t.contiguous()


def graph_from_tensors(x, y, edge_index, masks: dict | None = None, *, name: str = "graph", seed: int = 0,
                       class_names: list[str] | None = None) -> Data:  # fmt: skip
    """Validate and prepare a user graph from arrays/tensors (``masks``: ``train``/``val``/``test`` boolean)."""
    x = torch.as_tensor(np.asarray(x)) if not torch.is_tensor(x) else x
    y = torch.as_tensor(np.asarray(y)) if not torch.is_tensor(y) else y
    ei = _as_edge_index(edge_index)
    check_node_tensors(x, y.view(-1) if y.dim() == 2 and y.size(1) == 1 else y, ei, name)
    y = y.view(-1)
    n = x.size(0)
    ei, note = undirected_edges(ei, n)
    if masks:
        if set(masks) != set(_PARTS):
            raise UserError(f"{name}: give all three split masks (train, val, test) or none, got {', '.join(sorted(masks))}")
        masks = {k: torch.as_tensor(np.asarray(v)) if not torch.is_tensor(v) else v for k, v in masks.items()}
        split_note = "given masks"
    else:
        train, val, test = cpf_split(y.long().numpy(), seed)
        masks = masks_from_indices(n, {"train": torch.from_numpy(train), "val": torch.from_numpy(val), "test": torch.from_numpy(test)}, name)
        split_note = f"GLNN CPF rule (20 train / 30 val per class, rest test, seed {seed})"
    return node_data(name, x, y, ei, masks, note, split_note, class_names)


def load_graph_files(root: str | os.PathLike, *, seed: int = 0) -> Data:
    """Read the directory layout of the module docstring."""
    root = check_root(root, "graph files")
    csv, npy = root / "edges.csv", root / "edges.npy"
    if csv.is_file() == npy.is_file():
        raise UserError(f"graph files in {root}: expected exactly one of edges.csv or edges.npy")
    for f in ("features.npy", "labels.npy"):
        if not (root / f).is_file():
            raise UserError(f"graph files in {root}: {f} not found")
    edges = _edge_csv(csv) if csv.is_file() else _npy(npy)
    given = {k: root / f"{k}_mask.npy" for k in _PARTS if (root / f"{k}_mask.npy").is_file()}
    masks = {k: _npy(p) for k, p in given.items()}
    names_file = root / "class_names.txt"
    names = [s.strip() for s in names_file.read_text().splitlines() if s.strip()] if names_file.is_file() else None
    return graph_from_tensors(_npy(root / "features.npy"), _npy(root / "labels.npy"), edges, masks or None,
                              name=root.name or "graph", seed=seed, class_names=names)  # fmt: skip


def load_graph_pt(path: str | os.PathLike | Data, *, seed: int = 0) -> Data:
    """A PyG ``Data`` (``x``, ``y``, ``edge_index``, optional ``*_mask``) or a ``.pt`` dict of those
    tensors (loaded ``weights_only``), prepared like :func:`load_graph_files`."""
    if isinstance(path, Data):
        obj, name = path, "graph"
    else:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"graph file {p} not found")
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling refusal or corruption is one line
            raise UserError(f"{p} is not a weights-only .pt of tensors ({str(exc).splitlines()[0][:160]})") from None
        name = p.stem
    get = (lambda k: getattr(obj, k, None)) if isinstance(obj, Data) else (obj.get if isinstance(obj, dict) else None)
    if get is None:
        raise UserError(f"{path}: expected a dict of tensors with x, y and edge_index, got {type(obj).__name__}")
    missing = [k for k in ("x", "y", "edge_index") if get(k) is None]
    if missing:
        raise UserError(f"{name}: missing {', '.join(missing)}")
    masks = {k: get(f"{k}_mask") for k in _PARTS if get(f"{k}_mask") is not None}
    return graph_from_tensors(get("x"), get("y"), get("edge_index"), masks or None, name=name, seed=seed)
