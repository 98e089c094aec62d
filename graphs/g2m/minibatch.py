r"""Mini-batch GNN-to-MLP training for graphs that do not fit full batch (GLNN's ogbn-arxiv/products recipe).

* **Teacher** (GLNN ``train_and_eval.train_sage``): each epoch shuffles the training nodes into
  batches of ``batch_size``; each batch samples one block per layer with the preset's fan-outs
  (:mod:`graphs.g2m.sampling`) and takes one Adam step on the batch's cross-entropy. Validation,
  early stopping and the soft labels use **layer-wise full-graph inference**
  (:func:`layerwise_inference`, GLNN's ``SAGE.inference``): layer ``l`` is computed for every node
  from layer ``l - 1`` of all its neighbours, in chunks of target nodes, so no node's receptive
  field is ever expanded and the result equals the full-batch forward pass.
* **Student** (GLNN ``train_mini_batch``): each epoch shuffles the distillation nodes (every observed
  node; the training nodes for ``mlp``) into batches. The loss of a batch :math:`B` is
  :math:`\lambda\,\mathcal L_{CE}(B \cap V_L) + (1-\lambda)\,\mathcal L_{distill}(B)` with the
  terms of :mod:`graphs.g2m.losses`: KD on :math:`B`; FF-G2M's LFD over the edges
  :math:`(i, j)`, :math:`i \in B`, :math:`j` among ``student_fan_out`` sampled neighbours of
  :math:`i` plus :math:`i` itself; HFD over the same edges without self-loops, with the student
  evaluated on :math:`B` and the sampled neighbours. The edge terms are averaged over the batch's
  edges, so every epoch is an unbiased-per-node, not per-edge, estimate of the full-batch means
  (the full-batch path weighs high-degree nodes by their degree; here each node's ``fan_out``
  edges). Deviation: GLNN's code runs a separate pass over the labelled nodes weighted by
  :math:`\lambda` and another over the teacher nodes weighted by :math:`1-\lambda`; here one pass
  carries both terms (identical for the ogbn presets, whose :math:`\lambda = 0`).

Both loops run data-parallel under ``torchrun`` (``torch.distributed`` initialised, gloo or NCCL): every
rank draws the same batch order, takes every ``world``-th node of each batch and samples with its own
generator; after each backward pass the gradients are averaged over the ranks and the buffers (batch-norm
statistics) broadcast from rank 0, so the replicas stay identical (:class:`_Shards`). One process is the
same loop with one generator.

Full batch stays the default: :func:`full_batch_bytes` estimates what full-batch training would
allocate before anything is allocated, and :func:`check_full_batch` refuses, with a line that
suggests ``--mini-batch``, when it exceeds the memory budget.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from tqdm.auto import trange

from condense.utils import UserError, check_positive, check_probability, make_generator, resolve_device
from graphs.data.node_splits import NodeSplit, observed_graph
from graphs.g2m.losses import Target, ce_loss, kl_from
from graphs.g2m.sampling import CSR, full_block, sample_blocks, sample_neighbors
from graphs.g2m.student import METHODS
from condense.checkpoint import Stages
from graphs.g2m.train import RunResult, accuracy, assemble, fit_epochs

__all__ = ["MiniBatchConfig", "full_batch_bytes", "check_full_batch", "available_bytes", "layerwise_inference",
           "train_teacher_mini_batch", "distill_mini_batch"]  # fmt: skip


@dataclass(frozen=True)
class MiniBatchConfig:
    """Sampling and batching: ``fan_outs`` per teacher layer (input layer first, ``-1`` = all),
    teacher and student batch sizes, the student's neighbours per node for LFD/HFD, and the chunk
    of target nodes per step of layer-wise inference."""

    fan_outs: tuple[int, ...] = (5, 5)
    batch_size: int = 512
    student_batch_size: int = 512
    student_fan_out: int = 5
    eval_batch_size: int = 4096
    source: str = "GLNN train_teacher.py / train_student.py defaults"

    def check(self, num_layers: int) -> MiniBatchConfig:
        if len(self.fan_outs) != num_layers:
            raise UserError(f"--fan-out has {len(self.fan_outs)} entries but the teacher has {num_layers} layers")
        for f in (*self.fan_outs, self.student_fan_out):
            if f == 0 or f < -1:
                raise UserError(f"fan-outs must be positive or -1 (all neighbours), got {f}")
        for name, b in (("batch size", self.batch_size), ("student batch size", self.student_batch_size), ("eval batch size", self.eval_batch_size)):
            if b < 1:
                raise UserError(f"{name} must be >= 1, got {b}")
        return self


def available_bytes() -> int:
    """Memory this process may still allocate: ``MemAvailable`` (psutil), capped by a cgroup limit."""
    import psutil

    avail = psutil.virtual_memory().available
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit():
            avail = min(avail, int(text) - psutil.Process().memory_info().rss)
    return int(avail)


def full_batch_bytes(num_nodes: int, num_edges: int, num_features: int, num_classes: int, hidden: int, num_layers: int,
                     model: str) -> int:  # fmt: skip
    """What full-batch training allocates beyond the loaded graph, estimated from the shapes: per
    node, every layer's activations kept for the backward pass (output, activation, float64
    dropout draw, gradient: ~5 floats per unit; GAT: per head and edge too), the logits; per edge
    (plus self-loops), the sparse aggregation and its transpose (index, pointer, weight: 20 bytes
    each) or GAT's per-edge attention (4 heads x 4 tensors)."""
    units = num_features + hidden * max(num_layers - 1, 0) + num_classes
    node_bytes = 4 * 6 * num_nodes * units
    e = num_edges + num_nodes
    edge_bytes = 2 * 20 * e if model != "gat" else e * (16 + 4 * 4 * 8 * num_layers)
    return node_bytes + edge_bytes


