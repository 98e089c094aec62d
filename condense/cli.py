"""Command line: ``python -m condense [demo|distill|evaluate|show] ...``.

With no arguments the demo condenses the embedded digits dataset (10 images per class), evaluates
the result against random real images of the same size and the full training set, prints the
table and writes the synthetic set and a PNG grid of it. User errors print one line and exit 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence


from .checkpoint import DEFAULT_INTERVAL, Checkpointer, user_cache
from .distributed import launch_context, rank_failure_guard
from .data import ImageDataset, load_dataset
from .flags import add_config_flags, add_dataset_flags, config_from_args, load_from_args, load_recorded
from .augment import DSA, make_dsa
from .evaluate import PRECISION_HELP, PRECISIONS, PROTOCOLS, Summary, evaluate_images, evaluate_synset, finished_networks, get_protocol
from .experts import add_experts_parser, cmd_experts
from .methods import METHODS, get_method
from .nets import convnet_depth
from .methods.base import check_ipc
from .safeio import CLIParser, check_image_dataset, check_outputs, cli_main, input_flag, lock_outputs, output_flag, parse_list
from .synset import SyntheticSet
from .utils import UserError, check_positive, markdown_table, resolve_device

__all__ = ["main", "build_parser", "config_from_args", "DEMO_PRESETS"]

# The demo's scale: minutes on a laptop CPU. The methods' own defaults are the published settings.
# ConvNet width 64 (not 128) keeps the demo within a few CPU minutes; the table says so.
DEMO_PRESETS: dict[str, dict[str, Any]] = {
    "dm": {"iterations": 200, "batch_real": 64, "width": 64},
}


#: config fields that name a path, declared for the output guard (:func:`condense.safeio.input_flag`)
CONFIG_PATHS: dict[str, dict[str, Any]] = {"experts": input_flag(directory=True)}


# ------------------------------------------------------------------------------------------ helpers
def _transform(args: argparse.Namespace) -> dict[str, Any]:
    """The dataset transform flags, for resume signatures (whatever ZCA does internally)."""
    return {"resize": args.resize, "zca": bool(args.zca), "zca_eps": args.zca_eps if args.zca else None}


def _load(args: argparse.Namespace) -> ImageDataset:
    return check_image_dataset(load_from_args(args), test=False)  # distilling needs no test split


def _score_table(label_headers: list[str], rows: list[tuple[list[Any], Summary]], final_header: str) -> str:
    """Final accuracy per row; the labelled max-over-checkpoints column only when intermediate tests ran."""
    maxed = [s for _, s in rows if s.test_every]
    header = [*label_headers, final_header] + ([maxed[0].max_label] if maxed else [])
    cells = lambda s: [f"{100 * s.mean:.2f} ± {100 * s.std:.2f}"] + ([f"{100 * s.max_mean:.2f}"] if maxed else [])  # noqa: E731
    return markdown_table(header, [[*labels, *cells(s)] for labels, s in rows])


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _explicit_checkpointing(args: argparse.Namespace) -> bool:
    return bool(args.checkpoint_every or args.checkpoint or args.resume or args.checkpoint_interval is not None)


def _checkpoint_path(args: argparse.Namespace, out: Path) -> Path | None:
    """``--checkpoint`` or ``OUT.ckpt``; ``None`` with ``--no-checkpoint`` (refused beside the other checkpoint flags)."""
    if args.no_checkpoint:
        if _explicit_checkpointing(args):
            raise UserError("--no-checkpoint contradicts --checkpoint / --checkpoint-every / --checkpoint-interval / --resume")
        return None
    return Path(args.checkpoint) if args.checkpoint else out.with_name(out.name + ".ckpt")


def _check_size(dataset: ImageDataset, ipc: int, allow: bool) -> str:
    """A "distilled" set at or above the training set's size is refused unless ``allow``; returns the label to record."""
    check_ipc(dataset, ipc)  # an ipc beyond the smallest class is refused first, with its own message
    n_syn, n_train = ipc * dataset.num_classes, len(dataset.train_y)
    if n_syn < n_train:
        return ""
    label = f"full-size set: {n_syn} images, at or above the {n_train} training images of {dataset.name}"
    if not allow:
        raise UserError(f"--ipc {ipc} asks for {n_syn} images, at or above the {n_train} training images of {dataset.name}: "
                        "that is not a condensed set (pass --allow-full-size to run it anyway; every output is then labelled)")  # fmt: skip
    return label


