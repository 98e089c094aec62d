"""End-to-end GNN-to-MLP pipeline shared by the CLI and the experiments.

``load_task`` returns a graph and its labelled split (Planetoid public split, or a per-class random
split of a CSBM graph); ``run`` trains the teacher once and every requested student from its
logits. The seed fixes the inductive hold-out (as ``graph_split(..., seed)`` does officially), the
teacher's initialisation and dropout, and - re-seeded per method - each student's, so all methods
start from the same student weights.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch_geometric.data import Data

from condense.utils import UserError, seed_everything, timed
from graphs.data.csbm import csbm
from graphs.data.node_splits import NodeSplit, make_split, per_class_split, split_from_masks
from graphs.data.planetoid import PLANETOID_NAMES, load_planetoid
from graphs.g2m.presets import Preset
from graphs.g2m.student import METHODS, distill
from graphs.g2m.teacher import train_teacher
from graphs.g2m.train import RunResult
from graphs.models.node import build_node_model

__all__ = ["CSBM_DEFAULTS", "load_task", "make_task_split", "PipelineResult", "run", "inference_seconds"]

#: the embedded default graph: homophilous, features weak on their own (MLP << GNN).
CSBM_DEFAULTS = dict(num_nodes=3000, num_features=500, avg_degree=8.0, lam=2.0, mu=6.0)


def load_task(dataset: str, root: str | Path | None = None, *, data_seed: int = 0, csbm_kwargs: dict | None = None) -> tuple[Data, tuple]:
    """``(data, (train, val, test))`` for ``cora | citeseer | pubmed`` (needs ``root``) or ``csbm``."""
    key = str(dataset).lower()
    if key == "csbm":
        data = csbm(**{**CSBM_DEFAULTS, **(csbm_kwargs or {})}, seed=data_seed)
        num_test = min(1000, data.num_nodes // 2)
        num_val = min(500, (data.num_nodes - 40 - num_test) // 2)
        return data, per_class_split(data.y, 20, num_val, num_test, seed=data_seed)
    if key in PLANETOID_NAMES:
        if root is None:
            raise UserError(f"dataset {key!r} needs --root (a directory holding {PLANETOID_NAMES[key]}/raw/ind.{key}.*)")
        data = load_planetoid(key, root)
        return data, split_from_masks(data)
    raise UserError(f"unknown dataset {dataset!r} (expected csbm, {', '.join(PLANETOID_NAMES)})")


@dataclass
class PipelineResult:
    teacher_model: nn.Module
    teacher: RunResult
    students: dict[str, tuple[nn.Module, RunResult]] = field(default_factory=dict)


def run(
    data: Data,
    split: NodeSplit,
    teacher_name: str,
    preset: Preset,
    methods: tuple[str, ...] = METHODS,
    *,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    progress: bool = False,
) -> PipelineResult:
    """Train the teacher on ``split`` and one student per method; see module docstring for seeding."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)} (expected {', '.join(METHODS)})")
    in_dim, num_classes = data.num_features, int(data.y.max()) + 1
    seed_everything(seed)
    teacher = build_node_model(teacher_name, in_dim, num_classes, **preset.teacher.model_kwargs())
    t_result = train_teacher(teacher, data, split, **preset.teacher.fit_kwargs(), progress=progress, device=device)
    out = PipelineResult(teacher, t_result)
    for method in methods:
        seed_everything(seed)
        student = build_node_model("mlp", in_dim, num_classes, **preset.student.model_kwargs())
        result = distill(
            student, data, split, t_result.logits, method=method, lamb=preset.lamb, tau=preset.tau,
            **preset.student.fit_kwargs(), progress=progress, device=device,
        )
        out.students[method] = (student, result)
    return out


def make_task_split(data: Data, labelled: tuple, setting: str, *, seed: int, rate: float = 0.2, observed: str = "all") -> NodeSplit:
    """:func:`make_split` on ``data``'s labelled split."""
    return make_split(data.num_nodes, *labelled, setting, rate=rate, seed=seed, observed=observed)


@torch.no_grad()
def inference_seconds(model: nn.Module, data: Data, repeats: int = 5) -> float:
    """Median wall seconds of one full-graph forward pass (logits for every node), after a warm-up.

    GNNs get ``edge_index``; the graph-free MLP reads the features only. The model is put in eval mode.
    """
    model.eval()
    device = next(model.parameters()).device
    x = data.x.to(device)
    edge_index = data.edge_index.to(device) if getattr(model, "uses_graph", True) else None
    model(x, edge_index)  # warm-up
    return statistics.median(timed(lambda: model(x, edge_index), device) for _ in range(max(1, repeats)))