def check_full_batch(data: Data, model: str, hidden: int, num_layers: int, budget: int | None = None) -> str:
    """The line the CLI prints, or a :class:`UserError` suggesting ``--mini-batch`` when the
    estimate exceeds ``budget`` bytes (default: :func:`available_bytes`)."""
    need = full_batch_bytes(data.num_nodes, data.edge_index.size(1), data.num_features, int(data.y.max()) + 1, hidden, num_layers, model)
    have = available_bytes() if budget is None else int(budget)
    gib = 1 << 30
    if need > have:
        raise UserError(f"full-batch {model.upper()} training on {data.num_nodes} nodes / {data.edge_index.size(1)} edges needs about "
                        f"{need / gib:.1f} GiB but {have / gib:.1f} GiB are available: rerun with --mini-batch")  # fmt: skip
    return f"training: full batch (estimated {need / gib:.2f} GiB of {have / gib:.1f} GiB available)"


def _batches(idx: Tensor, size: int, gen: torch.Generator) -> Iterator[Tensor]:
    perm = idx[torch.randperm(len(idx), generator=gen)]
    yield from perm.split(size)


class _Shards:
    """Node batches and optimizer steps, data-parallel over the ``torch.distributed`` ranks when initialised."""

    def __init__(self, seed: int) -> None:
        dist = torch.distributed
        on = dist.is_available() and dist.is_initialized()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if on else (0, 1)
        self.order = make_generator(seed)
        self.sample = self.order if self.world == 1 else make_generator(seed + 1 + self.rank)

    def generators(self) -> dict[str, torch.Generator]:
        """The batch-order and sampling generators (the same one in a single process), for checkpoints."""
        return {"order": self.order, "sample": self.sample}

    def batches(self, idx: Tensor, size: int) -> Iterator[Tensor]:
        for batch in _batches(idx, size, self.order):
            yield batch[self.rank :: self.world]

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss: Tensor | None) -> None:
        """Backward (``loss=None``: this rank's shard was empty), average gradients, step, sync buffers."""
        if loss is not None:
            loss.backward()
        if self.world > 1:
            for p in model.parameters():
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                torch.distributed.all_reduce(grad)
                p.grad = grad / self.world
        optimizer.step()
        if self.world > 1:
            for b in model.buffers():
                torch.distributed.broadcast(b, 0)


@torch.no_grad()
def layerwise_inference(model: nn.Module, x: Tensor, csr: CSR, chunk: int = 4096, device: torch.device | None = None) -> Tensor:
    """Eval-mode logits of every node, one layer at a time over all nodes (see module docstring)."""
    model.eval()
    device = device or next(model.parameters()).device
    scratch = torch.full((csr.num_nodes,), -1, dtype=torch.long)
    h = x
    for i in range(len(model.layers)):
        out = None
        for targets in torch.arange(csr.num_nodes).split(chunk):
            block = full_block(csr, targets, scratch)
            res = model.block_layer(i, h[block.nodes].to(device), _to(block, device)).cpu()
            if out is None:
                out = res.new_empty(csr.num_nodes, res.size(1))
            out[targets] = res
        h = out
    return h


