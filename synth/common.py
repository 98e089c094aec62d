"""Pieces every synth trainer shares: the checkpointed training loop, teacher forward helpers,
validation of configs, and turning generator samples into a :class:`~condense.synset.SyntheticSet`."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from condense.checkpoint import Checkpointer, rng_state, set_rng_state
from condense.data import ImageDataset
from condense.synset import SyntheticSet
from condense.utils import UserError, package_versions

__all__ = ["Stateful", "LoopResult", "run_loop", "logits_and_features", "make_synset", "epoch_batches", "check_images", "check_choice", "check_int"]


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class LoopResult:
    """Loss history (one dict per logged iteration), evaluation history and wall time."""

    history: list[dict[str, float]] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0


def run_loop(
    step: Callable[[int], dict[str, float]],
    iterations: int,
    *,
    state: dict[str, Stateful],
    generators: dict[str, torch.Generator],
    checkpoint: Checkpointer | None = None,
    progress: bool = True,
    desc: str = "train",
    evaluate: Callable[[], float] | None = None,
    eval_every: int = 0,
    log_every: int = 10,
) -> LoopResult:
    """Call ``step(i)`` for ``i`` in ``[start, iterations)`` with a progress bar and resumable checkpoints.

    ``state`` holds every module / optimiser / scheduler / pool whose ``state_dict`` defines the run;
    together with the RNG states of torch and ``generators`` it makes a resumed run bit-identical.
    """
    result, start = LoopResult(), 0
    if checkpoint is not None and (saved := checkpoint.load()) is not None:
        start, blob = saved
        for name, obj in state.items():
            obj.load_state_dict(blob["state"][name])
        set_rng_state(blob["rng"], generators)
        result.history, result.evals = list(blob["history"]), [tuple(e) for e in blob["evals"]]
    t0 = time.perf_counter()
    bar = tqdm(range(start, iterations), desc=desc, disable=not progress, leave=False)
    for i in bar:
        losses = step(i)
        if i % log_every == 0 or i == iterations - 1:
            result.history.append({"iteration": i, **losses})
            bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items()})
        if evaluate is not None and eval_every and (i + 1) % eval_every == 0:
            result.evals.append((i + 1, evaluate()))
        if checkpoint is not None and checkpoint.due(i + 1):
            blob = {"state": {k: v.state_dict() for k, v in state.items()}, "rng": rng_state(generators),
                    "history": result.history, "evals": [list(e) for e in result.evals]}  # fmt: skip
            checkpoint.save(i + 1, blob)
    result.seconds = time.perf_counter() - t0
    return result


def logits_and_features(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(net(x), net.embed(x))`` in one pass, for nets with ``embed`` + ``classifier`` (all registry nets)."""
    if not (hasattr(net, "embed") and hasattr(net, "classifier")):
        raise UserError(f"{type(net).__name__} has no embed()/classifier split needed for feature losses")
    feats = net.embed(x)
    return net.classifier(feats), feats


@torch.no_grad()
def make_synset(
    images: torch.Tensor,
    teacher: nn.Module,
    dataset: ImageDataset | None,
    *,
    method: str,
    config: Any,
    seed: int,
    wall_time: float,
    temperature: float = 1.0,
) -> SyntheticSet:
    """Samples with the teacher's soft labels ``softmax(T(x)/temperature)`` as a :class:`SyntheticSet`."""
    was_training = teacher.training
    teacher.eval()
    soft = torch.cat([F.softmax(teacher(images[i : i + 512]) / temperature, dim=1) for i in range(0, len(images), 512)])
    teacher.train(was_training)
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    meta = {"method": method, "dataset": dataset.describe() if dataset is not None else {}, "seed": seed, "config": cfg,
            "versions": package_versions(), "wall_time": wall_time, "labels": "teacher soft labels"}  # fmt: skip
    return SyntheticSet(images=images.detach().cpu(), labels=soft.cpu(), meta=meta)


def epoch_batches(images: torch.Tensor, batch_size: int, generator: torch.Generator) -> Callable[[int], torch.Tensor]:
    """``batch(i)``: the ``i``-th mini-batch of ``images`` over reshuffled epochs (pure function of ``i`` and the generator state)."""
    per_epoch = -(-len(images) // batch_size)
    order: list[torch.Tensor] = []

    def batch(i: int) -> torch.Tensor:
        if i % per_epoch == 0 or not order:
            order[:] = [torch.randperm(len(images), generator=generator)]
        j = i % per_epoch
        return images[order[0][j * batch_size : (j + 1) * batch_size]]

    batch.per_epoch = per_epoch  # type: ignore[attr-defined]
    return batch


def check_images(images: torch.Tensor, input_shape: tuple[int, ...]) -> None:
    if tuple(images.shape[1:]) != tuple(input_shape):
        raise UserError(f"images have shape {tuple(images.shape[1:])}, the teacher takes {tuple(input_shape)}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def check_int(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
