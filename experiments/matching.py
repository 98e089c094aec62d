"""Matching methods side by side: random / herding / DC / DSA / DM / DataDAM.

For every dataset and IPC each method condenses the training set once (seed ``--seed``), then every
row is evaluated with the *same* protocol (:func:`condense.evaluate.evaluate_synset`): the same
architectures, epochs, DSA training, evaluation seeds ``seed .. seed + num_evals - 1``. Reported:
final-checkpoint test accuracy, mean ± std over the evaluation networks (never max over checkpoints).
Cross-architecture columns (MLP, LeNet, ResNet-18) train on the sets distilled with ConvNet.
The shared protocol is ``dc`` (DC/DSA/DM ``evaluate_synset``) with DSA as each set records it (sets
distilled without DSA: the dataset's default strategy); DataDAM rows add a ConvNet column under
DataDAM's own protocol (``datadam``: BatchNorm ConvNet, batch 64) and DC rows one without DSA (DC's, with
DC's own augmentation where its code applies it: :mod:`condense.dcaug`; none on digits and Fashion-MNIST).
Epochs: the scale's, or with ``--epochs published`` each protocol's published ones (``dc`` 1000 with
DSA / 300 without, ``datadam`` 1800). ``--evaluate-only`` re-evaluates the sets saved in ``--out-dir``.

``--scale cpu`` (default): minutes per method on a laptop CPU — narrower ConvNets and far fewer
iterations than published (table :data:`SCALES`; every difference is listed in the output).
``--scale paper``: the published settings (ConvNet-128; DM 20000 it. batch 256; DataDAM 8000 it.
batch 64; DC/DSA 1000 it. batch 256; 1000 DSA training epochs; 10 evaluation networks).

    python -m experiments.matching --datasets digits --ipcs 1,10
    python -m experiments.matching --datasets fashion_mnist --root DIR --ipcs 1,10
    python -m experiments.matching --evaluate-only --epochs published --out-dir runs/matching   # the saved sets, published epochs
    torchrun --standalone --nproc-per-node 2 -m experiments.matching --datasets digits --ipcs 10   # one process per device

Under ``torchrun`` every distillation is sharded by its method and the evaluation networks are split
over the ranks (network ``i`` seeded ``seed + i``: one process's accuracies for the same set). The sets
are one process's bit for bit for random, herding, DC, DSA and DM (no BatchNorm), and the same up to
float summation order for DataDAM. Rank 0 alone reads and writes ``--out-dir`` (sets, rows, checkpoints,
results, figures); every rank reads the checkpoints, so on several machines ``--out-dir`` must be on
storage every machine mounts (checked at the start).
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import torch

from condense.checkpoint import DEFAULT_INTERVAL, Checkpointer, kept_result, resumes_on_rerun
from condense.data import ImageDataset, load_dataset
from condense.distributed import (broadcast_object, check_agreement, check_shared_directory, current_context, kept_on_main, launch_context,
                                  on_main, rank_failure_guard, split_evaluation)  # fmt: skip
from condense.evaluate import evaluate_synset
from condense.methods import get_method
from condense.synset import SyntheticSet
from condense.safeio import CLIParser, check_outputs, cli_main, input_flag, output_flag, parse_list
from condense.utils import UserError, atomic_write_text, markdown_table, resolve_device
from experiments import figures

__all__ = ["Scale", "SCALES", "METHOD_ORDER", "VARIANTS", "ARCHS", "OWN_COLUMNS", "method_config", "evaluate_row", "run", "plot_grid", "main"]

METHOD_ORDER = ("random", "herding", "dc", "dsa", "dm", "datadam", "datadam_official")
# Rows that run a registered method with different switches: DataDAM as its official code runs it.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {"datadam_official": ("datadam", {"power": 1.0, "norm": "batchnorm"})}
# ResNet-18 with BatchNorm: the instance-norm ResNet-18 (GroupNorm(C, C)) reaches a 1x1 map on 8x8
# digits, where instance normalisation zeroes every channel (constant output, chance accuracy).
ARCHS = {"convnet": "ConvNet", "mlp": "MLP", "lenet": "LeNet", "resnet18_bn": "ResNet-18 (BN)"}
# The ConvNet under a method's own paper protocol where it differs from the shared one (dc with DSA):
# method -> (JSON key, table header, evaluate_synset arguments). DataDAM: BatchNorm ConvNet, batch 64.
# DC: no DSA (the set records none) and DC's own augmentation where its get_daparam applies it
# (condense.dcaug), as DC evaluates. Epochs: the scale's, or the protocol's published ones.
OWN_COLUMNS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "datadam": ("convnet@datadam", "ConvNet, datadam protocol", {"protocol": "datadam", "dsa": True}),
    "dc": ("convnet@nodsa", "ConvNet, dc protocol without DSA", {"protocol": "dc", "dsa": False, "dc_aug": True}),
}


@dataclass(frozen=True)
class Scale:
    """Everything that differs between the CPU preset and the published settings."""

    width: int
    eval_epochs: int
    num_evals: int
    cross_evals: int
    cross_epochs: int  # training epochs of the cross-architecture networks
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> config fields
    gm_iterations: dict[int, int] = field(default_factory=dict)  # DC/DSA iterations by IPC (missing: config default)
    gm_loops: dict[int, tuple[int, int]] = field(default_factory=dict)  # DC/DSA (outer, inner) overrides by IPC


SCALES: dict[str, Scale] = {
    "cpu": Scale(
        width=32, eval_epochs=300, num_evals=3, cross_evals=2, cross_epochs=150,
        overrides={
            "dm": {"iterations": 300, "batch_real": 64},
            "datadam": {"iterations": 300},
            "dc": {"batch_real": 64},
            "dsa": {"batch_real": 64},
            "herding": {"embed_epochs": 5},
        },
        gm_iterations={1: 200, 10: 20},
    ),  # fmt: skip
    "paper": Scale(width=128, eval_epochs=1000, num_evals=10, cross_evals=10, cross_epochs=1000),
}
# Fashion-MNIST (28x28) at CPU scale: each DC/DSA inner epoch costs ~16x a digits one.
FMNIST_CPU = {"gm_iterations": {1: 100, 10: 10}, "gm_loops": {10: (10, 10)}}


def _scale_for(scale: str, dataset: str) -> Scale:
    s = SCALES[scale]
    if scale == "cpu" and dataset == "fashion_mnist":
        s = dataclasses.replace(s, **FMNIST_CPU)
    return s


def method_config(method: str, scale: Scale, ipc: int) -> Any:
    """The method's config: its (published) defaults, the variant's switches, then the scale's overrides."""
    base, switches = VARIANTS.get(method, (method, {}))
    cls = get_method(base).config_cls
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {"width": scale.width} if "width" in names else {}
    values.update(scale.overrides.get(base, {}))
    values.update(switches)
    if method in ("dc", "dsa"):
        if ipc in scale.gm_iterations:
            values["iterations"] = scale.gm_iterations[ipc]
        if ipc in scale.gm_loops:
            values["outer_loop"], values["inner_loop"] = scale.gm_loops[ipc]
    return cls(**values)


