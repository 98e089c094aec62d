"""Shared core of the node-classification loaders (OGB node sets, GLNN's CPF ``.npz``, user graphs).

Every loader returns a :class:`~torch_geometric.data.Data` with ``x`` (float32 ``[N, F]``), ``y``
(int64 ``[N]``), an ``edge_index`` made undirected (reverse edges added), without self-loops and with
duplicate edges merged, ``train_mask``/``val_mask``/``test_mask`` and ``summary``: one line naming
the dataset, its size and what was done to its edges. The models add their own self-loops
(:mod:`graphs.models.node`), as GLNN's loaders add them to the DGL graph (``add_self_loop``).

Every bad input is one :class:`~condense.utils.UserError` line raised before anything is written:
edges outside the node range, features and labels of different lengths, NaN/Inf features,
non-integer or out-of-range labels, empty or overlapping split masks.
"""
from __future__ import annotations

import contextlib
import gzip
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from condense.utils import UserError

__all__ = ["gzip_read_errors", "read_csv_gz", "undirected_edges", "check_node_tensors", "masks_from_indices", "check_masks", "node_data"]

_CHUNK = 64 << 20  # decompressed bytes parsed per step


@contextlib.contextmanager
def gzip_read_errors(path: Path) -> Iterator[None]:
    """Reading a gzip text file: a truncated, non-gzip or garbled file is one line naming it."""
    try:
        yield
    except UserError:
        raise
    except EOFError:
        raise UserError(f"{path} is truncated (incomplete gzip stream)") from None
    except (OSError, zlib.error) as exc:
        raise UserError(f"{path} is not a valid gzip file ({exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is garbled: {str(exc).splitlines()[0][:160]}") from None


def read_csv_gz(path: Path, dtype: type, columns: int | None = None) -> np.ndarray:
    """A headerless gzip CSV of numbers as ``[rows, columns]`` (``columns=None``: as many as on the
    first line), parsed in 64 MiB chunks with ``np.fromstring`` (no pandas; ~10x faster than
    ``np.loadtxt``). A truncated, non-gzip, garbled or mis-shaped file is one line naming it."""
    parts, tail, lines = [], b"", 0
    with gzip_read_errors(path):
        with gzip.open(path, "rb") as fh:
            if columns is None:
                columns = fh.readline().count(b",") + 1
                fh.seek(0)
            while True:
                block = fh.read(_CHUNK)
                buf = tail + block
                if not block:
                    tail = b""
                else:
                    cut = buf.rfind(b"\n") + 1
                    buf, tail = buf[:cut], buf[cut:]
                text = buf.strip()
                if text:
                    n_lines = text.count(b"\n") + 1
                    values = np.fromstring(text.replace(b"\r", b"").replace(b"\n", b",").decode("ascii"), dtype=dtype, sep=",")
                    if values.size != n_lines * columns:
                        raise UserError(f"{path} is mis-shaped: expected {columns} value(s) on each of lines {lines + 1}-{lines + n_lines}")
                    parts.append(values.reshape(n_lines, columns))
                    lines += n_lines
                if not block:
                    break
    return np.concatenate(parts) if parts else np.zeros((0, columns or 1), dtype=dtype)


