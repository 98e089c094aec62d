"""OGB molecule graph-property datasets (ogbg-molbace, ogbg-molbbbp, ogbg-molhiv) without ``ogb``.

Reads OGB's standard unpacked layout::

    root/ogbg_molbace/raw/{edge,edge-feat,node-feat,num-node-list,num-edge-list,graph-label}.csv.gz
    root/ogbg_molbace/split/scaffold/{train,valid,test}.csv.gz

and builds the same graphs as ``ogb.graphproppred.PygGraphPropPredDataset``: per-graph local
edges, listed once per bond in the files, are stored in both directions (``(s, d)`` then
``(d, s)`` for each bond, OGB's ``read_csv_graph_raw(add_inverse_edge=True)`` order), node
features are the 9 integer atom columns and edge features the 3 integer bond columns.  The
parsed tensors are cached atomically in ``root/ogbg_molbace/processed/condense_graphs.pt``.
"""
from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from condense.safeio import check_root, fingerprint_files
from condense.utils import UserError, atomic_save, safe_load
from graphs.data.graphsets import GraphDataset
from graphs.data.node_graph import gzip_read_errors

__all__ = ["load_ogb", "ogb_dir", "ATOM_FEATURE_DIMS", "BOND_FEATURE_DIMS"]

#: ``ogb.utils.features.get_atom_feature_dims()`` / ``get_bond_feature_dims()``.
ATOM_FEATURE_DIMS = (119, 5, 12, 12, 10, 6, 6, 2, 2)
BOND_FEATURE_DIMS = (5, 6, 2)

_RAW = ("edge", "edge-feat", "node-feat", "num-node-list", "num-edge-list", "graph-label")
_SPLIT_KIND = "scaffold"
_CACHE_FORMAT = "condense.ogb-graphs/v1"
#: classes of the single-task ogbg-mol* sets: OGB's ``master.csv`` declares them binary classification
#: (molhiv, molbace, molbbbp: ``task type = binary classification``, ``num classes = 2``).
NUM_CLASSES = 2


def ogb_dir(root: str | os.PathLike, name: str) -> Path:
    """``root/ogbg_molbace`` for ``name="ogbg-molbace"`` (OGB's directory naming)."""
    if not name.startswith("ogbg-"):
        raise UserError(f"{name!r} is not an OGB graph-property dataset name (expected 'ogbg-...')")
    return Path(root) / name.replace("-", "_")


def _read_csv(path: Path, dtype, columns: int | None = None) -> np.ndarray:
    """A gzip CSV as a 2-D array; a truncated, non-gzip, garbled or mis-shaped file is one line naming it."""
    with gzip_read_errors(path), gzip.open(path, "rt") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = np.loadtxt(fh, delimiter=",", dtype=np.float64 if dtype is np.int64 else dtype, ndmin=2)
    if columns is not None and arr.size and arr.shape[1] != columns:
        raise UserError(f"{path} has {arr.shape[1]} columns, expected {columns}")
    if dtype is np.int64:
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise UserError(f"{path} must hold integers")
        arr = arr.astype(np.int64)
    return arr


def _parse_raw(base: Path) -> dict:
    raw = base / "raw"
    edges = _read_csv(raw / "edge.csv.gz", np.int64, 2)
    edge_feat = _read_csv(raw / "edge-feat.csv.gz", np.int64, len(BOND_FEATURE_DIMS))
    node_feat = _read_csv(raw / "node-feat.csv.gz", np.int64, len(ATOM_FEATURE_DIMS))
    num_nodes = _read_csv(raw / "num-node-list.csv.gz", np.int64, 1).reshape(-1)
    num_edges = _read_csv(raw / "num-edge-list.csv.gz", np.int64, 1).reshape(-1)
    labels = _read_csv(raw / "graph-label.csv.gz", np.float64)
    if labels.shape[1] != 1 or np.isnan(labels).any():
        raise UserError(f"{base}: only single-task OGB datasets without missing labels are supported")
    bad = ~np.isin(labels.reshape(-1), np.arange(NUM_CLASSES))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{raw / 'graph-label.csv.gz'}: graph {i} has label {labels.reshape(-1)[i]:g}, but OGB declares these "
                        f"molecule sets binary classification (labels 0/1); {int(bad.sum())} label(s) outside")
    if num_nodes.sum() != node_feat.shape[0] or num_edges.sum() != edges.shape[0] or edges.shape[0] != edge_feat.shape[0]:
        raise UserError(f"{base}: node/edge counts in num-*-list.csv.gz do not match the feature files")
    if (num_nodes < 0).any() or (num_edges < 0).any() or (node_feat < 0).any() or (edge_feat < 0).any():
        raise UserError(f"{raw}: negative counts or feature ids")
    local_max = np.repeat(num_nodes, num_edges)
    if edges.size and ((edges < 0).any() or (edges >= local_max[:, None]).any()):
        raise UserError(f"{raw / 'edge.csv.gz'} has node ids outside their graph")
    return {
        "format": _CACHE_FORMAT,
        "x": torch.from_numpy(node_feat),
        "edges": torch.from_numpy(edges),
        "edge_attr": torch.from_numpy(edge_feat),
        "num_nodes": torch.from_numpy(num_nodes),
        "num_edges": torch.from_numpy(num_edges),
        "y": torch.from_numpy(labels.reshape(-1)).long(),
    }


