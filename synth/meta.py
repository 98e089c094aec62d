r"""Meta-learned generator: Fast-DFKD (Fang et al., "Up to 100x Faster Data-free Knowledge Distillation", AAAI 2022).

Each synthesis round (Alg. 1) draws latents :math:`z` and targets :math:`y`, then adapts a copy
:math:`\theta_i` of the shared generator :math:`\theta` *and* the latents for ``k`` inner steps on

.. math::
    \mathcal{L}(\theta_i, z_i) = bn\,\mathcal{L}_{BN}(T, a_i(G_{\theta_i}(z_i))) + oh\,\mathrm{CE}(T(a_i(\hat x)), y)
    + adv\,\mathcal{L}_{adv}(S, T), \qquad \theta_0 = \theta

(:math:`a_i` a random crop/flip, :math:`\mathcal{L}_{BN}` DeepInversion's statistics prior,
:math:`\mathcal{L}_{adv}` the masked negative KL, switched on after ``warmup`` rounds). The shared
generator is meta-trained on :math:`M(\theta) = \sum_{i<k} \mathcal{L}(\theta_i(\theta))` (Eq. 9):

* ``exact`` - the true second-order :math:`\nabla_\theta M`, back-propagated through the ``k``
  differentiable inner steps by :func:`condense.unroll.unroll_backward` (mode ``full``);
* ``fomaml`` - the official default (``is_maml=1``): :math:`\sum_i \nabla \mathcal{L}(\theta_i)`, the
  Jacobians :math:`\partial\theta_i/\partial\theta` replaced by the identity;
* ``reptile`` - the official ``is_maml=0``: :math:`\theta - \theta_k`.

The meta-optimiser is Adam(lr = ``lr_meta`` x k, betas (0.5, 0.999)) as in the official code. The
batch with the lowest inner loss of each round joins a sample pool; after ``warmup`` rounds the
student takes ``kd_steps`` KD steps (temperature-scaled KL, x T^2) on augmented pool batches.

Deviations from the official ``fast_meta.py`` (documented, some switchable):

* inner optimiser: ``inner_optimizer="sgd"`` (default; the unroll engine's differentiable SGD, so
  ``exact`` and ``fomaml`` adapt identically and differ only in the meta-gradient) or ``"adam"``
  (official Adam(betas 0.5, 0.999); first-order modes only). The latents get their own step size
  (``lr_z``): for SGD they are carried as :math:`u = z/c` with :math:`c^2 = lr_z/lr_g`, which makes
  one SGD step of size ``lr_g`` on :math:`u` exactly a step of size ``lr_z`` on :math:`z`.
* the generator's BatchNorm buffers are passed as ``None`` inside the inner steps (batch statistics,
  which is what a training-mode BN outputs anyway), so no unrolled step writes running statistics;
* not implemented: ``bn_mmt`` (momentum-smoothed BN statistics, 0.9 in the CIFAR scripts) and
  ``reset_l0``; the reptile gradient is not multiplied by the official constant 67 (Adam is
  invariant to that scale up to its epsilon).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from condense.checkpoint import Checkpointer
from condense.unroll import unroll_backward
from condense.utils import UserError, check_positive, resolve_device

from .common import LoopResult, check_choice, check_int, run_loop
from .generator_kd import _student_optimizer
from .generators import HEADS, Generator, sample_latents
from .losses import BNStatistics, kd_kl, masked_adversarial_kl
from .teachers import Model, check_student

__all__ = ["MetaConfig", "MetaResult", "SamplePool", "train_meta_generator", "meta_gradient", "random_crop_flip", "META_MODES", "LATENT"]

META_MODES = ("exact", "fomaml", "reptile")
Params = dict[str, torch.Tensor]
LATENT = "__latent__"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class MetaConfig:
    """Hyper-parameters of :func:`train_meta_generator` (official CIFAR script values where they transfer)."""

    meta: str = field(default="fomaml", metadata=_help("meta-gradient: exact (second order), fomaml (official) or reptile"))
    k: int = field(default=2, metadata=_help("inner steps per round (paper: 2, 5, 10)"))
    rounds: int = field(default=220, metadata=_help("synthesis rounds (official: 220 epochs x 1 round)"))
    warmup: int = field(default=20, metadata=_help("rounds without adversarial term and without student training"))
    batch_size: int = field(default=256, metadata=_help("synthesis batch size"))
    nz: int = field(default=256, metadata=_help("latent dimension"))
    ngf: int = field(default=64, metadata=_help("generator width"))
    head: str = field(default="sigmoid", metadata=_help("generator head (official: sigmoid + normalisation)"))
    inner_optimizer: str = field(default="sgd", metadata=_help("sgd (unroll engine) or adam (official, first-order modes only)"))
    lr_g: float = field(default=5e-3, metadata=_help("inner generator learning rate"))
    lr_z: float = field(default=0.015, metadata=_help("inner latent learning rate"))
    lr_meta: float = field(default=5e-3, metadata=_help("meta learning rate per inner step (Adam lr = lr_meta * k)"))
    bn: float = field(default=10.0, metadata=_help("BN-statistics weight"))
    oh: float = field(default=0.5, metadata=_help("one-hot (CE to sampled targets) weight"))
    adv: float = field(default=1.33, metadata=_help("adversarial weight"))
    crop_pad: int = field(default=4, metadata=_help("random-crop padding of the synthesis augmentation"))
    flip: bool = field(default=True, metadata=_help("random horizontal flips in the augmentation"))
    kd_steps: int = field(default=400, metadata=_help("student KD steps per round"))
    kd_batch_size: int = field(default=256, metadata=_help("student batch size"))
    temperature: float = field(default=20.0, metadata=_help("KD temperature"))
    lr_s: float = field(default=0.2, metadata=_help("student learning rate"))
    student_optimizer: str = field(default="sgd", metadata=_help("sgd (official, momentum 0.9) or adam"))
    weight_decay: float = field(default=1e-4, metadata=_help("student weight decay"))
    pool_size: int = field(default=0, metadata=_help("keep only the newest N pool samples (0 = all, as official)"))

    def validate(self) -> None:
        check_choice("meta", self.meta, META_MODES)
        check_choice("head", self.head, HEADS)
        check_choice("inner_optimizer", self.inner_optimizer, ("sgd", "adam"))
        check_choice("student_optimizer", self.student_optimizer, ("adam", "sgd"))
        if self.meta == "exact" and self.inner_optimizer != "sgd":
            raise UserError("meta=exact differentiates through the unroll engine's SGD: use inner_optimizer=sgd")
        for name in ("k", "rounds", "batch_size", "nz", "ngf", "kd_steps", "kd_batch_size"):
            check_int(name, getattr(self, name))
        for name in ("warmup", "crop_pad", "pool_size"):
            check_int(name, getattr(self, name), minimum=0)
        for name in ("lr_g", "lr_z", "lr_meta", "temperature", "lr_s"):
            check_positive(name, getattr(self, name))
        for name in ("bn", "oh", "adv", "weight_decay"):
            check_positive(name, getattr(self, name), allow_zero=True)


class SamplePool:
    """The growing set of synthesised images the student distils on (official ``ImagePool``, kept in memory)."""

    def __init__(self, capacity: int = 0) -> None:
        self.capacity = capacity
        self.images = torch.empty(0)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().cpu()
        self.images = x if self.images.numel() == 0 else torch.cat([self.images, x])
        if self.capacity:
            self.images = self.images[-self.capacity :]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.images[torch.randint(len(self.images), (n,), generator=generator)]

    def __len__(self) -> int:
        return len(self.images)

    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images = state["images"]


def random_crop_flip(x: torch.Tensor, params: tuple[torch.Tensor, torch.Tensor, torch.Tensor], pad: int, pad_value: torch.Tensor) -> torch.Tensor:
    """Differentiable padded random crop + horizontal flip with pre-sampled ``(dy, dx, flip)`` per sample.

    Padding uses ``pad_value`` per channel (the standardised value of a black pixel, like Kornia's
    zero padding before normalisation in the official pipeline).
    """
    dy, dx, flip = params
    b, _, h, w = x.shape
    if pad:
        x = F.pad(x - pad_value, (pad, pad, pad, pad)) + pad_value
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]
    out = x[torch.arange(b, device=x.device)[:, None, None], :, rows, cols]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def _aug_params(n: int, pad: int, flip: bool, generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, ...]:
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    fl = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return dy.to(device), dx.to(device), fl.to(device)


def meta_gradient(
    objective: Callable[[Params, Any], tuple[torch.Tensor, torch.Tensor]],
    theta0: Params,
    batches: list[Any],
    cfg: MetaConfig,
) -> tuple[Params, torch.Tensor, float]:
    r"""Meta-gradient of :math:`M(\theta) = \sum_{i<k} \mathcal{L}(\theta_i)` for every entry of ``theta0`` but the latents.

    ``objective(params, batch) -> (loss, images)``; ``theta0`` holds the generator parameters and
    the (scaled) latents under ``LATENT``. Returns ``(grads, best_images, best_loss)``, the best
    batch being the lowest-loss iterate among :math:`\theta_0, \dots, \theta_{k-1}` (official rule).
    ``theta0`` and its ``.grad`` are left untouched.
    """
    names = [n for n in theta0 if n != LATENT]
    leaves = {n: v.detach().clone().requires_grad_(n != LATENT) for n, v in theta0.items()}
    best: list[tuple[float, torch.Tensor]] = []

    def tracked(params: Params, batch: Any) -> torch.Tensor:
        loss, x = objective(params, batch)
        value = loss.item()
        if not best or value < best[0][0]:
            best[:] = [(value, x.detach())]
        return loss

    if cfg.meta == "exact":
        outer = lambda rec: sum(tracked(rec[i], batches[i]) for i in range(cfg.k))  # noqa: E731
        unroll_backward(outer, lambda p, b: objective(p, b)[0], leaves, cfg.lr_g, cfg.k, lambda i: batches[i],
                        record=range(cfg.k), mode="full", inputs=[leaves[n] for n in names])  # fmt: skip
        return {n: leaves[n].grad for n in names}, best[0][1], best[0][0]
    fast = {n: v.detach().clone().requires_grad_() for n, v in leaves.items()}
    groups = [{"params": [fast[n] for n in names], "lr": cfg.lr_g},
              {"params": [fast[LATENT]], "lr": cfg.lr_z if cfg.inner_optimizer == "adam" else cfg.lr_g}]  # fmt: skip
    opt = torch.optim.Adam(groups, betas=(0.5, 0.999)) if cfg.inner_optimizer == "adam" else torch.optim.SGD(groups)
    grads = {n: torch.zeros_like(leaves[n]) for n in names}
    for i in range(cfg.k):
        loss = tracked(fast, batches[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.meta == "fomaml":
            for n in names:
                grads[n] += fast[n].grad
        opt.step()
    if cfg.meta == "reptile":
        grads = {n: leaves[n].detach() - fast[n].detach() for n in names}
    return grads, best[0][1], best[0][0]


@dataclass
class MetaResult:
    student: nn.Module
    generator: Generator
    pool: SamplePool
    loop: LoopResult


def train_meta_generator(
    teacher: Model,
    student: nn.Module,
    config: MetaConfig,
    *,
    pixel_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    checkpoint: Checkpointer | None = None,
    evaluate: Callable[[], float] | None = None,
    eval_every: int = 0,
) -> MetaResult:
    """Fast-DFKD: meta-train a generator and distil ``student`` (in place) on its sample pool.

    ``pixel_stats = (mean, std)`` of the data standardisation (for the ``sigmoid`` head and the
    black-pixel crop padding).
    """
    config.validate()
    cfg = config
    device = resolve_device(device)
    t_net = teacher.frozen().to(device)
    student = student.to(device)
    check_student(student, teacher, device)
    bn_stats = BNStatistics(t_net) if cfg.bn > 0 else None
    c, h, w = teacher.input_shape
    mean, std = pixel_stats if pixel_stats is not None else ((0.0,) * c, (1.0,) * c)
    pad_value = (-torch.tensor(mean) / torch.tensor(std)).view(1, -1, 1, 1).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = Generator(cfg.nz, c, (h, w), ngf=cfg.ngf, head=cfg.head, mean=mean, std=std).to(device).train()
    meta_opt = torch.optim.Adam(gen.parameters(), lr=cfg.lr_meta * cfg.k, betas=(0.5, 0.999))
    opt_s = _student_optimizer(student, cfg)
    pool = SamplePool(cfg.pool_size)
    rng = torch.Generator().manual_seed(seed + 1)
    names = [n for n, _ in gen.named_parameters()]
    no_buffers = {n: None for n, _ in gen.named_buffers() if "running" in n or "num_batches" in n}
    z_scale = (cfg.lr_z / cfg.lr_g) ** 0.5 if cfg.inner_optimizer == "sgd" else 1.0

    def objective(params: Params, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inner loss L(θ, z) and the (un-augmented) images; plain autograd, so it also runs under torch.func."""
        x = functional_call(gen, {**{n: params[n] for n in names}, **no_buffers}, (params[LATENT] * z_scale,))
        xa = random_crop_flip(x, batch["aug"], cfg.crop_pad, pad_value)
        if bn_stats is not None:
            with bn_stats.collect() as terms:
                t = t_net(xa)
            loss_bn = torch.stack(terms).sum()
        else:
            t, loss_bn = t_net(xa), x.new_zeros(())
        loss = cfg.bn * loss_bn + cfg.oh * F.cross_entropy(t, batch["y"])
        if batch["adv"] and cfg.adv > 0:
            loss = loss + cfg.adv * masked_adversarial_kl(student(xa), t)
        return loss, x

    def synthesize(round_: int) -> tuple[torch.Tensor, float]:
        z = sample_latents(cfg.batch_size, cfg.nz, rng, device)
        y = torch.randint(teacher.num_classes, (cfg.batch_size,), generator=rng).to(device)
        batches = [{"aug": _aug_params(cfg.batch_size, cfg.crop_pad, cfg.flip, rng, device), "y": y, "adv": round_ >= cfg.warmup}
                   for _ in range(cfg.k)]  # fmt: skip
        student.eval()
        grads, best_x, best_loss = meta_gradient(objective, {**dict(gen.named_parameters()), LATENT: z / z_scale}, batches, cfg)
        student.train()
        meta_opt.zero_grad(set_to_none=True)
        for n, p in gen.named_parameters():
            p.grad = grads[n]
        meta_opt.step()
        return best_x, best_loss

    def kd_round() -> float:
        loss = torch.zeros(())
        for _ in range(cfg.kd_steps):
            x = pool.sample(cfg.kd_batch_size, rng).to(device)
            x = random_crop_flip(x, _aug_params(len(x), cfg.crop_pad, cfg.flip, rng, device), cfg.crop_pad, pad_value)
            with torch.no_grad():
                t = t_net(x)
            loss = kd_kl(student(x), t, cfg.temperature) * cfg.temperature**2
            opt_s.zero_grad(set_to_none=True)
            loss.backward()
            opt_s.step()
        return loss.item()

    def step(round_: int) -> dict[str, float]:
        x, inner = synthesize(round_)
        pool.add(x)
        out = {"inner": inner, "pool": float(len(pool))}
        if round_ >= cfg.warmup:
            out["kd"] = kd_round()
        return out

    state = {"generator": gen, "student": student, "meta_opt": meta_opt, "opt_s": opt_s, "pool": pool}
    loop = run_loop(step, cfg.rounds, state=state, generators={"rng": rng}, checkpoint=checkpoint, progress=progress,
                    desc=f"meta-{cfg.meta} k={cfg.k}", evaluate=evaluate, eval_every=eval_every, log_every=1)  # fmt: skip
    return MetaResult(student=student.eval(), generator=gen, pool=pool, loop=loop)