def undirected_edges(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, str]:
    """Reverse edges added, self-loops removed, duplicates merged (ordered by target, then source,
    as PyG's ``coalesce``); returns the edges and a note with the counts for the summary line."""
    ei = edge_index.long()
    loops = int((ei[0] == ei[1]).sum())
    ei = ei[:, ei[0] != ei[1]]
    both = torch.cat([ei, ei.flip(0)], dim=1)
    code = torch.unique(both[1] * num_nodes + both[0])
    out = torch.stack([code % num_nodes, code // num_nodes])
    merged = both.size(1) - code.numel()
    note = (f"{edge_index.size(1)} edges in the input -> {out.size(1)} directed edges "
            f"(reverse edges added, {loops} self-loops removed, {merged} duplicates merged)")  # fmt: skip
    return out, note


def check_node_tensors(x: Tensor, y: Tensor, edge_index: Tensor, where: str) -> None:
    """Shapes, ranges and finiteness of a node-classification graph (one line per problem)."""
    if x.dim() != 2:
        raise UserError(f"{where}: features must be a 2-D [nodes, features] array, got shape {tuple(x.shape)}")
    if y.dim() != 1:
        raise UserError(f"{where}: labels must be a 1-D array of class ids, got shape {tuple(y.shape)}")
    if x.size(0) != y.size(0):
        raise UserError(f"{where}: features have {x.size(0)} rows but labels {y.size(0)}")
    if x.dtype == torch.bool or x.is_complex() or (x.is_floating_point() and not torch.isfinite(x).all()):
        raise UserError(f"{where}: features must be finite real numbers (found {'NaN/Inf' if x.is_floating_point() else x.dtype})")
    if y.is_floating_point() and not (torch.isfinite(y).all() and torch.equal(y, y.round())):
        raise UserError(f"{where}: labels must be integer class ids")
    if y.dtype == torch.bool or (y.numel() and int(y.min()) < 0):
        raise UserError(f"{where}: labels must be integer class ids >= 0")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise UserError(f"{where}: edges must be a [2, E] (or [E, 2]) integer array, got shape {tuple(edge_index.shape)}")
    if edge_index.is_floating_point():
        raise UserError(f"{where}: edge endpoints must be integers, got {edge_index.dtype}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= x.size(0)):
        bad = int(edge_index.max()) if int(edge_index.min()) >= 0 else int(edge_index.min())
        raise UserError(f"{where}: edge endpoint {bad} is outside the node range [0, {x.size(0)})")


def masks_from_indices(num_nodes: int, parts: dict[str, Tensor], where: str) -> dict[str, Tensor]:
    """Boolean masks from index arrays; an index outside ``[0, num_nodes)`` is one line."""
    out = {}
    for name, idx in parts.items():
        idx = idx.long().view(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_nodes):
            raise UserError(f"{where}: split {name} has node indices outside [0, {num_nodes})")
        out[name] = torch.zeros(num_nodes, dtype=torch.bool).index_fill_(0, idx, True)
    return out


def check_masks(masks: dict[str, Tensor], num_nodes: int, where: str) -> None:
    """Train/val/test masks: boolean, one entry per node, non-empty and pairwise disjoint."""
    for name, m in masks.items():
        if m.dtype != torch.bool or m.dim() != 1 or m.numel() != num_nodes:
            raise UserError(f"{where}: the {name} mask must be a boolean array of length {num_nodes}, got {m.dtype} {tuple(m.shape)}")
        if not bool(m.any()):
            raise UserError(f"{where}: the {name} split is empty")
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = int((masks[a] & masks[b]).sum())
            if both:
                raise UserError(f"{where}: the {a} and {b} splits overlap on {both} nodes")


def node_data(name: str, x: Tensor, y: Tensor, edge_index: Tensor, masks: dict[str, Tensor], note: str, split_note: str,
              class_names: list[str] | None = None) -> Data:  # fmt: skip
    """Validate and assemble a loaded graph (``edge_index`` already undirected) with its summary line."""
    check_node_tensors(x, y, edge_index, name)
    y = y.long()
    check_masks(masks, x.size(0), name)
    num_classes = int(y.max()) + 1 if y.numel() else 0
    if class_names is not None and len(class_names) < num_classes:
        raise UserError(f"{name}: {len(class_names)} class names for labels up to {num_classes - 1}")
    data = Data(x=x.float(), y=y, edge_index=edge_index, num_nodes=x.size(0), **{f"{k}_mask": v for k, v in masks.items()})
    sizes = "/".join(str(int(masks[k].sum())) for k in ("train", "val", "test"))
    data.summary = (f"{name}: {x.size(0)} nodes, {note}; {x.size(1)} features, {num_classes} classes; "
                    f"split {split_note}, train/val/test {sizes}")  # fmt: skip
    data.class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    return data
