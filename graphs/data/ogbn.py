"""OGB node-property datasets ``ogbn-arxiv`` and ``ogbn-products`` from their unpacked files, without ``ogb``.

Reads OGB's standard layout (``ogb/nodeproppred/master.csv``; nothing is downloaded)::

    root/ogbn_arxiv/raw/{edge,node-feat,node-label,num-node-list}.csv.gz
    root/ogbn_arxiv/split/time/{train,valid,test}.csv.gz            (ogbn-products: split/sales_ranking/)

``edge.csv.gz`` lists one ``src,dst`` pair per line. ogbn-arxiv's citation edges are directed in the
file (``add_inverse_edge = False``); GLNN's ``load_ogb_data`` turns it undirected
(``g.add_edges(dsts, srcs)``, then ``remove_self_loop().add_self_loop()``). ogbn-products lists each
co-purchase once and OGB itself adds the inverse edges (``add_inverse_edge = True``). Both therefore
end undirected here (:func:`graphs.data.node_graph.undirected_edges`), with self-loops removed
(the models add one per node) and duplicate edges merged; DGL's ``add_edges`` would keep the
pairs cited in both directions twice, which the summary line counts. The split is the official one
(arxiv: by year; products: by sales rank). The parsed tensors are cached atomically in
``root/ogbn_arxiv/processed/condense_nodes.pt``, rebuilt when the raw files change.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from condense.safeio import check_root, fingerprint_files
from condense.utils import UserError, atomic_save, safe_load
from graphs.data.node_graph import masks_from_indices, node_data, read_csv_gz, undirected_edges

__all__ = ["OGBN_SPLITS", "ogbn_dir", "load_ogbn"]

#: dataset -> OGB's split directory (``master.csv`` column ``split``)
OGBN_SPLITS = {"ogbn-arxiv": "time", "ogbn-products": "sales_ranking"}
_RAW = ("edge", "node-feat", "node-label", "num-node-list")
_PARTS = {"train": "train", "val": "valid", "test": "test"}
_CACHE_FORMAT = "condense.ogbn/v1"


def ogbn_dir(root: str | os.PathLike, name: str) -> Path:
    """``root/ogbn_arxiv`` for ``name="ogbn-arxiv"`` (OGB's directory naming)."""
    if name not in OGBN_SPLITS:
        raise UserError(f"unknown OGB node dataset {name!r} (expected one of {', '.join(OGBN_SPLITS)})")
    return Path(root) / name.replace("-", "_")


def _parse(base: Path, kind: str) -> dict:
    raw = base / "raw"
    edges = read_csv_gz(raw / "edge.csv.gz", np.int64, 2)
    num_nodes = read_csv_gz(raw / "num-node-list.csv.gz", np.int64, 1).reshape(-1)
    x = read_csv_gz(raw / "node-feat.csv.gz", np.float32)
    labels = read_csv_gz(raw / "node-label.csv.gz", np.float64, 1).reshape(-1)
    if num_nodes.size != 1 or int(num_nodes[0]) != x.shape[0]:
        raise UserError(f"{raw}: num-node-list.csv.gz says {num_nodes.tolist()} nodes, node-feat.csv.gz has {x.shape[0]} rows")
    split = {k: torch.from_numpy(read_csv_gz(base / "split" / kind / f"{v}.csv.gz", np.int64, 1).reshape(-1)) for k, v in _PARTS.items()}
    if np.isnan(labels).any():
        raise UserError(f"{raw / 'node-label.csv.gz'} has missing labels (only single-label datasets are supported)")
    return {"format": _CACHE_FORMAT, "x": torch.from_numpy(x), "y": torch.from_numpy(labels), "edges": torch.from_numpy(edges).t().contiguous(), "split": split}


def load_ogbn(name: str, root: str | os.PathLike, *, cache: bool = True) -> Data:
    """Load ``ogbn-arxiv`` or ``ogbn-products`` with its official split (see module docstring).

    Args:
        name: ``"ogbn-arxiv"`` or ``"ogbn-products"``.
        root: the directory holding ``ogbn_<name>/`` (ogb's own ``root`` argument).
        cache: store the parsed tensors in ``processed/`` (needs a writable root; a read-only one warns).
    """
    base = ogbn_dir(check_root(root, f"OGB dataset {name!r}"), name)
    kind = OGBN_SPLITS[name]
    expected = [base / "raw" / f"{r}.csv.gz" for r in _RAW] + [base / "split" / kind / f"{p}.csv.gz" for p in _PARTS.values()]
    missing = [str(p.relative_to(base)) for p in expected if not p.is_file()]
    if missing:
        raise UserError(f"OGB dataset {name!r} not found under root {str(root)!r}: expected {', '.join(missing)} in {base} (nothing is downloaded)")
    cache_path = base / "processed" / "condense_nodes.pt"
    fingerprint = fingerprint_files(expected)
    raw = safe_load(cache_path, expected_format=_CACHE_FORMAT, what="OGB node cache") if cache_path.is_file() else None
    if raw is None or raw.get("raw_fingerprint") != fingerprint:
        raw = dict(_parse(base, kind), raw_fingerprint=fingerprint)
        if cache:
            try:
                atomic_save(raw, cache_path)
            except OSError as exc:
                warnings.warn(f"could not cache {name} in {cache_path.parent}: {exc}", stacklevel=2)
    n = raw["x"].size(0)
    if raw["edges"].numel() and (int(raw["edges"].min()) < 0 or int(raw["edges"].max()) >= n):
        raise UserError(f"{name}: edge.csv.gz has endpoints outside the node range [0, {n})")
    edge_index, note = undirected_edges(raw["edges"], n)
    direction = "directed citations made undirected as GLNN does" if name == "ogbn-arxiv" else "co-purchases, inverse edges added as OGB does"
    masks = masks_from_indices(n, raw["split"], name)
    return node_data(name, raw["x"], raw["y"], edge_index, masks, f"{note}, {direction}", f"official ({kind})")