def _to(block, device: torch.device):
    if device.type == "cpu":
        return block
    return type(block)(block.nodes.to(device), block.num_dst, block.edge_index.to(device), block.degree.to(device))


def train_teacher_mini_batch(
    model: nn.Module,
    data: Data,
    split: NodeSplit,
    config: MiniBatchConfig,
    *,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    max_epochs: int = 500,
    patience: int = 50,
    seed: int = 0,
    progress: bool = False,
    device: str | torch.device | None = "cpu",
    log: Callable[[str], None] | None = None,
    stages: Stages | None = None,
) -> RunResult:
    """Neighbour-sampled teacher training on the observed graph; logits of all nodes by layer-wise inference.

    ``stages``: resumable epochs (:func:`graphs.g2m.train.fit_epochs`; the batch-order and sampling generators included)."""
    device = resolve_device(device)
    config.check(len(model.layers))
    view = observed_graph(data.x, data.y, data.edge_index, split)
    csr = CSR.from_edge_index(view.edge_index, view.x.size(0))
    model.to(device)
    shards = _Shards(seed)
    scratch = torch.full((csr.num_nodes,), -1, dtype=torch.long)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    y = view.y

    def epoch() -> float:
        total, count = 0.0, 0
        for seeds in shards.batches(view.train, config.batch_size):
            optimizer.zero_grad()
            loss = None
            if len(seeds):
                blocks = [_to(b, device) for b in sample_blocks(csr, seeds, list(config.fan_outs), shards.sample, scratch)]
                loss = ce_loss(model.forward_blocks(view.x[blocks[0].nodes.cpu()].to(device), blocks), y[seeds].to(device))
                total, count = total + loss.item() * len(seeds), count + len(seeds)
            shards.step(model, optimizer, loss)
        return total / max(count, 1)

    best: dict = {}

    def val() -> float:
        start = time.perf_counter()
        logits = layerwise_inference(model, view.x, csr, config.eval_batch_size, device)
        if log:
            log(f"teacher layer-wise inference: {time.perf_counter() - start:.1f}s")
        score = accuracy(logits[view.val], y[view.val])
        if score >= best.get("val", -float("inf")):  # the epoch fit_epochs keeps: its logits are the soft labels
            best.update(val=score, logits=logits)
        return score

    timing = _Timer(log, "teacher")
    fitted = fit_epochs(model, optimizer, timing.wrap(epoch), val, max_epochs=max_epochs, patience=patience, progress=progress,
                        desc="teacher (mini-batch)", stages=stages, generators=shards.generators(), extra=best)  # fmt: skip
    obs_logits = best.pop("logits")
    ind_logits = None
    if split.inductive:
        full = CSR.from_edge_index(data.edge_index, data.num_nodes)
        ind_logits = layerwise_inference(model, data.x, full, config.eval_batch_size, device)[split.test_ind]
    return assemble(obs_logits, ind_logits, data.y, view, split, fitted)


class _Timer:
    """Seconds per epoch of a training loop, reported through ``log`` (for the benchmark)."""

    def __init__(self, log: Callable[[str], None] | None, what: str) -> None:
        self.log, self.what, self.seconds = log, what, []

    def wrap(self, fn: Callable[[], float]) -> Callable[[int], float]:
        def run(epoch: int) -> float:
            start = time.perf_counter()
            out = fn()
            self.seconds.append(time.perf_counter() - start)
            if self.log:
                self.log(f"{self.what} epoch {len(self.seconds)}: {self.seconds[-1]:.1f}s, loss {out:.4f}")
            return out

        return run


