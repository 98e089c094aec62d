"""Expert trajectories for trajectory matching: training, one file per expert, streaming, scale-out.

An expert is a network trained from scratch on the real data; its parameters are stored after
every epoch (plus the initial ones), i.e. ``epochs + 1`` snapshots, in one file per expert
(``expert_00000.pt``, ...). Distillation streams them: :class:`ExpertBuffer` loads one file at a
time unless ``load_all`` is asked for.

Recipes (each ingredient is a separate field of :class:`ExpertRecipe` and a CLI flag):

* ``mtt`` - MTT's ``buffer.py`` (Cazenavette et al., CVPR 2022): SGD lr 0.01, no momentum, no weight
  decay, batch 256, DSA on every real batch (``--zca`` at dataset loading).

DSA of both recipes: MTT's/AST's ``utils.py`` DiffAugment, i.e. ``align_corners=True``; the strategy is
the dataset's default (:func:`condense.augment.resolve_strategy`: no flip on digits/MNIST, as the
DatasetCondensation README prescribes for digit datasets; the official ``buffer.py`` default
``color_crop_cutout_flip_scale_rotate`` elsewhere).
* ``ast`` - AST's smooth experts (Shen et al. 2023, Sec. 3.1; official ``buffer.py``/``utils.epoch_gp``):
  SGD momentum 0.9, weight decay 1e-3, lr 0.003 multiplied by 0.6 once after epoch ``E//2 + 1``;
  *clipping loss*: the cross-entropy of epoch ``e`` is multiplied by ``0.5 + 0.05 e`` for
  ``e < 10``; *gradient penalty*: on the clean (unaugmented) batch, ``G = d(sum of logits)/dx``
  and ``lambda * mean((||G||_2 over channels - 1)^2)`` with ``lambda = 2`` is added.

As in both official codes, the learning-rate decay re-creates the optimiser (the momentum buffer
restarts). Expert ``i`` is seeded with ``seed + i`` whatever the number of processes, so a run
split over ranks writes exactly the files a single process would.

Scale-out: under ``torchrun`` (or any ``torch.distributed`` launcher setting ``RANK`` and
``WORLD_SIZE``) each rank trains experts ``rank, rank + world, ...`` with the ``gloo`` (CPU) or
``nccl`` (GPU) backend; :func:`evaluate_distributed` splits the evaluation networks the same way.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .augment import AUTO, make_dsa
from .data import ImageDataset
from .flags import load_from_args
from .distributed import DistContext, distributed_context, split_evaluation
from .evaluate import Summary, accuracy, evaluate_images
from .nets import get_network
from .utils import UserError, atomic_save, check_positive, make_generator, package_versions, resolve_device, safe_load
from .safeio import check_finite_state, check_outputs, output_flag

__all__ = [
    "ExpertRecipe",
    "RECIPES",
    "FORMAT",
    "DistContext",
    "distributed_context",
    "train_expert",
    "train_experts",
    "ExpertBuffer",
    "evaluate_distributed",
    "add_experts_parser",
    "cmd_experts",
]

FORMAT = "condense.ExpertTrajectory/1"


@dataclass(frozen=True)
class ExpertRecipe:
    """How an expert is trained. ``lr_decay`` multiplies the lr once after epoch ``epochs // 2 + 1``."""

    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    lr_decay: float = 1.0
    clip_loss: bool = False
    grad_penalty: float = 0.0
    dsa: bool = True
    batch_size: int = 256

    def __post_init__(self) -> None:
        check_positive("expert lr", self.lr)
        check_positive("expert lr decay", self.lr_decay)
        check_positive("expert weight decay", self.weight_decay, allow_zero=True)
        check_positive("gradient penalty", self.grad_penalty, allow_zero=True)
        if not 0.0 <= self.momentum < 1.0:
            raise UserError(f"expert momentum must lie in [0, 1), got {self.momentum}")
        if self.batch_size < 1:
            raise UserError(f"expert batch size must be >= 1, got {self.batch_size}")

    def loss_scale(self, epoch: int) -> float:
        """AST's clipping loss: ``0.5 + 0.05 * epoch`` for the first ten epochs (0-based), else 1."""
        return 0.5 + 0.05 * epoch if self.clip_loss and epoch < 10 else 1.0


