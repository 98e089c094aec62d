"""Trajectory matching experiment: random real images vs MTT vs AST, plus one ablation row per AST switch.

For every dataset and IPC: experts are trained once per recipe (``mtt``: plain SGD; ``ast``: smooth
experts) and cached in ``--work``; then MTT (MTT experts), AST (AST experts, all switches) and, on
the ablation dataset, AST with one ingredient removed are distilled; every set is evaluated by
training ``num_evals`` fresh ConvNets (DSA, learned lr) and reporting the **final-checkpoint** test
accuracy (mean ± std) and, labelled separately, the max over checkpoints -- under the ``dc`` protocol
(MTT's ``evaluate_synset``) and, in further columns, under AST's (``ast``: wd 1e-3, decay x0.5 with
momentum 0.8; its max-over-test, the number AST publishes, labelled as such), both with the scale's
epochs, or with ``--epochs published`` the protocols' own (1000 each: ``dc`` with DSA, AST's argparse
default). Every row trains with MTT's DSA (``align_corners=True``, the dataset's default strategy).
Each distilled set is saved in ``--work`` (``sets_<dataset>_ipc<N>_<row>.pt``).

    python -m experiments.trajectory --root DIR                        # --scale cpu (see SCALES); DIR: Fashion-MNIST's files
    python -m experiments.trajectory --datasets digits --out experiments/results/trajectory_digits.md
    python -m experiments.trajectory --scale paper --root DIR           # published settings, GPU (DIR: Fashion-MNIST's files)
    torchrun --standalone --nproc-per-node 8 -m experiments.trajectory --scale paper --root DIR --device cuda

Under ``torchrun`` each rank trains its share of the experts into ``--work``, every distillation splits
its student batches over the ranks, the evaluation networks are split over the ranks (network ``i``
seeded ``seed + i``: the accuracies of one process for the same set), and rank 0 alone writes the sets,
rows, tables and figures. The random-real row equals one process's bit for bit; the MTT and AST sets
differ in float32 summation order, which the iterations amplify (digits CPU scale: accuracies within
0.8 points of one process's). Every rank reads the experts and checkpoints in ``--work``: on several machines it must be on
storage every machine mounts (checked at the start).

Nothing here looks at the test split except the final evaluation.
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from condense.augment import AUTO, DSA, resolve_strategy
from condense.checkpoint import DEFAULT_INTERVAL, Checkpointer, kept_result, resumes_on_rerun
from condense.data import ClassSampler, ImageDataset, load_dataset
from condense.distributed import (DistContext, broadcast_object, check_agreement, check_shared_directory, current_context, distributed_context,
                                  kept_on_main, launch_context, rank_failure_guard, split_evaluation)  # fmt: skip
from condense.evaluate import PROTOCOLS, Summary, evaluate_images, evaluate_synset
from condense.experts import RECIPES, train_experts
from condense.methods.base import init_synthetic
from condense.methods.mtt import ASTConfig, MTTConfig, distill_mtt
from condense.safeio import CLIParser, check_outputs, cli_main, input_flag, lock_outputs, output_flag
from condense.utils import UserError, atomic_write_text, make_generator, markdown_table, resolve_device
from experiments import figures

__all__ = ["SCALES", "ABLATIONS", "run", "main"]


@dataclass(frozen=True)
class Setting:
    """Scale of one dataset: experts, distillation and evaluation budgets."""

    ipcs: tuple[int, ...]
    width: int
    num_experts: int
    expert_epochs_train: int
    distill: dict[str, Any]
    num_evals: int
    eval_epochs: int
    ablate: bool = False
    alpha0_from_experts: bool = False
    train_subset: int = 0  # > 0: a class-balanced subset of the training split (experts and initialisation)
    expert_batch: int = 256  # the recipes' (official) batch size


_CPU_DISTILL = dict(iterations=100, syn_steps=10, expert_epochs=2, max_start_epoch=6, lr_img=100.0, lr_lr=1e-5, lr_teacher=0.01)
SCALES: dict[str, dict[str, Setting]] = {
    "cpu": {
        # digits has 1258 training images: experts use batch 32 (40 SGD steps per epoch instead of 5 at 256), alpha_0 = the
        # experts' lr (0.01 MTT, 0.003 AST) and AST's kernel perturbation is scaled by width / 128 (the same relative size as
        # on the published ConvNet-128)
        "digits": Setting((10,), 32, 5, 10, dict(_CPU_DISTILL, perturb_alpha=0.25), num_evals=3, eval_epochs=300, ablate=True,
                          alpha0_from_experts=True, expert_batch=32),  # fmt: skip
        # 6000 training images (600 per class): one expert epoch is 24 SGD steps; the test split stays complete
        "fashion_mnist": Setting((1, 10), 32, 2, 4, dict(_CPU_DISTILL, iterations=60, max_start_epoch=2, perturb_alpha=0.25),
                                 num_evals=3, eval_epochs=300, train_subset=6000),  # fmt: skip
    },
    "paper": {  # MTT's ConvNet-128, 100 experts x 50 epochs, 5000 iterations, CIFAR-10-like trajectory settings
        "digits": Setting((10,), 128, 100, 50, dict(iterations=5000, syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=1000.0),
                          num_evals=5, eval_epochs=1000, ablate=True),  # fmt: skip
        "fashion_mnist": Setting((1, 10), 128, 100, 50, dict(iterations=5000, syn_steps=30, expert_epochs=2, max_start_epoch=20,
                                                              lr_img=1000.0), num_evals=5, eval_epochs=1000),  # fmt: skip
    },
}
# AST with one ingredient removed (each row changes exactly one thing).
ABLATIONS: dict[str, dict[str, Any]] = {
    "AST - (a) student momentum": dict(inner_momentum=0.0),
    "AST - (b) balanced inner loss": dict(balance_loss=False),
    "AST - (c) intermediate matching": dict(intermediate="none"),
    "AST - (d) weight perturbation": dict(weight_perturb=False),
    "AST - (e) representative init": dict(init="real"),
    "AST - smooth experts (MTT experts)": dict(expert_recipe="mtt"),
}


def _experts(dataset: ImageDataset, setting: Setting, recipe: str, work: Path, device: torch.device, seed: int, ctx: DistContext) -> Path:
    directory = work / f"experts_{dataset.name}_n{len(dataset.train_y)}_{recipe}_w{setting.width}_b{setting.expert_batch}"
    train_experts(dataset, directory, num_experts=setting.num_experts, epochs=setting.expert_epochs_train,
                  recipe=replace(RECIPES[recipe], batch_size=setting.expert_batch),
                  model_kwargs={"width": setting.width}, device=device, seed=seed, progress=False, context=ctx)  # fmt: skip
    return directory


def _row(name: str, n_images: int, res: Summary, ast: Summary, seconds: float, lr: float | None) -> dict[str, Any]:
    """One JSON row (accuracies in %): ``mean``/``std``/``max_mean`` under the dc protocol, ``ast_*`` under AST's."""
    return {"name": name, "images": n_images, "mean": 100 * res.mean, "std": 100 * res.std, "max_mean": 100 * res.max_mean,
            "ast_mean": 100 * ast.mean, "ast_std": 100 * ast.std, "ast_max_mean": 100 * ast.max_mean, "lr": lr, "seconds": seconds}  # fmt: skip


