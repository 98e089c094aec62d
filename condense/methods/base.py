"""Pieces every image-distillation method shares: the registry, input checks, initialisation,
network construction, and the outer optimisation loop (progress bar, checkpoint/resume)."""
from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Callable, Protocol

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..checkpoint import Checkpointer, rng_state, set_rng_state
from ..data import ClassSampler, ImageDataset
from ..nets import get_network
from ..resources import check_memory, distill_bytes
from ..synset import SyntheticSet
from ..safeio import check_count, check_image_dataset, check_type
from ..utils import UserError, check_positive, make_generator, resolve_device

__all__ = [
    "MethodSpec",
    "METHODS",
    "register_method",
    "get_method",
    "check_ipc",
    "init_synthetic",
    "start_pixels",
    "build_network",
    "run_loop",
    "make_synset",
    "validate_config",
]


class DistillFn(Protocol):
    def __call__(
        self, dataset: ImageDataset, ipc: int, config: Any, *, device: torch.device, seed: int, progress: bool = True,
        checkpoint: Checkpointer | None = None,
    ) -> SyntheticSet: ...  # fmt: skip


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config_cls: type
    distill: DistillFn
    summary: str


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, config_cls: type, distill: DistillFn, summary: str) -> None:
    """Register a method: its config dataclass (fields carry ``metadata={"help": ...}``) and ``distill``."""
    @functools.wraps(distill)
    def with_device(dataset: ImageDataset, ipc: int, config: Any, *, device: str | torch.device = "cpu", **kwargs: Any) -> SyntheticSet:
        check_image_dataset(check_type(dataset, ImageDataset, "dataset"), test=False)  # the Python API validates as the CLI does
        check_count("ipc", ipc)
        check_type(config, config_cls, "config")
        check_memory(distill_bytes(dataset.num_classes, dataset.channels, dataset.image_size, ipc, config),
                     f"distilling {ipc} images per class x {dataset.num_classes} classes at {'x'.join(map(str, dataset.image_size))} "
                     "pixels (--ipc, --resize, widths and batch sizes)", "lower --ipc, --resize, --width or the batch sizes")  # fmt: skip
        return distill(dataset, ipc, config, device=resolve_device(device), **kwargs)  # "auto", "cuda" -> device or UserError

    METHODS[name] = MethodSpec(name, config_cls, with_device, summary)


def get_method(name: str) -> MethodSpec:
    check_type(name, str, "method name")
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name]


def validate_config(config: Any) -> None:
    """Reject non-finite or negative numbers in a config dataclass (learning rates, counts, ...)."""
    for f in fields(config):
        v = getattr(config, f.name)
        if isinstance(v, bool):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise UserError(f"{f.name} must be finite, got {v}")
        if isinstance(v, (int, float)) and v < 0:
            raise UserError(f"{f.name} must be >= 0, got {v}")
        if f.name.startswith("lr") and isinstance(v, (int, float)) and f.default is not MISSING and f.default > 0:
            check_positive(f.name, v)


def check_ipc(dataset: ImageDataset, ipc: int) -> None:
    """IPC must be >= 1 and no more than the smallest class holds."""
    if not isinstance(ipc, int) or ipc < 1:
        raise UserError(f"ipc (images per class) must be an integer >= 1, got {ipc!r}")
    smallest = min(dataset.class_counts())
    if ipc > smallest:
        raise UserError(f"ipc={ipc} exceeds the smallest class of {dataset.name} ({smallest} training images)")


