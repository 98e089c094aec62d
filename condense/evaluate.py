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

The reported number is always the **final-checkpoint** accuracy (mean ± std over networks). Test passes
happen where the protocol has them: ``dc``/``datadam`` test once, after the last pass; ``ast`` every 20
passes, whose maximum is the number AST publishes. ``test_every=K`` adds a test every ``K`` passes for
a labelled maximum-over-checkpoints column (:meth:`Protocol.max_label_for`; not part of ``dc``/``datadam``).
A test pass draws no random numbers and changes no network state (eval mode: BatchNorm uses, and does
not update, its running statistics), so the final accuracy does not depend on ``test_every``.

Engines: the ``num_evals`` networks of one architecture train one by one (``sequential``) or together
as one vmapped model (:mod:`condense.batched`; each network with its own seed, initialisation, batch
order and augmentation draws, equal to the sequential loop up to float rounding). The batched engine is
opt-in (``batched=True``): on the CPU here its grouped convolutions measured slower than the loop
(``experiments/results/bench_evaluate.md``), and it is unmeasured on a GPU so far (``experiments.bench_device``
and ``experiments.bench_evaluate --device cuda`` measure it there). ``precision="bf16"`` trains
and tests under bf16 autocast (off by default). ``state=PATH`` keeps every finished network's result
in ``PATH`` (atomically) so a rerun with the same settings skips them.

DSA during training: a :class:`~condense.synset.SyntheticSet` is evaluated with the DSA it records
(strategy, mode, ``align_corners``) -- each official code base evaluates with its own DiffAugment;
otherwise the dataset's default strategy (:func:`condense.augment.resolve_strategy`) with the
protocol's ``align_corners`` (``dc``/``datadam``: False, ``ast``: True). Without DSA, ``dc_aug=True``
trains with DC's own per-image augmentation where DC's code does (:mod:`condense.dcaug`: MNIST, or a
BatchNorm ConvNet); DC evaluates its sets that way.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .augment import AUTO, DSA, resolve_strategy
from .batched import NetworkStack, batch_problem
from .data import ZCA, ImageDataset
from .dcaug import DCAugment, dc_augment_for
from .nets import FIXED_NORM, get_network
from .safeio import check_count, check_image_dataset, check_training_pair, check_type, fingerprint_tensors
from .synset import SyntheticSet
from .utils import UserError, atomic_save, check_positive, make_generator, resolve_device, safe_load

__all__ = [
    "Protocol", "PROTOCOLS", "get_protocol", "EvalResult", "Summary", "fit", "train_and_test", "accuracy", "evaluate_images",
    "evaluate_synset", "soft_cross_entropy", "eval_dsa", "PRECISIONS", "PRECISION_HELP", "fit_batched", "train_and_test_batched", "finished_networks", "test_batch_size", "CPU_TEST_BYTES",
]  # fmt: skip

#: ``precision`` choices: ``fp32`` (the networks' own dtype) or bf16 autocast for training and testing
PRECISIONS = ("fp32", "bf16")
#: what ``--precision`` does and costs (measured: experiments/results/bench_evaluate.md)
PRECISION_HELP = ("fp32 (default) or bf16: bf16 autocast for training and testing, for CPUs with AVX-512-BF16/AMX and "
                  "GPUs; trains one by one (autocast does not reach vmapped operations). Measured on Fashion-MNIST IPC 1, "
                  "5 ConvNet-128: final accuracy 51.18 +- 1.97 vs 51.38 +- 2.02 %% in fp32 (within noise), 39x slower on "
                  "a CPU without bf16 instructions (experiments/results/bench_evaluate.md)")
_UNOFFICIAL_MAX = "max-over-checkpoints % (not part of the protocol)"
_STATE_FORMAT = "condense-evaluate-state/1"


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
    max_label: str = _UNOFFICIAL_MAX

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

    def tests_every(self, test_every: int | None) -> int:
        """Passes between intermediate tests: ``test_every`` if given (0: final only), else the protocol's."""
        if test_every is not None and test_every < 0:
            raise UserError(f"test_every must be >= 0, got {test_every}")
        return self.test_every if test_every is None else test_every

    def max_label_for(self, test_every: int | None) -> str:
        """Header of the maximum-over-checkpoints column for these test checkpoints."""
        every = self.tests_every(test_every)
        return self.max_label if every == self.test_every else _UNOFFICIAL_MAX


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
    test_every: int = 0  # passes between intermediate tests (0: tested after the last pass only)
    max_label: str = _UNOFFICIAL_MAX
    engine: str = "sequential"  # or "batched" (condense.batched)

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


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``precision="bf16"``; a no-op for ``fp32``."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


