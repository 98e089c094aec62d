"""TU graph-classification datasets (MUTAG, PROTEINS, NCI1, DD, IMDB-BINARY, ENZYMES, ...).

Reads ``root/NAME/raw/NAME_*.txt`` through PyG's :class:`~torch_geometric.datasets.TUDataset`
(which writes ``root/NAME/processed/``), after checking the raw files exist so PyG never tries
to download.  Node and edge labels are turned back from PyG's one-hot blocks into one
categorical id per distinct label tuple (datasets without node labels get node degrees as labels,
as is standard for IMDB-style sets, and say so in their summary line).  Continuous node attributes
(``NAME_node_attributes.txt``, e.g. PROTEINS' one column) follow ``node_attr``: ``"drop"`` (default) is
what the official code of both papers does -- Mirage loads ``TUDataset(root, name)`` (PyG's default
``use_node_attr=False``; ``use_node_attr=True`` is commented out in its NCI1/IMDB-B scripts) and the GIN
code (powerful-gnns ``util.load_data``) parses the attributes but builds its input from the one-hot
node tags only -- and the summary line says that they were dropped; ``"concat"`` gives the GNNs float
``x = [attributes, one-hot node labels]`` (PyG's ``use_node_attr=True`` layout, raw attribute values),
with ``info["attribute_columns"]`` = the number of attribute columns in front (Mirage then mines the
label columns only unless its ``bins`` discretises the attributes, see :mod:`graphs.mirage.labels`).  Split: seeded random 80/10/10 (``split="random"``), or
the official Mirage code's (``split="official"``): PyG ``dataset.shuffle()`` after
``torch.manual_seed(0)``, then test = the first ``n // 10`` graphs, validation = the next
``n // 10``, training = the rest (NCI1: 1627 / 1661 training graphs per class).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.datasets import TUDataset

from condense.safeio import cache_is_stale, check_root, fingerprint_files, mark_cache
from condense.utils import UserError
from graphs.data.graphsets import GraphDataset, categorical_columns, random_split

__all__ = ["load_tu", "tu_required_files", "validate_tu_raw", "official_split", "TU_SPLITS", "NODE_ATTR"]

TU_SPLITS = ("random", "official")
NODE_ATTR = ("drop", "concat")

_REQUIRED = ("A", "graph_indicator", "graph_labels")


def tu_required_files(root: str | os.PathLike, name: str) -> list[Path]:
    raw = Path(root) / name / "raw"
    return [raw / f"{name}_{part}.txt" for part in _REQUIRED]


def load_tu(
    name: str,
    root: str | os.PathLike,
    *,
    seed: int = 0,
    node_attr: str = "drop",
    use_edge_attr: bool = True,
    split: str = "random",
) -> GraphDataset:
    """Load TU dataset ``name`` from a writable ``root`` with a seeded 80/10/10 split.

    Args:
        name: TU name as spelled by the collection (``"MUTAG"``, ``"NCI1"``, ...).
        root: directory holding ``NAME/raw/``; ``NAME/processed/`` is written next to it.
        seed: seed of the random split.
        node_attr: continuous node attributes: ``"drop"`` (the official codes) or ``"concat"`` (float
            ``x`` = attributes followed by the one-hot node labels), see the module doc.
        use_edge_attr: keep edge labels as categorical ``edge_attr``.
        split: ``"random"`` (seeded 80/10/10) or ``"official"`` (Mirage's shuffle, see the module doc).
    """
    check_root(root, f"TU dataset {name!r}")
    if split not in TU_SPLITS:
        raise UserError(f"split must be one of {', '.join(TU_SPLITS)}, got {split!r}")
    if node_attr not in NODE_ATTR:
        raise UserError(f"node_attr must be one of {', '.join(NODE_ATTR)}, got {node_attr!r}")
    files = tu_required_files(root, name)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise UserError(
            f"TU dataset {name!r} not found under root {str(root)!r}: expected {', '.join(missing)} in "
            f"{files[0].parent} (copy the raw files there; nothing is downloaded)"
        )
    raw_files = sorted(files[0].parent.glob(f"{name}_*.txt"))
    fingerprint = fingerprint_files(raw_files)
    processed = Path(root) / name / "processed"
    stale = cache_is_stale(processed, fingerprint)
    if stale or not processed.exists():
        validate_tu_raw(files[0].parent, name)
    try:
        ds = TUDataset(str(root), name, use_node_attr=node_attr == "concat", use_edge_attr=use_edge_attr, force_reload=stale)
    except OSError as exc:
        raise UserError(f"cannot process TU dataset {name!r} in {root}: {exc} (root must be writable)") from exc
    mark_cache(processed, fingerprint)
    store, slices = ds._data, ds.slices
    num_graphs = len(ds)

    n_attr = ds.num_node_attributes
    node_ptr = slices["x"] if store.x is not None else _node_ptr(ds)
    x_all = store.x if store.x is not None else torch.zeros(int(node_ptr[-1]), 0)
    attrs, labels_x = (x_all[:, :n_attr], x_all[:, n_attr:]) if node_attr == "concat" else (None, x_all)
    node_labels = "labels"
    if labels_x.size(1) == 0:  # unlabelled graphs (e.g. IMDB-BINARY): node degrees as labels, the usual choice
        deg = torch.cat([torch.bincount(ds[i].edge_index[0], minlength=ds[i].num_nodes) for i in range(num_graphs)])
        coded, node_labels = categorical_columns(deg.view(-1, 1)), "degree"
    else:
        coded = categorical_columns(labels_x)
    node_ids, card = coded
    node_cards: tuple[int, ...] | None = (card,)
    if attrs is not None and n_attr > 0:  # float x = [attributes, one-hot labels]
        node_ids = torch.cat([attrs.float(), torch.nn.functional.one_hot(node_ids.view(-1), card).float()], dim=1)
        node_cards = None
    edge_ids, edge_cards = None, None
    if use_edge_attr and store.edge_attr is not None and store.edge_attr.numel() > 0:
        coded = categorical_columns(store.edge_attr)
        if coded is None:
            raise UserError(f"{name}: continuous edge attributes are not supported (pass use_edge_attr=False)")
        edge_ids, edge_cards = coded[0], (coded[1],)

    graphs = []
    eptr = slices["edge_index"]
    for i in range(num_graphs):
        g = ds[i]
        data = Data(x=node_ids[node_ptr[i]:node_ptr[i + 1]], edge_index=g.edge_index, y=g.y.view(()).long())
        if edge_ids is not None:
            data.edge_attr = edge_ids[eptr[i]:eptr[i + 1]]
        data.num_nodes = int(node_ptr[i + 1] - node_ptr[i])
        graphs.append(data)
    return GraphDataset(
        name=name,
        graphs=graphs,
        num_classes=int(store.y.max()) + 1,
        split=random_split(num_graphs, seed) if split == "random" else official_split(num_graphs),
        node_cardinalities=node_cards,
        edge_cardinalities=edge_cards,
        info={"node_labels": node_labels, "node_attributes": n_attr, "node_attr": node_attr if n_attr else None,
              "attribute_columns": n_attr if node_cards is None else 0, "root": str(root), "split": f"random 80/10/10 seed {seed}" if split == "random" else "official (PyG shuffle, seed 0)",
              "split_kind": split},
    )


def _table(path: Path, *, integer: bool) -> np.ndarray:
    """A comma-separated numeric TU file as a 2-D array; garbled or ragged files are one line naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # empty files: reported below, not as a numpy warning
            arr = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is garbled: {str(exc).splitlines()[0][:160]}") from None
    if arr.size == 0:
        raise UserError(f"{path} is empty")
    if not np.isfinite(arr).all() or (integer and not (arr == np.round(arr)).all()):
        raise UserError(f"{path} must hold {'integers' if integer else 'finite numbers'}")
    return arr


def validate_tu_raw(raw: Path, name: str) -> None:
    """Check the TU raw files agree with each other before PyG parses them (PyG fails with ``IndexError`` otherwise).

    ``A`` holds 1-based node pairs, ``graph_indicator`` one 1-based graph id per node, ``graph_labels``
    one label per graph; optional node/edge label and attribute files one row per node/edge.
    """
    edges = _table(raw / f"{name}_A.txt", integer=True)
    indicator = _table(raw / f"{name}_graph_indicator.txt", integer=True)
    labels = _table(raw / f"{name}_graph_labels.txt", integer=True)
    if edges.shape[1] != 2 or indicator.shape[1] != 1 or labels.shape[1] != 1:
        raise UserError(f"TU dataset {name!r} in {raw}: A must have 2 columns, graph_indicator and graph_labels 1")
    nodes, graphs = len(indicator), int(indicator.max())
    if indicator.min() < 1 or (np.diff(indicator[:, 0]) < 0).any():
        raise UserError(f"{raw / f'{name}_graph_indicator.txt'}: graph ids must be sorted and start at 1")
    if len(labels) != graphs:
        raise UserError(f"{raw / f'{name}_graph_labels.txt'} has {len(labels)} labels but graph_indicator names {graphs} graphs")
    if edges.min() < 1 or edges.max() > nodes:
        raise UserError(f"{raw / f'{name}_A.txt'} refers to node {int(edges.max() if edges.max() > nodes else edges.min())}, "
                        f"outside 1..{nodes} (the nodes of graph_indicator)")  # fmt: skip
    owner = indicator[:, 0].astype(np.int64)[edges.astype(np.int64) - 1]  # graph of each edge end
    across = np.flatnonzero(owner[:, 0] != owner[:, 1])
    if across.size:
        r = int(across[0])
        raise UserError(f"{raw / f'{name}_A.txt'} line {r + 1}: edge {int(edges[r, 0])}, {int(edges[r, 1])} joins graph "
                        f"{int(owner[r, 0])} to graph {int(owner[r, 1])} ({across.size} such edge(s)); every edge must stay in one graph")
    if len(np.unique(indicator)) != graphs:
        missing = sorted(set(range(1, graphs + 1)) - set(np.unique(indicator).astype(int).tolist()))
        raise UserError(f"{raw / f'{name}_graph_indicator.txt'}: graph {missing[0]} has no nodes ({len(missing)} empty graph(s))")
    for part, rows, integer in (("node_labels", nodes, True), ("node_attributes", nodes, False),
                                ("edge_labels", len(edges), True), ("edge_attributes", len(edges), False)):  # fmt: skip
        path = raw / f"{name}_{part}.txt"
        if path.is_file() and len(table := _table(path, integer=integer)) != rows:
            raise UserError(f"{path} has {len(table)} rows but the dataset has {rows} {part.split('_')[0]}s")
def official_split(num_graphs: int) -> dict[str, torch.Tensor]:
    """Mirage's TU split: ``torch.manual_seed(0); dataset.shuffle()`` (a ``randperm``), test first, then validation."""
    perm = torch.randperm(num_graphs, generator=torch.Generator().manual_seed(0))
    k = num_graphs // 10
    return {"test": perm[:k], "valid": perm[k:2 * k], "train": perm[2 * k:]}


def _node_ptr(ds: TUDataset) -> torch.Tensor:
    counts = torch.tensor([ds[i].num_nodes for i in range(len(ds))], dtype=torch.long)
    return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
