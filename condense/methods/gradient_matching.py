r"""DC — Dataset Condensation with Gradient Matching (Zhao, Mopuri & Bilen, ICLR 2021) and
DSA — ... with Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021).

Algorithm 1 of DC (DSA = the same loop with ``A_omega`` applied, Eq. 5 of DSA), as in the official
``main.py`` of VICO-UoE/DatasetCondensation::

    for k in 1..K:                                           # K = iterations (paper: 1000)
        theta ~ P_theta  (fresh random ConvNet, SGD lr_net 0.01, no momentum)
        for t in 1..T:                                       # T = outer_loop(IPC)
            if the net has BatchNorm: one real pass of 16 images per class, then freeze mu/sigma
            for each class c:
                B_c^T ~ T_c (256 real images),  B_c^S = S_c,  omega ~ Omega (DSA only, shared)
                D_c = d( grad_theta CE(A(B_c^T, omega)) , grad_theta CE(A(B_c^S, omega)) )
            S <- SGD step on sum_c D_c                        (lr_img 0.1, momentum 0.5)
            if t < T: train theta on S for inner_loop(IPC) epochs (batch 256; DSA: per-image DSA)

The layer-wise distance (Eq. 10 of DC, official ``distance_wb``) is :func:`gradient_distance`:
each weight gradient is reshaped to ``(out, rest)`` and ``sum_out (1 - cos)`` over its output
rows is summed over layers; 1-D parameters (biases, norm affine) contribute nothing. The official
``dis_metric`` alternatives ``mse`` and ``cos`` (over all gradients flattened) are options.

Implementation notes (not deviations in the result):

* The loop runs ``iterations * outer_loop`` image steps through :func:`run_loop`; step ``(k, t)``
  first performs the inner-loop training that the official code runs at the end of step
  ``(k, t-1)`` — nothing happens in between, so the sequence of updates is identical.
* The random network is one persistent module re-initialised at every ``t = 0``; its state dict is
  part of the checkpointed tensors, so resume is bit-for-bit at any step. The inner optimiser is
  plain SGD (stateless), so nothing else needs saving.
* Each class's loss is back-propagated on its own (``backward(inputs=[images])``): the same image
  gradient as the official summed loss, with the memory of one class.
* Evaluation: the official DC evaluator trains with its DC augmentation (crop/scale/rotate/noise
  by dataset); this framework has DSA or nothing, so DC sets are marked ``train_dsa=False``.
* ``outer_loop``/``inner_loop`` follow the official ``get_loops`` table for IPC 1/10/20/30/40/50;
  other IPCs need both set explicitly (the official code exits).

Under ``torchrun`` the per-class matching terms are split over ranks (:mod:`condense.distributed`):
every rank holds the whole synthetic set, draws every class's real indices and DSA parameters,
matches its own classes and the image gradients are summed (each class owns its slice: exact). The
inner network update and the BatchNorm freeze run alike on every rank (same images, same draws),
so every rank keeps the same network without communication; k ranks give one process's result
bit for bit.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..augment import AUTO, DSA, make_dsa
from ..checkpoint import Checkpointer
from ..data import ImageDataset
from ..distributed import join_run
from ..synset import SyntheticSet, dsa_record
from ..utils import UserError
from .base import build_network, make_synset, register_method, run_loop, start_pixels, validate_config

__all__ = [
    "DCConfig",
    "DSAConfig",
    "LOOPS",
    "get_loops",
    "gradient_distance",
    "match_loss",
    "freeze_batchnorm",
    "distill_dc",
    "distill_dsa",
]

# Official ``get_loops``: IPC -> (outer_loop, inner_loop).
LOOPS: dict[int, tuple[int, int]] = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
METRICS = ("ours", "mse", "cos")
_EPS = 1e-6  # official ``distance_wb`` denominator guard


@dataclass
class DCConfig:
    iterations: int = field(default=1000, metadata={"help": "outer iterations K, each with a fresh network (paper: 1000)"})
    lr_img: float = field(default=0.1, metadata={"help": "SGD learning rate of the synthetic images (official: 0.1)"})
    momentum_img: float = field(default=0.5, metadata={"help": "SGD momentum of the synthetic images"})
    lr_net: float = field(default=0.01, metadata={"help": "SGD learning rate of the network in the inner loop"})
    batch_real: int = field(default=256, metadata={"help": "real images per class per matching step"})
    batch_train: int = field(default=256, metadata={"help": "mini-batch size when training the network on S"})
    outer_loop: int = field(default=0, metadata={"help": "matching steps per network (0 = official table by IPC)"})
    inner_loop: int = field(default=0, metadata={"help": "epochs on S between matching steps (0 = official table by IPC)"})
    init: str = field(default="noise", metadata={"help": "initialisation: real or noise (official DC default: noise)"})
    model: str = field(default="convnet", metadata={"help": "architecture of the random networks"})
    width: int = field(default=128, metadata={"help": "ConvNet width"})
    dis_metric: str = field(default="ours", metadata={"help": "gradient distance: ours (layer-wise, Eq. 10), mse or cos"})
    bn_batch_per_class: int = field(default=16, metadata={"help": "real images per class used to freeze BatchNorm statistics"})
    dsa_strategy: str = field(default="none", metadata={"help": "DSA strategy ('none' = DC)"})
    dsa_align_corners: bool = field(default=False, metadata={"help": "DSA scale/rotate grid align_corners (official DatasetCondensation/DataDAM utils.py: False)"})


@dataclass
class DSAConfig(DCConfig):
    init: str = field(default="real", metadata={"help": "initialisation: real or noise (DSA paper/README: real)"})
    dsa_strategy: str = field(default=AUTO, metadata={"help": "DSA strategy ('none' = DC; auto: no flip on digits/mnist)"})


def get_loops(ipc: int, outer_loop: int = 0, inner_loop: int = 0) -> tuple[int, int]:
    """``(outer_loop, inner_loop)``: explicit values, else the official table for ``ipc``."""
    if outer_loop and inner_loop:
        return outer_loop, inner_loop
    if outer_loop or inner_loop:
        raise UserError("set both outer_loop and inner_loop, or neither (0 = official table)")
    if ipc not in LOOPS:
        raise UserError(f"no official outer/inner loop setting for ipc={ipc} (table: {sorted(LOOPS)}); set outer_loop and inner_loop")
    return LOOPS[ipc]


def gradient_distance(g_real: torch.Tensor, g_syn: torch.Tensor) -> torch.Tensor:
    r"""Layer distance of DC (Eq. 10): ``sum_i (1 - <A_i, B_i> / (|A_i| |B_i| + 1e-6))``.

    ``A_i``/``B_i`` are the rows of the gradients reshaped to ``(out_channels, rest)`` (conv
    ``out x in x h x w``, linear ``out x in``, layer norm ``C x h x w``). 1-D gradients (biases,
    norm scales) give 0, as in the official ``distance_wb``.
    """
    if g_real.shape != g_syn.shape:
        raise ValueError(f"gradient shapes differ: {tuple(g_real.shape)} vs {tuple(g_syn.shape)}")
    if g_real.dim() <= 1:
        return g_syn.new_zeros(())
    a, b = g_real.reshape(g_real.shape[0], -1), g_syn.reshape(g_syn.shape[0], -1)
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + _EPS)
    return (1 - cos).sum()


def match_loss(g_real: Sequence[torch.Tensor], g_syn: Sequence[torch.Tensor], metric: str = "ours") -> torch.Tensor:
    """Official ``match_loss``: ``ours`` sums :func:`gradient_distance` over layers; ``mse``/``cos``
    compare all gradients flattened into one vector."""
    if metric == "ours":
        return torch.stack([gradient_distance(r, s) for r, s in zip(g_real, g_syn)]).sum()
    vr, vs = torch.cat([g.reshape(-1) for g in g_real]), torch.cat([g.reshape(-1) for g in g_syn])
    if metric == "mse":
        return ((vs - vr) ** 2).sum()
    if metric == "cos":
        return 1 - (vr * vs).sum() / (vr.norm() * vs.norm() + _EPS)
    raise UserError(f"unknown dis_metric {metric!r}; choose {', '.join(METRICS)}")


def _batchnorms(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def freeze_batchnorm(net: nn.Module, real: torch.Tensor) -> bool:
    """One train-mode pass of ``real`` updates the running statistics, then BatchNorm layers switch
    to eval mode (official DC: a 1-image-per-class synthetic batch is too small for batch stats)."""
    bns = _batchnorms(net)
    if bns:
        net.train()
        net(real)
        for m in bns:
            m.eval()
    return bool(bns)


def _class_gradient(net: nn.Module, x: torch.Tensor, c: int, create_graph: bool) -> tuple[torch.Tensor, ...]:
    loss = F.cross_entropy(net(x), torch.full((len(x),), c, dtype=torch.long, device=x.device))
    return torch.autograd.grad(loss, tuple(net.parameters()), create_graph=create_graph)


def _train_on_synthetic(
    net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch: int,
    dsa: DSA | None, gen: torch.Generator,
) -> None:  # fmt: skip
    """Official ``epoch('train', ...)`` repeated ``epochs`` times: shuffled mini-batches, plain SGD,
    independent per-image DSA when augmenting."""
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen).to(x.device)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            xb = dsa(x[idx], generator=gen) if dsa is not None else x[idx]
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def _distill(
    method: str, dataset: ImageDataset, ipc: int, config: DCConfig, *, device: torch.device, seed: int, progress: bool,
    checkpoint: Checkpointer | None,
) -> SyntheticSet:  # fmt: skip
    validate_config(config)
    if config.dis_metric not in METRICS:
        raise UserError(f"unknown dis_metric {config.dis_metric!r}; choose {', '.join(METRICS)}")
    outer, inner = get_loops(ipc, config.outer_loop, config.inner_loop)
    dsa: DSA | None = make_dsa(config.dsa_strategy, dataset.name, align_corners=config.dsa_align_corners)
    dsa = dsa if dsa.enabled else None
    started = time.perf_counter()
    ctx = join_run(device, method, dataset, ipc, seed, config, dataset.num_classes, "classes")
    images, labels, gen, sampler = start_pixels(dataset, ipc, config.init, seed, device, config.model, config.width)
    real_x, mine = dataset.train_x, ctx.block(dataset.num_classes)
    optimiser = torch.optim.SGD([images], lr=config.lr_img, momentum=config.momentum_img)
    net = build_network(config.model, dataset, config.width).to(device)
    net_opt = torch.optim.SGD(net.parameters(), lr=config.lr_net)  # stateless: needs no checkpointing
    has_bn = bool(_batchnorms(net))

    def real_batch(c: int, n: int) -> torch.Tensor:
        return real_x[sampler.sample(c, n, gen)].to(device)

    def step(k: int) -> float:
        if k % outer == 0:  # a fresh random network theta ~ P_theta
            net.load_state_dict(build_network(config.model, dataset, config.width).state_dict())
        else:  # the inner loop that follows the previous matching step
            syn = images.detach()
            _train_on_synthetic(net, net_opt, syn, labels, epochs=inner, batch=config.batch_train, dsa=dsa, gen=gen)
        if has_bn:
            freeze_batchnorm(net, torch.cat([real_batch(c, config.bn_batch_per_class) for c in range(dataset.num_classes)]))
        else:
            net.train()
        losses = {}
        for c in range(dataset.num_classes):  # every class's draws on every rank: generators stay in step
            idx = sampler.sample(c, config.batch_real, gen)
            params = dsa.sample(1, dataset.image_size, gen) if dsa is not None else None  # what dsa.siamese draws
            if c not in mine:
                continue
            real, syn = real_x[idx].to(device), images[c * ipc : (c + 1) * ipc]
            if params is not None:
                real, syn = dsa.apply(real, params), dsa.apply(syn, params)
            g_real = [g.detach() for g in _class_gradient(net, real, c, create_graph=False)]
            loss = match_loss(g_real, _class_gradient(net, syn, c, create_graph=True), config.dis_metric)
            loss.backward(inputs=[images])
            losses[c] = loss.detach()
        ctx.reduce_grads([images])
        # one host sync per step, not one per class; the same float sum in class order
        return sum(ctx.gather_units(losses, dataset.num_classes).tolist())

    history = run_loop(
        step, config.iterations * outer, tensors={"images": images, **{f"net.{k}": v for k, v in net.state_dict().items()}},
        optimisers={"images": optimiser}, generators={"gen": gen}, checkpoint=checkpoint, progress=progress,
        desc=f"{method.upper()} (x{outer} steps/net)",
    )  # fmt: skip
    extra = {**dsa_record(dsa, "dc"), "outer_loop": outer, "inner_loop": inner}
    return make_synset(method, images, labels, dataset, ipc=ipc, seed=seed, config=config, started=started, extra=extra,
                       history=history)


def distill_dc(
    dataset: ImageDataset, ipc: int, config: DCConfig, *, device: torch.device, seed: int, progress: bool = True,
    checkpoint: Checkpointer | None = None,
) -> SyntheticSet:  # fmt: skip
    """Condense ``dataset`` to ``ipc`` images per class by gradient matching (DC)."""
    return _distill("dc", dataset, ipc, config, device=device, seed=seed, progress=progress, checkpoint=checkpoint)


def distill_dsa(
    dataset: ImageDataset, ipc: int, config: DSAConfig, *, device: torch.device, seed: int, progress: bool = True,
    checkpoint: Checkpointer | None = None,
) -> SyntheticSet:  # fmt: skip
    """Gradient matching with Siamese augmentation of both batches (DSA)."""
    return _distill("dsa", dataset, ipc, config, device=device, seed=seed, progress=progress, checkpoint=checkpoint)


register_method("dc", DCConfig, distill_dc, "gradient matching (Zhao, Mopuri & Bilen 2021)")
register_method("dsa", DSAConfig, distill_dsa, "gradient matching with Siamese augmentation (Zhao & Bilen 2021)")
