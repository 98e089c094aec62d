"""Evaluation protocols of the dataset-distillation papers: train ``num_evals`` freshly initialised
networks on a (synthetic) training set, test them on the real test split.

Three named protocols (:data:`PROTOCOLS`), each as its official ``evaluate_synset``:

``dc``       VICO-UoE/DatasetCondensation ``utils.py`` (DC, DSA, DM; MTT's ``utils.py`` is the same loop):
             SGD lr 0.01 (or the set's learned lr), momentum 0.9, weight decay 5e-4, batch 256; the lr is
             multiplied by 0.1 once, with a fresh optimiser, after pass ``E//2 + 1``; ``E`` = 1000 with DSA
             and 300 without (DC/DSA ``main.py``). Tested once, after the last pass.
``ast``      shenjiyuan123/AST-Alignment-with-Smooth-Expert ``utils.py``: weight decay 1e-3; at the decay the lr
             is multiplied by 0.5 and the new optimiser has momentum 0.8; ``E`` = 1000 (``distill.py``
             ``--epoch_eval_train``); tested every 20 passes (``ep % 20 == 0``, ``ep`` from 0) and AST reports
             the **maximum** of those test accuracies (early stopping on the test set).
``datadam``  DataDistillation/DataDAM ``utils.py`` + ``main_DataDAM.py``: the ``dc`` loop with batch 64 and
             ``E`` = 1800, evaluated on the ConvNet of its ``get_network``, which is the **BatchNorm** ConvNet
             (``net_norm='batchnorm'``).

All three follow the official off-by-one: ``for ep in range(E + 1)`` trains ``E + 1`` passes over the
data, and ``lr_schedule = [E//2 + 1]`` decays after the pass with 0-based index ``E//2 + 1`` (i.e.
after ``E//2 + 2`` passes). :meth:`Protocol.schedule` lists the (lr, momentum) of every pass.

The reported number is always the **final-checkpoint** accuracy (mean ± std over networks). The
maximum over intermediate test checkpoints (``ast``: its official checkpoints, the number AST
publishes; ``dc``/``datadam``: every ``eval_every`` passes, not part of their protocol) is reported
separately and labelled (:attr:`Protocol.max_label`).

DSA during training: a :class:`~condense.synset.SyntheticSet` is evaluated with the DSA it records
(strategy, mode, ``align_corners``) -- each official code base evaluates with its own DiffAugment;
otherwise the dataset's default strategy (:func:`condense.augment.resolve_strategy`) with the
protocol's ``align_corners`` (``dc``/``datadam``: False, ``ast``: True). Without DSA, ``dc_aug=True``
trains with DC's own per-image augmentation where DC's code does (:mod:`condense.dcaug`: MNIST, or a
BatchNorm ConvNet); DC evaluates its sets that way.
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

from .augment import AUTO, DSA, resolve_strategy
from .data import ZCA, ImageDataset
from .dcaug import DCAugment, dc_augment_for
from .nets import FIXED_NORM, get_network
from .safeio import check_labels
from .synset import SyntheticSet
from .utils import UserError, check_positive, make_generator, resolve_device

__all__ = [
    "Protocol", "PROTOCOLS", "get_protocol", "EvalResult", "Summary", "fit", "train_and_test", "accuracy", "evaluate_images",
    "evaluate_synset", "soft_cross_entropy", "eval_dsa",
]  # fmt: skip


@dataclass(frozen=True)
class Protocol:
    """One paper's evaluation recipe (see the module docstring for the sources)."""

    name: str
    source: str
    lr: float = 0.01  # when the set has no learned lr
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    epochs_dsa: int = 1000
    epochs_plain: int = 300
    decay_factor: float = 0.1  # lr multiplier at the single decay
    decay_momentum: float = 0.9  # momentum of the optimiser re-created at the decay
    test_every: int = 0  # official test checkpoints (0-based pass index % test_every == 0); 0: final only
    eval_norm: str | None = None  # norm of ConvNet-family evaluation networks (None: the network's default)
    align_corners: bool = False  # DSA grid convention of the repository's evaluator
    max_label: str = "max-over-checkpoints % (not part of the protocol)"

    def default_epochs(self, dsa: bool) -> int:
        return self.epochs_dsa if dsa else self.epochs_plain

    def decay_pass(self, epochs: int) -> int:
        """0-based pass after which the lr decays (official ``lr_schedule = [Epoch//2 + 1]``)."""
        return epochs // 2 + 1

    def schedule(self, epochs: int, lr: float) -> list[tuple[float, float]]:
        """``(lr, momentum)`` of each of the ``epochs + 1`` passes (official ``range(Epoch + 1)``)."""
        if epochs < 1:
            raise UserError(f"epochs must be >= 1, got {epochs}")
        decay = self.decay_pass(epochs)
        return [(lr, self.momentum) if ep <= decay else (lr * self.decay_factor, self.decay_momentum) for ep in range(epochs + 1)]


