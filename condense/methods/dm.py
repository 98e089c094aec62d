"""DM — Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023).

Algorithm 1 of the paper, as in the official ``main_DM.py``::

    for it in 1..K:
        psi ~ P_theta  (a freshly initialised ConvNet, frozen, train mode)
        for each class c:
            B_c^T ~ T_c (real batch, 256),  B_c^S = S_c
            omega ~ Omega (one DSA transformation shared by both batches)
            L += || mean_i psi(A(x_i^T, omega)) - mean_j psi(A(s_j, omega)) ||^2      (Eq. 4)
        S <- S - eta_S * grad_S L          (SGD, lr 1.0, momentum 0.5)

``psi`` is the embedding (penultimate features) of the network. With a BatchNorm network (e.g.
``convnet_bn``) all classes go through one forward pass, as in the official ``'BN' in model``
branch, so that the batch statistics span every class. The published setting runs 20000
iterations; this module keeps that default and the CLI/experiments expose smaller presets.

Under ``torchrun`` the classes are split over ranks (:mod:`condense.distributed`): every rank builds
the same network and draws every class's real batch and DSA parameters (generators in step),
computes the terms of its own classes and the image gradients are summed over ranks. Without
BatchNorm that sum adds zeros, so k ranks give one process's images bit for bit; with BatchNorm the
batch statistics are all-reduced across ranks (equal up to summation order).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from ..augment import AUTO, DSA, make_dsa
from ..checkpoint import Checkpointer
from ..data import ClassSampler, ImageDataset
from ..distributed import DistContext, cross_rank_batchnorm, join_run
from ..synset import SyntheticSet, dsa_record
from .base import build_network, make_synset, register_method, run_loop, start_pixels, validate_config

__all__ = ["DMConfig", "distill_dm", "mean_embedding_loss", "class_pairs", "embedding_network"]


@dataclass
class DMConfig:
    iterations: int = field(default=20000, metadata={"help": "outer iterations (paper: 20000)"})
    lr_img: float = field(default=1.0, metadata={"help": "SGD learning rate of the synthetic images (official: 1.0)"})
    momentum_img: float = field(default=0.5, metadata={"help": "SGD momentum of the synthetic images"})
    batch_real: int = field(default=256, metadata={"help": "real images per class per iteration"})
    init: str = field(default="real", metadata={"help": "initialisation: real or noise"})
    model: str = field(default="convnet", metadata={"help": "architecture of the random embedding networks"})
    width: int = field(default=128, metadata={"help": "ConvNet width"})
    dsa_strategy: str = field(default=AUTO, metadata={"help": "DSA strategy ('none' disables; auto: no flip on digits/mnist)"})
    dsa_align_corners: bool = field(default=False, metadata={"help": "DSA scale/rotate grid align_corners (official DatasetCondensation/DataDAM utils.py: False)"})


def mean_embedding_loss(emb_real: torch.Tensor, emb_syn: torch.Tensor) -> torch.Tensor:
    """``|| mean(emb_real) - mean(emb_syn) ||^2`` (Eq. 4 of DM, the linear-kernel MMD)."""
    return ((emb_real.mean(0) - emb_syn.mean(0)) ** 2).sum()


def class_pairs(
    dataset: ImageDataset, sampler: ClassSampler, images: torch.Tensor, ipc: int, batch_real: int, dsa: DSA,
    gen: torch.Generator, classes: range,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:  # fmt: skip
    """``(c, real, syn)`` for each class in ``classes``, one Siamese DSA draw per class, one class at a time.

    The real-batch indices and DSA parameters of *every* class are drawn (in class order), so the
    generator advances alike on every rank; only the owned classes' images are read. Consume it to
    the end.
    """
    for c in range(dataset.num_classes):
        idx = sampler.sample(c, batch_real, gen)
        params = dsa.sample(1, dataset.image_size, gen)  # what dsa.siamese draws
        if c in classes:
            real = dataset.train_x[idx].to(images.device)
            yield c, dsa.apply(real, params), dsa.apply(images[c * ipc : (c + 1) * ipc], params)


def embedding_network(ctx: DistContext, net: torch.nn.Module, joint: bool = True) -> tuple[torch.nn.Module, bool]:
    """A frozen random network in train mode and whether it has BatchNorm; with ``joint`` (all classes
    in one batch) and several ranks, its BatchNorm statistics span every rank's classes."""
    net.train().requires_grad_(False)
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    return (cross_rank_batchnorm(net) if has_bn and joint and ctx.active else net), has_bn


def distill_dm(
    dataset: ImageDataset, ipc: int, config: DMConfig, *, device: torch.device, seed: int, progress: bool = True,
    checkpoint: Checkpointer | None = None,
) -> SyntheticSet:  # fmt: skip
    """Condense ``dataset`` to ``ipc`` images per class with distribution matching."""
    validate_config(config)
    started = time.perf_counter()
    ctx = join_run(device, "dm", dataset, ipc, seed, config, dataset.num_classes, "classes")
    images, labels, gen, sampler = start_pixels(dataset, ipc, config.init, seed, device, config.model, config.width)
    dsa = make_dsa(config.dsa_strategy, dataset.name, align_corners=config.dsa_align_corners)
    optimiser = torch.optim.SGD([images], lr=config.lr_img, momentum=config.momentum_img)
    mine = ctx.block(dataset.num_classes)

    def step(_: int) -> float:
        net, joint = embedding_network(ctx, build_network(config.model, dataset, config.width).to(device))
        pairs = class_pairs(dataset, sampler, images, ipc, config.batch_real, dsa, gen, mine)
        losses = {}
        if not joint:  # per-class backward: same gradient as the summed loss, memory of one class
            for c, real, syn in pairs:
                with torch.no_grad():
                    emb_real = net.embed(real)
                loss = mean_embedding_loss(emb_real, net.embed(syn))
                loss.backward()
                losses[c] = loss.detach()
        else:  # official BN branch: one forward of all classes, so batch statistics span them
            pairs = {c: (real, syn) for c, real, syn in pairs}
            with torch.no_grad():
                emb_real = net.embed(torch.cat([r for r, _ in pairs.values()])).split([len(r) for r, _ in pairs.values()])
            emb_syn = net.embed(torch.cat([s for _, s in pairs.values()])).split(ipc)
            terms = [mean_embedding_loss(r, s) for r, s in zip(emb_real, emb_syn)]
            sum(terms).backward()
            losses = {c: t.detach() for c, t in zip(pairs, terms)}
        ctx.reduce_grads([images])
        total = torch.zeros((), device=device)
        for v in ctx.gather_units(losses, dataset.num_classes):  # class order, as one process sums
            total = total + v
        return total.item()  # one host sync per iteration, not one per class

    history = run_loop(
        step, config.iterations, tensors={"images": images}, optimisers={"images": optimiser},
        generators={"gen": gen}, checkpoint=checkpoint, progress=progress, desc="DM",
    )  # fmt: skip
    return make_synset("dm", images, labels, dataset, ipc=ipc, seed=seed, config=config, started=started, extra=dsa_record(dsa, "dc"),
                       history=history)


register_method("dm", DMConfig, distill_dm, "distribution matching (Zhao & Bilen 2023)")