def init_synthetic(
    dataset: ImageDataset, ipc: int, init: str, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial synthetic images, class-major: ``init="real"`` (random real images) or ``"noise"`` (N(0, 1))."""
    check_ipc(dataset, ipc)
    labels = torch.arange(dataset.num_classes).repeat_interleave(ipc)
    if init == "noise":
        images = torch.randn(len(labels), dataset.channels, *dataset.image_size, generator=generator)
    elif init == "real":
        sampler = ClassSampler(dataset.train_y, dataset.num_classes)
        idx = torch.cat([sampler.sample(c, ipc, generator) for c in range(dataset.num_classes)])
        images = dataset.train_x[idx].clone()
    else:
        raise UserError(f"unknown init {init!r}; choose real or noise")
    return images, labels


def start_pixels(
    dataset: ImageDataset, ipc: int, init: str, seed: int, device: torch.device, model: str, width: int, **net_kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Generator, ClassSampler]:
    """Common start of the pixel-learning methods: check that ``model`` can be built for the
    dataset (a clear error before any progress bar), seed the run (global RNG for network inits, a
    dedicated generator for sampling), initialise the synthetic images as a leaf on ``device``.

    Returns ``(images, labels, generator, per-class sampler of the real training set)``.
    """
    with torch.random.fork_rng(devices=[]):
        build_network(model, dataset, width, **net_kwargs)
    torch.manual_seed(seed)
    gen = make_generator(seed)
    images, labels = init_synthetic(dataset, ipc, init, gen)
    return images.to(device).requires_grad_(True), labels.to(device), gen, ClassSampler(dataset.train_y, dataset.num_classes)


def build_network(name: str, dataset: ImageDataset, width: int = 128, **kwargs) -> nn.Module:
    """Network ``name`` for ``dataset``; ``width`` applies to the ConvNet family."""
    if name.lower().startswith("convnet"):
        kwargs.setdefault("width", width)
    return get_network(name, dataset.channels, dataset.num_classes, dataset.image_size, **kwargs)


def run_loop(
    step: Callable[[int], float],
    iterations: int,
    *,
    tensors: dict[str, torch.Tensor],
    optimisers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
    checkpoint: Checkpointer | None = None,
    progress: bool = True,
    desc: str = "distill",
    positive: tuple[str, ...] = (),
) -> list[float]:
    """Outer loop shared by the methods: ``zero_grad -> step(it) (computes loss, backward) -> optimiser.step``.

    ``tensors``/``optimisers``/``generators`` make up the whole loop state; with a ``checkpoint``
    they are saved when it is due (every ``checkpoint.every`` iterations / its time interval) and
    restored on start, so a resumed run is bit-for-bit identical to an unbroken one. ``positive``
    names tensors that must stay finite and > 0 (a learned learning rate): when an optimiser step
    breaks that, every tensor is put back to its value before the step and the loop stops there
    with one line on stderr, so the caller writes the last valid set. Returns the per-iteration
    losses (of the completed iterations).
    """
    start, history = 0, []
    if checkpoint is not None and (loaded := checkpoint.load()) is not None:
        start, state = loaded
        if start > iterations:
            raise UserError(f"checkpoint is at iteration {start}, beyond the requested {iterations} iterations")
        for k, t in tensors.items():
            if state["tensors"][k].shape != t.shape:
                raise UserError(f"checkpoint tensor {k!r} has shape {tuple(state['tensors'][k].shape)}, run expects {tuple(t.shape)}")
            with torch.no_grad():
                t.copy_(state["tensors"][k])
        for k, o in optimisers.items():
            o.load_state_dict(state["optimisers"][k])
        set_rng_state(state["rng"], generators)
        history = list(state["history"])
    bar = tqdm(range(start, iterations), initial=start, total=iterations, desc=desc, disable=not progress, leave=False)
    for it in bar:
        for o in optimisers.values():
            o.zero_grad(set_to_none=True)
        loss = float(step(it))
        if not math.isfinite(loss):
            raise UserError(f"{desc}: loss became {loss} at iteration {it}; lower the learning rate")
        before = {k: tensors[k].detach().clone() for k in tensors} if positive else {}
        for o in optimisers.values():
            o.step()
        broken = [(k, tensors[k]) for k in positive if not bool(torch.all(torch.isfinite(tensors[k]) & (tensors[k] > 0)))]
        if broken:
            k, value = broken[0][0], broken[0][1].detach().flatten()[0].item()
            with torch.no_grad():
                for name, t in tensors.items():
                    t.copy_(before[name])
            print(f"{desc}: stopping at iteration {it}: its update would make {k} {value:.4g} (it must stay finite and > 0); "
                  f"keeping the set and {k} of the {it} completed iterations (lower the learning rate that updates {k})",
                  file=sys.stderr, flush=True)  # fmt: skip
            break
        history.append(loss)
        bar.set_postfix(loss=f"{loss:.4g}")
        if checkpoint is not None and (checkpoint.due(it + 1) or it + 1 == iterations):
            checkpoint.save(
                it + 1,
                {
                    "tensors": {k: t.detach().cpu().clone() for k, t in tensors.items()},
                    "optimisers": {k: o.state_dict() for k, o in optimisers.items()},
                    "rng": rng_state(generators),
                    "history": history,
                },
            )
    return history


def make_synset(
    method: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    dataset: ImageDataset,
    *,
    ipc: int,
    seed: int,
    config: Any,
    started: float,
    lr: float | None = None,
    extra: dict[str, Any] | None = None,
    history: list[float] | None = None,
) -> SyntheticSet:
    """Wrap a method's result with full provenance metadata (and the loss per outer iteration, ``history``,
    which ``python -m condense show --curve`` plots)."""
    meta = {
        "method": method,
        "dataset": dataset.describe(),
        "class_names": list(dataset.class_names),
        "ipc": ipc,
        "seed": seed,
        "config": asdict(config),
        "wall_time": time.perf_counter() - started,
    }
    if history is not None:
        meta["loss_history"] = [float(v) for v in history]
    meta.update(extra or {})
    zca = dataset.zca.state_dict() if dataset.zca is not None else None  # lets `show` undo the whitening
    return SyntheticSet(images=images.detach().cpu(), labels=labels.cpu(), lr=lr, meta=meta, zca=zca)
