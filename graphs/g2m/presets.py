r"""Per-dataset hyper-parameters from the official configurations.

``protocol="ff-g2m"`` (default) - ``LirongWu/FF-G2M/param/best_parameters.json``: teacher and
student share depth and width; Adam with lr 0.01 for the teacher (hard-coded in ``train.py``) and
``learning_rate`` for the student, weight decay 5e-4, <= 500 epochs, patience 50, GAT with 4 heads
and attention dropout 0.3. The official code feeds the field ``dropout_t`` to the *MLP student* and
``dropout_s`` to the *GNN teacher* (the names are swapped relative to their use); we follow the code,
since that produced the published numbers. All five methods (MLP, GLNN, LFD, HFD, FF-G2M) run with
the same preset, as in the paper's ablations, so they differ only in their loss.  Inductive observed
graph: ``observed="split"`` -- the FF-G2M code (``src/utils.py graph_split``, called on DGL's Planetoid
public masks in ``src/dataloader.py``) observes ``idx_train + idx_val + idx_test_tran`` only, so the
~40 % of Cora/CiteSeer/PubMed nodes in no split are dropped from the teacher's and the student's graph.

``protocol="glnn"`` - ``snap-research/graphless-neural-networks/train.conf.yaml``: teachers
2 x 128 (GCN 2 x 64, dropout 0.8), GAT with 8 heads (the code's default; the config's ``num_heads``
is never passed to the model), student MLP 2 x 128 with the per-dataset ``MLP`` block, lambda 0 (the
``--lamb`` default), student <= 200 epochs (``experiments/glnn_cpf.sh``), patience 50. GLNN trains
SAGE with neighbour sampling (fan-out 5,5, batch 512) and the student in mini-batches of 512; here
both are full batch unless ``--mini-batch`` (:meth:`Preset.mini_batch_config`). GLNN has no temperature; ``tau`` = 1 is only used by the LFD/HFD variants.
Which nodes carry the teacher's soft labels (``observed="all"``): the GLNN paper (Section 4, eq. 2)
distils on every node, :math:`V = V^L \cup V^U` (transductive) and every observed node
:math:`V^L \cup V^U_{obs}` (inductive). Its code (``train_student.py``) distils on ``idx_t =
cat([idx_train, idx_val, idx_test])`` (transductive) and ``obs_idx_t = cat([obs_idx_train, obs_idx_val,
obs_idx_test])`` of the observed graph ``idx_obs = cat([idx_train, idx_val, idx_test_tran])``
(``utils.graph_split``, inductive), the teacher's soft labels being its eval-mode log-probabilities
of every node at the best-validation epoch (``train_teacher.py``, ``evaluate``). On GLNN's datasets
those index sets are every node: its CPF split puts every non-train/val node into test
(``dataloader.get_train_val_test_split`` asserts that "all indices must be part of the split") and the
OGB splits partition the nodes. So paper and code agree, and ``"all"`` (KD over every observed node,
:class:`graphs.g2m.student.DistillationObjective`) is both; on splits that leave nodes out (Planetoid
public, CSBM), ``--observed split`` gives what GLNN's index code would do inductively (its
transductive ``idx_t`` would also drop them; not offered).

``csbm`` has no official configuration; its preset is ours, fixed a priori (not tuned): 2 x 128,
dropout 0.5 for both, lambda 0.2, tau 1.5. A user graph (``files``) gets the same.

GLNN's CPF files (``cpf-cora`` ... ``cpf-a-photo``, ``protocol="glnn"``): the teacher blocks above and
each dataset's ``MLP`` block; FF-G2M's presets exist for the three citation graphs only.

``ogbn-arxiv`` / ``ogbn-products`` (``protocol="glnn"`` only): the SAGE teacher block of
``train.conf.yaml`` (arxiv: 3 x 256, dropout 0.2, lr 0.01, weight decay 0, batch norm, fan-out
5,10,15; products: the same with dropout 0.5, lr 0.003, batch 4096), epochs/patience from
``experiments/sage_arxiv.sh`` (200/50) and ``sage_products.sh`` (40/10); the teacher batch size of
arxiv is ``train_teacher.py``'s default 512. Students: the ``MLP3w4`` (arxiv: 3 x 1024, dropout 0.5)
and ``MLP3w8`` (products: 3 x 2048, dropout 0.2, batch 4096) blocks that ``experiments/glnn_arxiv.sh``
/ ``glnn_products.sh`` name, with their 200/50 and 200/30 epochs/patience; lr 0.01, weight decay 0,
batch norm. GLNN publishes only SAGE for OGB: GCN and GAT teachers reuse its block (ours). The
student's neighbours per node for LFD/HFD in mini-batches (5) are ours.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from condense.utils import UserError
from graphs.g2m.minibatch import MiniBatchConfig

__all__ = ["PROTOCOLS", "DATASETS", "TEACHERS", "ModelConfig", "Preset", "get_preset"]

PROTOCOLS = ("ff-g2m", "glnn")
DATASETS = ("cora", "citeseer", "pubmed", "csbm", "files", "ogbn-arxiv", "ogbn-products",
            "cpf-cora", "cpf-citeseer", "cpf-pubmed", "cpf-a-computer", "cpf-a-photo")
TEACHERS = ("gcn", "sage", "gat")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and optimisation of one model."""

    num_layers: int
    hidden: int
    dropout: float
    lr: float = 0.01
    weight_decay: float = 5e-4
    max_epochs: int = 500
    patience: int = 50
    norm: str = "none"
    num_heads: int = 4
    attn_dropout: float = 0.3

    def model_kwargs(self) -> dict:
        """Keyword arguments for :func:`graphs.models.node.build_node_model`."""
        return dict(hidden=self.hidden, num_layers=self.num_layers, dropout=self.dropout, norm=self.norm, num_heads=self.num_heads, attn_dropout=self.attn_dropout)

    def fit_kwargs(self) -> dict:
        """Keyword arguments for ``train_teacher`` / ``distill``."""
        return dict(lr=self.lr, weight_decay=self.weight_decay, max_epochs=self.max_epochs, patience=self.patience)