def _edge_batch(csr: CSR, batch: Tensor, fan_out: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Rows to evaluate the student on (``batch`` first, then the sampled neighbours) and the
    sampled edges as ``(i, j)`` positions into those rows (``i`` in the batch)."""
    nbr, i = sample_neighbors(csr, batch, fan_out, gen)
    rows = torch.cat([batch, nbr])
    j = torch.arange(len(batch), len(rows))
    return rows, i, j


def distill_mini_batch(
    student: nn.Module,
    data: Data,
    split: NodeSplit,
    teacher_logits: Tensor,
    config: MiniBatchConfig,
    *,
    method: str = "glnn",
    lamb: float = 0.0,
    tau: float = 1.0,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    max_epochs: int = 500,
    patience: int = 50,
    seed: int = 0,
    progress: bool = False,
    device: str | torch.device | None = "cpu",
    log: Callable[[str], None] | None = None,
    stages: Stages | None = None,
) -> RunResult:
    """Train the graph-free ``student`` in node mini-batches (see module docstring); ``stages`` as for the teacher."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r} (expected one of {', '.join(METHODS)})")
    lamb, tau = check_probability("lamb", lamb), check_positive("tau", tau)
    if tuple(teacher_logits.shape) != (data.num_nodes, int(data.y.max()) + 1):
        raise UserError(f"teacher logits have shape {tuple(teacher_logits.shape)}, expected ({data.num_nodes}, {int(data.y.max()) + 1})")
    device = resolve_device(device)
    config.check(len(config.fan_outs))
    view = observed_graph(data.x, data.y, data.edge_index, split)
    n = view.x.size(0)
    csr = CSR.from_edge_index(view.edge_index, n) if method in ("lfd", "hfd", "ff-g2m") else None
    t_obs = teacher_logits[split.observed].float()
    t_log = F.log_softmax(t_obs, dim=1)
    is_train = torch.zeros(n, dtype=torch.bool)
    is_train[view.train] = True
    student.to(device)
    shards = _Shards(seed)
    gen = shards.sample
    optimizer = torch.optim.Adam(student.parameters(), lr=lr, weight_decay=weight_decay)
    nodes = view.train if method == "mlp" else torch.arange(n)

    def batch_loss(batch: Tensor) -> Tensor:
        if method in ("hfd", "ff-g2m"):
            rows, i, j = _edge_batch(csr, batch, config.student_fan_out, gen)
        else:
            rows = batch
        z = student(view.x[rows].to(device))
        zb = z[: len(batch)]
        lab = is_train[batch].to(device)
        ce = ce_loss(zb[lab], view.y[batch].to(device)[lab]) if bool(lab.any()) else zb.sum() * 0.0
        if method == "mlp":
            return ce
        log_s = F.log_softmax(zb, dim=1)
        term = zb.new_zeros(())
        if method == "glnn":
            term = kl_from(Target.of(t_log[batch].to(device)), log_s)
        if method in ("lfd", "ff-g2m"):
            if method == "lfd":
                nbr, i_l = sample_neighbors(csr, batch, config.student_fan_out, gen)
            else:
                nbr, i_l = rows[j], i
            own = torch.arange(len(batch))
            src, tgt = torch.cat([i_l, own]), torch.cat([nbr, batch])  # student at src (batch), teacher at tgt
            term = term + kl_from(Target.of(t_log[tgt].to(device)), log_s[src.to(device)])
        if method in ("hfd", "ff-g2m"):
            t_diff = F.log_softmax((t_obs[batch[i]] - t_obs[rows[j]]).abs() / tau, dim=1)
            s_diff = F.log_softmax((z[i.to(device)] - z[j.to(device)]).abs() / tau, dim=1)
            term = term + kl_from(Target.of(t_diff.to(device)), s_diff)
        return lamb * ce + (1 - lamb) * term

    def epoch() -> float:
        total, count = 0.0, 0
        for batch in shards.batches(nodes, config.student_batch_size):
            optimizer.zero_grad()
            loss = batch_loss(batch) if len(batch) else None
            if loss is not None:
                total, count = total + loss.item() * len(batch), count + len(batch)
            shards.step(student, optimizer, loss)
        return total / max(count, 1)

    def predict(x: Tensor) -> Tensor:
        return torch.cat([student(part.to(device)).cpu() for part in x.split(config.eval_batch_size * 16)]) if len(x) else x.new_zeros(0, t_log.size(1))

    def val() -> float:
        return accuracy(predict(view.x[view.val]), view.y[view.val])

    timing = _Timer(log, f"student:{method}")
    fitted = fit_epochs(student, optimizer, timing.wrap(epoch), val, max_epochs=max_epochs, patience=patience, progress=progress,
                        desc=f"student:{method} (mini-batch)", stages=stages, generators=shards.generators())  # fmt: skip
    with torch.no_grad():
        obs_logits = predict(view.x)
        ind_logits = predict(data.x[split.test_ind]) if split.inductive else None
    return assemble(obs_logits, ind_logits, data.y, view, split, fitted)