PROTOCOLS: dict[str, Protocol] = {
    "dc": Protocol("dc", "VICO-UoE/DatasetCondensation utils.py evaluate_synset (= MTT utils.py)"),
    "ast": Protocol("ast", "shenjiyuan123/AST-Alignment-with-Smooth-Expert utils.py evaluate_synset", weight_decay=1e-3,
                    epochs_plain=1000, decay_factor=0.5, decay_momentum=0.8, test_every=20, align_corners=True,
                    max_label="AST max-over-test % (test every 20 passes; early stopping on the test set)"),
    "datadam": Protocol("datadam", "DataDistillation/DataDAM utils.py evaluate_synset, main_DataDAM.py", batch_size=64,
                        epochs_dsa=1800, epochs_plain=1800, eval_norm="batchnorm"),
}  # fmt: skip


def get_protocol(name: str | Protocol) -> Protocol:
    if isinstance(name, Protocol):
        return name
    if name not in PROTOCOLS:
        raise UserError(f"unknown evaluation protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


@dataclass
class EvalResult:
    """One trained network: final test accuracy, best intermediate test accuracy, (pass, acc) history."""

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
    protocol: str = "dc"
    augment: str = "none"  # what trained the networks: a DSA, DC's augmentation or none

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
    lr: float | None = None,
    protocol: str | Protocol = "dc",
    batch_size: int | None = None,
    augment: DSA | DCAugment | None = None,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> nn.Module:
    """Train ``net`` on ``(x, y)`` with the protocol's SGD and :meth:`Protocol.schedule` (``epochs + 1``
    passes; the optimiser is re-created when the lr/momentum change, as officially); ``on_epoch(ep)``
    after each pass (0-based). ``augment`` (DSA or DC's augmentation) is applied to every batch."""
    proto = get_protocol(protocol)
    lr = proto.lr if lr is None else lr
    check_positive("lr", lr)
    batch_size = batch_size or proto.batch_size
    plan = proto.schedule(epochs, lr)
    device = resolve_device(device)
    net = net.to(device).train()
    x, y = x.to(device), y.to(device)
    optimiser, current = None, None
    for ep, setting in enumerate(plan):
        if setting != current:
            current = setting
            optimiser = torch.optim.SGD(net.parameters(), lr=setting[0], momentum=setting[1], weight_decay=proto.weight_decay)
        perm = torch.randperm(len(x), generator=generator).to(device)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            xb = augment(x[idx], generator=generator) if augment is not None else x[idx]
            loss = soft_cross_entropy(net(xb), y[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        if not torch.isfinite(loss):
            break  # diverged: the test accuracy will show it
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
    protocol: str | Protocol = "dc",
    device: str | torch.device = "cpu",
    eval_every: int | None = None,
    **fit_kwargs,
) -> EvalResult:
    """:func:`fit` then test. Intermediate tests for the labelled max column: the protocol's own
    checkpoints (``ast``: every 20 passes) or else every ``eval_every`` passes (0-based ``ep % k == 0``)."""
    proto = get_protocol(protocol)
    device = resolve_device(device)
    every = proto.test_every or eval_every
    history: list[tuple[int, float]] = []

    def checkpoint(ep: int) -> None:
        if every and ep % every == 0 and ep != epochs:
            history.append((ep, accuracy(net, test_x, test_y, device=device)))

    start = time.perf_counter()
    fit(net, x, y, epochs=epochs, protocol=proto, device=device, on_epoch=checkpoint, **fit_kwargs)
    final = accuracy(net, test_x, test_y, device=device)
    history.append((epochs, final))
    return EvalResult(final_acc=final, max_acc=max(a for _, a in history), history=history, seconds=time.perf_counter() - start)


def eval_dsa(dsa: bool | DSA | None, dataset: ImageDataset, protocol: Protocol) -> DSA | None:
    """``True``: the dataset's default strategy with the protocol's ``align_corners``; a DSA: itself."""
    if dsa is True:
        return DSA(resolve_strategy(AUTO, dataset.name), align_corners=protocol.align_corners)
    return dsa or None


def evaluate_images(
    x: torch.Tensor,
    y: torch.Tensor,
    dataset: ImageDataset,
    *,
    models: Sequence[str] = ("convnet",),
    num_evals: int = 5,
    epochs: int | None = None,
    lr: float | None = None,
    dsa: bool | DSA | None = False,
    dc_aug: bool = False,
    protocol: str | Protocol = "dc",
    batch_size: int | None = None,
    model_kwargs: dict[str, dict] | None = None,
    eval_every: int | None = None,
    eval_ids: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Summary]:
    """Train ``num_evals`` networks per architecture on ``(x, y)`` with ``protocol`` and test them on
    ``dataset.test_*``.

    ``epochs=None``: the protocol's (``dc``: 1000 with DSA, 300 without; ``ast`` 1000; ``datadam`` 1800).
    ``lr``/``batch_size`` ``None``: the protocol's. ConvNet-family networks get the protocol's
    ``eval_norm`` unless ``model_kwargs`` names a norm or the name fixes one (``FIXED_NORM``:
    ``convnet_bn``). Network ``i`` is initialised from seed ``seed + i``, so results are reproducible
    and ``eval_ids`` can split the ``n`` networks across processes.
    ``dc_aug`` (only without DSA): DC's own augmentation where its ``get_daparam`` applies it
    (:func:`condense.dcaug.dc_augment_for`: MNIST, or a BatchNorm ConvNet).
    """
    if num_evals < 1:
        raise UserError(f"num_evals must be >= 1, got {num_evals}")
    if not models:
        raise UserError("models must name at least one architecture")
    check_labels(y, dataset.num_classes, what="training labels")
    device = resolve_device(device)
    proto = get_protocol(protocol)
    aug = eval_dsa(dsa, dataset, proto)
    if dc_aug and aug is not None:
        raise UserError("DC's augmentation is its protocol without DSA (DSA replaces it): drop one of dsa / dc_aug")
    epochs = epochs if epochs is not None else proto.default_epochs(aug is not None)
    eval_every = eval_every if eval_every is not None else max(1, epochs // 10)
    ids = list(eval_ids) if eval_ids is not None else list(range(num_evals))
    kwargs = {name: dict((model_kwargs or {}).get(name, {})) for name in models}
    for name in models:  # validate every architecture before training any network
        if proto.eval_norm and name.lower().startswith("convnet") and name.lower() not in FIXED_NORM:
            kwargs[name].setdefault("norm", proto.eval_norm)
        get_network(name, dataset.channels, dataset.num_classes, dataset.image_size, **kwargs[name])
    out: dict[str, Summary] = {}
    for name in models:
        accs, maxs, start = [], [], time.perf_counter()
        augment = aug or (dc_augment_for(dataset.name, batchnorm=_is_convnet_bn(name, kwargs[name])) if dc_aug else None)
        for i in tqdm(ids, desc=f"eval {name}", disable=not progress, leave=False):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + i)
                net = get_network(name, dataset.channels, dataset.num_classes, dataset.image_size, **kwargs[name])
            res = train_and_test(
                net, x, y, dataset.test_x, dataset.test_y, epochs=epochs, protocol=proto, lr=lr, batch_size=batch_size,
                augment=augment, device=device, generator=make_generator(seed + i), eval_every=eval_every,
            )  # fmt: skip
            accs.append(res.final_acc)
            maxs.append(res.max_acc)
        out[name] = Summary(model=name, accs=accs, max_accs=maxs, seconds=time.perf_counter() - start, protocol=proto.name,
                            augment=repr(augment) if augment is not None else "none")
    return out


def _is_convnet_bn(name: str, kwargs: dict) -> bool:
    """DC's ``ConvNetBN``: the depth-3 ConvNet with BatchNorm."""
    name = name.lower()
    return name == "convnet_bn" or (name == "convnet" and kwargs.get("norm") == "batchnorm")


def evaluate_synset(
    synset: SyntheticSet, dataset: ImageDataset, *, lr: float | None = None, protocol: str | Protocol | None = None,
    dsa: bool | DSA | None = None, **kwargs,
) -> dict[str, Summary]:  # fmt: skip
    """:func:`evaluate_images` on a :class:`SyntheticSet`: by default with the protocol of the method's
    paper (:attr:`SyntheticSet.protocol`), the set's learned lr when it has one, and DSA as the set was
    distilled (its recorded strategy and ``align_corners``). ``dsa=True`` uses the recorded DSA too, or
    the dataset's default when the set has none; ``dsa=False`` trains without augmentation (and
    ``dc_aug=True`` implies it unless ``dsa`` is given)."""
    meta_ds = synset.meta.get("dataset", {})
    if meta_ds:
        if meta_ds.get("name") != dataset.name or list(meta_ds.get("image_size", [])) != list(dataset.image_size):
            raise UserError(
                f"synthetic set was made for {meta_ds.get('name')} {meta_ds.get('image_size')}, "
                f"not {dataset.name} {list(dataset.image_size)}"
            )
        if bool(meta_ds.get("zca")) != (dataset.zca is not None):
            raise UserError("synthetic set and dataset disagree on ZCA whitening (load the dataset with the same --zca)")
    if synset.zca is not None and dataset.zca is not None and not dataset.zca.matches(ZCA.from_state(synset.zca)):
        raise UserError("the dataset's ZCA whitening differs from the one the set was distilled with "
                        "(same dataset, split, --resize and --zca-eps needed)")  # fmt: skip
    if tuple(synset.images.shape[1:]) != (dataset.channels, *dataset.image_size):
        raise UserError(f"synthetic images have shape {tuple(synset.images.shape[1:])}, dataset has {(dataset.channels, *dataset.image_size)}")
    proto = get_protocol(protocol if protocol is not None else synset.protocol)
    record = synset.meta.get("dsa")
    if dsa is None:
        dsa = False if kwargs.get("dc_aug") else bool(synset.meta.get("train_dsa", False))
    if dsa is True and record:
        dsa = DSA(record["strategy"], record.get("mode", "single"), align_corners=bool(record.get("align_corners", False)))
    return evaluate_images(synset.images, synset.labels, dataset, lr=lr if lr is not None else synset.lr, dsa=dsa,
                           protocol=proto, **kwargs)  # fmt: skip
