r"""MTT - Dataset Distillation by Matching Training Trajectories (Cazenavette et al., CVPR 2022) and
AST - alignment with Smooth and high-quality expert Trajectories (Shen et al. 2023).

Algorithm 1 of MTT, as in the official ``distill.py``::

    for it in 1..K:
        tau* ~ experts;  s ~ U{0, ..., T+ - 1};  theta_0 = tau*_s;  theta* = tau*_{s+M}
        for n in 0..N-1:                                  # N = syn_steps, batches of batch_syn
            b_n = next chunk of a random permutation of the synthetic set, DSA-augmented
            theta_{n+1} = theta_n - alpha * grad l(theta_n; b_n)
        L = ||theta_N - theta*||^2 / ||theta_0 - theta*||^2           (Eq. 2; MTT's 1/|theta| cancels)
        images <- SGD(lr_img, momentum 0.5);  alpha <- SGD(lr_lr, momentum 0.5)

The inner loop is :func:`condense.unroll.unroll_backward` (modes full / truncated /
constant_memory). Parameters stay a dict; the official code flattens them into one vector, which
gives the same distances.

AST switches (each independent; :class:`MTTConfig` defaults = MTT, :class:`ASTConfig` = AST):

(a) ``inner_momentum`` 0.9 - heavy-ball student (official: ``b = mom * b + g``, ``theta -= alpha * b``).
(b) ``balance_loss`` - the inner CE times ``w(s) = log_5(s - T+//2 + 8)`` if ``s >= T+//2`` else
    ``1 / log_5(T+//2 - s + 8)``.
(c) ``intermediate`` - also match ``theta_{(N//M) i}`` to ``tau*_{s+i}`` for ``i = 1..M-1`` (each normalised
    by its own ``||theta_0 - tau*_{s+i}||^2``), weight 1 (``uniform``, official ``--agg_middle_loss``) or
    ``i / M`` (``linear``, official ``--adaptive_middle_loss``).
(d) ``weight_perturb`` - conv kernels of theta_0: ``W + alpha_p * D * W``, ``D ~ N(0, I) / ||D||_F``; the perturbed
    theta_0 is also used in the denominators (as in the official code).
(e) ``init="representative"`` - see :mod:`condense.methods.ast_init`.

Defaults are the official argparse defaults (MTT ``distill.py``; e.g. ``max_start_epoch`` 25, the
README command uses 20); published per-dataset settings are :data:`PRESETS`. DSA: MTT's/AST's
``utils.py`` DiffAugment (``dsa_align_corners=True``; strategy ``auto``: no flip on digits/MNIST).
``hessian=False`` selects TESLA's cheaper approximation of the ``constant_memory`` gradient
(:mod:`condense.unroll`). Sets record the evaluation protocol of their paper: MTT ``dc`` (MTT's
``utils.py evaluate_synset`` is the DC loop), AST ``ast`` (:mod:`condense.evaluate`).

Explicit values win over presets: a config remembers which fields were passed to its constructor
or assigned afterwards (:func:`given_fields`; the CLI passes only the flags on the command line), and
:func:`apply_preset` fills only the others. (``dataclasses.replace`` passes every field, so a replaced
config counts every field as given.)

Under ``torchrun`` each student step's mini-batch is split over ranks (a contiguous block of its
indices and their DSA parameters per rank); a rank's inner loss is ``scale * sum(CE) / |b_n|`` over
its share and the shares' gradients are summed by a differentiable all-reduce
(:func:`condense.unroll.unroll_backward` with ``sharded=True``), so every rank follows the same
student and keeps the graph of its own share only; the image gradients are summed over ranks
afterwards. Expert, start epoch, perturbation and DSA draws come from the shared seed, alike on
every rank. Equal to one process up to summation order (mean vs. sum over shares).
"""
from __future__ import annotations

