"""A small graph written in OGB's node-property layout (ogbn-arxiv: directed edges, split/time)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from graphs.data.csbm import csbm_stream


def _write(path: Path, rows: np.ndarray, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        np.savetxt(fh, rows, fmt=fmt, delimiter=",")


def write_arxiv_layout(root: Path, nodes: int = 3000, edges: int = 30000, features: int = 16, classes: int = 5, seed: int = 0) -> dict:
    """``root/ogbn_arxiv/{raw,split/time}`` from a streamed CSBM: each undirected pair once, randomly
    oriented, plus 3 self-loops and 5 repeated edges; a random 60/20/20 split. Returns the pieces."""
    g = csbm_stream(nodes, edges, features, classes, p_in=0.9, signal=0.5, seed=seed)
    half = g.edge_index[:, g.edge_index[0] < g.edge_index[1]].numpy()
    rng = np.random.default_rng(seed)
    flip = rng.random(half.shape[1]) < 0.5
    directed = np.where(flip, half[::-1], half).T
    extra = np.concatenate([np.array([[0, 0], [1, 1], [2, 2]]), directed[:5]])
    rows = np.concatenate([directed, extra])
    base = root / "ogbn_arxiv"
    _write(base / "raw" / "edge.csv.gz", rows, "%d")
    _write(base / "raw" / "node-feat.csv.gz", g.x.numpy(), "%.6f")
    _write(base / "raw" / "node-label.csv.gz", g.y.numpy()[:, None], "%d")
    _write(base / "raw" / "num-node-list.csv.gz", np.array([[nodes]]), "%d")
    _write(base / "raw" / "num-edge-list.csv.gz", np.array([[len(rows)]]), "%d")
    perm = rng.permutation(nodes)
    a, b = int(0.6 * nodes), int(0.8 * nodes)
    for name, idx in (("train", perm[:a]), ("valid", perm[a:b]), ("test", perm[b:])):
        _write(base / "split" / "time" / f"{name}.csv.gz", np.sort(idx)[:, None], "%d")
    return dict(undirected=torch.from_numpy(half), x=g.x, y=g.y, train=np.sort(perm[:a]), directed_rows=len(rows))
