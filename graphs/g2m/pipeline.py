"""End-to-end GNN-to-MLP pipeline shared by the CLI and the experiments.

``load_task`` returns a graph and its labelled split (Planetoid public split, a per-class random
split of a CSBM graph, the official OGB split, GLNN's CPF split, or a user graph's masks -- see
:data:`NODE_DATASETS`); ``run`` trains the teacher once and every requested student from its
logits, full batch or, with a :class:`~graphs.g2m.minibatch.MiniBatchConfig`, in sampled mini-batches. The seed fixes the inductive hold-out (as ``graph_split(..., seed)`` does officially), the
teacher's initialisation and dropout, and - re-seeded per method - each student's, so all methods
start from the same student weights.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch_geometric.data import Data

from condense.checkpoint import Checkpointer, Stages
from condense.safeio import fingerprint_tensors
from condense.utils import UserError, seed_everything, timed
from graphs.data.cpf import CPF_NAMES, load_cpf
from graphs.data.csbm import csbm
from graphs.data.files import load_graph_files, load_graph_pt
from graphs.data.node_splits import NodeSplit, make_split, per_class_split, split_from_masks
from graphs.data.ogbn import OGBN_SPLITS, load_ogbn
from graphs.data.planetoid import PLANETOID_NAMES, load_planetoid
from graphs.g2m.minibatch import MiniBatchConfig, check_full_batch, distill_mini_batch, train_teacher_mini_batch
from graphs.g2m.presets import Preset
from graphs.g2m.student import METHODS, distill
from graphs.g2m.teacher import train_teacher
from graphs.g2m.train import RunResult
from graphs.models.node import build_node_model

__all__ = ["CSBM_DEFAULTS", "NODE_DATASETS", "load_task", "make_task_split", "PipelineResult", "run", "inference_seconds"]

#: the embedded default graph: homophilous, features weak on their own (MLP << GNN).
CSBM_DEFAULTS = dict(num_nodes=3000, num_features=500, avg_degree=8.0, lam=2.0, mu=6.0)


def _planetoid(name: str, root: Path) -> Data:
    data = load_planetoid(name, root)
    data.feature_preprocessing = "row-normalised: x / x.sum(1) (rows summing to 0 kept)"
    return data


def _files(root: Path, seed: int) -> Data:
    """A user graph: a ``.pt`` of tensors (the file, or ``graph.pt`` in the directory) or the file layout."""
    pt = root if root.is_file() else root / "graph.pt"
    return load_graph_pt(pt, seed=seed) if pt.is_file() else load_graph_files(root, seed=seed)


#: dataset name -> (what ``--root`` holds, loader ``(root, split_seed) -> Data`` with split masks)
NODE_DATASETS: dict[str, tuple[str, Callable[[Path, int], Data]]] = {
    **{k: (f"{v}/raw/ind.{k}.*", lambda root, seed, k=k: _planetoid(k, root)) for k, v in PLANETOID_NAMES.items()},
    **{k: (f"{k.replace('-', '_')}/raw/*.csv.gz and split/{v}/", lambda root, seed, k=k: load_ogbn(k, root)) for k, v in OGBN_SPLITS.items()},
    **{f"cpf-{k}": (f"{k}.npz", lambda root, seed, k=k: load_cpf(k, root, seed=seed)) for k in CPF_NAMES},
    "files": ("edges.csv|npy, features.npy, labels.npy[, *_mask.npy], or graph.pt of tensors", lambda root, seed: _files(root, seed)),
}


def load_task(dataset: str, root: str | Path | None = None, *, data_seed: int = 0, csbm_kwargs: dict | None = None,
              split_seed: int = 0) -> tuple[Data, tuple]:  # fmt: skip
    """``(data, (train, val, test))`` for ``csbm`` or a :data:`NODE_DATASETS` name (needs ``root``).

    ``split_seed`` seeds the split rules that draw (GLNN's CPF rule for ``cpf-*`` and for user graphs
    without masks), as GLNN seeds them with the run's seed; ``data_seed`` seeds the CSBM graph and split.
    """
    key = str(dataset).lower()
    if key == "csbm":
        data = csbm(**{**CSBM_DEFAULTS, **(csbm_kwargs or {})}, seed=data_seed)
        num_test = min(1000, data.num_nodes // 2)
        num_val = min(500, (data.num_nodes - 40 - num_test) // 2)
        return data, per_class_split(data.y, 20, num_val, num_test, seed=data_seed)
    if key not in NODE_DATASETS:
        raise UserError(f"unknown dataset {dataset!r} (expected csbm, {', '.join(NODE_DATASETS)})")
    holds, loader = NODE_DATASETS[key]
    if root is None:
        raise UserError(f"dataset {key!r} needs --root (holding {holds})")
    data = loader(Path(root), split_seed)
    return data, split_from_masks(data)


@dataclass
class PipelineResult:
    """The trained teacher and students (in-memory modules, eval mode) and what serving a student needs.

    ``serving`` holds: ``in_dim``, ``num_classes``, ``class_names`` (index -> name),
    ``feature_preprocessing`` (what was applied to the raw features before the student saw them),
    ``student_config`` (:func:`graphs.models.node.build_node_model` keyword arguments),
    ``preset`` (the full configuration), ``teacher_checksum`` (SHA-256 of the teacher's state dict,
    :func:`condense.safeio.fingerprint_tensors`) and ``training`` (the full-batch / mini-batch line).
    """

    teacher_model: nn.Module
    teacher: RunResult
    students: dict[str, tuple[nn.Module, RunResult]] = field(default_factory=dict)
    serving: dict = field(default_factory=dict)


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
    mini_batch: MiniBatchConfig | None = None,
    memory_budget: int | None = None,
    log: Callable[[str], None] | None = None,
    checkpoint: Checkpointer | None = None,
) -> PipelineResult:
    """Train the teacher on ``split`` and one student per method; see module docstring for seeding.

    ``mini_batch=None`` trains full batch after checking that the estimated memory fits
    ``memory_budget`` bytes (default: what is available; a :class:`UserError` suggests
    ``--mini-batch`` otherwise); a :class:`MiniBatchConfig` trains both in sampled mini-batches
    (:mod:`graphs.g2m.minibatch`). ``log`` receives per-epoch lines in mini-batch mode. ``checkpoint``
    saves the teacher's and then each student's epochs (:class:`condense.checkpoint.Stages`) and resumes
    them bit for bit; finished models are kept in it and not trained again.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)} (expected {', '.join(METHODS)})")
    in_dim, num_classes = data.num_features, int(data.y.max()) + 1
    if mini_batch is None:
        training = check_full_batch(data, teacher_name, preset.teacher.hidden, preset.teacher.num_layers, memory_budget)
    else:
        mini_batch = mini_batch.check(preset.teacher.num_layers)
        training = (f"training: mini-batch, teacher fan-outs {','.join(map(str, mini_batch.fan_outs))} (input layer first), "
                    f"batch {mini_batch.batch_size}; student batch {mini_batch.student_batch_size}, "
                    f"LFD/HFD neighbours per node {mini_batch.student_fan_out} ({mini_batch.source})")  # fmt: skip
    stages = Stages(checkpoint)
    seed_everything(seed)
    teacher = build_node_model(teacher_name, in_dim, num_classes, **preset.teacher.model_kwargs())
    if mini_batch is None:
        t_result = train_teacher(teacher, data, split, **preset.teacher.fit_kwargs(), progress=progress, device=device,
                                 stages=stages)  # fmt: skip
    else:
        t_result = train_teacher_mini_batch(teacher, data, split, mini_batch, **preset.teacher.fit_kwargs(), seed=seed,
                                            progress=progress, device=device, log=log, stages=stages)  # fmt: skip
    out = PipelineResult(teacher, t_result)
    for method in methods:
        seed_everything(seed)
        student = build_node_model("mlp", in_dim, num_classes, **preset.student.model_kwargs())
        kwargs = dict(method=method, lamb=preset.lamb, tau=preset.tau, **preset.student.fit_kwargs(), progress=progress, device=device,
                      stages=stages)  # fmt: skip
        if mini_batch is None:
            result = distill(student, data, split, t_result.logits, **kwargs)
        else:
            result = distill_mini_batch(student, data, split, t_result.logits, mini_batch, seed=seed, log=log, **kwargs)
        out.students[method] = (student, result)
    out.serving = dict(
        in_dim=in_dim, num_classes=num_classes,
        class_names=list(getattr(data, "class_names", None) or [str(c) for c in range(num_classes)]),
        feature_preprocessing=getattr(data, "feature_preprocessing", "none"),
        student_config=preset.student.model_kwargs(), preset=asdict(preset),
        teacher_checksum=fingerprint_tensors(teacher.state_dict()), training=training,
    )  # fmt: skip
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
