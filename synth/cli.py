"""Command line: ``python -m synth teacher ...`` and ``python -m synth distill --method ...``.

``teacher`` trains (or, with ``--random``, just initialises) a network and writes a model checkpoint.
``distill`` loads a teacher checkpoint, validates it against the dataset, trains a student with the
chosen method (method flags are generated from the method's config dataclass), prints the student's
test accuracy (k-NN / linear probe for ``random``) and writes the student checkpoint; generator
methods can also write a :class:`~condense.synset.SyntheticSet` (``--synset``). User errors print
one line ``error: ...`` and exit with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any, Sequence

import torch

from condense.checkpoint import DEFAULT_INTERVAL, Checkpointer
from condense.data import ImageDataset
from condense.flags import add_config_flags, add_dataset_flags, config_from_args, load_from_args
from condense.evaluate import accuracy
from condense.resources import check_memory, generator_bytes, image_batch_bytes
from condense.safeio import CLIParser, check_image_dataset, check_outputs, cli_main, fingerprint_tensors, input_flag, lock_outputs, output_flag
from condense.utils import UserError, resolve_device

from .common import make_synset
from .generator_kd import PRESETS, GeneratorKDConfig, train_generator_kd
from .generators import sample_latents
from .hard import HardConfig, train_hard
from .meta import MetaConfig, train_meta_generator
from .random_teacher import RandomTeacherConfig, embed, knn_accuracy, linear_probe_accuracy, train_from_random_teacher
from .teachers import Model, build_network, load_model, random_teacher, save_model, train_teacher

__all__ = ["main", "build_parser", "METHOD_CONFIGS", "METHOD_HELP"]

#: one line per method for ``--help`` (paper; what the student learns from)
METHOD_HELP: dict[str, str] = {
    "dafl": "DAFL (Chen et al., ICCV 2019): generator makes inputs the teacher finds confident and class-balanced",
    "dfad": "DFAD (Fang et al., 2019): adversarial generator maximises teacher-student disagreement (L1 on logits)",
    "zskt": "ZSKT (Micaelli & Storkey, NeurIPS 2019): adversarial generator (KL) + attention transfer",
    "meta": "Fast-DFKD (Fang et al., AAAI 2022): meta-learned generator, k inner steps (exact / fomaml / reptile)",
    "hard": "HARD (Nix, Burg & Sinz, 2023): learned augmenter moves real inputs to where teacher and student disagree",
    "random": "random teachers (Sarnthein et al., ICML 2023): DINO self-distillation from an untrained teacher",
}
METHOD_CONFIGS: dict[str, type] = {"dafl": GeneratorKDConfig, "dfad": GeneratorKDConfig, "zskt": GeneratorKDConfig,
                                   "meta": MetaConfig, "hard": HardConfig, "random": RandomTeacherConfig}  # fmt: skip


def _data_flags(p: argparse.ArgumentParser) -> None:
    add_dataset_flags(p, zca=False, root_kwargs=input_flag(directory=True))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")


def _checkpoint_flags(p: argparse.ArgumentParser, unit: str) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="resumable training checkpoint file; rerunning the same command resumes from it (default: OUT.ckpt, "
                        "deleted when the run completes; a named one is kept)", **output_flag(resumable=True))  # fmt: skip
    p.add_argument("--checkpoint-every", type=int, default=None, help=f"save the checkpoint every K {unit} (default: on the time interval)")
    p.add_argument("--checkpoint-interval", type=float, default=None, metavar="SECONDS",
                   help=f"save the checkpoint every SECONDS of wall time (default: {DEFAULT_INTERVAL:g} unless --checkpoint-every is given)")
    p.add_argument("--no-checkpoint", action="store_true", help="no checkpoints (Ctrl-C then loses the run)")


def build_parser(method: str | None = None) -> argparse.ArgumentParser:
    methods = "\n".join(f"  {name:7s} {text}" for name, text in METHOD_HELP.items())
    parser = CLIParser(
        prog="python -m synth", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"methods (python -m synth distill --method NAME --help lists a method's flags with its published defaults):\n{methods}\n\n"
               "example (DAFL's teacher recipe, then the CPU preset of experiments.synth):\n"
               "  python -m synth teacher --dataset digits --resize 32 --epochs 200 --out T.pt\n"
               "  python -m synth distill --method dafl --teacher T.pt --resize 32 --out S.pt --iterations 1500 --batch-size 128",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("teacher", help="train (or randomly initialise) a teacher network")
    _data_flags(t)
    t.add_argument("--arch", default="lenet5", help="registry network name (default: lenet5)")
    t.add_argument("--norm", default=None, help="norm option of the network (e.g. batchnorm for BN-statistics losses)")
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--random", action="store_true", help="do not train: a seeded random teacher")
    t.add_argument("--out", required=True, help="teacher checkpoint to write", **output_flag())
    _checkpoint_flags(t, "epochs")
    d = sub.add_parser("distill", help="train a student from a teacher checkpoint")
    _data_flags(d)
    d.add_argument("--method", required=True, choices=sorted(METHOD_CONFIGS), help="; ".join(f"{k}: {v.split(':')[0]}" for k, v in METHOD_HELP.items()))
    d.add_argument("--teacher", required=True, help="teacher checkpoint (python -m synth teacher)", **input_flag())
    d.add_argument("--student", default="lenet5_half", help="student architecture (default: lenet5_half; random: the teacher's)")
    d.add_argument("--out", required=True, help="student checkpoint to write", **output_flag())
    d.add_argument("--synset", default=None, help="also write a SyntheticSet of generated samples + teacher soft labels", **output_flag())
    d.add_argument("--synset-size", type=int, default=500, help="number of samples in --synset")
    _checkpoint_flags(d, "iterations")
    if method in METHOD_CONFIGS:
        add_config_flags(d, METHOD_CONFIGS[method], f"{method} options")
    return parser


def _dataset(args: argparse.Namespace) -> ImageDataset:
    return check_image_dataset(load_from_args(args))


def cmd_teacher(args: argparse.Namespace) -> dict[str, Any]:
    ckpt_path = None if args.random else _checkpoint_path(args)
    outputs = check_outputs({"--out": args.out, "--checkpoint": ckpt_path}, roots={"--root": args.root})
    resolve_device(args.device)
    ds = _dataset(args)
    ckpt = None
    if ckpt_path:
        sig = {"arch": args.arch, "norm": args.norm, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
               "seed": args.seed, "dataset": ds.name, "data": ds.fingerprint, "transform": {"resize": args.resize}}  # fmt: skip
        ckpt = _checkpointer(args, ckpt_path, sig)
    lock_outputs(outputs.values(), outputs)
    kwargs = {"norm": args.norm} if args.norm else {}
    shape = (ds.channels, *ds.image_size)
    if args.random:
        model = random_teacher(args.arch, shape, ds.num_classes, seed=args.seed, arch_kwargs=kwargs)
        model.meta["test_acc"] = accuracy(model.net, ds.test_x, ds.test_y, device="cpu")
    else:
        model = train_teacher(ds, args.arch, arch_kwargs=kwargs, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                              device=args.device, seed=args.seed, progress=not args.no_progress, checkpoint=ckpt)  # fmt: skip
    save_model(model, args.out, dataset=ds)
    _finish_checkpoint(args, ckpt)
    return {"teacher": args.out, "arch": args.arch, "kind": model.meta["kind"], "test_acc": round(model.meta["test_acc"], 4)}


def _config(args: argparse.Namespace) -> Any:
    cls = METHOD_CONFIGS[args.method]
    if cls is GeneratorKDConfig:
        return dataclasses.replace(config_from_args(cls, args, PRESETS[args.method]), preset=args.method)
    return config_from_args(cls, args)


def _checkpoint_path(args: argparse.Namespace) -> str | None:
    """``--checkpoint`` or ``OUT.ckpt``; ``None`` with ``--no-checkpoint`` (refused beside the other checkpoint flags)."""
    if args.no_checkpoint:
        if args.checkpoint or args.checkpoint_every or args.checkpoint_interval is not None:
            raise UserError("--no-checkpoint contradicts --checkpoint / --checkpoint-every / --checkpoint-interval")
        return None
    return args.checkpoint or f"{args.out}.ckpt"


def _checkpointer(args: argparse.Namespace, path: str, signature: dict[str, Any]) -> Checkpointer:
    """The run's checkpointer (checked before work): ``--checkpoint-every`` and/or the time interval (default 10 minutes)."""
    interval = args.checkpoint_interval if args.checkpoint_interval is not None else None if args.checkpoint_every else DEFAULT_INTERVAL
    ckpt = Checkpointer(path, args.checkpoint_every, signature, interval=interval)
    ckpt.check()
    return ckpt