# ------------------------------------------------------------------------------------------ commands
def cmd_distill(args: argparse.Namespace) -> int:
    spec = get_method(args.method)
    ctx, device = launch_context(resolve_device(args.device))  # under torchrun: this rank's device, the joined group
    config = config_from_args(spec.config_cls, args)
    out = Path(args.out)
    path = _checkpoint_path(args, out)
    outputs = check_outputs({"--out": out, "--png": args.png, "--checkpoint": path}, roots={"--root": args.root})
    if args.resume and not path.exists():
        raise UserError(f"--resume given but no checkpoint at {path}")
    dataset = _load(args)
    full_size = _check_size(dataset, args.ipc, args.allow_full_size)
    ckpt = None
    if path is not None:
        sig = {"method": args.method, "dataset": dataset.name, "ipc": args.ipc, "seed": args.seed, "config": dataclasses.asdict(config),
               "data": dataset.fingerprint, "transform": _transform(args)}  # fmt: skip
        interval = args.checkpoint_interval if args.checkpoint_interval is not None else None if args.checkpoint_every else DEFAULT_INTERVAL
        ckpt = Checkpointer(path, args.checkpoint_every or None, signature=sig, resume=args.resume, resume_hint="rerun with --resume",
                            interval=interval, resume_args=("--resume",), protect=not getattr(args, "overwrite", False))  # fmt: skip
        ckpt.check()
    if ctx.is_main:  # the ranks of one run share the outputs; rank 0 writes them
        lock_outputs(outputs.values(), outputs)
    start = time.perf_counter()
    with rank_failure_guard(ctx):
        synset = spec.distill(dataset, args.ipc, config, device=device, seed=args.seed, progress=not args.no_progress and ctx.is_main,
                              checkpoint=ckpt)  # fmt: skip
    if not ctx.is_main:
        return 0
    if getattr(config, "preset", ""):
        _log(f"effective config (preset {config.preset}, explicit flags kept): {synset.meta.get('config')}")
    if full_size:
        synset.meta["full_size"] = full_size
        _log(f"note: {full_size}")
    synset.save(out)
    _log(f"wrote {out} ({len(synset)} images, method {args.method}{', FULL-SIZE: not a condensed set' if full_size else ''}) "
         f"in {time.perf_counter() - start:.1f}s")  # fmt: skip
    if ckpt is not None and not _explicit_checkpointing(args):
        path.unlink(missing_ok=True)  # the default safety checkpoint has served its purpose
    if args.png:
        synset.to_png(args.png)  # a full-size set's grid is titled as such (SyntheticSet.to_png)
        _log(f"wrote {args.png}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    models = parse_list("--models", args.models)
    synset = SyntheticSet.load(args.file)
    device = resolve_device(args.device)
    meta_ds = synset.meta.get("dataset", {})
    dataset = check_image_dataset(load_recorded(meta_ds, args))  # the loader, root and options the set records; flags override
    protocol = get_protocol(args.protocol or synset.protocol)
    dsa: bool | DSA | None = args.dsa
    if args.dc_aug and (args.dsa or args.dsa_strategy is not None):
        raise UserError("--dc-aug is DC's protocol without DSA (DSA replaces it): drop --dsa / --dsa-strategy")
    if args.dsa_strategy is not None:
        dsa = make_dsa(args.dsa_strategy, dataset.name, align_corners=protocol.align_corners) if args.dsa is not False else False
    state: Path | None = Path(args.state) if args.state else _evaluate_state(args.file)
    try:
        check_outputs({"--state": state})
    except UserError as exc:
        if args.state:
            raise
        _log(f"note: finished networks are not kept for a rerun ({exc})")  # the default cache is optional
        state = None
    start = time.perf_counter()
    try:
        res = evaluate_synset(
            synset, dataset, models=models, num_evals=args.num_evals, epochs=args.epochs, dsa=dsa, dc_aug=args.dc_aug,
            protocol=protocol, device=device, seed=args.seed, progress=not args.no_progress, test_every=args.test_every,
            batched=args.batched, precision=args.precision, state=state,
        )  # fmt: skip
    except KeyboardInterrupt:
        done = finished_networks(state) if state is not None else 0
        _log(f"evaluation interrupted; {done} finished network(s) kept in {state}: rerun the same command to resume them"
             if done else "evaluation interrupted before any network finished (nothing kept)")  # fmt: skip
        return 130
    if state is not None:
        state.unlink(missing_ok=True)  # complete: nothing left to resume
    print(_score_table(["model"], [([m], s) for m, s in res.items()], "final acc % (mean ± std)"))
    if synset.meta.get("full_size"):
        print(f"note: {synset.meta['full_size']} (not a condensed set)")
    used = "; ".join(f"{m}: {s.augment}" for m, s in res.items())
    _log(f"evaluated {args.file} ({len(synset)} images, {args.num_evals} nets per model, protocol {protocol.name} "
         f"[{protocol.source}], augmentation {used}) in {time.perf_counter() - start:.1f}s")  # fmt: skip
    return 0


def _evaluate_state(file: str) -> Path:
    """Default ``--state`` of ``evaluate``: a file in the user's cache named after the set's absolute path."""
    key = hashlib.sha256(os.fsencode(Path(file).resolve())).hexdigest()[:16]  # bytes: any file name
    return user_cache("evaluate") / f"{Path(file).stem}-{key}.pt"


def _meta_rows(path: str, synset: SyntheticSet) -> list[list[str]]:
    """``show``'s metadata table: one ``field | value`` row per fact a reader needs to trust the set."""
    m, ds = synset.meta, synset.meta.get("dataset", {})
    history = m.get("loss_history") or []
    config = m.get("config") or {}
    rows = [
        ["file", path], ["images", f"{len(synset)} x {tuple(synset.images.shape[1:])}"],
        ["labels", f"soft ({synset.labels.shape[1]} classes)" if synset.soft else f"hard, {synset.num_classes} classes"],
        ["method", m.get("method", "-")], ["dataset", f"{ds.get('name', '-')}" + (" (ZCA)" if ds.get("zca") else "")],
        ["data source", ", ".join(f"{k} {v}" for k, v in (("loader", ds.get("loader")), ("root", ds.get("root")),
                                                          ("options", ds.get("options")), ("storage", ds.get("storage"))) if v) or "-"],
        ["images per class", synset.ipc], ["seed", m.get("seed", "-")],
        ["learned lr", "-" if synset.lr is None else f"{synset.lr:.4g}"],
        ["wall time", f"{m['wall_time']:.1f} s" if "wall_time" in m else "-"],
        ["loss history", f"{len(history)} iterations, first {history[0]:.4g}, last {history[-1]:.4g}" if history else "not stored"],
        ["config", ", ".join(f"{k}={v}" for k, v in config.items()) or "-"],
        ["network", _network(str(config.get("model", "-")), tuple(synset.images.shape[-2:]))],
        *([["FULL SIZE", f"{m['full_size']} (not a condensed set)"]] if m.get("full_size") else []),
        ["versions", ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items()) or "-"],
    ]  # fmt: skip
    return [[k, str(v)] for k, v in rows]