RECIPES = {
    "mtt": ExpertRecipe(),
    "ast": ExpertRecipe(lr=0.003, momentum=0.9, weight_decay=1e-3, lr_decay=0.6, clip_loss=True, grad_penalty=2.0),
}


# ----------------------------------------------------------------------------- training one expert
def _gradient_penalty(net: nn.Module, x: torch.Tensor, weight: float) -> torch.Tensor:
    """AST's penalty: ``weight * mean over pixels of (||d(sum logits)/dx||_2 over channels - 1)^2``."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    return weight * ((g.norm(p=2, dim=1) - 1.0) ** 2).mean()


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in net.named_parameters()}


def train_expert(
    dataset: ImageDataset,
    recipe: ExpertRecipe,
    epochs: int,
    *,
    model: str = "convnet",
    model_kwargs: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Train one expert; returns the file payload (trajectory of ``epochs + 1`` parameter snapshots)."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise UserError(f"expert epochs must be an integer >= 1, got {epochs!r}")
    device = resolve_device(device)
    model_kwargs = dict(model_kwargs or {})
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = get_network(model, dataset.channels, dataset.num_classes, dataset.image_size, **model_kwargs).to(device).train()
    gen = make_generator(seed)
    dsa = make_dsa(AUTO, dataset.name, align_corners=True) if recipe.dsa else None  # MTT/AST utils.py DiffAugment
    x_all, y_all = dataset.train_x, dataset.train_y

    def optimiser(lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(net.parameters(), lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)

    lr, opt = recipe.lr, optimiser(recipe.lr)
    snapshots, losses = [_snapshot(net)], []
    for epoch in tqdm(range(epochs), desc=f"expert seed {seed}", disable=not progress, leave=False):
        perm, total = torch.randperm(len(x_all), generator=gen), 0.0
        for i in range(0, len(perm), recipe.batch_size):
            idx = perm[i : i + recipe.batch_size]
            clean, y = x_all[idx].to(device), y_all[idx].to(device)
            x = dsa(clean, generator=gen) if dsa is not None else clean
            loss = F.cross_entropy(net(x), y) * recipe.loss_scale(epoch)
            if recipe.grad_penalty:
                loss = loss + _gradient_penalty(net, clean, recipe.grad_penalty)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(perm))
        if not torch.isfinite(torch.tensor(losses[-1])):
            raise UserError(f"expert training diverged at epoch {epoch} (loss {losses[-1]}); lower the expert lr")
        snapshots.append(_snapshot(net))
        if epoch == epochs // 2 + 1 and recipe.lr_decay != 1.0:  # official: `if e in [E // 2 + 1]`, new optimiser
            lr *= recipe.lr_decay
            opt = optimiser(lr)
    names = list(snapshots[0])
    return {
        "format": FORMAT,
        "seed": seed,
        "dataset": dataset.describe(),
        "model": model.lower(),
        "model_kwargs": model_kwargs,
        "recipe": asdict(recipe),
        "epochs": epochs,
        "param_names": names,
        "trajectory": {k: torch.stack([s[k] for s in snapshots]) for k in names},
        "train_loss": losses,
        "test_acc": accuracy(net, dataset.test_x, dataset.test_y, device=device),
        "versions": package_versions(),
        "wall_time": time.perf_counter() - started,
    }


def expert_path(directory: str | Path, index: int) -> Path:
    return Path(directory) / f"expert_{index:05d}.pt"


def train_experts(
    dataset: ImageDataset,
    out_dir: str | Path,
    *,
    num_experts: int,
    epochs: int,
    recipe: ExpertRecipe = RECIPES["mtt"],
    model: str = "convnet",
    model_kwargs: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    context: DistContext | None = None,
) -> list[Path]:
    """Train experts ``0..num_experts-1`` (this rank's share) and write one file each; returns this rank's files.

    Existing complete files are kept, so an interrupted run can simply be restarted.
    """
    if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
        raise UserError(f"num_experts must be an integer >= 1, got {num_experts!r}")
    ctx = context or DistContext()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in tqdm(ctx.share(num_experts), desc=f"experts (rank {ctx.rank})", disable=not progress, leave=False):
        path = expert_path(out, i)
        if not (path.exists() and _is_complete(path, epochs)):
            atomic_save(dict(train_expert(dataset, recipe, epochs, model=model, model_kwargs=model_kwargs, device=device,
                                          seed=seed + i), index=i), path)  # fmt: skip
        written.append(path)
    ctx.barrier()
    return written


def _is_complete(path: Path, epochs: int) -> bool:
    try:
        return safe_load(path, expected_format=FORMAT, what="expert trajectory").get("epochs") == epochs
    except UserError:
        return False


# ----------------------------------------------------------------------------- streaming buffer
class ExpertBuffer:
    """The expert files of a directory, validated against the dataset/architecture, loaded on demand.

    Experts are visited in a random order that is reshuffled after every pass (the official code's
    iteration over shuffled buffers), as a pure function of ``(seed, iteration)`` so that resumed
    runs see the same experts.
    """

    def __init__(
        self,
        directory: str | Path,
        dataset: ImageDataset,
        *,
        model: str = "convnet",
        model_kwargs: dict[str, Any] | None = None,
        load_all: bool = False,
    ) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise UserError(f"expert directory not found: {self.directory} (train experts with `python -m condense experts`)")
        self.files = sorted(self.directory.glob("expert_*.pt"))
        if not self.files:
            raise UserError(f"no expert files (expert_*.pt) in {self.directory}; train them with `python -m condense experts`")
        self.dataset, self.model, self.model_kwargs = dataset, model.lower(), dict(model_kwargs or {})
        net = get_network(model, dataset.channels, dataset.num_classes, dataset.image_size, **self.model_kwargs)
        self.shapes = {k: tuple(v.shape) for k, v in net.named_parameters()}
        self._cache: dict[int, dict[str, torch.Tensor]] = {}
        self._keep_all = load_all
        headers = [self._load(i) for i in (range(len(self.files)) if load_all else [0])]
        self.epochs = min(h["epochs"] for h in headers)
        self.recipe: dict[str, Any] = dict(headers[0].get("recipe") or {})  # the training recipe the files record

    def __len__(self) -> int:
        return len(self.files)

    def require_epochs(self, needed: int) -> None:
        """Distillation reads ``traj[start + expert_epochs]`` with ``start < max_start_epoch``."""
        if needed > self.epochs:
            raise UserError(
                f"max_start_epoch + expert_epochs - 1 = {needed} exceeds the {self.epochs} epochs stored in {self.directory}; "
                "lower them or train longer experts"
            )

    def _load(self, i: int) -> dict[str, Any]:
        obj = safe_load(self.files[i], expected_format=FORMAT, what="expert trajectory")
        ds, want = obj.get("dataset", {}), self.dataset.describe()
        for key in ("name", "num_classes", "channels", "image_size", "zca"):
            if ds.get(key) != want[key]:
                raise UserError(f"{self.files[i]} was trained on {key}={ds.get(key)!r}, but the run uses {key}={want[key]!r}")
        shapes = {k: tuple(v.shape[1:]) for k, v in obj["trajectory"].items()}
        check_finite_state(obj["trajectory"], what=str(self.files[i]))
        if obj.get("model") != self.model or shapes != self.shapes:
            raise UserError(
                f"{self.files[i]} holds a {obj.get('model')} {obj.get('model_kwargs')} expert, "
                f"which does not match the run's {self.model} {self.model_kwargs}"
            )
        if self._keep_all:
            self._cache[i] = obj["trajectory"]
        return obj

    def trajectory(self, i: int) -> dict[str, torch.Tensor]:
        """``{name: (epochs + 1, *shape)}`` of expert ``i`` (from disk unless ``load_all``)."""
        if i in self._cache:
            return self._cache[i]
        traj = self._load(i)["trajectory"]
        if len(next(iter(traj.values()))) - 1 < self.epochs:
            raise UserError(f"{self.files[i]} stores fewer epochs than the first expert ({self.epochs})")
        return traj

    def index_at(self, iteration: int, seed: int) -> int:
        """Which expert iteration ``iteration`` uses: pass ``p = it // K`` visits ``randperm_p(K)`` in order."""
        k = len(self.files)
        perm = torch.randperm(k, generator=make_generator(seed * 1_000_003 + iteration // k))
        return int(perm[iteration % k])


# ----------------------------------------------------------------------------- distributed evaluation
def evaluate_distributed(x: torch.Tensor, y: torch.Tensor, dataset: ImageDataset, *, num_evals: int = 5,
                         context: DistContext | None = None, **kwargs) -> dict[str, Summary]:  # fmt: skip
    """:func:`condense.evaluate.evaluate_images` with the ``num_evals`` networks split over ranks
    (:func:`condense.distributed.split_evaluation`): network ``i`` is seeded ``seed + i`` on whichever rank
    trains it, so the gathered accuracies are a single-process run's, in network order."""
    ctx = context or DistContext()
    return split_evaluation(ctx, num_evals, lambda ids: evaluate_images(x, y, dataset, num_evals=num_evals, eval_ids=ids, **kwargs))


# ----------------------------------------------------------------------------- CLI
def add_experts_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``python -m condense experts ...`` (the caller adds the shared dataset/device flags)."""
    p = subparsers.add_parser(
        "experts", help="train expert trajectories for MTT/AST (one file per expert; torchrun-aware)",
        description="Train K networks and store their parameters after every epoch. Under torchrun each rank trains its share.",
    )  # fmt: skip
    p.add_argument("--num-experts", type=int, required=True, help="number of experts K")
    p.add_argument("--epochs", type=int, required=True, help="training epochs E per expert (E + 1 snapshots)")
    p.add_argument("--out", required=True, help="output directory (expert_00000.pt, ...)", **output_flag(directory=True))
    p.add_argument("--recipe", default="mtt", choices=sorted(RECIPES), help="training recipe (default: mtt)")
    p.add_argument("--model", default="convnet", help="architecture (default: convnet)")
    p.add_argument("--width", type=int, default=None, help="ConvNet width (default: the network's, 128)")
    for f in fields(ExpertRecipe):
        flag = "--" + f.name.replace("_", "-")
        kind = {"dsa": "augment real batches with DSA", "clip_loss": "AST clipping loss"}.get(f.name, f.name.replace("_", " "))
        if f.type in (bool, "bool"):
            p.add_argument(flag, dest=f"recipe_{f.name}", action=argparse.BooleanOptionalAction, default=None, help=f"{kind} (default: recipe's)")
        else:
            caster = int if f.type in (int, "int") else float
            p.add_argument(flag, dest=f"recipe_{f.name}", type=caster, default=None, metavar=f.name.upper(),
                           help=f"{kind} (default: recipe's)")
    return p


def cmd_experts(args: argparse.Namespace) -> int:
    """Handler of ``python -m condense experts``."""
    device = resolve_device(args.device)
    check_outputs({"--out": args.out}, directories=("--out",), roots={"--root": args.root})  # no lock: torchrun ranks share it
    overrides = {f.name: getattr(args, f"recipe_{f.name}") for f in fields(ExpertRecipe) if getattr(args, f"recipe_{f.name}") is not None}
    recipe = replace(RECIPES[args.recipe], **overrides)
    model_kwargs = {"width": args.width} if args.width is not None else {}
    dataset = load_from_args(args)
    ctx = distributed_context(device)
    if ctx.active and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", ctx.rank)) % torch.cuda.device_count())
    started = time.perf_counter()
    files = train_experts(dataset, args.out, num_experts=args.num_experts, epochs=args.epochs, recipe=recipe, model=args.model,
                          model_kwargs=model_kwargs, device=device, seed=args.seed, progress=not args.no_progress, context=ctx)  # fmt: skip
    accs = [safe_load(f, expected_format=FORMAT, what="expert trajectory")["test_acc"] for f in files]
    print(f"rank {ctx.rank}/{ctx.world_size}: {len(files)} experts in {args.out} ({args.recipe} recipe, {args.epochs} epochs), "
          f"final test acc {100 * sum(accs) / max(1, len(accs)):.2f}% mean, {time.perf_counter() - started:.1f}s", file=sys.stderr)  # fmt: skip
    return 0