def evaluate_row(
    synset: SyntheticSet, dataset: ImageDataset, method: str, scale: Scale, *, archs: Sequence[str], published: bool,
    device: torch.device, seed: int, progress: bool = True,
) -> dict[str, list[float]]:  # fmt: skip
    """Final-checkpoint accuracies of one set: every arch under the shared ``dc`` protocol with DSA, plus
    the ConvNet under the method's own paper protocol where it differs (:data:`OWN_COLUMNS`).

    ``published``: every column trains its protocol's published epochs (``dc``: 1000 with DSA, 300
    without; ``datadam``: 1800) instead of the scale's."""
    base = VARIANTS.get(method, (method, {}))[0]
    width = {"convnet": {"width": scale.width}}
    ctx = current_context()  # under a process group each rank trains its share of the networks

    def split(arch: str, n: int, **kw: Any) -> list[float]:
        return split_evaluation(ctx, n, lambda ids: evaluate_synset(synset, dataset, models=(arch,), num_evals=n, eval_ids=ids,
                                                                    device=device, seed=seed, progress=progress, **kw))[arch].accs  # fmt: skip

    accs: dict[str, list[float]] = {}
    for arch in archs:
        n, epochs = (scale.num_evals, scale.eval_epochs) if arch == "convnet" else (scale.cross_evals, scale.cross_epochs)
        accs[arch] = split(arch, n, epochs=None if published else epochs, dsa=True, model_kwargs=width if arch == "convnet" else {},
                           protocol="dc")  # fmt: skip
    if base in OWN_COLUMNS and "convnet" in archs:  # the method's own protocol and DSA, beside the shared one
        accs[OWN_COLUMNS[base][0]] = split("convnet", scale.num_evals, epochs=None if published else scale.eval_epochs,
                                           model_kwargs=width, **OWN_COLUMNS[base][2])  # fmt: skip
    return accs