@dataclass(frozen=True)
class Preset:
    teacher: ModelConfig
    student: ModelConfig
    lamb: float
    tau: float
    source: str
    observed: str = "all"  # inductive observed graph: "all" non-held-out nodes or the "split" nodes only
    #: sampling and batch sizes used with ``--mini-batch`` (None: GLNN's code defaults, fan-out 5 per layer, batch 512)
    mini_batch: MiniBatchConfig | None = None

    def mini_batch_config(self) -> MiniBatchConfig:
        """The preset's :class:`MiniBatchConfig`, or GLNN's code defaults for the teacher's depth."""
        return self.mini_batch or MiniBatchConfig(fan_outs=(5,) * self.teacher.num_layers)


# dataset -> teacher -> (num_layers, hidden_dim, dropout_t [MLP], dropout_s [GNN], tau, lamb, learning_rate [student])
_FFG2M = {
    "cora": {"gcn": (3, 512, 0.6, 0.5, 1.5, 0.4, 0.01), "gat": (3, 1024, 0.3, 0.6, 1.2, 0.5, 0.01), "sage": (3, 512, 0.4, 0.3, 1.3, 0.5, 0.01)},
    "citeseer": {"gcn": (2, 256, 0.5, 0.5, 1.5, 0.1, 0.01), "gat": (2, 2048, 0.4, 0.5, 1.0, 0.1, 0.01), "sage": (2, 1024, 0.5, 0.5, 1.2, 0.1, 0.01)},
    "pubmed": {"gcn": (2, 1024, 0.3, 0.6, 1.5, 0.0, 0.01), "gat": (2, 2048, 0.3, 0.5, 1.2, 0.0, 0.01), "sage": (2, 2048, 0.6, 0.3, 1.3, 0.0, 0.01)},
}

# GLNN train.conf.yaml: teacher blocks (shared by the three CPF citation datasets) and MLP blocks.
_GLNN_TEACHER = {
    "gcn": ModelConfig(2, 64, 0.8, weight_decay=0.001),
    "sage": ModelConfig(2, 128, 0.0, weight_decay=0.0005),
    "gat": ModelConfig(2, 128, 0.6, weight_decay=0.01, num_heads=8, attn_dropout=0.3),
}
_GLNN_STUDENT = {
    "cora": ModelConfig(2, 128, 0.6, lr=0.01, weight_decay=0.005, max_epochs=200),
    "citeseer": ModelConfig(2, 128, 0.1, lr=0.01, weight_decay=0.001, max_epochs=200),
    "pubmed": ModelConfig(2, 128, 0.4, lr=0.005, weight_decay=0.0, max_epochs=200),
    "a-computer": ModelConfig(2, 128, 0.3, lr=0.001, weight_decay=0.002, max_epochs=200),
    "a-photo": ModelConfig(2, 128, 0.3, lr=0.005, weight_decay=0.002, max_epochs=200),
}

