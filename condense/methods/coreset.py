"""Coreset baselines: random real images, herding and k-center greedy selection per class.

* Random: ``ipc`` real images per class drawn uniformly (the "random" row of every DD table).
* Herding (Welling, ICML 2009; as used for coresets by Rebuffi et al. 2017 and the DC paper):
  greedily add the image whose inclusion brings the running mean of the selected embeddings
  closest to the class-mean embedding.
* K-center greedy (Sener & Savarese, ICLR 2018): start from the image nearest the class mean,
  then repeatedly add the image farthest from its nearest selected centre.

Embeddings are the penultimate features (``net.embed``) of a network trained on the full
training set for ``embed_epochs`` epochs (0 = a randomly initialised network).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..checkpoint import Checkpointer
from ..data import ClassSampler, ImageDataset
from ..evaluate import fit
from ..synset import SyntheticSet
from ..utils import UserError, make_generator
from ..selection import herding, kcenter_greedy
from .base import build_network, check_ipc, make_synset, register_method, validate_config

__all__ = ["CoresetConfig", "distill_random", "distill_herding", "distill_kcenter"]


@dataclass
class CoresetConfig:
    model: str = field(default="convnet", metadata={"help": "network whose embeddings drive herding / k-center"})
    width: int = field(default=128, metadata={"help": "ConvNet width of the embedding network"})
    embed_epochs: int = field(default=20, metadata={"help": "epochs of training the embedding network on the full data (0 = random net)"})
    lr_net: float = field(default=0.01, metadata={"help": "learning rate for training the embedding network"})


@torch.no_grad()
def _embed(net: torch.nn.Module, x: torch.Tensor, device: torch.device, batch: int = 1024) -> torch.Tensor:
    net.eval()
    return torch.cat([net.embed(x[i : i + batch].to(device)).cpu() for i in range(0, len(x), batch)])


def _select(dataset: ImageDataset, ipc: int, config: CoresetConfig, device: torch.device, seed: int, rule: str) -> torch.Tensor:
    sampler = ClassSampler(dataset.train_y, dataset.num_classes)
    gen = make_generator(seed)
    if rule == "random":
        return torch.cat([sampler.sample(c, ipc, gen) for c in range(dataset.num_classes)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(config.model, dataset, config.width).to(device)
    if not hasattr(net, "embed"):
        raise UserError(f"model {config.model!r} has no embed() method for herding / k-center")
    if config.embed_epochs > 0:
        fit(net, dataset.train_x, dataset.train_y, epochs=config.embed_epochs, lr=config.lr_net, device=device, generator=gen)
    select = herding if rule == "herding" else kcenter_greedy
    chosen = []
    for c in range(dataset.num_classes):
        idx = sampler.indices(c)
        chosen.append(idx[select(_embed(net, dataset.train_x[idx], device), ipc)])
    return torch.cat(chosen)


def _make(rule: str):
    def distill(
        dataset: ImageDataset, ipc: int, config: CoresetConfig, *, device: torch.device, seed: int, progress: bool = True,
        checkpoint: Checkpointer | None = None,
    ) -> SyntheticSet:  # fmt: skip
        validate_config(config)
        check_ipc(dataset, ipc)
        started = time.perf_counter()
        idx = _select(dataset, ipc, config, device, seed, rule)
        return make_synset(rule, dataset.train_x[idx], dataset.train_y[idx], dataset, ipc=ipc, seed=seed, config=config, started=started)

    distill.__name__ = f"distill_{rule}"
    distill.__doc__ = f"Select ``ipc`` real images per class by {rule} (no optimisation)."
    return distill


distill_random = _make("random")
distill_herding = _make("herding")
distill_kcenter = _make("kcenter")

register_method("random", CoresetConfig, distill_random, "random real images per class (baseline)")
register_method("herding", CoresetConfig, distill_herding, "herding on network embeddings (Welling 2009)")
register_method("kcenter", CoresetConfig, distill_kcenter, "k-center greedy on network embeddings (Sener & Savarese 2018)")