def run(
    dataset: ImageDataset, ipc: int, methods: Sequence[str], scale: Scale, *, archs: Sequence[str], device: torch.device,
    seed: int, out_dir: Path, progress: bool = True, evaluate_only: bool = False, published: bool = False, log=print,
) -> list[dict]:  # fmt: skip
    """Distill with every method (``evaluate_only``: load the sets saved in ``out_dir`` instead), evaluate
    every set with the same protocol (:func:`evaluate_row`); one result dict per method.

    Resumable: a distillation checkpoints to ``SET.ckpt`` on the default time interval (and on Ctrl-C) and a
    rerun continues it bit for bit; a finished row is kept in ``SET.row.json`` and a rerun with the same
    settings reuses it (distillation mode only). Under a process group rank 0 alone reads and writes these
    files and tells the other ranks which rows are kept."""
    ctx = current_context()
    rows = []
    for method in methods:
        path = out_dir / f"{dataset.name}_ipc{ipc}_{method}.pt"

        def make(method: str = method, path: Path = path) -> dict:
            return _row(dataset, ipc, method, scale, path, archs=archs, device=device, seed=seed, progress=progress,
                        evaluate_only=evaluate_only, published=published, log=log)  # fmt: skip

        if evaluate_only:
            rows.append(make())
            continue
        key = repr((method, dataclasses.asdict(method_config(method, scale, ipc)), dataclasses.asdict(scale), list(archs), published, seed,
                    dataset.fingerprint, str(device)))  # fmt: skip
        # a kept row without its set is made again (the set is an output too)
        row, kept = kept_on_main(ctx, partial(kept_result, f"{path}.row.json", key, needs=path), make)
        if kept:
            log(f"{dataset.name} ipc={ipc} {method}: kept from an earlier run ({path}.row.json)")
        rows.append(row)
    return rows


def _row(dataset: ImageDataset, ipc: int, method: str, scale: Scale, path: Path, *, archs: Sequence[str], device: torch.device,
         seed: int, progress: bool, evaluate_only: bool, published: bool, log) -> dict:  # fmt: skip
    """Distill (checkpointed to ``SET.ckpt``) or load one method's set and evaluate it; the row's dict."""
    t0 = time.perf_counter()
    ctx = current_context()
    if evaluate_only:

        def load() -> SyntheticSet:
            if not path.is_file():
                raise UserError(f"--evaluate-only: no saved set {path}")
            return SyntheticSet.load(path)

        synset = on_main(ctx, load)
        t_distill = float(synset.meta.get("wall_time", 0.0))
        config = synset.meta.get("config", {})
    else:
        cfg = method_config(method, scale, ipc)
        base = VARIANTS.get(method, (method, {}))[0]
        ck = Checkpointer(path.with_name(path.name + ".ckpt"), None, {"method": method, "dataset": dataset.name, "ipc": ipc, "seed": seed,
                          "config": dataclasses.asdict(cfg), "data": dataset.fingerprint}, interval=DEFAULT_INTERVAL)  # fmt: skip
        ck.check()
        synset = get_method(base).distill(dataset, ipc, cfg, device=device, seed=seed, progress=progress, checkpoint=ck)
        t_distill, config = time.perf_counter() - t0, dataclasses.asdict(cfg)
        if ctx.is_main:
            synset.save(path)
        synset = broadcast_object(ctx, synset)  # every rank evaluates the set rank 0 saved
    t1 = time.perf_counter()
    accs = evaluate_row(synset, dataset, method, scale, archs=archs, published=published, device=device, seed=seed, progress=progress)
    if not evaluate_only and ctx.is_main:
        ck.path.unlink(missing_ok=True)  # kept until the row is done: a rerun after Ctrl-C in the evaluation need not distil again
    row = {"dataset": dataset.name, "ipc": ipc, "method": method, "accs": accs, "distill_seconds": t_distill,
           "eval_seconds": time.perf_counter() - t1, "config": config}  # fmt: skip
    log(f"{dataset.name} ipc={ipc} {method}: " + ", ".join(f"{a} {_fmt(v)}" for a, v in accs.items())
        + f" (distill {t_distill:.0f}s, eval {row['eval_seconds']:.0f}s)")  # fmt: skip
    return row