def _network(model: str, size: tuple[int, int]) -> str:
    """The model a set was distilled with; a plain ConvNet's depth follows the resolution (:func:`condense.nets.convnet_depth`)."""
    return f"{model} (depth {convnet_depth(size)} at {size[0]}x{size[1]})" if model.lower() == "convnet" else model


def cmd_show(args: argparse.Namespace) -> int:
    lock_outputs(check_outputs({"--png": args.png}, {"FILE": args.file}).values())
    synset = SyntheticSet.load(args.file)
    history = synset.meta.get("loss_history")
    if args.curve and not history:  # check before writing anything
        raise UserError(f"{args.file} stores no loss history (method {synset.meta.get('method')!r}; coresets have no loss, "
                        f"and sets written before the history was stored have none): drop --curve")  # fmt: skip
    print(markdown_table(["field", "value"], _meta_rows(args.file, synset)))
    if args.png:
        synset.to_png(args.png, max_per_class=args.max_per_class)
        _log(f"wrote {args.png}")
    if args.curve:
        from .plotting import loss_curve

        ds = synset.meta.get("dataset", {}).get("name", "")
        loss_curve(history, args.curve, title=f"{synset.meta.get('method')} · {ds} · IPC {synset.ipc}: loss per outer iteration")
        _log(f"wrote {args.curve}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Condense digits to ``ipc`` images per class; compare with random real images and full data."""
    device = resolve_device(args.device)
    spec = get_method(args.method)
    config = config_from_args(spec.config_cls, args, DEMO_PRESETS.get(args.method, {}))
    out_dir = Path(args.out_dir)
    lock_outputs(check_outputs({"--out-dir": out_dir}, directories=("--out-dir",)).values())
    dataset = load_dataset("digits")
    t0 = time.perf_counter()
    _log(f"[1/4] distilling digits with {args.method} to {args.ipc} images per class on {device} ...")
    synset = spec.distill(dataset, args.ipc, config, device=device, seed=args.seed, progress=not args.no_progress)
    t_distill = time.perf_counter() - t0
    random_set = get_method("random").distill(dataset, args.ipc, get_method("random").config_cls(), device=device, seed=args.seed)
    width = getattr(config, "width", 128)
    ev = dict(
        num_evals=args.num_evals, epochs=args.eval_epochs, dsa=True, device=device, seed=args.seed,
        progress=not args.no_progress, model_kwargs={"convnet": {"width": width}},
    )  # fmt: skip
    _log("[2/4] evaluating the synthetic set ...")
    syn_res = evaluate_synset(synset, dataset, **ev)["convnet"]
    _log("[3/4] evaluating random real images of the same size ...")
    rnd_res = evaluate_synset(random_set, dataset, **ev)["convnet"]
    _log("[4/4] training on the full training set ...")
    full_res = evaluate_images(dataset.train_x, dataset.train_y, dataset, **dict(ev, epochs=args.full_epochs))["convnet"]
    rows = [
        ([f"{args.method} synthetic set", len(synset)], syn_res),
        (["random real images", len(random_set)], rnd_res),
        (["full training set", len(dataset.train_y)], full_res),
    ]
    print(f"\ndigits, ConvNet-{width}, {args.num_evals} networks each, DSA training, seed {args.seed}:")
    print(_score_table(["training data", "images"], rows, "final test acc % (mean ± std)"))
    out_dir.mkdir(parents=True, exist_ok=True)
    pt = synset.save(out_dir / f"digits_{args.method}_ipc{args.ipc}.pt")
    png = synset.to_png(out_dir / f"digits_{args.method}_ipc{args.ipc}.png")
    print(f"\nwrote {pt} and {png}; distillation {t_distill:.1f}s, total {time.perf_counter() - t0:.1f}s")
    return 0


# ------------------------------------------------------------------------------------------ parser
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _dataset_flags(p: argparse.ArgumentParser, required: bool = True) -> None:
    add_dataset_flags(p, default="digits" if required else None, root_kwargs=input_flag(directory=True))


def build_parser(method: str | None = None) -> argparse.ArgumentParser:
    parser = CLIParser(
        prog="python -m condense",
        description="Dataset distillation. Without a command: the digits demo (distill, evaluate, compare, save).",
    )
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="the default run: condense digits and print a comparison table")
    demo.add_argument("--method", default="dm", choices=sorted(METHODS), help="method to run (default: dm)")
    demo.add_argument("--ipc", type=int, default=10, help="images per class (default: 10)")
    demo.add_argument("--out-dir", default="condense_out", help="where the set and PNG go (default: condense_out)", **output_flag(directory=True))
    demo.add_argument("--num-evals", type=int, default=3, help="networks trained per row (default: 3)")
    demo.add_argument("--eval-epochs", type=int, default=300, help="training epochs per network (default: 300)")
    demo.add_argument("--full-epochs", type=int, default=50, help="epochs for the full-data row (default: 50)")
    _common(demo)

    epilog = getattr(METHODS[method].config_cls, "help_epilog", None) if method in METHODS else None
    d = sub.add_parser("distill", help="condense a dataset into a SyntheticSet file",
                       description="Method flags: `python -m condense distill --method NAME --help`.",
                       epilog=epilog() if epilog else None, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    d.add_argument("--method", required=True, help=f"one of {', '.join(sorted(METHODS))}")
    d.add_argument("--ipc", type=int, required=True, help="images per class")
    d.add_argument("--out", required=True, help="output file (.pt)", **output_flag(replaces_when="resume"))
    d.add_argument("--png", default=None, help="also write a PNG grid of the set", **output_flag(replaces_when="resume"))
    d.add_argument("--checkpoint-every", type=int, default=0,
                   help="save a resumable checkpoint every K iterations (kept after the run; default: on the time interval only)")
    d.add_argument("--checkpoint-interval", type=float, default=None, metavar="SECONDS",
                   help=f"save a resumable checkpoint every SECONDS of wall time (default: {DEFAULT_INTERVAL:g}; the default "
                        "checkpoint is deleted when the run completes, an asked-for one is kept)")  # fmt: skip
    d.add_argument("--no-checkpoint", action="store_true", help="no checkpoints (Ctrl-C then loses the run)")
    d.add_argument("--checkpoint", default=None, help="checkpoint path (default: OUT.ckpt)", **output_flag(resumable=True))
    d.add_argument("--resume", action="store_true", help="continue from the checkpoint (bit-for-bit)")
    d.add_argument("--allow-full-size", action="store_true",
                   help="allow a set at or above the training set's size (refused otherwise; the output is labelled)")
    _dataset_flags(d)
    _common(d)
    if method in METHODS:
        for p in (demo, d):
            add_config_flags(p, METHODS[method].config_cls, f"{method} options", CONFIG_PATHS)

    e = sub.add_parser("evaluate", help="train fresh networks on a SyntheticSet and test them")
    e.add_argument("file", help="SyntheticSet file", **input_flag())
    e.add_argument("--models", default="convnet", help="comma-separated architectures (default: convnet)")
    e.add_argument("--num-evals", type=int, default=5, help="networks per architecture (default: 5)")
    e.add_argument("--protocol", default=None, choices=sorted(PROTOCOLS),
                   help="evaluation protocol: " + "; ".join(f"{p.name}: {p.source}" for p in PROTOCOLS.values())
                   + " (default: the one the set records, i.e. its method's paper)")
    e.add_argument("--epochs", type=int, default=None, help="training epochs E (default: the protocol's; dc: 1000 with DSA, 300 without)")
    e.add_argument("--dsa", action=argparse.BooleanOptionalAction, default=None, help="DSA while training (default: as the method)")
    e.add_argument("--dsa-strategy", default=None, help="DSA strategy while training (default: the one the set was distilled with)")
    e.add_argument("--dc-aug", action="store_true",
                   help="DC's own augmentation instead of DSA, where DC's code applies it (MNIST: crop/scale/rotate; "
                        "BatchNorm ConvNet: crop/noise; otherwise none)")
    e.add_argument("--test-every", type=int, default=None, metavar="K",
                   help="also test every K passes and report the maximum over those tests in a labelled column (not part "
                        "of the dc/datadam protocols; default: the protocol's own tests: dc/datadam after the last pass, ast every 20)")
    e.add_argument("--batched", action=argparse.BooleanOptionalAction, default=False,
                   help="train each architecture's networks together as one vmapped model, equal to one by one up to float "
                        "rounding (default: off, one by one: faster on the CPUs measured, experiments/results/bench_evaluate.md)")
    e.add_argument("--precision", default="fp32", choices=PRECISIONS, help=PRECISION_HELP)
    e.add_argument("--state", default=None, help="file keeping each finished network's result, so that a rerun of the same "
                   "command resumes (default: a file under ~/.cache/condense/evaluate; removed when complete)",
                   **output_flag(resumable=True))
    _dataset_flags(e, required=False)
    _common(e)

    x = add_experts_parser(sub)
    _dataset_flags(x)
    _common(x)

    s = sub.add_parser("show", help="print a SyntheticSet's metadata; write its image grid and loss curve as PNGs")
    s.add_argument("file", help="SyntheticSet file", **input_flag())
    s.add_argument("--png", default=None, help="write a grid of the images here", **output_flag())
    s.add_argument("--curve", default=None, help="plot the stored distillation loss per outer iteration here (PNG)", **output_flag())
    s.add_argument("--max-per-class", type=int, default=10, help="columns per class (default: 10)")
    return parser


def _method_from_argv(argv: Sequence[str]) -> str | None:
    argv = list(argv)
    for i, a in enumerate(argv):
        if a == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--method="):
            return a.split("=", 1)[1]
    return None


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["demo", *argv]
    method = _method_from_argv(argv)
    if argv[0] == "demo" and method is None:
        method = "dm"
    if method is not None and method not in METHODS and not {"-h", "--help"} & set(argv):
        raise UserError(f"unknown method {method!r}; choose from {', '.join(sorted(METHODS))}")
    args = build_parser(method).parse_args(argv)  # flags' bounds are checked here (CLIParser)
    check_positive("--zca-eps", getattr(args, "zca_eps", 1.0))
    handler = {"demo": cmd_demo, "distill": cmd_distill, "evaluate": cmd_evaluate, "show": cmd_show, "experts": cmd_experts}
    return handler[args.command](args)