def _finish_checkpoint(args: argparse.Namespace, ckpt: Checkpointer | None) -> None:
    """After the result is written: the default safety checkpoint has served its purpose; an asked-for one is kept."""
    if ckpt is not None and not (args.checkpoint or args.checkpoint_every or args.checkpoint_interval is not None):
        ckpt.path.unlink(missing_ok=True)


def _check_memory(args: argparse.Namespace, cfg: Any, ds: ImageDataset) -> None:
    """Refuse generator / synthetic-set sizes that cannot fit before any training."""
    c, (h, w) = ds.channels, ds.image_size
    need = image_batch_bytes(args.synset_size if args.synset is not None else 0, c, h, w)
    if hasattr(cfg, "ngf"):
        need += generator_bytes(cfg.batch_size, cfg.nz, cfg.ngf, c, h, w)
    elif hasattr(cfg, "batch_size"):
        need += 3 * image_batch_bytes(cfg.batch_size, c, h, w)
    check_memory(need, f"--method {args.method} at {h}x{w} pixels (batch size, generator width --ngf / --nz, --synset-size, --resize)",
                 "lower them")


def cmd_distill(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    ckpt_path = _checkpoint_path(args)
    outputs = check_outputs({"--out": args.out, "--synset": args.synset, "--checkpoint": ckpt_path},
                            {"--teacher": args.teacher}, roots={"--root": args.root})  # fmt: skip
    if args.synset is not None and args.method not in ("dafl", "dfad", "zskt", "meta"):
        raise UserError("--synset needs a generator method (dafl, dfad, zskt or meta)")
    cfg = _config(args)
    ds = _dataset(args)
    _check_memory(args, cfg, ds)
    teacher = load_model(args.teacher, dataset=ds, device=device)
    ckpt = None
    if ckpt_path:
        sig = {"method": args.method, "config": repr(cfg), "seed": args.seed, "student": args.student, "dataset": ds.name,
               "data": ds.fingerprint, "transform": {"resize": args.resize}, "teacher": fingerprint_tensors(teacher.net.state_dict())}
        ckpt = _checkpointer(args, ckpt_path, sig)
    lock_outputs(outputs.values(), outputs)
    common = dict(device=device, seed=args.seed, progress=not args.no_progress, checkpoint=ckpt)
    report: dict[str, Any] = {"method": args.method, "teacher_test_acc": round(accuracy(teacher.net, ds.test_x, ds.test_y, device=device), 4)}
    start = time.perf_counter()
    if args.method == "random":
        t_model, student, _ = train_from_random_teacher(teacher, ds.train_x, cfg, **common)
        for name, net in (("teacher", t_model), ("student", student)):
            tr, te = embed(net, ds.train_x, device), embed(net, ds.test_x, device)
            report[f"{name}_knn"] = round(knn_accuracy(tr, ds.train_y, te, ds.test_y), 4)
            report[f"{name}_linear_probe"] = round(linear_probe_accuracy(tr, ds.train_y, te, ds.test_y, seed=args.seed), 4)
        out_model = Model(student.backbone, teacher.arch, teacher.num_classes, teacher.input_shape, teacher.arch_kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            net = build_network(args.student, teacher.input_shape, teacher.num_classes)
        stats = (ds.mean, ds.std)
        if args.method == "hard":
            net, _, _ = train_hard(teacher, net, ds.train_x, cfg, **common)
        elif args.method == "meta":
            res = train_meta_generator(teacher, net, cfg, pixel_stats=stats, **common)
            net, images = res.student, res.pool.images[-args.synset_size :]
        else:
            res = train_generator_kd(teacher, net, cfg, pixel_stats=stats, **common)
            net = res.student
            with torch.no_grad():
                images = res.generator(sample_latents(args.synset_size, cfg.nz, torch.Generator().manual_seed(args.seed), device))
        report["student_test_acc"] = round(accuracy(net, ds.test_x, ds.test_y, device=device), 4)
        out_model = Model(net, args.student, teacher.num_classes, teacher.input_shape)
        if args.synset is not None:
            make_synset(images.to(device), teacher.net, ds, method=args.method, config=cfg, seed=args.seed,
                        wall_time=time.perf_counter() - start).save(args.synset)  # fmt: skip
            report["synset"] = args.synset
    report["wall_time_s"] = round(time.perf_counter() - start, 1)
    out_model.meta = {"kind": "student", "method": args.method, "seed": args.seed, "teacher": str(args.teacher), **report}
    save_model(out_model, args.out, dataset=ds)
    report["student"] = args.out
    _finish_checkpoint(args, ckpt)
    return report


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    method = argv[argv.index("--method") + 1] if "--method" in argv[:-1] else None
    args = build_parser(method).parse_args(argv)
    try:
        report = cmd_teacher(args) if args.command == "teacher" else cmd_distill(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0