def _fmt(accs: list[float]) -> str:
    t = torch.tensor(accs, dtype=torch.float64) * 100
    std = float(t.std(unbiased=False)) if len(accs) > 1 else 0.0
    return f"{float(t.mean()):.2f} ± {std:.2f}"


def table(rows: list[dict], archs: Sequence[str]) -> str:
    own = [key for key, _, _ in OWN_COLUMNS.values() if any(key in r["accs"] for r in rows)]
    cols, names = list(archs) + own, {**ARCHS, **{key: header for key, header, _ in OWN_COLUMNS.values()}}
    headers = ["dataset", "IPC", "method"] + [f"{names.get(a, a)} %" for a in cols] + ["distill s"]
    body = [[r["dataset"], r["ipc"], r["method"]] + [_fmt(r["accs"][a]) if a in r["accs"] else "-" for a in cols]
            + [f"{r['distill_seconds']:.0f}"] for r in rows]  # fmt: skip
    return markdown_table(headers, body)


def plot_grid(sets: dict[str, SyntheticSet], path: Path) -> Path:
    """One row per method, one column per class (its first synthetic image), via :meth:`SyntheticSet.to_png`."""
    names = list(sets)
    images, rows = [], []
    for r, name in enumerate(names):
        labels = sets[name].hard_labels()
        firsts = [int(torch.nonzero(labels == c, as_tuple=True)[0][0]) for c in sorted(set(labels.tolist()))]
        images.append(sets[name].images[firsts])
        rows.append(torch.full((len(firsts),), r, dtype=torch.long))
    first = sets[names[0]]
    grid = SyntheticSet(torch.cat(images), torch.cat(rows), meta={"dataset": first.meta.get("dataset", {}), "class_names": names})
    title = f"{first.meta.get('dataset', {}).get('name', '')}, IPC {first.ipc}: first synthetic image of each class"
    return grid.to_png(path, max_per_class=max(len(i) for i in images), title=title)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = CLIParser(prog="python -m experiments.matching", description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="cpu", choices=SCALES, help="cpu (default, minutes) or paper (published settings)")
    p.add_argument("--datasets", default="digits", help="comma-separated: digits, fashion_mnist (default: digits)")
    p.add_argument("--root", default=None, help="directory with the dataset files (not needed for digits)", **input_flag(directory=True))
    p.add_argument("--ipcs", default="1,10", help="comma-separated images per class (default: 1,10)")
    p.add_argument("--methods", default=",".join(METHOD_ORDER), help=f"comma-separated subset of {','.join(METHOD_ORDER)}")
    p.add_argument("--archs", default=",".join(ARCHS), help="evaluation architectures (default: all four)")
    p.add_argument("--seed", type=int, default=0, help="distillation and evaluation seed (default: 0)")
    p.add_argument("--out-dir", default="runs/matching", help="synthetic sets, results JSON and figures (default: runs/matching; under torchrun "
                   "on several machines: on storage every machine mounts)", **output_flag(directory=True))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--epochs", default="scale", choices=("scale", "published"),
                   help="evaluation epochs: the scale's (default) or each protocol's published ones (dc 1000 with DSA / 300 without, datadam 1800)")
    p.add_argument("--evaluate-only", action="store_true", help="evaluate the sets saved in --out-dir instead of distilling")
    p.add_argument("--figure-only", action="store_true",
                   help="only redraw the figures: image grids from the sets in --out-dir, accuracy curves from --json")
    p.add_argument("--json", default=None, help="with --figure-only: the results JSON to redraw the accuracy figure from", **input_flag())
    args = p.parse_args(argv)
    check_outputs({"--out-dir": args.out_dir}, directories=("--out-dir",), roots={"--root": args.root})
    try:
        ctx, device = launch_context(resolve_device(args.device))  # under torchrun: this rank's device, the joined group
        with rank_failure_guard(ctx):
            check_agreement(ctx, vars(args))
        datasets, ipcs = parse_list("--datasets", args.datasets), parse_list("--ipcs", args.ipcs, int)
        methods, archs = parse_list("--methods", args.methods), parse_list("--archs", args.archs)
        for m in methods:
            if m not in METHOD_ORDER:
                raise UserError(f"unknown method {m!r}; choose from {', '.join(METHOD_ORDER)}")
        if any(i < 1 for i in ipcs):
            raise UserError(f"--ipcs must be >= 1, got {args.ipcs}")
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
        out_dir = Path(args.out_dir)
        if args.figure_only and not ctx.is_main:
            return 0
        if ctx.is_main:  # the ranks share the outputs; rank 0 writes them
            out_dir.mkdir(parents=True, exist_ok=True)
        with rank_failure_guard(ctx):  # a rank that dies: one line on the others
            if not args.figure_only and not args.evaluate_only:
                resumes_on_rerun(f"{out_dir} (finished rows, *.row.json)")
                check_shared_directory(ctx, out_dir, "--out-dir")  # every rank resumes from rank 0's checkpoints
            log = (lambda m: print(m, file=sys.stderr, flush=True)) if ctx.is_main else (lambda m: None)
            start, rows = time.perf_counter(), []
            for name in datasets:
                ds = load_dataset(name, args.root) if not args.figure_only else None
                key = ds.name if ds is not None else name
                for ipc in ipcs:
                    if ds is not None:
                        rows += run(ds, ipc, methods, _scale_for(args.scale, ds.name), archs=archs, device=device, seed=args.seed,
                                    out_dir=out_dir, progress=not args.no_progress and ctx.is_main, evaluate_only=args.evaluate_only,
                                    published=args.epochs == "published", log=log)  # fmt: skip
                    if not ctx.is_main:
                        continue
                    files = {m: out_dir / f"{key}_ipc{ipc}_{m}.pt" for m in METHOD_ORDER}  # every set made so far, in order
                    sets = {m: SyntheticSet.load(f) for m, f in files.items() if f.exists()}
                    if not sets:
                        if args.figure_only and args.json:
                            continue
                        raise UserError(f"no synthetic sets for {key} ipc {ipc} in {out_dir}")
                    print(f"wrote {plot_grid(sets, out_dir / f'{key}_ipc{ipc}.png')}", file=sys.stderr)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not ctx.is_main:
        return 0
    if args.figure_only:
        return figures.redraw("matching", args.json) if args.json else 0
    wall = time.perf_counter() - start
    print(table(rows, archs))
    ranks = f" ranks={ctx.world_size}" if ctx.active else ""
    print(f"\nscale={args.scale} epochs={args.epochs} seed={args.seed}{ranks} wall={wall / 60:.1f} min (shared 2-core CPU; timings are noisy)")
    tag = "_".join(datasets) + "_ipc" + "-".join(map(str, ipcs)) + "_" + "-".join(methods) + ("_published" if args.epochs == "published" else "")
    result_json = out_dir / f"results_{args.scale}_{tag}.json"
    atomic_write_text(json.dumps({"scale": args.scale, "epochs": args.epochs, "seed": args.seed, "wall_seconds": wall, "rows": rows}, indent=1), result_json)
    print(f"wrote synthetic sets and image grids: {out_dir}", file=sys.stderr)
    return figures.finish("matching", result_json)


if __name__ == "__main__":
    sys.exit(main())
