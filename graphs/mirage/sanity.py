"""Sanity baselines no paper reports: how much of a score graph size alone explains.

* :func:`size_only` -- the node count as a classifier of the test graphs: ROC-AUC of |V| as the
  class-1 score (two classes; below 0.5 means larger graphs lean to class 0), and the accuracy of
  predicting the class whose training median |V| is nearest.
* :func:`roots_per_class` -- tree roots per class in a Mirage set: trained with root pooling, a
  set whose classes differ mainly in root counts teaches a size classifier.
* Spearman(score, |V|) of every trained model is recorded by :func:`graphs.mirage.train.train_restarts`.
* :func:`result_record` / :func:`row_cells` -- one table row per trained set with these columns
  (per-class counts, untrained score, Spearman with size), shared by ``python -m graphs.mirage`` and
  ``python -m experiments.mirage`` so both print the same sanity columns.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch_geometric.data import Data

from graphs.data.graphsets import graphs_nbytes
from graphs.mirage.baselines import class_counts
from graphs.mirage.distill import byte_share
from graphs.mirage.train import RestartSummary, score

__all__ = ["size_only", "roots_per_class", "result_record", "row_cells", "ROW_COLUMNS"]

#: the columns :func:`row_cells` fills
ROW_COLUMNS = ("graphs (per class)", "bytes", "% train bytes", "test@best-val top-k", "all restarts", "final epoch", "untrained",
               "Spearman(score, |V|)", "train s")


def _sizes_labels(graphs: Sequence[Data]) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor([float(g.num_nodes) for g in graphs], dtype=torch.float64),
            torch.tensor([int(g.y) for g in graphs], dtype=torch.long))


def size_only(train: Sequence[Data], test: Sequence[Data], num_classes: int) -> dict:
    """``{"rocauc": ..., "accuracy": ...}`` of the node count on ``test`` (ROC-AUC only for two classes)."""
    n_tr, y_tr = _sizes_labels(train)
    n_te, y_te = _sizes_labels(test)
    medians = torch.stack([n_tr[y_tr == c].median() if bool((y_tr == c).any()) else torch.tensor(float("inf"), dtype=torch.float64)
                           for c in range(num_classes)])
    pred = (n_te.view(-1, 1) - medians.view(1, -1)).abs().argmin(1)
    out = {"accuracy": float((pred == y_te).double().mean())}
    if num_classes == 2:
        logits = torch.stack([torch.zeros_like(n_te), n_te], 1)  # softmax(...)[:, 1] is monotone in |V|
        out["rocauc"] = score(logits, y_te, "rocauc")
    return out


def roots_per_class(graphs: Sequence[Data], num_classes: int) -> list[int]:
    """Number of root nodes (``root_mask``) over the graphs of each class."""
    counts = [0] * num_classes
    for g in graphs:
        counts[int(g.y)] += int(g.root_mask.sum())
    return counts


def result_record(graphs: Sequence[Data], train_bytes: int, s: RestartSummary, num_classes: int, *, label: str = "") -> dict:
    """JSON-able scores of one trained set (graphs of every class, zeros included); ``label`` (e.g. the
    no-reduction label) travels with the row."""
    nbytes = graphs_nbytes(graphs)
    counts = class_counts(graphs)
    record = {"graphs": len(graphs), "bytes": nbytes, "fraction": nbytes / train_bytes,
              "per_class": {c: counts.get(c, 0) for c in range(num_classes)},
              "top": s.top_mean_std, "all": s.all_mean_std, "final": s.final_mean_std, "untrained": s.untrained_mean_std,
              "spearman_size": s.spearman_mean_std, "k": s.top, "train_time_s": s.train_time_s}
    if label:
        record["label"] = label
    return record


def row_cells(r: dict) -> list[str]:
    """The :data:`ROW_COLUMNS` cells of a :func:`result_record` (byte share to three significant digits)."""
    f = lambda ms: f"{ms[0]:.3f} ± {ms[1]:.3f}"  # noqa: E731
    per_class = "/".join(str(v) for v in r["per_class"].values())
    share = byte_share(r["fraction"]) + "%" + (f" ({r['label']})" if r.get("label") else "")
    return [f"{r['graphs']} ({per_class})", str(r["bytes"]), share, f(r["top"]), f(r["all"]), f(r["final"]), f(r["untrained"]),
            f"{r['spearman_size'][0]:+.2f}", f"{r['train_time_s']:.1f}"]
