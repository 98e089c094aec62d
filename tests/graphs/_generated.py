"""Generated graph sets for the tests: a planted graph-size signal, and writing them in TU layout."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

import torch
from torch_geometric.data import Data

from graphs.data.graphsets import GraphDataset, random_split


def size_graph(n: int, label: int, gen: torch.Generator, n_labels: int = 3) -> Data:
    """A path on ``n`` nodes with one random chord per 4 nodes, random node labels, both edge directions."""
    src = list(range(n - 1))
    dst = list(range(1, n))
    for _ in range(n // 4):
        a, b = torch.randint(n, (2,), generator=gen).tolist()
        if a != b:
            src.append(a)
            dst.append(b)
    ei = torch.tensor([src + dst, dst + src], dtype=torch.long)
    x = torch.randint(n_labels, (n, 1), generator=gen)
    return Data(x=x, edge_index=ei, y=torch.tensor(label), num_nodes=n)


def size_dataset(num_graphs: int = 120, seed: int = 0, flip_eval: bool = False) -> GraphDataset:
    """Two classes that differ only in size: class 0 has 5-9 nodes, class 1 has 14-20.

    ``flip_eval`` swaps the labels of the validation and test graphs, so training makes the
    evaluation score worse than chance (the untrained network is then the best on validation).
    """
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_graphs) % 2
    graphs = []
    for y in labels.tolist():
        n = int(torch.randint(5, 10, (1,), generator=gen)) if y == 0 else int(torch.randint(14, 21, (1,), generator=gen))
        graphs.append(size_graph(n, y, gen))
    split = random_split(num_graphs, seed)
    if flip_eval:
        for part in ("valid", "test"):
            for i in split[part].tolist():
                graphs[i].y = 1 - graphs[i].y
    return GraphDataset("sizes", graphs, 2, split, node_cardinalities=(3,), edge_cardinalities=None)


def write_tu(root: Path, name: str, graphs: list[Data], node_attr: list[torch.Tensor] | None = None) -> Path:
    """Write ``graphs`` (labels in ``x[:, 0]``) as TU raw files under ``root/name/raw``."""
    raw = root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    a, ind, nlab, glab = [], [], [], []
    off = 0
    for gi, g in enumerate(graphs):
        for s, d in g.edge_index.t().tolist():
            a.append(f"{s + off + 1}, {d + off + 1}")
        ind += [str(gi + 1)] * g.num_nodes
        if g.x is not None:
            nlab += [str(int(v)) for v in g.x[:, 0].tolist()]
        glab.append(str(int(g.y)))
        off += g.num_nodes
    (raw / f"{name}_A.txt").write_text("\n".join(a) + "\n")
    (raw / f"{name}_graph_indicator.txt").write_text("\n".join(ind) + "\n")
    (raw / f"{name}_graph_labels.txt").write_text("\n".join(glab) + "\n")
    if nlab:
        (raw / f"{name}_node_labels.txt").write_text("\n".join(nlab) + "\n")
    if node_attr is not None:
        rows = torch.cat(node_attr)
        (raw / f"{name}_node_attributes.txt").write_text("\n".join(", ".join(f"{v:.4f}" for v in r) for r in rows.tolist()) + "\n")
    return root


def write_csv(path: Path, rows) -> None:
    """Rows (or a 1-D list of values) as a gzip CSV, as OGB ships its raw files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.asarray(rows)
    rows = rows.reshape(-1, 1) if rows.ndim == 1 else rows
    with gzip.open(path, "wt") as fh:
        fh.writelines(",".join(str(v) for v in r) + "\n" for r in rows)


def fake_ogb(root: Path, name: str = "ogbg-molbbbp") -> Path:
    """A two-molecule stand-in in OGB's unpacked layout (a triangle and a 2-atom chain)."""
    base = root / name.replace("-", "_")
    write_csv(base / "raw" / "edge.csv.gz", [[0, 1], [1, 2], [2, 0], [0, 1]])
    write_csv(base / "raw" / "edge-feat.csv.gz", [[0, 0, 1], [1, 0, 0], [0, 2, 1], [3, 0, 0]])
    write_csv(base / "raw" / "node-feat.csv.gz", [[5, 0, 1, 5, 0, 0, 1, 0, 0]] * 3 + [[7, 0, 2, 5, 1, 0, 2, 1, 1]] * 2)
    write_csv(base / "raw" / "num-node-list.csv.gz", [3, 2])
    write_csv(base / "raw" / "num-edge-list.csv.gz", [3, 1])
    write_csv(base / "raw" / "graph-label.csv.gz", [1, 0])
    for part, idx in (("train", [0]), ("valid", [1]), ("test", [1])):
        write_csv(base / "split" / "scaffold" / f"{part}.csv.gz", idx)
    return base
