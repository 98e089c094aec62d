r"""DataDAM — Efficient Dataset Distillation with Attention Matching (Sajedi, Khaki et al., ICCV 2023).

Algorithm 1 of the paper, as in the official ``main_DataDAM.py`` (DataDistillation/DataDAM)::

    for it in 1..K:                                      # K = iterations (paper: 8000)
        theta ~ P_theta  (freshly initialised ConvNet, frozen, train mode)
        for each class c:
            B_c^T ~ T_c (64 real images),  B_c^S = S_c,  omega ~ Omega (one DSA draw for both)
        L_SAM = sum_c sum_{l < L} || mean_i a_l(A(x_i, omega)) - mean_j a_l(A(s_j, omega)) ||^2   (Eq. 2)
        L_MMD = sum_c            || mean_i phi(A(x_i, omega)) - mean_j phi(A(s_j, omega)) ||^2   (Eq. 3)
        S <- S - eta_S * grad_S 100 * (L_SAM + lambda * L_MMD)                                (Eq. 4)

The spatial attention of a block output ``A`` (B x C x H x W, taken after the block's ReLU) is
(Eq. 1, :func:`spatial_attention`)

.. math::
    a(A) = \frac{\mathrm{vec}(\sum_{k=1}^{C} |A_k|^p)}{\| \mathrm{vec}(\sum_{k=1}^{C} |A_k|^p) \|_2},

computed for every conv block except the last; the last block enters through the final embedding
``phi`` (the flattened, pooled output: the classifier's input). The factor 100 and ``lambda``
(``task_balance``: 0.01, or 0.02 for high-resolution data) are the official code's.

Paper vs official code (both selectable):

* ``power``: the paper's hyper-parameter table has ``p = 4``; the official code calls
  ``get_attention(..., param=1, exp=1)``, i.e. ``p = 1``. Default: 4 (paper).
* ``norm`` of the random encoder: the paper describes the standard (instance-norm) ConvNet; the
  official ``get_network('ConvNet')`` builds it with ``batchnorm`` and the authors recommend it.
  Default: ``instancenorm`` (paper). With ``batchnorm`` the real and synthetic batches of all
  classes are normalised together (official) unless ``class_by_class`` is set.
* ``iterations``: paper 8000; official default 20000.
* ``lr_img``: 1.0, 10 for IPC > 50 (``0`` = this rule); the official help text says 10 for IPC >= 100.

``class_by_class`` back-propagates each class's loss on its own (same gradient for instance-norm
networks, memory of one class — for large IPC); by default all classes share one forward pass,
as in the official code. On CPU the per-class mode is also the faster one (0.95-1.4x DM per
iteration against 1.5-2.2x; ``experiments/results/matching.md``).

Under ``torchrun`` the classes are split over ranks as in DM (:func:`condense.methods.dm.class_pairs`);
a BatchNorm encoder normalises with statistics all-reduced over every rank's classes, as the
official single process normalises all classes together.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..augment import make_dsa
from ..checkpoint import Checkpointer
from ..data import ImageDataset
from ..nets import ConvNet
from ..synset import SyntheticSet, dsa_record
from ..utils import UserError
from .base import build_network, make_synset, register_method, run_loop, start_pixels, validate_config
from ..distributed import join_run
from .dm import DMConfig, class_pairs, embedding_network

__all__ = ["DataDAMConfig", "spatial_attention", "class_mean_distance", "attention_features", "datadam_loss", "distill_datadam"]

NORMS = ("instancenorm", "batchnorm")


@dataclass
class DataDAMConfig(DMConfig):
    """DM's fields (random frozen encoders, Siamese DSA, SGD on images) with DataDAM's defaults, plus its own."""

    iterations: int = field(default=8000, metadata={"help": "outer iterations (paper: 8000; official default 20000)"})
    lr_img: float = field(default=0.0, metadata={"help": "SGD learning rate of the images (0 = paper rule: 1.0, 10 for IPC > 50)"})
    batch_real: int = field(default=64, metadata={"help": "real images per class per iteration (official: 64)"})
    model: str = field(default="convnet", metadata={"help": "ConvNet family architecture of the random encoders"})
    power: float = field(default=4.0, metadata={"help": "attention exponent p (paper: 4; official code: 1)"})
    task_balance: float = field(default=0.01, metadata={"help": "lambda weighting L_MMD (0.01; paper: 0.02 for high resolution)"})
    norm: str = field(default="instancenorm", metadata={"help": "encoder norm: instancenorm (paper) or batchnorm (official code)"})
    class_by_class: bool = field(default=False, metadata={"help": "forward/backward one class at a time (less memory)"})


def spatial_attention(feature: torch.Tensor, power: float) -> torch.Tensor:
    """``vec(sum_channels |A|^p)`` L2-normalised per image: ``(B, C, H, W) -> (B, H*W)`` (Eq. 1)."""
    if feature.dim() != 4:
        raise ValueError(f"spatial attention needs a (B, C, H, W) feature map, got shape {tuple(feature.shape)}")
    if float(power).is_integer() and power >= 2:
        summed = _ChannelPowerSum.apply(feature, int(power))
    else:
        summed = _abs_power(feature, power).sum(1)
    return F.normalize(summed.flatten(1), p=2.0, dim=1)


def _abs_power(x: torch.Tensor, p: float) -> torch.Tensor:
    """``|x|^p``; integer ``p`` by repeated squaring (CPU ``pow`` is ~4x slower than two products).

    Even ``p`` starts from ``x * x`` (equal to ``|x| * |x|`` bit for bit) and needs no ``abs``.
    """
    if not float(p).is_integer() or p < 1:
        return x.abs().pow(p)
    n = int(p)
    a, out = (x * x, None) if n % 2 == 0 else (x.abs(), None)
    if n % 2 == 0:
        n //= 2
    while n:
        if n & 1:
            out = a if out is None else out * a
        n >>= 1
        if n:
            a = a * a
    return out


class _ChannelPowerSum(torch.autograd.Function):
    """``sum_c |x|^p`` over dim 1 for integer ``p >= 2``, with the backward written out.

    ``d/dx |x|^p = p x |x|^(p-2)``: three products for ``p = 4`` instead of autograd's chain through
    ``abs`` and every squaring (half the time of the attention's backward on CPU). The forward is
    :func:`_abs_power` unchanged, so the loss is bit-identical; first-order only (DataDAM needs no
    second derivative of the attention).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.p = p
        return _abs_power(x, p).sum(1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        d = x if ctx.p == 2 else x * _abs_power(x, ctx.p - 2)
        return d * (ctx.p * grad).unsqueeze(1), None


def class_mean_distance(real: torch.Tensor, syn: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``sum_c || mean(real_c) - mean(syn_c) ||^2`` for class-major batches (official ``MSE_B``)."""
    mr = real.reshape(num_classes, -1, real[0].numel()).mean(1)
    ms = syn.reshape(num_classes, -1, syn[0].numel()).mean(1)
    return ((mr - ms) ** 2).sum()


def attention_features(net: ConvNet, x: torch.Tensor, power: float) -> list[torch.Tensor]:
    """Attention maps of every block but the last, then the final embedding ``phi`` (one forward pass).

    Each block's map is reduced to its attention right away, so the no-grad real pass holds one
    feature map at a time.
    """
    out = []
    for i, (block, pool) in enumerate(zip(net.blocks, net.pools)):
        x = block(x)
        if i < len(net.blocks) - 1:
            out.append(spatial_attention(x, power))
        x = pool(x)
    return out + [x.flatten(1)]  # the last entry == net.embed(x)


def datadam_loss(real: list[torch.Tensor], syn: list[torch.Tensor], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_SAM, L_MMD)`` from :func:`attention_features` of class-major real and synthetic batches.

    The training objective is ``100 * (L_SAM + task_balance * L_MMD)``; the parts are returned separately.
    """
    mmd = class_mean_distance(real[-1], syn[-1], num_classes)
    sam = [class_mean_distance(r, s, num_classes) for r, s in zip(real[:-1], syn[:-1])]
    return (torch.stack(sam).sum() if sam else mmd.new_zeros(())), mmd


def _lr(config: DataDAMConfig, ipc: int) -> float:
    return config.lr_img if config.lr_img > 0 else (10.0 if ipc > 50 else 1.0)


def distill_datadam(
    dataset: ImageDataset, ipc: int, config: DataDAMConfig, *, device: torch.device, seed: int, progress: bool = True,
    checkpoint: Checkpointer | None = None,
) -> SyntheticSet:  # fmt: skip
    """Condense ``dataset`` to ``ipc`` images per class by attention matching."""
    validate_config(config)
    if config.norm not in NORMS:
        raise UserError(f"DataDAM norm must be one of {', '.join(NORMS)}, got {config.norm!r}")
    if config.power <= 0:
        raise UserError(f"power (attention exponent p) must be > 0, got {config.power}")
    if config.model.lower() not in ("convnet", "convnetd4", "convnetd5"):
        raise UserError(f"DataDAM needs a ConvNet-family model (convnet, convnetd4, convnetd5; set the norm with --norm), got {config.model!r}")
    started = time.perf_counter()
    ctx = join_run(device, "datadam", dataset, ipc, seed, config, dataset.num_classes, "classes")
    images, labels, gen, sampler = start_pixels(
        dataset, ipc, config.init, seed, device, config.model, config.width, norm=config.norm
    )
    dsa = make_dsa(config.dsa_strategy, dataset.name, align_corners=config.dsa_align_corners)
    optimiser = torch.optim.SGD([images], lr=_lr(config, ipc), momentum=config.momentum_img)
    mine = ctx.block(dataset.num_classes)

    def objective(net: nn.Module, real: torch.Tensor, syn: torch.Tensor, classes: int) -> torch.Tensor:
        with torch.no_grad():
            f_real = attention_features(net, real, config.power)
        sam, mmd = datadam_loss(f_real, attention_features(net, syn, config.power), classes)
        return 100 * (sam + config.task_balance * mmd)

    def step(_: int) -> float:
        net, _ = embedding_network(ctx, build_network(config.model, dataset, config.width, norm=config.norm).to(device),
                                   joint=not config.class_by_class)
        pairs = {c: (real, syn) for c, real, syn in class_pairs(dataset, sampler, images, ipc, config.batch_real, dsa, gen, mine)}
        if config.class_by_class:
            losses = {}
            for c, (real, syn) in pairs.items():
                loss = objective(net, real, syn, 1)
                loss.backward()
                losses[c] = loss.detach()
            ctx.reduce_grads([images])
            # one host sync per step, not one per class; the same float sum in class order
            return sum(ctx.gather_units(losses, dataset.num_classes).tolist())
        loss = objective(net, torch.cat([r for r, _ in pairs.values()]), torch.cat([s for _, s in pairs.values()]), len(mine))
        loss.backward()
        ctx.reduce_grads([images])
        return ctx.gather_units({ctx.rank: loss.detach()}, ctx.world_size).sum().item()

    history = run_loop(
        step, config.iterations, tensors={"images": images}, optimisers={"images": optimiser},
        generators={"gen": gen}, checkpoint=checkpoint, progress=progress, desc="DataDAM",
    )  # fmt: skip
    extra = {**dsa_record(dsa, "datadam"), "lr_img": _lr(config, ipc)}
    return make_synset("datadam", images, labels, dataset, ipc=ipc, seed=seed, config=config, started=started, extra=extra,
                       history=history)


register_method("datadam", DataDAMConfig, distill_datadam, "attention matching (Sajedi, Khaki et al. 2023)")
