r"""GeneratorKD: a generator, trained against a frozen teacher, supplies the student's training data.

One trainer, three published presets (``GeneratorKDConfig.from_preset(name)``):

**DAFL** (Chen et al., ICCV 2019, Alg. 1, Eq. 7): per iteration, with :math:`x = G(z)`,

.. math::
    \mathcal{L}_G = oh\,\mathcal{L}_{oh}(T(x)) + ie\,\mathcal{L}_{ie}(T(x)) + a\,\mathcal{L}_a(f_T(x)), \qquad
    \mathcal{L}_S = \mathrm{KL}(T(x)\,\Vert\,S(\mathrm{sg}[x]))

one joint Adam step of G and S. MNIST defaults: batch 512, nz 100, lr_G 0.2, lr_S 2e-3, oh 1, ie 5, a 0.1.

**DFAD** (Fang et al. 2019, Alg. 1, Eq. 3-4): ``n_student = 5`` steps of
:math:`\min_S \lVert T(x) - S(x)\rVert_1` on fresh detached samples, then one step of
:math:`\max_G \lVert T(G(z)) - S(G(z))\rVert_1` (logit MAE). MNIST defaults (``DFAD_mnist.py``):
batch 512, nz 100, student SGD lr 0.01 momentum 0.9 weight decay 1e-4, generator Adam lr 1e-3,
40 x 50 iterations, no schedule.

**ZSKT** (Micaelli & Storkey, NeurIPS 2019, Alg. 1, Eq. 1-2): per pseudo batch :math:`z`: one
generator step :math:`\max_G \mathrm{KL}(T \Vert S)`, then ``n_student = 10`` student steps of
:math:`\mathrm{KL}(T\Vert S) + \beta \sum_l \lVert Q_S^l - Q_T^l\rVert^2` on the same :math:`G(z)`
(:math:`\beta = 250`), both Adam with cosine annealing and gradient-norm clipping at 5 (official
``solver.py``; batch 128, nz 100, lr_G 1e-3, lr_S 2e-3). KL uses the official element-wise mean.

Deviations (all presets): iteration counts are parameters (the CPU presets of ``experiments.synth``
use far fewer than the papers); DAFL's information-entropy term uses ``log10`` as the official code
(``entropy_log="ln"`` gives the paper's natural log).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from condense.checkpoint import Checkpointer
from condense.utils import UserError, check_positive, resolve_device

from .common import LoopResult, check_choice, check_int, logits_and_features, run_loop
from .generators import HEADS, Generator, sample_latents
from .losses import KL_REDUCTIONS, activation_loss, attention_transfer_loss, information_entropy_loss, kd_kl, l1_logit_loss, one_hot_loss
from .teachers import Model, check_student

__all__ = ["GeneratorKDConfig", "PRESETS", "KDResult", "train_generator_kd"]

PRESET_NAMES = ("dafl", "dfad", "zskt")
PRESETS: dict[str, dict[str, Any]] = {
    "dafl": {},  # the dataclass defaults are DAFL's MNIST settings
    "dfad": dict(iterations=2000, n_student=5, lr_g=1e-3, lr_s=0.01, student_optimizer="sgd", weight_decay=1e-4, bn_eps=1e-5),
    "zskt": dict(iterations=8000, batch_size=128, n_student=10, lr_g=1e-3, lr_s=2e-3, head="bn", bn_eps=1e-5,
                 schedule="cosine", grad_clip=5.0, beta=250.0, kl_reduction="mean"),  # fmt: skip
}


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class GeneratorKDConfig:
    """Hyper-parameters of :func:`train_generator_kd`; defaults are DAFL's MNIST settings."""

    preset: str = field(default="dafl", metadata=_help("loop structure and losses: dafl, dfad or zskt"))
    iterations: int = field(default=24000, metadata=_help("outer iterations (DAFL: 200 epochs x 120)"))
    batch_size: int = field(default=512, metadata=_help("generated samples per step"))
    nz: int = field(default=100, metadata=_help("latent dimension"))
    ngf: int = field(default=64, metadata=_help("generator width"))
    head: str = field(default="tanh_bn", metadata=_help("generator output head: tanh_bn, bn or sigmoid"))
    bn_eps: float = field(default=0.8, metadata=_help("generator BatchNorm eps (DAFL's official code: 0.8)"))
    lr_g: float = field(default=0.2, metadata=_help("generator Adam learning rate"))
    lr_s: float = field(default=2e-3, metadata=_help("student learning rate"))
    student_optimizer: str = field(default="adam", metadata=_help("adam or sgd (momentum 0.9)"))
    weight_decay: float = field(default=0.0, metadata=_help("student weight decay"))
    schedule: str = field(default="none", metadata=_help("none or cosine (both optimisers)"))
    grad_clip: float = field(default=0.0, metadata=_help("gradient-norm clipping (0 = off)"))
    n_student: int = field(default=1, metadata=_help("student steps per generator step (dafl: joint step)"))
    oh: float = field(default=1.0, metadata=_help("DAFL one-hot weight"))
    ie: float = field(default=5.0, metadata=_help("DAFL information-entropy weight"))
    a: float = field(default=0.1, metadata=_help("DAFL activation weight"))
    entropy_log: str = field(default="log10", metadata=_help("DAFL entropy log: log10 (official code) or ln (paper)"))
    beta: float = field(default=250.0, metadata=_help("ZSKT attention-transfer weight"))
    temperature: float = field(default=1.0, metadata=_help("KL temperature"))
    kl_reduction: str = field(default="batchmean", metadata=_help("KL reduction: batchmean (true KL) or mean (ZSKT code)"))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "GeneratorKDConfig":
        """The published preset ``name`` with ``overrides`` applied (unknown keys are a :class:`UserError`)."""
        check_choice("method", name, PRESET_NAMES)
        names = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(overrides) - names)
        if bad:
            raise UserError(f"unknown option(s) for {name}: {', '.join(bad)}")
        return cls(**{**PRESETS[name], **overrides, "preset": name})

    def validate(self) -> None:
        check_choice("preset", self.preset, PRESET_NAMES)
        check_choice("head", self.head, HEADS)
        check_choice("student_optimizer", self.student_optimizer, ("adam", "sgd"))
        check_choice("schedule", self.schedule, ("none", "cosine"))
        check_choice("entropy_log", self.entropy_log, ("log10", "ln"))
        check_choice("kl_reduction", self.kl_reduction, KL_REDUCTIONS)
        for name in ("iterations", "batch_size", "nz", "ngf", "n_student"):
            check_int(name, getattr(self, name))
        for name in ("lr_g", "lr_s", "temperature", "bn_eps"):
            check_positive(name, getattr(self, name))
        for name in ("weight_decay", "grad_clip", "oh", "ie", "a", "beta"):
            check_positive(name, getattr(self, name), allow_zero=True)


