"""Teacher and student networks: training, seeded random teachers, validated checkpoints.

A model checkpoint (``format = "synth.Model/1"``) is a plain dict: architecture name and keyword
arguments, input shape, class count, ``state_dict``, the dataset description and how the model was
made (``kind``: ``trained`` teacher, ``random`` teacher, or distilled ``student``). Loading rebuilds
the architecture from the registry and refuses weights, class counts or input shapes that do not fit.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from condense.checkpoint import Checkpointer
from condense.data import ImageDataset
from condense.evaluate import accuracy
from condense.nets import get_network
from condense.safeio import check_finite_state
from condense.utils import UserError, atomic_save, check_positive, package_versions, resolve_device, safe_load

from .common import check_int, run_loop

__all__ = ["Model", "FORMAT", "build_network", "train_teacher", "random_teacher", "save_model", "load_model", "check_student"]

FORMAT = "synth.Model/1"
KINDS = ("trained", "random", "student")


@dataclass
class Model:
    """A network plus the description needed to rebuild and validate it."""

    net: nn.Module
    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def frozen(self) -> nn.Module:
        """The network in eval mode with gradients switched off (a teacher)."""
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        return self.net


def build_network(arch: str, input_shape: tuple[int, int, int], num_classes: int, arch_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Registry network for ``input_shape = (C, H, W)``."""
    c, h, w = input_shape
    return get_network(arch, c, num_classes, (h, w), **(arch_kwargs or {}))


def _input_shape(dataset: ImageDataset) -> tuple[int, int, int]:
    return (dataset.channels, *dataset.image_size)


def train_teacher(
    dataset: ImageDataset,
    arch: str = "lenet5",
    *,
    arch_kwargs: dict[str, Any] | None = None,
    epochs: int = 60,
    lr: float = 1e-3,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    checkpoint: Checkpointer | None = None,
) -> Model:
    """Train ``arch`` on the real training split with Adam and cross-entropy (DAFL's ``teacher-train.py`` for MNIST: Adam lr 1e-3, batch 256).

    With a ``checkpoint`` the epoch loop saves and resumes bit-for-bit (network, optimiser and shuffling states)."""
    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    check_positive("lr", lr)
    device = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(arch, _input_shape(dataset), dataset.num_classes, arch_kwargs).to(device).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    x, y = dataset.train_x.to(device), dataset.train_y.to(device)
    start = time.perf_counter()

    def epoch(_: int) -> dict[str, float]:
        perm = torch.randperm(len(x), generator=order).to(device)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        return {"loss": float(loss.detach())}

    run_loop(epoch, epochs, state={"net": net, "optimiser": optimiser}, generators={"order": order}, checkpoint=checkpoint,
             progress=progress, desc=f"teacher {arch}", log_every=1)  # fmt: skip
    acc = accuracy(net, dataset.test_x, dataset.test_y, device=device)
    meta = {"kind": "trained", "seed": seed, "epochs": epochs, "lr": lr, "test_acc": acc, "wall_time": time.perf_counter() - start}
    return Model(net.eval(), arch, dataset.num_classes, _input_shape(dataset), dict(arch_kwargs or {}), meta)


def random_teacher(
    arch: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    seed: int = 0,
    arch_kwargs: dict[str, Any] | None = None,
) -> Model:
    """A randomly initialised ``arch`` (PyTorch default init, seeded): the teacher of Sarnthein et al. 2023 and a control row."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(arch, input_shape, num_classes, arch_kwargs)
    return Model(net.eval(), arch, num_classes, tuple(input_shape), dict(arch_kwargs or {}), {"kind": "random", "seed": seed})


def save_model(model: Model, path: str | Path, *, dataset: ImageDataset | None = None) -> Path:
    """Write ``model`` atomically as a plain dict (readable with ``weights_only=True``)."""
    kind = model.meta.get("kind", "trained")
    if kind not in KINDS:
        raise UserError(f"model kind must be one of {KINDS}, got {kind!r}")
    state = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    return atomic_save(
        {
            "format": FORMAT, "arch": model.arch, "arch_kwargs": dict(model.arch_kwargs), "num_classes": int(model.num_classes),
            "input_shape": list(model.input_shape), "state_dict": state, "dataset": dataset.describe() if dataset is not None else {},
            "meta": dict(model.meta), "versions": package_versions(),
        },
        path,
    )  # fmt: skip


def load_model(
    path: str | Path,
    *,
    dataset: ImageDataset | None = None,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    what: str = "teacher checkpoint",
) -> Model:
    """Load and validate a checkpoint written by :func:`save_model`.

    ``arch`` (if given) must equal the stored architecture; ``dataset`` (if given) must have the
    stored class count and input shape. Every mismatch is a one-line :class:`UserError`.
    """
    obj = safe_load(path, expected_format=FORMAT, what=what)
    try:
        stored_arch, kwargs, k = str(obj["arch"]), dict(obj["arch_kwargs"]), int(obj["num_classes"])
        shape = tuple(int(v) for v in obj["input_shape"])
        state = obj["state_dict"]
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path} is a damaged {what} ({exc})") from exc
    check_finite_state(state, what=f"{path}")
    if arch is not None and arch.lower() != stored_arch.lower():
        raise UserError(f"{path} holds a {stored_arch!r} network, not the requested {arch!r}")
    if dataset is not None:
        if k != dataset.num_classes:
            raise UserError(f"{path} predicts {k} classes but dataset {dataset.name} has {dataset.num_classes}")
        if shape != _input_shape(dataset):
            raise UserError(f"{path} takes inputs of shape {shape} but dataset {dataset.name} has {_input_shape(dataset)} (use the same --resize)")
    net = build_network(stored_arch, shape, k, kwargs)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{path}: weights do not fit architecture {stored_arch!r} with {k} classes ({first[:160]})") from exc
    return Model(net.to(resolve_device(device)).eval(), stored_arch, k, shape, kwargs, dict(obj.get("meta") or {}))


def check_student(student: nn.Module, teacher: Model, device: torch.device) -> None:
    """The student must take the teacher's input shape and predict its number of classes."""
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            out = student(torch.zeros(2, *teacher.input_shape, device=device))
    except RuntimeError as exc:
        raise UserError(f"the student cannot take the teacher's input shape {teacher.input_shape}: {str(exc).splitlines()[0][:160]}") from exc
    finally:
        student.train(was_training)
    if out.shape != (2, teacher.num_classes):
        raise UserError(f"the student outputs {tuple(out.shape[1:])} per input, the teacher {teacher.num_classes} classes")