def _cells(r: dict[str, Any]) -> list[str]:
    return [r["name"], str(r["images"]), f"{r['mean']:.2f} ± {r['std']:.2f}", f"{r['max_mean']:.2f}",
            f"{r['ast_mean']:.2f} ± {r['ast_std']:.2f}", f"{r['ast_max_mean']:.2f}",
            "-" if r["lr"] is None else f"{r['lr']:.4g}", f"{r['seconds']:.0f}"]  # fmt: skip


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")


def run(scale: str, datasets: Sequence[str], *, root: str | None, work: Path, device: torch.device, seed: int = 0,
        part: str = "all", published: bool = False, log=print) -> list[dict[str, Any]]:  # fmt: skip
    """Returns ``[{"dataset", "ipc", "rows": [row dicts, accuracies in %]}]``; ``published``: the protocols'
    own evaluation epochs instead of the scale's. Resumable: every distillation checkpoints to ``SET.ckpt``
    (time interval, Ctrl-C) and finished rows are kept in ``work`` (``*.row.json``), so a rerun continues.
    Under a process group each rank trains its share of the experts, rank 0 alone reads and writes the rows
    and sets and tells the other ranks which rows are kept, and every rank must see ``work``."""
    ctx = current_context()
    check_shared_directory(ctx, work, "--work")
    sections = []
    for name in datasets:
        setting = SCALES[scale][name]
        dataset = load_dataset(name, None if name == "digits" else root)
        if setting.train_subset:
            sampler = ClassSampler(dataset.train_y, dataset.num_classes)
            gen = make_generator(seed)
            keep = torch.cat([sampler.sample(c, setting.train_subset // dataset.num_classes, gen) for c in range(dataset.num_classes)])
            dataset.train_x, dataset.train_y = dataset.train_x[keep], dataset.train_y[keep]
        t0 = time.perf_counter()
        expert_dirs = {r: _experts(dataset, setting, r, work, device, seed, ctx) for r in RECIPES}
        log(f"{name}: experts ready ({time.perf_counter() - t0:.0f}s)")
        mtt_dsa = DSA(resolve_strategy(AUTO, dataset.name), align_corners=True)  # what the MTT/AST sets record
        epochs = None if published else setting.eval_epochs
        ev = dict(models=("convnet",), num_evals=setting.num_evals, epochs=epochs, dsa=mtt_dsa, device=device, seed=seed,
                  progress=False, model_kwargs={"convnet": {"width": setting.width}})  # fmt: skip

        def split(evaluate: Callable[..., dict[str, Summary]], *data: Any, **kw: Any) -> Summary:  # each rank: its share of the networks
            return split_evaluation(ctx, setting.num_evals, lambda ids: evaluate(*data, dataset, eval_ids=ids, **kw, **ev))["convnet"]

        dc_every = max(1, (epochs or PROTOCOLS["dc"].epochs_dsa) // 10)  # the labelled dc max column: a test every E // 10 passes
        for ipc in setting.ipcs:
            rows = []
            variants: dict[str, tuple[type, dict[str, Any]]] = {}
            key = repr((dataclasses.asdict(setting), dataset.fingerprint, seed, published, str(device)))  # what a kept row depends on

            def random_real() -> dict[str, Any]:
                t0 = time.perf_counter()
                x, y = init_synthetic(dataset, ipc, "real", make_generator(seed))
                res = split(evaluate_images, x, y, lr=0.01, protocol="dc", test_every=dc_every)
                ast = split(evaluate_images, x, y, lr=0.01, protocol="ast")
                return _row("random real", len(y), res, ast, time.perf_counter() - t0, None)

            if part != "ablations":
                rows.append(kept_on_main(ctx, partial(kept_result, work / f"row_{name}_ipc{ipc}_random_real.json", key), random_real)[0])
                variants.update({"MTT": (MTTConfig, {}), "AST": (ASTConfig, {})})
            if setting.ablate and part != "main":
                variants.update({k: (ASTConfig, v) for k, v in ABLATIONS.items()})
            for label, (cls, change) in variants.items():
                cfg = cls(**dict(setting.distill, width=setting.width, **change))
                cfg.experts = str(expert_dirs[cfg.expert_recipe])
                if setting.alpha0_from_experts:
                    cfg.lr_teacher = RECIPES[cfg.expert_recipe].lr
                out = work / f"sets_{name}_ipc{ipc}_{_slug(label)}.pt"

                def distilled(label: str = label, cfg: MTTConfig = cfg, out: Path = out) -> dict[str, Any]:
                    t0 = time.perf_counter()
                    ck = Checkpointer(f"{out}.ckpt", None, {"method": label, "dataset": dataset.name, "ipc": ipc, "seed": seed,
                                      "config": repr(cfg), "data": dataset.fingerprint}, interval=DEFAULT_INTERVAL)  # fmt: skip
                    ck.check()
                    synset = distill_mtt(dataset, ipc, cfg, device=device, seed=seed, progress=False, checkpoint=ck)
                    if ctx.is_main:
                        synset.save(out)
                    synset = broadcast_object(ctx, synset)  # every rank evaluates the set rank 0 saved
                    res = split(evaluate_synset, synset, protocol="dc", test_every=dc_every)
                    ast = split(evaluate_synset, synset, protocol="ast")
                    if ctx.is_main:  # kept until the row is done: a rerun after Ctrl-C here need not distil again
                        ck.path.unlink(missing_ok=True)
                    return _row(label, len(synset), res, ast, time.perf_counter() - t0, synset.lr)

                # a kept row without its set is made again (the set is an output too)
                row, kept = kept_on_main(ctx, partial(kept_result, f"{out}.row.json", repr((key, repr(cfg))), needs=out), distilled)
                rows.append(row)
                log(f"{name} ipc {ipc} {label}: " + " ".join(_cells(rows[-1])[2:]) + (" (kept from an earlier run)" if kept else ""))
            sections.append({"dataset": name, "ipc": ipc, "rows": rows})
    return sections


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    parser = CLIParser(prog="python -m experiments.trajectory", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu", choices=sorted(SCALES))
    parser.add_argument("--datasets", nargs="+", default=["digits", "fashion_mnist"], choices=["digits", "fashion_mnist"])
    parser.add_argument("--root", default=None, help="directory with the Fashion-MNIST files (needed for --datasets fashion_mnist; "
                        "digits needs no files)", **input_flag(directory=True))
    parser.add_argument("--work", default="trajectory_work", help="expert cache directory (reused across runs; under torchrun on several "
                        "machines: on storage every machine mounts)", **output_flag(directory=True))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--part", default="all", choices=["all", "main", "ablations"], help="rows to run (split across processes)")
    parser.add_argument("--epochs", default="scale", choices=["scale", "published"],
                        help="evaluation epochs: the scale's (default) or the protocols' published ones (dc 1000 with DSA, ast 1000)")
    parser.add_argument("--out", default=None, help="write the markdown tables here", **output_flag())
    figures.add_flags(parser, "the results JSON", "training")
    args = parser.parse_args(argv)
    if "fashion_mnist" in args.datasets and args.root is None and not args.figure_only:
        raise UserError("--datasets fashion_mnist needs --root DIR, the directory with its files (nothing is downloaded); "
                        "--datasets digits runs without files")
    outputs = check_outputs({"--out": args.out}, roots={"--root": args.root})
    check_outputs({"--work": args.work}, directories=("--work",))
    if args.figure_only:  # rank 0 redraws (under torchrun), nothing else to do
        if not distributed_context().is_main:
            return 0
        lock_outputs(outputs.values())
        return figures.redraw("trajectory", args.json)
    started = time.perf_counter()
    resumes_on_rerun(f"--work {args.work} (finished rows and experts)")
    try:
        torch.set_num_threads(args.threads)
        ctx, device = launch_context(resolve_device(args.device))  # under torchrun: this rank's device, the joined group
        if ctx.is_main:  # the ranks share the outputs; rank 0 writes them
            lock_outputs(outputs.values())
        log = (lambda m: print(m, file=sys.stderr, flush=True)) if ctx.is_main else (lambda m: None)
        with rank_failure_guard(ctx):  # a rank that dies: one line on the others
            check_agreement(ctx, vars(args))
            sections = run(args.scale, args.datasets, root=args.root, work=Path(args.work), device=device, seed=args.seed,
                           part=args.part, published=args.epochs == "published", log=log)  # fmt: skip
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not ctx.is_main:
        return 0
    header = ["training set", "images", "dc: final acc % (mean ± std)", "dc: max-over-checkpoints %", "ast: final acc % (mean ± std)",
              "ast: AST max-over-test %", "learned lr", "distill+eval s"]  # fmt: skip
    text = "\n\n".join(f"### {s['dataset']}, IPC {s['ipc']}\n\n{markdown_table(header, [_cells(r) for r in s['rows']])}" for s in sections)
    cfg = {k: dataclasses.asdict(v) for k, v in SCALES[args.scale].items() if k in args.datasets}
    wall = time.perf_counter() - started
    ranks = f", {ctx.world_size} ranks" if ctx.active else ""
    text += f"\n\nscale {args.scale}: {cfg}\nevaluation epochs: {args.epochs}; seed {args.seed}, threads {args.threads}{ranks}, wall time {wall:.0f} s\n"
    print(text)
    if args.out:
        atomic_write_text(text, args.out)
    if args.json:
        payload = {"scale": args.scale, "epochs": args.epochs, "seed": args.seed, "part": args.part, "wall_seconds": wall, "settings": cfg, "sections": sections}
        atomic_write_text(json.dumps(payload, indent=1, default=str), args.json)
    return figures.finish("trajectory", args.json, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