@dataclass
class KDResult:
    """The trained student and generator plus the loop's history."""

    student: nn.Module
    generator: Generator
    loop: LoopResult


def _student_optimizer(student: nn.Module, cfg: GeneratorKDConfig) -> torch.optim.Optimizer:
    if cfg.student_optimizer == "sgd":
        return torch.optim.SGD(student.parameters(), lr=cfg.lr_s, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(student.parameters(), lr=cfg.lr_s, weight_decay=cfg.weight_decay)


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, clip: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip > 0:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()


def _read_losses(loss_g: torch.Tensor, loss_s: torch.Tensor) -> dict[str, float]:
    """The step's two losses for the progress bar, in one host read."""
    g, s = torch.stack([loss_g.detach(), loss_s.detach()]).tolist()
    return {"loss_g": g, "loss_s": s}


def train_generator_kd(
    teacher: Model,
    student: nn.Module,
    config: GeneratorKDConfig,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    checkpoint: Checkpointer | None = None,
    evaluate=None,
    eval_every: int = 0,
    pixel_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> KDResult:
    """Train ``student`` (in place) from ``teacher`` with the GeneratorKD ``config`` and return it with the generator.

    ``evaluate()`` (optional, e.g. test accuracy) is logged every ``eval_every`` iterations;
    ``pixel_stats = (mean, std)`` is needed by the ``sigmoid`` head to standardise its pixels.
    """
    config.validate()
    device = resolve_device(device)
    cfg = config
    t_net = teacher.frozen().to(device)
    student = student.to(device).train()
    check_student(student, teacher, device)
    c, h, w = teacher.input_shape
    mean, std = pixel_stats if pixel_stats is not None else (None, None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = Generator(cfg.nz, c, (h, w), ngf=cfg.ngf, head=cfg.head, bn_eps=cfg.bn_eps, mean=mean, std=std).to(device).train()
    if cfg.preset == "zskt" and cfg.beta:
        _check_attention_pairs(student, t_net, teacher.input_shape, device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g)
    opt_s = _student_optimizer(student, cfg)
    state: dict[str, Any] = {"generator": gen, "student": student, "opt_g": opt_g, "opt_s": opt_s}
    if cfg.schedule == "cosine":
        state["sched_g"] = torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, cfg.iterations)
        state["sched_s"] = torch.optim.lr_scheduler.CosineAnnealingLR(opt_s, cfg.iterations)
    zgen = torch.Generator().manual_seed(seed + 1)
    log_base = 10.0 if cfg.entropy_log == "log10" else math.e

    def latents() -> torch.Tensor:
        return sample_latents(cfg.batch_size, cfg.nz, zgen, device)

    def kl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return kd_kl(s, t, cfg.temperature, cfg.kl_reduction)

    def dafl_step() -> dict[str, float]:
        x = gen(latents())
        t, feats = logits_and_features(t_net, x)
        loss_g = cfg.oh * one_hot_loss(t) + cfg.ie * information_entropy_loss(t, log_base) + cfg.a * activation_loss(feats)
        loss_s = kl(student(x.detach()), t.detach())
        opt_g.zero_grad(set_to_none=True)
        opt_s.zero_grad(set_to_none=True)
        (loss_g + loss_s).backward()  # one joint step as in the official code; S's loss cannot reach G (detached x)
        opt_g.step()
        opt_s.step()
        return _read_losses(loss_g, loss_s)

    def dfad_step() -> dict[str, float]:
        for _ in range(cfg.n_student):
            with torch.no_grad():
                x = gen(latents())
                t = t_net(x)
            loss_s = l1_logit_loss(student(x), t)
            _step(opt_s, loss_s, cfg.grad_clip)
        x = gen(latents())
        loss_g = -l1_logit_loss(student(x), t_net(x))
        _step(opt_g, loss_g, cfg.grad_clip)
        return _read_losses(loss_g, loss_s)

    def zskt_step() -> dict[str, float]:
        z = latents()
        x = gen(z)
        loss_g = -kl(student(x), t_net(x))
        _step(opt_g, loss_g, cfg.grad_clip)
        with torch.no_grad():  # the same pseudo batch for all student steps (official LearnableLoader)
            x = gen(z)
            t, t_feats = t_net(x), (t_net.features(x) if cfg.beta else [])
        for _ in range(cfg.n_student):
            loss_s = kl(student(x), t)
            if cfg.beta:
                loss_s = loss_s + cfg.beta * attention_transfer_loss(student.features(x), t_feats)
            _step(opt_s, loss_s, cfg.grad_clip)
        return _read_losses(loss_g, loss_s)

    step_fn = {"dafl": dafl_step, "dfad": dfad_step, "zskt": zskt_step}[cfg.preset]

    def step(_i: int) -> dict[str, float]:
        out = step_fn()
        if cfg.schedule == "cosine":
            state["sched_g"].step()
            state["sched_s"].step()
        return out

    loop = run_loop(step, cfg.iterations, state=state, generators={"latents": zgen}, checkpoint=checkpoint,
                    progress=progress, desc=cfg.preset, evaluate=evaluate, eval_every=eval_every)  # fmt: skip
    return KDResult(student=student.eval(), generator=gen, loop=loop)


def _check_attention_pairs(student: nn.Module, teacher: nn.Module, shape: tuple[int, int, int], device: torch.device) -> None:
    """ZSKT pairs the i-th student and teacher feature maps; both nets need ``features`` with equal spatial sizes."""
    if not (hasattr(student, "features") and hasattr(teacher, "features")):
        raise UserError("ZSKT attention transfer needs student and teacher networks with a features() method (or set beta=0)")
    with torch.no_grad():
        x = torch.zeros(2, *shape, device=device)
        was = student.training
        student.eval()
        try:
            attention_transfer_loss(student.features(x), teacher.features(x))
        finally:
            student.train(was)