#: bytes of the largest activation a CPU test forward keeps in flight: a cache-resident working set
CPU_TEST_BYTES = 16 * 2**20


def test_batch_size(net: nn.Module, x: torch.Tensor, device: torch.device) -> int:
    """Images per test forward: 1024 on an accelerator; on a CPU as many as keep the network's largest
    activation within :data:`CPU_TEST_BYTES` (8 to 1024), found by one forward of one image.

    Test forwards are per image (eval mode), so the batch changes no logit: ConvNet-128 on 28x28 images
    gives bit-identical logits at 32 and 1024 images per forward, and the 32-image forwards take 0.54x
    the CPU time (one thread; 1024-image activations of 512 MiB leave every cache)."""
    if device.type != "cpu" or len(x) == 0:
        return 1024
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel() * out.element_size()) if torch.is_tensor(out) else None)
             for m in net.modules() if not any(True for _ in m.children())]  # fmt: skip
    try:
        with torch.inference_mode():
            net(x[:1].to(device))
    finally:
        for h in hooks:
            h.remove()
    return int(min(1024, max(8, CPU_TEST_BYTES // max(sizes, default=1))))


def accuracy(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, device: str | torch.device, batch_size: int | None = None, precision: str = "fp32",
) -> float:  # fmt: skip
    """Top-1 accuracy of ``net`` (in eval mode, under :func:`torch.inference_mode`) on ``(x, y)``;
    ``batch_size`` images per forward (``None``: :func:`test_batch_size`)."""
    device = resolve_device(device)
    was_training = net.training
    net.eval()
    batch_size = batch_size or test_batch_size(net, x, device)
    correct = 0
    with torch.inference_mode(), _autocast(device, precision):
        for i in range(0, len(x), batch_size):
            out = net(x[i : i + batch_size].to(device))
            correct += int((out.argmax(1).cpu() == y[i : i + batch_size]).sum())
    net.train(was_training)
    return correct / max(1, len(x))


def _stack_accuracies(stack: NetworkStack, x: torch.Tensor, y: torch.Tensor, *, device: torch.device,
                      batch_size: int = 1024) -> list[float]:  # fmt: skip
    """Top-1 accuracy of each network of ``stack`` (eval mode); ``batch_size`` images in flight in all."""
    chunk = max(1, batch_size // len(stack))
    correct = torch.zeros(len(stack), dtype=torch.long)
    with torch.inference_mode():
        for i in range(0, len(x), chunk):
            out = stack(x[i : i + chunk].to(device), training=False, shared_input=True)
            correct += (out.argmax(-1).cpu() == y[i : i + chunk]).sum(1)
    return [int(c) / max(1, len(x)) for c in correct]


def _stack_losses(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`soft_cross_entropy` of each network: outputs ``(K, B, C)``, targets ``(K, B)`` or ``(K, B, C)``."""
    k, b = out.shape[:2]
    if target.dim() == 2:
        return F.cross_entropy(out.flatten(0, 1), target.flatten(), reduction="none").view(k, b).mean(1)
    return -(target * F.log_softmax(out, dim=-1)).sum(-1).mean(-1)


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
    precision: str = "fp32",
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
            with _autocast(device, precision):
                out = net(xb)
            loss = soft_cross_entropy(out, y[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        if not torch.isfinite(loss):
            break  # diverged: the test accuracy will show it
        if on_epoch is not None:
            on_epoch(ep)
    return net


def fit_batched(
    nets: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    generators: Sequence[torch.Generator],
    lr: float | None = None,
    protocol: str | Protocol = "dc",
    batch_size: int | None = None,
    augment: DSA | DCAugment | None = None,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[int, NetworkStack, list[int]], None] | None = None,
) -> NetworkStack:
    """:func:`fit` for ``K`` networks at once (:class:`condense.batched.NetworkStack`): network ``k``
    draws its batch order and augmentation from ``generators[k]`` in the order :func:`fit` does, so
    each network ends as :func:`fit` would leave it (up to float rounding). A network whose loss turns
    non-finite stops after that pass, as in :func:`fit`. ``on_epoch(ep, stack, active)`` after each pass
    with the indices of the networks still training. The trained weights are written back into ``nets``."""
    proto = get_protocol(protocol)
    lr = proto.lr if lr is None else lr
    check_positive("lr", lr)
    if len(generators) != len(nets):
        raise ValueError(f"{len(nets)} networks need {len(nets)} generators, got {len(generators)}")
    batch_size = batch_size or proto.batch_size
    plan = proto.schedule(epochs, lr)
    device = resolve_device(device)
    stack = NetworkStack([net.to(device).train() for net in nets])
    x, y = x.to(device), y.to(device)
    active, frozen = list(range(len(nets))), {}
    optimiser, current = None, None
    for ep, setting in enumerate(plan):
        if setting != current:
            current = setting
            optimiser = torch.optim.SGD(stack.parameters(), lr=setting[0], momentum=setting[1], weight_decay=proto.weight_decay)
        perms = [torch.randperm(len(x), generator=g).to(device) for g in generators]
        for i in range(0, len(x), batch_size):
            idx = [perm[i : i + batch_size] for perm in perms]
            xb = torch.stack([augment(x[j], generator=g) if augment is not None else x[j] for j, g in zip(idx, generators)])
            out = stack(xb, training=True)
            losses = _stack_losses(out, torch.stack([y[j] for j in idx]))
            optimiser.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimiser.step()
        finite = torch.isfinite(losses.detach()).tolist()
        for k in [k for k in active if not finite[k]]:  # diverged: keep the weights fit() would stop with
            frozen[k] = stack.snapshot(k)
            active.remove(k)
        if not active:
            break
        if on_epoch is not None:
            on_epoch(ep, stack, list(active))
    stack.write_back(frozen)
    if frozen:
        stack = NetworkStack(stack.nets)
    return stack


def _tests_after(ep: int, every: int | None, epochs: int) -> bool:
    """An intermediate test after 0-based pass ``ep`` (the final test is always run, once)."""
    return bool(every) and ep % every == 0 and ep != epochs


def _result(history: list[tuple[int, float]], epochs: int, final: float, seconds: float) -> EvalResult:
    """The final test appended to ``history``; the max column over every test."""
    history.append((epochs, final))
    return EvalResult(final_acc=final, max_acc=max(a for _, a in history), history=history, seconds=seconds)


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
    test_every: int | None = None,
    precision: str = "fp32",
    test_batch_size: int | None = None,
    on_epoch: Callable[[int], None] | None = None,
    **fit_kwargs,
) -> EvalResult:
    """:func:`fit` then test. Intermediate tests for the labelled max column (:meth:`Protocol.tests_every`:
    the protocol's own checkpoints, ``ast``: every 20 passes, unless ``test_every`` is given; 0-based
    ``ep % k == 0``). ``test_batch_size``: images per test forward (``None``: :func:`test_batch_size`).
    ``on_epoch(ep)`` after each pass (e.g. a progress bar)."""
    proto = get_protocol(protocol)
    device = resolve_device(device)
    every = proto.tests_every(test_every)
    history: list[tuple[int, float]] = []

    def checkpoint(ep: int) -> None:
        if _tests_after(ep, every, epochs):
            history.append((ep, accuracy(net, test_x, test_y, device=device, precision=precision, batch_size=test_batch_size)))
        if on_epoch is not None:
            on_epoch(ep)

    start = time.perf_counter()
    fit(net, x, y, epochs=epochs, protocol=proto, device=device, precision=precision, on_epoch=checkpoint, **fit_kwargs)
    final = accuracy(net, test_x, test_y, device=device, precision=precision, batch_size=test_batch_size)
    return _result(history, epochs, final, time.perf_counter() - start)


def train_and_test_batched(
    nets: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    epochs: int,
    protocol: str | Protocol = "dc",
    device: str | torch.device = "cpu",
    test_every: int | None = None,
    on_epoch: Callable[[int], None] | None = None,
    **fit_kwargs,
) -> list[EvalResult]:
    """:func:`train_and_test` for ``K`` networks at once (:func:`fit_batched`, float32/64 only: bf16 autocast
    does not reach operations inside :func:`torch.func.vmap`); one result per network."""
    proto = get_protocol(protocol)
    device = resolve_device(device)
    every = proto.tests_every(test_every)
    histories: list[list[tuple[int, float]]] = [[] for _ in nets]

    def checkpoint(ep: int, stack: NetworkStack, active: list[int]) -> None:
        if _tests_after(ep, every, epochs):
            accs = _stack_accuracies(stack, test_x, test_y, device=device)
            for k in active:
                histories[k].append((ep, accs[k]))
        if on_epoch is not None:
            on_epoch(ep)

    start = time.perf_counter()
    stack = fit_batched(nets, x, y, epochs=epochs, protocol=proto, device=device, on_epoch=checkpoint, **fit_kwargs)
    finals = _stack_accuracies(stack, test_x, test_y, device=device)
    seconds = (time.perf_counter() - start) / len(nets)
    return [_result(hist, epochs, final, seconds) for hist, final in zip(histories, finals)]


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
    test_every: int | None = None,
    eval_ids: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    batched: bool = False,
    precision: str = "fp32",
    test_batch_size: int | None = None,
    state: str | Path | None = None,
) -> dict[str, Summary]:
    """Train ``num_evals`` networks per architecture on ``(x, y)`` with ``protocol`` and test them on
    ``dataset.test_*``.

    ``epochs=None``: the protocol's (``dc``: 1000 with DSA, 300 without; ``ast`` 1000; ``datadam`` 1800).
    ``lr``/``batch_size`` ``None``: the protocol's. ConvNet-family networks get the protocol's
    ``eval_norm`` unless ``model_kwargs`` names a norm or the name fixes one (``FIXED_NORM``:
    ``convnet_bn``). Network ``i`` is initialised from seed ``seed + i``, so results are reproducible
    and ``eval_ids`` can split the ``n`` networks across processes.
    ``test_every``: intermediate tests (:meth:`Protocol.tests_every`; default the protocol's own).
    ``dc_aug`` (only without DSA): DC's own augmentation where its ``get_daparam`` applies it
    (:func:`condense.dcaug.dc_augment_for`: MNIST, or a BatchNorm ConvNet).
    ``batched``: train each architecture's networks as one vmapped model (an architecture that cannot be
    batched, or bf16, falls back to one by one, with one line on stderr).
    ``precision``: ``fp32`` or ``bf16`` autocast. ``state``: file keeping finished networks' results.
    ``test_batch_size``: images per test forward of the one-by-one engine (``None``: :func:`test_batch_size`,
    which changes no logit).
    """
    check_count("num_evals", num_evals)
    if isinstance(models, str) or not models:
        raise UserError(f"models must be a non-empty list of architecture names, got {models!r}")
    check_image_dataset(check_type(dataset, ImageDataset, "dataset"))  # an empty or non-finite test split is refused
    check_training_pair(x, y, dataset.num_classes, shape=(dataset.channels, *dataset.image_size), what="training data")
    device = resolve_device(device)
    proto = get_protocol(protocol)
    every = proto.tests_every(test_every)
    _autocast(device, precision)  # validates precision
    aug = eval_dsa(dsa, dataset, proto)
    if dc_aug and aug is not None:
        raise UserError("DC's augmentation is its protocol without DSA (DSA replaces it): drop one of dsa / dc_aug")
    epochs = epochs if epochs is not None else proto.default_epochs(aug is not None)
    ids = list(eval_ids) if eval_ids is not None else list(range(num_evals))
    kwargs = {name: dict((model_kwargs or {}).get(name, {})) for name in models}
    for name in models:  # validate every architecture before training any network
        if proto.eval_norm and name.lower().startswith("convnet") and name.lower() not in FIXED_NORM:
            kwargs[name].setdefault("norm", proto.eval_norm)
        get_network(name, dataset.channels, dataset.num_classes, dataset.image_size, **kwargs[name])
    kept = None
    if state is not None:  # every setting that changes a result
        settings = {"models": list(models), "model_kwargs": kwargs, "epochs": epochs, "lr": lr, "augment": repr(aug), "dc_aug": dc_aug,
                    "protocol": proto.name, "batch_size": batch_size, "test_every": every, "seed": seed, "precision": precision,
                    "batched": batched, "device": device.type, "data": fingerprint_tensors({"x": x, "y": y}),
                    "dataset": [dataset.name, dataset.fingerprint, list(dataset.test_x.shape),  # rows as transformed:
                                fingerprint_tensors({"x": dataset.test_x[:256], "y": dataset.test_y})]}  # fmt: skip
        kept = _EvalState(Path(state), settings)
    out: dict[str, Summary] = {}
    for name in models:
        start = time.perf_counter()
        augment = aug or (dc_augment_for(dataset.name, batchnorm=_is_convnet_bn(name, kwargs[name])) if dc_aug else None)
        done = kept.results(name) if kept is not None else {}
        todo = [i for i in ids if i not in done]
        nets = []
        for i in todo:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + i)
                nets.append(get_network(name, dataset.channels, dataset.num_classes, dataset.image_size, **kwargs[name]))
        common = dict(epochs=epochs, protocol=proto, lr=lr, batch_size=batch_size, augment=augment, device=device,
                      test_every=test_every)  # fmt: skip
        engine = "batched" if batched and len(nets) > 1 and _can_batch(name, nets[0], x, device, precision) else "sequential"
        if engine == "batched":
            with _passes(f"eval {name} x{len(nets)} (batched)", epochs, progress) as tick:
                results = train_and_test_batched(nets, x, y, dataset.test_x, dataset.test_y, on_epoch=tick,
                                                  generators=[make_generator(seed + i) for i in todo], **common)  # fmt: skip
            done.update(zip(todo, results))
            if kept is not None:
                kept.save(name, done)
        else:
            for i, net in zip(todo, nets):
                with _passes(f"eval {name} {len(done) + 1}/{len(ids)}", epochs, progress) as tick:
                    done[i] = train_and_test(net, x, y, dataset.test_x, dataset.test_y, on_epoch=tick, precision=precision,
                                             test_batch_size=test_batch_size, generator=make_generator(seed + i), **common)  # fmt: skip
                if kept is not None:
                    kept.save(name, done)
        out[name] = Summary(model=name, accs=[done[i].final_acc for i in ids], max_accs=[done[i].max_acc for i in ids],
                            seconds=time.perf_counter() - start, protocol=proto.name,
                            augment=repr(augment) if augment is not None else "none", test_every=every,
                            max_label=proto.max_label_for(test_every), engine=engine)  # fmt: skip
    return out


@contextlib.contextmanager
def _passes(desc: str, epochs: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar over the ``epochs + 1`` training passes of one network (or one batched group)."""
    with tqdm(total=epochs + 1, desc=desc, unit="pass", disable=not enabled, leave=False) as bar:
        yield lambda ep: bar.update(1)


def _can_batch(name: str, net: nn.Module, x: torch.Tensor, device: torch.device, precision: str) -> bool:
    """Whether ``name`` trains under :class:`~condense.batched.NetworkStack`; if not, say so on stderr."""
    if precision != "fp32":
        problem = f"{precision} autocast does not reach operations inside torch.func.vmap"
    else:
        problem = batch_problem(net.to(device), x[:2].to(device))
    if problem is not None:
        print(f"{name}: cannot be batched ({problem}); training its networks one by one", file=sys.stderr)
    return problem is None


def finished_networks(state: str | Path) -> int:
    """How many networks' results the evaluation state file ``state`` keeps (0 if there is none)."""
    path = Path(state)
    if not path.exists():
        return 0
    return sum(len(res) for res in safe_load(path, expected_format=_STATE_FORMAT, what="evaluation state")["results"].values())


class _EvalState:
    """Finished networks' results of one evaluation, kept in a file (atomic writes) for a rerun to resume.

    The file records a hash of every setting that changes a result; a file of other settings is ignored
    (and replaced by the first network this run finishes)."""

    def __init__(self, path: Path, settings: dict) -> None:
        self.path = path
        self.signature = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
        self.stored: dict[str, dict[int, EvalResult]] = {}
        if path.exists():
            obj = safe_load(path, expected_format=_STATE_FORMAT, what="evaluation state")
            if obj.get("signature") == self.signature:
                self.stored = {m: {int(i): EvalResult(r[0], r[1], [tuple(h) for h in r[2]], r[3]) for i, r in res.items()}
                               for m, res in obj["results"].items()}  # fmt: skip
            else:
                print(f"{path}: kept results of other settings; starting afresh", file=sys.stderr)

    def results(self, model: str) -> dict[int, EvalResult]:
        found = self.stored.setdefault(model, {})
        if found:
            print(f"resuming {model}: {len(found)} finished network(s) from {self.path}", file=sys.stderr)
        return found

    def save(self, model: str, done: dict[int, EvalResult]) -> None:
        self.stored[model] = done
        results = {m: {str(i): [r.final_acc, r.max_acc, [list(h) for h in r.history], r.seconds] for i, r in res.items()}
                   for m, res in self.stored.items()}  # fmt: skip
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save({"format": _STATE_FORMAT, "signature": self.signature, "results": results}, self.path, what="evaluation state")


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
    check_type(synset, SyntheticSet, "synset")
    check_type(dataset, ImageDataset, "dataset")
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