def _load_split(base: Path, num_graphs: int) -> dict[str, torch.Tensor]:
    out = {}
    for part in ("train", "valid", "test"):
        idx = _read_csv(base / "split" / _SPLIT_KIND / f"{part}.csv.gz", np.int64, 1).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= num_graphs):
            raise UserError(f"{base}: split {part} has graph indices outside [0, {num_graphs})")
        out[part] = torch.from_numpy(idx)
    return out


def _to_graphs(raw: dict) -> list[Data]:
    graphs = []
    n_off = e_off = 0
    for g, (n, m) in enumerate(zip(raw["num_nodes"].tolist(), raw["num_edges"].tolist())):
        e = raw["edges"][e_off:e_off + m].t()
        ea = raw["edge_attr"][e_off:e_off + m]
        # each bond once in the file -> both directions, interleaved as OGB does
        edge_index = torch.stack([e, e.flip(0)], dim=2).reshape(2, -1)
        edge_attr = torch.stack([ea, ea], dim=1).reshape(-1, ea.size(1))
        graphs.append(Data(x=raw["x"][n_off:n_off + n], edge_index=edge_index, edge_attr=edge_attr,
                           y=raw["y"][g].view(()), num_nodes=n))
        n_off += n
        e_off += m
    return graphs


def _cardinalities(values: torch.Tensor, known: tuple[int, ...]) -> tuple[int, ...]:
    """OGB's full feature dims, widened if a column holds a larger id."""
    seen = values.max(0).values.tolist() if values.size(0) else [0] * values.size(1)
    dims = known if len(known) == values.size(1) else (1,) * values.size(1)
    return tuple(max(d, int(m) + 1) for d, m in zip(dims, seen))


def load_ogb(name: str, root: str | os.PathLike, *, cache: bool = True) -> GraphDataset:
    """Load an OGB single-task molecule dataset with its official scaffold split.

    Args:
        name: ``"ogbg-molbace"``, ``"ogbg-molbbbp"``, ``"ogbg-molhiv"`` (any single-task ogbg name).
        root: the directory holding ``ogbg_<name>/`` (ogb's own ``root`` argument).
        cache: store the parsed tensors in ``processed/`` (needs a writable root).
    """
    base = ogb_dir(check_root(root, f"OGB dataset {name!r}"), name)
    expected = [base / "raw" / f"{r}.csv.gz" for r in _RAW] + [base / "split" / _SPLIT_KIND / f"{p}.csv.gz" for p in ("train", "valid", "test")]
    missing = [str(p.relative_to(base)) for p in expected if not p.is_file()]
    if missing:
        raise UserError(f"OGB dataset {name!r} not found under root {str(root)!r}: expected {', '.join(missing)} in {base}")
    cache_path = base / "processed" / "condense_graphs.pt"
    fingerprint = fingerprint_files(expected[: len(_RAW)])
    try:  # a damaged, foreign or tampered cache (checksum) is rebuilt from the raw files, never trusted
        raw = safe_load(cache_path, expected_format=_CACHE_FORMAT, what="OGB cache") if cache_path.is_file() else None
    except UserError:
        raw = None
    if raw is None or raw.get("raw_fingerprint") != fingerprint:  # absent, or stale with respect to the raw files
        raw = dict(_parse_raw(base), raw_fingerprint=fingerprint)
        if cache:
            try:
                atomic_save(raw, cache_path)
            except OSError as exc:
                warnings.warn(f"could not cache {name} in {cache_path.parent}: {exc}", stacklevel=2)
    graphs = _to_graphs(raw)
    node_cards = _cardinalities(raw["x"], ATOM_FEATURE_DIMS)
    edge_cards = _cardinalities(raw["edge_attr"], BOND_FEATURE_DIMS)
    return GraphDataset(
        name=name,
        graphs=graphs,
        num_classes=NUM_CLASSES,  # declared, not inferred from the largest label (a stray label is refused above)
        split=_load_split(base, len(graphs)),
        node_cardinalities=node_cards,
        edge_cardinalities=edge_cards,
        info={"root": str(root), "split": f"official {_SPLIT_KIND} split", "split_kind": _SPLIT_KIND},
    )
