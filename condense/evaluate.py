"""Evaluation protocol of the dataset-distillation literature (DC/DSA/DM/MTT ``evaluate_synset``).

Train ``num_evals`` freshly initialised networks on a (synthetic) training set with SGD
(momentum 0.9, weight decay 5e-4, batch 256, lr 0.01 or the set's learned lr, multiplied by 0.1
once after epoch ``epochs // 2 + 1`` with a fresh optimiser as in the official code), optionally
with DSA on every batch, then test on the real test split. The reported number is the
**final-checkpoint** accuracy (mean ± std over networks); the maximum over intermediate test
checkpoints is reported separately and labelled as such.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .augment import DSA
from .data import ImageDataset
from .nets import get_network
from .synset import SyntheticSet
from .utils import UserError, check_positive, make_generator, resolve_device

__all__ = ["EvalResult", "Summary", "fit", "train_and_test", "accuracy", "evaluate_images", "evaluate_synset", "soft_cross_entropy"]


@dataclass
class EvalResult:
    """One trained network: final test accuracy, best intermediate test accuracy, (epoch, acc) history."""

    final_acc: float
    max_acc: float
    history: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Summary:
    """Accuracies of ``n`` networks of one architecture."""

    model: str
    accs: list[float]
    max_accs: list[float]
    seconds: float = 0.0

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accs)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.accs) if len(self.accs) > 1 else 0.0

    @property
    def max_mean(self) -> float:
        return statistics.fmean(self.max_accs)

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f}"


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for class ids ``(B,)`` or probability vectors ``(B, K)``."""
    if target.dim() == 1:
        return F.cross_entropy(logits, target)
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


@torch.no_grad()
@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, device: torch.device, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``net`` (in eval mode) on ``(x, y)``."""
    was_training = net.training
    net.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        out = net(x[i : i + batch_size].to(device))
        correct += int((out.argmax(1).cpu() == y[i : i + batch_size]).sum())
    net.train(was_training)
    return correct / max(1, len(x))


def fit(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float = 0.01,
    batch_size: int = 256,
    dsa: DSA | None = None,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> nn.Module:
    """Train ``net`` on ``(x, y)`` with the protocol's SGD and step decay; ``on_epoch(ep)`` after each epoch."""
    if epochs < 1:
        raise UserError(f"epochs must be >= 1, got {epochs}")
    check_positive("lr", lr)
    device = resolve_device(device)
    net = net.to(device).train()
    x, y = x.to(device), y.to(device)
    decay_at = epochs // 2 + 1
    optimiser = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for ep in range(1, epochs + 1):
        perm = torch.randperm(len(x), generator=generator).to(device)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            xb = dsa(x[idx], generator=generator) if dsa is not None else x[idx]
            loss = soft_cross_entropy(net(xb), y[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        if not torch.isfinite(loss):
            break  # diverged: the test accuracy will show it
        if ep == decay_at:
            optimiser = torch.optim.SGD(net.parameters(), lr=lr * 0.1, momentum=momentum, weight_decay=weight_decay)
        if on_epoch is not None:
            on_epoch(ep)
    return net


def train_and_test(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    epochs: int,
    device: str | torch.device = "cpu",
    eval_every: int | None = None,
    **fit_kwargs,
) -> EvalResult:
    """:func:`fit` then test; also tests every ``eval_every`` epochs for the (labelled) max-over-checkpoints."""
    device = resolve_device(device)
    history: list[tuple[int, float]] = []

    def checkpoint(ep: int) -> None:
        if eval_every and ep % eval_every == 0 and ep != epochs:
            history.append((ep, accuracy(net, test_x, test_y, device=device)))

    start = time.perf_counter()
    fit(net, x, y, epochs=epochs, device=device, on_epoch=checkpoint, **fit_kwargs)
    final = accuracy(net, test_x, test_y, device=device)
    history.append((epochs, final))
    return EvalResult(final_acc=final, max_acc=max(a for _, a in history), history=history, seconds=time.perf_counter() - start)


def evaluate_images(
    x: torch.Tensor,
    y: torch.Tensor,
    dataset: ImageDataset,
    *,
    models: Sequence[str] = ("convnet",),
    num_evals: int = 5,
    epochs: int | None = None,
    lr: float = 0.01,
    dsa: bool | DSA = False,
    batch_size: int = 256,
    model_kwargs: dict[str, dict] | None = None,
    eval_every: int | None = None,
    eval_ids: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Summary]:
    """Train ``num_evals`` networks per architecture on ``(x, y)`` and test them on ``dataset.test_*``.

    ``epochs=None`` means 1000 with DSA and 300 without (DC/DSA papers). Network ``i`` is
    initialised from seed ``seed + i``, so results are reproducible and ``eval_ids`` can split the
    ``n`` networks across processes.
    """
    if num_evals < 1:
        raise UserError(f"num_evals must be >= 1, got {num_evals}")
    aug = DSA() if dsa is True else (dsa or None)
    epochs = epochs if epochs is not None else (1000 if aug is not None else 300)
    eval_every = eval_every if eval_every is not None else max(1, epochs // 10)
    ids = list(eval_ids) if eval_ids is not None else list(range(num_evals))
    model_kwargs = model_kwargs or {}
    for name in models:  # validate every architecture before training any network
        get_network(name, dataset.channels, dataset.num_classes, dataset.image_size, **model_kwargs.get(name, {}))
    out: dict[str, Summary] = {}
    for name in models:
        accs, maxs, start = [], [], time.perf_counter()
        for i in tqdm(ids, desc=f"eval {name}", disable=not progress, leave=False):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + i)
                net = get_network(name, dataset.channels, dataset.num_classes, dataset.image_size, **model_kwargs.get(name, {}))
            res = train_and_test(
                net, x, y, dataset.test_x, dataset.test_y, epochs=epochs, lr=lr, batch_size=batch_size, dsa=aug,
                device=device, generator=make_generator(seed + i), eval_every=eval_every,
            )  # fmt: skip
            accs.append(res.final_acc)
            maxs.append(res.max_acc)
        out[name] = Summary(model=name, accs=accs, max_accs=maxs, seconds=time.perf_counter() - start)
    return out


def evaluate_synset(synset: SyntheticSet, dataset: ImageDataset, *, lr: float | None = None, **kwargs) -> dict[str, Summary]:
    """:func:`evaluate_images` on a :class:`SyntheticSet`, using its learned lr when it has one."""
    meta_ds = synset.meta.get("dataset", {})
    if meta_ds:
        if meta_ds.get("name") != dataset.name or list(meta_ds.get("image_size", [])) != list(dataset.image_size):
            raise UserError(
                f"synthetic set was made for {meta_ds.get('name')} {meta_ds.get('image_size')}, "
                f"not {dataset.name} {list(dataset.image_size)}"
            )
        if bool(meta_ds.get("zca")) != (dataset.zca is not None):
            raise UserError("synthetic set and dataset disagree on ZCA whitening (load the dataset with the same --zca)")
    if tuple(synset.images.shape[1:]) != (dataset.channels, *dataset.image_size):
        raise UserError(f"synthetic images have shape {tuple(synset.images.shape[1:])}, dataset has {(dataset.channels, *dataset.image_size)}")
    return evaluate_images(synset.images, synset.labels, dataset, lr=lr if lr is not None else (synset.lr or 0.01), **kwargs)