import copy
import functools
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..augment import AUTO, DSA, DSAParams, make_dsa
from ..checkpoint import Checkpointer
from ..data import ImageDataset
from ..distributed import DistContext, join_run, share_files
from ..experts import RECIPES, ExpertBuffer, expert_path, train_experts
from ..synset import SyntheticSet, dsa_record
from ..unroll import BACKENDS, MODES, InnerSGD, unroll_backward
from ..utils import UserError, make_generator
from .ast_init import representative_indices
from .base import build_network, init_synthetic, make_synset, register_method, run_loop, validate_config

__all__ = ["MTTConfig", "ASTConfig", "PRESETS", "apply_preset", "given_fields", "balance_weight", "perturb_weights", "distill_mtt"]


def _tracks_given(cls: type) -> type:
    """Wrap a config dataclass's ``__init__`` so the instance remembers the fields it was given."""
    init, names = cls.__init__, [f.name for f in fields(cls)]

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        object.__setattr__(self, "_given", set(names[: len(args)]) | set(kwargs))

    cls.__init__ = __init__
    return cls


class _GivenTracking:
    """Assignments after construction count as given too (e.g. ``cfg.experts = path``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        given = self.__dict__.get("_given")
        if given is not None and name in self.__dataclass_fields__:
            given.add(name)


def given_fields(config: Any) -> frozenset[str]:
    """The fields of ``config`` set explicitly (constructor arguments and later assignments)."""
    return frozenset(config.__dict__.get("_given", ()))


@_tracks_given
@dataclass
class MTTConfig(_GivenTracking):
    experts: str = field(default="", metadata={"help": "directory of expert trajectories (python -m condense experts)"})
    preset: str = field(default="", metadata={"help": "published settings, e.g. cifar10-ipc10 (fills the fields not given explicitly)"})
    iterations: int = field(default=5000, metadata={"help": "outer iterations (paper: 5000)"})
    syn_steps: int = field(default=20, metadata={"help": "student steps N per iteration"})
    expert_epochs: int = field(default=3, metadata={"help": "expert epochs M the student must cover"})
    max_start_epoch: int = field(default=25, metadata={"help": "start epochs are drawn from 0..T+-1 (official argparse: 25)"})
    lr_img: float = field(default=1000.0, metadata={"help": "SGD lr of the synthetic pixels"})
    lr_lr: float = field(default=1e-5, metadata={"help": "SGD lr of the learnable student lr"})
    lr_teacher: float = field(default=0.01, metadata={"help": "initial student lr alpha_0"})
    momentum_img: float = field(default=0.5, metadata={"help": "momentum of the pixel and lr optimisers (official 0.5)"})
    batch_syn: int = field(default=0, metadata={"help": "synthetic batch per student step (0: the whole set)"})
    init: str = field(default="real", metadata={"help": "real, noise or representative (AST e)"})
    rep_clusters: str = field(default="ipc", metadata={"help": "representative init: ipc (k = IPC) or official (10 centres)"})
    model: str = field(default="convnet", metadata={"help": "student/expert architecture"})
    width: int = field(default=128, metadata={"help": "ConvNet width (must match the experts)"})
    dsa_strategy: str = field(default=AUTO, metadata={"help": "DSA on the student batches ('none' disables; auto: no flip on digits/mnist)"})
    dsa_align_corners: bool = field(default=True, metadata={"help": "DSA scale/rotate grid align_corners (MTT/AST utils.py: True)"})
    unroll_mode: str = field(default="full", metadata={"help": "full, truncated or constant_memory"})
    truncate: int = field(default=0, metadata={"help": "truncated mode: back-propagate through the last K steps"})
    backend: str = field(default="func", metadata={"help": "unroll backend: func or higher"})
    hessian: bool = field(default=True, metadata={"help": "constant_memory: exact gradient; --no-hessian: TESLA's official approximation"})
    load_all: bool = field(default=False, metadata={"help": "keep every expert in memory instead of streaming"})
    inner_momentum: float = field(default=0.0, metadata={"help": "AST (a): heavy-ball momentum of the student"})
    balance_loss: bool = field(default=False, metadata={"help": "AST (b): weight the inner CE by w(start epoch)"})
    intermediate: str = field(default="none", metadata={"help": "AST (c): none, uniform or linear intermediate matching"})
    weight_perturb: bool = field(default=False, metadata={"help": "AST (d): perturb the starting conv kernels"})
    perturb_alpha: float = field(default=1.0, metadata={"help": "AST (d): perturbation strength (official 1)"})
    train_experts: int = field(default=0, metadata={"help": "if --experts is empty: train this many experts first (demo)"})
    train_expert_epochs: int = field(default=0, metadata={"help": "epochs of those experts (0: max_start_epoch + expert_epochs)"})
    expert_recipe: str = field(default="mtt", metadata={"help": "recipe of auto-trained experts: mtt or ast"})


@_tracks_given
@dataclass
class ASTConfig(MTTConfig):
    init: str = field(default="representative", metadata={"help": "real, noise or representative (AST e)"})
    inner_momentum: float = field(default=0.9, metadata={"help": "AST (a): heavy-ball momentum of the student"})
    balance_loss: bool = field(default=True, metadata={"help": "AST (b): weight the inner CE by w(start epoch)"})
    intermediate: str = field(default="uniform", metadata={"help": "AST (c): none, uniform or linear intermediate matching"})
    weight_perturb: bool = field(default=True, metadata={"help": "AST (d): perturb the starting conv kernels"})
    expert_recipe: str = field(default="ast", metadata={"help": "recipe of auto-trained experts: mtt or ast"})


# Published settings, one row per paper command. Keys: config fields, ``zca`` (checked against the
# loaded dataset: pass --zca) and ``source``. Sources:
#   DC-Bench  = justincui03/dc_benchmark methods/tm/readme.md, "All the sota parameters are provided by the
#               author" (MTT). It differs from MTT's appendix table on CIFAR-10 only: IPC 1 lr_img 100
#               (table 1000); IPC 10 lr_img 100 (table 1e5, "definitely a typo" that makes the learned lr
#               explode -- the author in GeorgeCazenavette/mtt-distillation issue #31) and lr_teacher 0.001
#               (table 0.01); IPC 50 lr_teacher 0.001 (table 0.01). The author-provided values are used.
#   MTT README = GeorgeCazenavette/mtt-distillation readme.md distill command (CIFAR-100 IPC 1).
#   AST README / distill.sh = shenjiyuan123/AST-Alignment-with-Smooth-Expert.
# Flags absent from a command keep the official argparse defaults (= MTTConfig / ASTConfig defaults);
# AST's ``--pix_init avg`` is ``init="representative"`` and its absence ``init="real"``.
# "digits-cpu": this repository's laptop scale, not a published setting.
PRESETS: dict[str, dict[str, Any]] = {
    "cifar10-ipc1": dict(syn_steps=50, expert_epochs=2, max_start_epoch=2, lr_img=100.0, lr_lr=1e-7, lr_teacher=0.01, zca=True,
                         source="DC-Bench (MTT table: lr_img 1000)"),
    "cifar10-ipc10": dict(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=100.0, lr_lr=1e-5, lr_teacher=0.001, zca=True,
                          source="DC-Bench; MTT issue #31 (MTT table: lr_img 1e5 typo, lr_teacher 0.01)"),
    "cifar10-ipc50": dict(syn_steps=30, expert_epochs=2, max_start_epoch=40, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.001, zca=False,
                          source="DC-Bench (MTT table: lr_teacher 0.01)"),
    "cifar100-ipc1": dict(syn_steps=20, expert_epochs=3, max_start_epoch=20, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01, zca=True,
                          source="MTT README command (= DC-Bench = MTT table)"),
    "cifar100-ipc10": dict(syn_steps=20, expert_epochs=2, max_start_epoch=20, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01, zca=False,
                           source="DC-Bench (= MTT table)"),
    "cifar100-ipc50": dict(syn_steps=80, expert_epochs=2, max_start_epoch=40, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01,
                           batch_syn=125, zca=True, source="DC-Bench (= MTT table)"),
    "ast-cifar10-ipc10": dict(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01,
                              init="real", balance_loss=True, intermediate="uniform", weight_perturb=True, zca=True,
                              source="AST distill.sh, commented CIFAR-10 IPC 10 command with --buffer_path='buffer' (no --pix_init; "
                                     "the other commented line, on 'buffer_cifa10_flat', uses lr_img 100, lr_lr 1e-6)"),
    "ast-cifar100-ipc1": dict(syn_steps=20, expert_epochs=3, max_start_epoch=20, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01,
                              init="representative", balance_loss=True, intermediate="uniform", weight_perturb=True, zca=True,
                              source="AST README distill command"),
    "ast-cifar100-ipc10": dict(syn_steps=20, expert_epochs=2, max_start_epoch=30, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01,
                               batch_syn=128, init="representative", balance_loss=False, intermediate="uniform", weight_perturb=True,
                               zca=False, source="AST distill.sh, active IPC 10 command (no --balance_loss, no --zca)"),
    "digits-cpu": dict(iterations=200, syn_steps=10, expert_epochs=2, max_start_epoch=6, lr_img=100.0, lr_lr=1e-5, lr_teacher=0.01,
                       width=32, train_experts=5, train_expert_epochs=10, zca=False, source="this repository's CPU scale"),
}  # fmt: skip


def presets_help() -> str:
    """Every preset with its values and source (the epilog of ``distill --method mtt|ast --help``)."""
    lines = ["presets (--preset NAME; explicit flags win; 'zca' means: pass --zca):"]
    for name, row in PRESETS.items():
        values = ", ".join(f"{k}={v}" for k, v in row.items() if k != "source")
        lines.append(f"  {name}: {values}\n      source: {row['source']}")
    return "\n".join(lines)


def apply_preset(config: MTTConfig, dataset: ImageDataset) -> MTTConfig:
    """A copy of ``config`` whose fields not given explicitly (:func:`given_fields`) take ``PRESETS[config.preset]``."""
    if not config.preset:
        return config
    if config.preset not in PRESETS:
        raise UserError(f"unknown preset {config.preset!r}; choose from {', '.join(PRESETS)}")
    preset = dict(PRESETS[config.preset])
    preset.pop("source")
    if preset.pop("zca") != (dataset.zca is not None):
        raise UserError(f"preset {config.preset} was published {'with' if dataset.zca is None else 'without'} ZCA; "
                        f"load the dataset {'with' if dataset.zca is None else 'without'} --zca")  # fmt: skip
    out, given = copy.copy(config), given_fields(config)
    object.__setattr__(out, "_given", set(given))
    for name, value in preset.items():
        if name not in given:
            object.__setattr__(out, name, value)  # a preset value is not an explicit one
    return out


def _validate(config: MTTConfig, n_syn: int) -> None:
    validate_config(config)
    for name in ("iterations", "syn_steps", "expert_epochs", "max_start_epoch"):
        if getattr(config, name) < 1:
            raise UserError(f"{name} must be >= 1, got {getattr(config, name)}")
    choices = {"init": ("real", "noise", "representative"), "intermediate": ("none", "uniform", "linear"),
               "unroll_mode": MODES, "backend": BACKENDS, "expert_recipe": tuple(RECIPES)}  # fmt: skip
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise UserError(f"{name} must be one of {', '.join(allowed)}, got {getattr(config, name)!r}")
    if config.batch_syn > n_syn:
        raise UserError(f"batch_syn={config.batch_syn} exceeds the {n_syn} synthetic images")
    if config.unroll_mode == "truncated" and not 1 <= config.truncate <= config.syn_steps:
        raise UserError(f"truncated unrolling needs 1 <= truncate <= syn_steps ({config.syn_steps}), got {config.truncate}")
    if not 0.0 <= config.inner_momentum < 1.0:
        raise UserError(f"inner_momentum must lie in [0, 1), got {config.inner_momentum}")
    if not config.hessian and (config.unroll_mode != "constant_memory" or config.inner_momentum):
        raise UserError("--no-hessian (TESLA's approximation) needs --unroll-mode constant_memory and inner_momentum 0")


def balance_weight(start: int, max_start_epoch: int) -> float:
    """AST (b): ``log_5(s - T//2 + 8)`` for ``s >= T//2``, else ``1 / log_5(T//2 - s + 8)``."""
    half = max_start_epoch // 2
    return math.log(start - half + 8, 5) if start >= half else 1.0 / math.log(half - start + 8, 5)


def perturb_weights(params: dict[str, torch.Tensor], alpha: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """AST (d): ``W + alpha * D * W`` for 4-D (conv) kernels, ``D ~ N(0, I)`` scaled to unit Frobenius norm."""
    out = {}
    for k, w in params.items():
        if w.dim() == 4:
            d = torch.randn(w.shape, generator=generator).to(w.device)
            w = w + alpha * (d / d.norm()) * w
        out[k] = w
    return out


def _matching_targets(config: MTTConfig) -> dict[int, tuple[int, float]]:
    """Student step -> (expert epoch offset, weight): the final match plus AST's intermediate ones (c)."""
    n, m = config.syn_steps, config.expert_epochs
    targets = {n: (m, 1.0)}
    if config.intermediate != "none":
        for i in range(1, m):
            step = (n // m) * i
            if 1 <= step < n:  # official: matched when `step + 1 in match_pool and step < syn_steps - 1`
                targets[step] = (i, 1.0 if config.intermediate == "uniform" else i / m)
    return targets


def _batch_schedule(n_syn: int, batch: int, steps: int, dsa: DSA, image_size: tuple[int, int], gen: torch.Generator):
    """Per student step: the indices (popped from the end of shuffled chunks, as officially) and DSA parameters."""
    chunks: list[torch.Tensor] = []
    plan = []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.split(torch.randperm(n_syn, generator=gen), batch))
        idx = chunks.pop()
        plan.append((idx, dsa.sample(len(idx), image_size, gen)))
    return plan


def _smallest_batch(n_syn: int, batch: int) -> int:
    """The fewest images a student step can get (the last chunk of a permutation may be short)."""
    return min(batch, n_syn % batch or batch)


def _rank_share(ctx: DistContext, b: tuple[torch.Tensor, DSAParams]) -> tuple[torch.Tensor, DSAParams]:
    """This rank's contiguous block of one step's indices and their per-image DSA parameters."""
    idx, params = b
    if not ctx.active:
        return idx, params
    block = ctx.block(len(idx))
    sl = slice(block.start, block.stop)
    return idx[sl], DSAParams(ops=params.ops, values={k: v[sl] for k, v in params.values.items()})


def _initial_images(dataset: ImageDataset, ipc: int, config: MTTConfig, buffer: ExpertBuffer, net: torch.nn.Module,
                    gen: torch.Generator, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    if config.init != "representative":
        return init_synthetic(dataset, ipc, config.init, gen)
    expert = buffer.index_at(int(torch.randint(len(buffer), (1,), generator=gen)), seed)
    final = {k: v[-1] for k, v in buffer.trajectory(expert).items()}
    idx = representative_indices(dataset, ipc, net, final, clusters=config.rep_clusters, seed=seed, device=device)
    return dataset.train_x[idx].clone(), torch.arange(dataset.num_classes).repeat_interleave(ipc)


def distill_mtt(
    dataset: ImageDataset, ipc: int, config: MTTConfig, *, device: torch.device, seed: int, progress: bool = True,
    checkpoint: Checkpointer | None = None,
) -> SyntheticSet:  # fmt: skip
    """Condense ``dataset`` to ``ipc`` images per class by matching expert trajectories (MTT/AST)."""
    started = time.perf_counter()
    config = apply_preset(config, dataset)
    n_syn = dataset.num_classes * ipc
    _validate(config, n_syn)
    ctx = join_run(device, "ast" if isinstance(config, ASTConfig) else "mtt", dataset, ipc, seed, config,
                   _smallest_batch(n_syn, config.batch_syn or n_syn), "synthetic images per student step")
    torch.manual_seed(seed)
    gen = make_generator(seed)
    model_kwargs = {"width": config.width} if config.model.lower().startswith("convnet") else {}
    with tempfile.TemporaryDirectory(prefix="condense-experts-") as tmp:
        buffer = _expert_buffer(dataset, config, model_kwargs, tmp, device, seed, progress, ctx)
        buffer.require_epochs(config.max_start_epoch - 1 + config.expert_epochs)
        if isinstance(config, ASTConfig):
            _warn_if_not_smooth(buffer)
        net = build_network(config.model, dataset, config.width).to(device).train()
        images, labels = _initial_images(dataset, ipc, config, buffer, net, gen, seed, device)
        images, labels = images.to(device).requires_grad_(True), labels.to(device)
        syn_lr = torch.tensor(config.lr_teacher, device=device).requires_grad_(True)
        opt_img = torch.optim.SGD([images], lr=config.lr_img, momentum=config.momentum_img)
        opt_lr = torch.optim.SGD([syn_lr], lr=config.lr_lr, momentum=config.momentum_img)
        dsa, targets = make_dsa(config.dsa_strategy, dataset.name, align_corners=config.dsa_align_corners), _matching_targets(config)
        batch = config.batch_syn or n_syn

        def step(it: int) -> float:
            traj = buffer.trajectory(buffer.index_at(it, seed))
            start = int(torch.randint(config.max_start_epoch, (1,), generator=gen))
            theta0 = {k: v[start].to(device) for k, v in traj.items()}
            if config.weight_perturb:
                theta0 = perturb_weights(theta0, config.perturb_alpha, gen)
            goals = {n: ({k: v[start + off].to(device) for k, v in traj.items()}, w) for n, (off, w) in targets.items()}
            denominators = {n: sum(((theta0[k] - g[k]) ** 2).sum() for k in g) for n, (g, _) in goals.items()}
            plan = _batch_schedule(n_syn, batch, config.syn_steps, dsa, dataset.image_size, gen)
            sizes, plan = [len(i) for i, _ in plan], [_rank_share(ctx, b) for b in plan]
            scale = balance_weight(start, config.max_start_epoch) if config.balance_loss else 1.0

            def inner_loss(params: dict[str, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor, int]) -> torch.Tensor:
                logits = functional_call(net, params, (b[0],))
                if not ctx.active:
                    return scale * F.cross_entropy(logits, b[1])
                return scale * F.cross_entropy(logits, b[1], reduction="sum") / b[2]  # this rank's term of the batch mean

            def outer_loss(rec: dict[int, dict[str, torch.Tensor]]) -> torch.Tensor:
                return sum(w * sum(((rec[n][k] - g[k]) ** 2).sum() for k in g) / denominators[n] for n, (g, w) in goals.items())

            res = unroll_backward(
                outer_loss, inner_loss, theta0, syn_lr, config.syn_steps,
                lambda i: (dsa.apply(images[plan[i][0]], plan[i][1]), labels[plan[i][0]], sizes[i]),
                optimizer=InnerSGD(config.inner_momentum), mode=config.unroll_mode, truncate=config.truncate or None,
                record=[n for n in goals if n != config.syn_steps], backend=config.backend, inputs=[images, syn_lr],
                hessian=config.hessian, sharded=ctx.active,
            )  # fmt: skip
            ctx.reduce_grads([images])  # each rank holds its shares' part; syn_lr's gradient is whole on every rank
            return res.outer_loss

        history = run_loop(
            step, config.iterations, tensors={"images": images, "syn_lr": syn_lr}, optimisers={"images": opt_img, "lr": opt_lr},
            generators={"gen": gen}, checkpoint=checkpoint, progress=progress, desc=type(config).__name__[:-6], positive=("syn_lr",),
        )  # fmt: skip
    method = "ast" if isinstance(config, ASTConfig) else "mtt"
    extra = {**dsa_record(dsa, "ast" if method == "ast" else "dc"), "model": config.model, "model_kwargs": model_kwargs}
    if len(history) < config.iterations:  # the learned lr left (0, inf): run_loop stopped and kept the last valid set
        extra["stopped_early"] = f"after {len(history)} of {config.iterations} iterations: the learned lr left (0, inf)"
    return make_synset(method, images, labels, dataset, ipc=ipc, seed=seed, config=config, started=started,
                       lr=float(syn_lr.detach()), extra=extra, history=history)  # fmt: skip


def _warn_if_not_smooth(buffer: ExpertBuffer) -> None:
    """AST (Sec. 3.1) matches *smooth* experts: trained with its gradient penalty and clipped loss. Experts
    whose files record neither (the MTT recipe) or no recipe at all make the run plain MTT with AST's
    student tricks: say so on stderr."""
    recipe = buffer.recipe
    if recipe.get("grad_penalty") and recipe.get("clip_loss"):
        return
    how = ("record no training recipe" if not recipe else "were trained with the MTT recipe (non-smooth: no gradient penalty "
           "and no clipped loss)" if recipe == asdict(RECIPES["mtt"]) else
           f"were trained without AST's smoothing (grad_penalty {recipe.get('grad_penalty')}, clip_loss {recipe.get('clip_loss')})")  # fmt: skip
    print(f"warning: --method ast: the experts in {buffer.directory} {how}; AST assumes smooth experts "
          "(python -m condense experts --recipe ast)", file=sys.stderr, flush=True)  # fmt: skip


def _expert_buffer(dataset: ImageDataset, config: MTTConfig, model_kwargs: dict[str, Any], tmp: str, device: torch.device,
                   seed: int, progress: bool, ctx: DistContext) -> ExpertBuffer:  # fmt: skip
    """The configured expert directory, or (``train_experts > 0``) freshly trained experts in ``tmp``.

    Under several ranks each rank trains its share of the experts (``i = rank, rank + world, ...``; expert
    ``i`` is seeded ``seed + 1_000_000 + i`` on any rank) and the files are then broadcast to every rank's
    own ``tmp`` (:func:`~condense.distributed.share_files`): the same set as one process trains.
    """
    directory = config.experts
    if not directory:
        if config.train_experts < 1:
            raise UserError("no expert trajectories: pass --experts DIR (train them with `python -m condense experts`) "
                            "or --train-experts K")  # fmt: skip
        directory = tmp
        train_experts(dataset, tmp, num_experts=config.train_experts,
                      epochs=config.train_expert_epochs or config.max_start_epoch + config.expert_epochs,
                      recipe=RECIPES[config.expert_recipe], model=config.model, model_kwargs=model_kwargs, device=device,
                      seed=seed + 1_000_000, progress=progress, context=ctx)  # fmt: skip
        share_files(ctx, [(expert_path(tmp, i), i % ctx.world_size) for i in range(config.train_experts)])  # owners: ctx.share
    return ExpertBuffer(directory, dataset, model=config.model, model_kwargs=model_kwargs, load_all=config.load_all)


MTTConfig.help_epilog = staticmethod(presets_help)  # the CLI's --help shows the presets and their sources
register_method("mtt", MTTConfig, distill_mtt, "matching training trajectories (Cazenavette et al. 2022)")
register_method("ast", ASTConfig, distill_mtt, "MTT with smooth experts and AST's student switches (Shen et al. 2023)")