# GLNN train.conf.yaml ogbn blocks (SAGE teacher, MLP3w4 / MLP3w8 students) and experiments/*.sh epochs.
_OGBN = {
    "ogbn-arxiv": Preset(
        ModelConfig(3, 256, 0.2, lr=0.01, weight_decay=0.0, max_epochs=200, patience=50, norm="batch", num_heads=8),
        ModelConfig(3, 1024, 0.5, lr=0.01, weight_decay=0.0, max_epochs=200, patience=50, norm="batch"),
        lamb=0.0, tau=1.0, source="GLNN train.conf.yaml (SAGE, MLP3w4), experiments/sage_arxiv.sh, glnn_arxiv.sh",
        mini_batch=MiniBatchConfig((5, 10, 15), 512, 512, 5, source="GLNN train.conf.yaml fan_out, train_teacher.py batch_size default"),
    ),
    "ogbn-products": Preset(
        ModelConfig(3, 256, 0.5, lr=0.003, weight_decay=0.0, max_epochs=40, patience=10, norm="batch", num_heads=8),
        ModelConfig(3, 2048, 0.2, lr=0.01, weight_decay=0.0, max_epochs=200, patience=30, norm="batch"),
        lamb=0.0, tau=1.0, source="GLNN train.conf.yaml (SAGE, MLP3w8), experiments/sage_products.sh, glnn_products.sh",
        mini_batch=MiniBatchConfig((5, 10, 15), 4096, 4096, 5, source="GLNN train.conf.yaml fan_out and batch_size"),
    ),
}

_CSBM = Preset(ModelConfig(2, 128, 0.5), ModelConfig(2, 128, 0.5), lamb=0.2, tau=1.5, source="ours (CSBM has no official config)")
_FILES = Preset(ModelConfig(2, 128, 0.5), ModelConfig(2, 128, 0.5), lamb=0.2, tau=1.5, source="ours (a user graph has no official config)")


def get_preset(dataset: str, teacher: str, protocol: str = "ff-g2m") -> Preset:
    """Official hyper-parameters for ``(dataset, teacher)`` under ``protocol``."""
    dataset, teacher = str(dataset).lower(), str(teacher).lower()
    if dataset not in DATASETS:
        raise UserError(f"no preset for dataset {dataset!r} (expected one of {', '.join(DATASETS)})")
    if teacher not in TEACHERS:
        raise UserError(f"unknown teacher {teacher!r} (expected one of {', '.join(TEACHERS)})")
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown preset protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")
    if dataset == "csbm":
        return _CSBM
    if dataset == "files":
        return _FILES
    if dataset in _OGBN:
        if protocol != "glnn":
            raise UserError(f"FF-G2M publishes no configuration for {dataset}: use --preset glnn")
        base = _OGBN[dataset]
        return base if teacher == "sage" else replace(base, source=base.source + f"; {teacher.upper()} reuses the SAGE block (ours)")
    dataset = dataset.removeprefix("cpf-")
    if protocol == "glnn":
        return Preset(_GLNN_TEACHER[teacher], _GLNN_STUDENT[dataset], lamb=0.0, tau=1.0, source="GLNN train.conf.yaml")
    if dataset not in _FFG2M:
        raise UserError(f"FF-G2M publishes no configuration for {dataset}: use --preset glnn")
    layers, hidden, drop_mlp, drop_gnn, tau, lamb, lr = _FFG2M[dataset][teacher]
    return Preset(
        teacher=ModelConfig(layers, hidden, drop_gnn),
        student=ModelConfig(layers, hidden, drop_mlp, lr=lr),
        lamb=lamb,
        tau=tau,
        source="FF-G2M param/best_parameters.json",
        observed="split",
    )
