"""``python -m graphs.g2m``: train a GNN teacher, distil it into an MLP, save both, print a table.

Without arguments it runs FF-G2M from a GCN teacher on the embedded CSBM graph and prints it next to the
teacher, a plain MLP trained on the labels only and GLNN (``--no-baselines`` skips those two), plus the
measured inference speed-up of the MLP over the teacher. Example::

    python -m graphs.g2m --dataset cora --root DIR --teacher gcn --method ff-g2m --setting tran --out student.pt
    python -m graphs.g2m --dataset ogbn-arxiv --root DIR --teacher sage --preset glnn --method glnn --mini-batch
    python -m graphs.g2m --dataset files --root MY_GRAPH_DIR --teacher sage --method ff-g2m
    python -m graphs.g2m predict student.pt --features X.npy --out pred.npy   # serve a saved student, no graph
    python -m graphs.g2m export student.pt --out student.pt2 [--onnx student.onnx]
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from condense.checkpoint import add_checkpoint_flags, checkpoint_path, checkpointer_from_args, drop_default_checkpoint
from condense.resources import check_memory, graph_bytes
from condense.safeio import CLIParser, fingerprint_tensors, check_outputs, cli_main, input_flag, lock_outputs, output_flag
from condense.utils import UserError, atomic_save, package_versions, resolve_device
from graphs.data.node_splits import SETTINGS
from condense.safeio import parse_list
from graphs.g2m.minibatch import MiniBatchConfig
from graphs.g2m.pipeline import CSBM_DEFAULTS, NODE_DATASETS, inference_seconds, load_task, make_task_split, run
from graphs.g2m import serve
from graphs.g2m.presets import PROTOCOLS, TEACHERS, Preset, get_preset
from graphs.g2m.serve import STUDENT_FORMAT, load_student, save_student
from graphs.g2m.student import METHODS

__all__ = ["STUDENT_FORMAT", "TEACHER_FORMAT", "main", "load_student", "format_table"]

TEACHER_FORMAT = "condense.g2m.teacher/v1"
SCORE_KEYS = ("val", "tran", "ind", "prod")


#: the student losses (``--method``), their papers and what they distil
METHOD_HELP = {
    "mlp": "plain MLP on the training labels only, no teacher (the baseline the distilled MLPs must beat)",
    "glnn": "GLNN (Zhang, Liu, Sun & Shah, \"Graph-less Neural Networks\", ICLR 2022): labels + KL to the teacher's soft labels",
    "lfd": "FF-G2M's low-frequency term alone: labels + KL from each node's student output to its neighbours' teacher outputs",
    "hfd": "FF-G2M's high-frequency term alone: labels + match softmax(|z_i - z_j| / tau) over edges (teacher vs student)",
    "ff-g2m": "FF-G2M (Wu, Lin, Huang, Fan & Li, AAAI 2024): labels + low- and high-frequency knowledge of the teacher",
}
TEACHER_HELP = {"gcn": "GCN (Kipf & Welling, ICLR 2017)", "sage": "GraphSAGE (Hamilton et al., NeurIPS 2017)",
                "gat": "GAT (Velickovic et al., ICLR 2018)"}  # fmt: skip
#: the students trained for the table besides --method unless --no-baselines
BASELINES = ("mlp", "glnn")


def _epilog() -> str:
    methods = "\n".join(f"  {k:7s} {v}" for k, v in METHOD_HELP.items())
    return (f"student losses (--method):\n{methods}\n"
            f"teachers (--teacher): {', '.join(f'{k} = {v}' for k, v in TEACHER_HELP.items())}\n"
            "presets (--preset): ff-g2m = LirongWu/FF-G2M best_parameters.json (default), glnn = snap-research/graphless-neural-networks "
            "train.conf.yaml; csbm's preset is ours, fixed a priori\n"
            f"default dataset: csbm, a generated contextual stochastic block model ({CSBM_DEFAULTS['num_nodes']} nodes, "
            f"{CSBM_DEFAULTS['num_features']} features, degree {CSBM_DEFAULTS['avg_degree']:g}; features weak alone, graph informative)\n"
            "serving: predict STUDENT --features X.npy [--out pred.npy] classifies raw features with a saved student (no graph); "
            "export STUDENT --out S.pt2 [--onnx S.onnx] writes torch.export / ONNX programs (predict --help, export --help)")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    p = CLIParser(prog="python -m graphs.g2m", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_epilog())  # fmt: skip
    p.add_argument("--dataset", default="csbm", help=f"csbm (default, generated) | {' | '.join(NODE_DATASETS)}")
    p.add_argument("--root", default=None, help="dataset root: Planetoid <Name>/raw/, OGB ogbn_<name>/, the directory of a CPF <name>.npz, "
                   "or for 'files' a directory with edges.csv|npy, features.npy, labels.npy, optional {train,val,test}_mask.npy (or graph.pt)", **input_flag(directory=True))
    p.add_argument("--mini-batch", action="store_true", help="train teacher and student in sampled mini-batches (the preset's fan-outs and batch sizes)")
    p.add_argument("--fan-out", default=None, help="override the teacher's fan-outs, comma-separated, input layer first (-1 = all neighbours)")
    p.add_argument("--batch-size", type=int, default=None, help="override the teacher and student batch sizes (--mini-batch)")
    p.add_argument("--memory-budget", type=float, default=None, help="GiB full-batch training may use (default: the memory available now)")
    p.add_argument("--teacher", default="gcn", choices=TEACHERS)
    p.add_argument("--method", default="ff-g2m", choices=METHODS + ("all",), help="student loss to train and save (default ff-g2m); 'all' saves every method")
    p.add_argument("--no-baselines", action="store_true", help="do not also train the plain MLP and GLNN students for the table")
    p.add_argument("--setting", default="tran", choices=SETTINGS)
    p.add_argument("--preset", default="ff-g2m", choices=PROTOCOLS, help="official configuration to use")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-rate", type=float, default=0.2, help="fraction of test nodes held out (ind/prod)")
    p.add_argument("--observed", default=None, choices=("all", "split"),
                   help="inductive observed graph: all non-held-out nodes (GLNN) or train+val+test only (FF-G2M code); default: the preset's")
    p.add_argument("--lamb", type=float, default=None, help="override the preset's lambda")
    p.add_argument("--tau", type=float, default=None, help="override the preset's HFD temperature")
    p.add_argument("--max-epochs", type=int, default=None, help="override teacher and student max epochs")
    p.add_argument("--nodes", type=int, default=CSBM_DEFAULTS["num_nodes"], help="CSBM nodes")
    p.add_argument("--features", type=int, default=CSBM_DEFAULTS["num_features"], help="CSBM feature dimension")
    p.add_argument("--degree", type=float, default=CSBM_DEFAULTS["avg_degree"], help="CSBM expected degree")
    p.add_argument("--csbm-lambda", type=float, default=CSBM_DEFAULTS["lam"], help="CSBM graph signal (negative: heterophilous)")
    p.add_argument("--csbm-mu", type=float, default=CSBM_DEFAULTS["mu"], help="CSBM feature signal")
    p.add_argument("--out", default="condense_out/g2m/student.pt", help="student artifact path", **output_flag())
    p.add_argument("--teacher-out", default=None, help="teacher artifact path (default: teacher.pt next to --out)", **output_flag())
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")
    add_checkpoint_flags(p, "epochs (teacher and students counted together)", "OUT.ckpt; one process only, not under torchrun")
    return p


def format_table(rows: list[tuple[str, dict[str, float]]]) -> str:
    """A fixed-width accuracy table (percent), one row per model."""
    keys = [k for k in SCORE_KEYS if any(k in s for _, s in rows)]
    lines = [f"{'model':<16}" + "".join(f"{k:>9}" for k in keys)]
    for name, scores in rows:
        lines.append(f"{name:<16}" + "".join(f"{100 * scores[k]:>9.2f}" if k in scores else f"{'-':>9}" for k in keys))
    return "\n".join(lines)


def _config(args: argparse.Namespace) -> Preset:
    """The preset for the requested dataset/teacher/protocol with command-line overrides applied."""
    preset = get_preset(args.dataset, args.teacher, args.preset)
    overrides = {k: v for k, v in (("lamb", args.lamb), ("tau", args.tau)) if v is not None}
    if args.max_epochs is not None:
        if args.max_epochs < 1:
            raise UserError(f"--max-epochs must be >= 1, got {args.max_epochs}")
        overrides["teacher"] = replace(preset.teacher, max_epochs=args.max_epochs)
        overrides["student"] = replace(preset.student, max_epochs=args.max_epochs)
    return replace(preset, **overrides)


def _mini_batch(args: argparse.Namespace, preset: Preset) -> MiniBatchConfig | None:
    """The mini-batch configuration with command-line overrides, or None for full batch."""
    if not args.mini_batch:
        if args.fan_out is not None or args.batch_size is not None:
            raise UserError("--fan-out and --batch-size apply to --mini-batch training only")
        return None
    cfg = preset.mini_batch_config()
    if args.fan_out is not None:
        cfg = replace(cfg, fan_outs=tuple(parse_list("--fan-out", args.fan_out, int)), source="--fan-out")
    if args.batch_size is not None:
        cfg = replace(cfg, batch_size=args.batch_size, student_batch_size=args.batch_size, source=cfg.source + "; --batch-size")
    return cfg.check(preset.teacher.num_layers)


def _distributed(args: argparse.Namespace, device):
    """Under ``torchrun`` (``WORLD_SIZE`` > 1) join the process group -- gloo on CPU, NCCL on CUDA
    (one GPU per ``LOCAL_RANK``) -- for data parallelism over node batches; returns ``(rank, device)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, device
    if not args.mini_batch:
        raise UserError(f"torchrun started {world} processes: data parallelism is over node batches, add --mini-batch")
    import torch.distributed as dist

    if device.type == "cuda":
        device = resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), device


@cli_main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in serve.SUBCOMMANDS:  # predict / export a saved student
        return serve.main(argv)
    args = _parser().parse_args(argv)
    try:
        device = resolve_device(args.device)
        preset = _config(args)
        mini_batch = _mini_batch(args, preset)
        rank, device = _distributed(args, device)
        if rank:  # the other ranks train their shards; rank 0 prints and saves
            args.no_progress = True
            sys.stdout = open(os.devnull, "w")
        budget = None if args.memory_budget is None else int(args.memory_budget * (1 << 30))
        csbm_kwargs = dict(num_nodes=args.nodes, num_features=args.features, avg_degree=args.degree, lam=args.csbm_lambda, mu=args.csbm_mu)
        if args.dataset == "csbm":
            check_memory(graph_bytes(args.nodes, args.features, args.degree, preset.teacher.hidden, preset.teacher.num_layers),
                         f"a CSBM graph of {args.nodes} nodes x {args.features} features, degree {args.degree:g}",
                         "lower --nodes, --features or --degree")  # fmt: skip
        saved_methods = METHODS if args.method == "all" else (args.method,)
        out = Path(args.out)
        teacher_out = Path(args.teacher_out) if args.teacher_out else out.with_name("teacher.pt")
        student_outs = {m: out if len(saved_methods) == 1 else out.with_name(f"{out.stem}_{m}{out.suffix}") for m in saved_methods}
        ckpt_path = checkpoint_path(args, out.with_name(out.name + ".ckpt")) if int(os.environ.get("WORLD_SIZE", "1")) <= 1 else None
        outputs = check_outputs({"--teacher-out" if args.teacher_out else "--teacher-out (default: teacher.pt next to --out)": teacher_out,
                                 **{"--out" if len(saved_methods) == 1 else f"--out ({m})": p for m, p in student_outs.items()},
                                 "--checkpoint": ckpt_path}, roots={"--root": args.root})  # fmt: skip
        data, labelled = load_task(args.dataset, args.root, csbm_kwargs=csbm_kwargs, split_seed=args.seed)
        if getattr(data, "summary", None):
            print(data.summary)
        split = make_task_split(data, labelled, args.setting, seed=args.seed, rate=args.split_rate, observed=args.observed or preset.observed)
        extra = () if args.no_baselines else tuple(m for m in BASELINES if m not in saved_methods)
        methods = tuple(m for m in METHODS if m in saved_methods + extra)  # the table's order
        sig = {"dataset": args.dataset, "data": fingerprint_tensors({"x": data.x, "y": data.y, "edge_index": data.edge_index}),
               "teacher": args.teacher, "methods": methods, "setting": args.setting, "split_rate": args.split_rate,
               "observed": args.observed, "preset": repr(preset), "mini_batch": repr(mini_batch), "seed": args.seed}  # fmt: skip
        ckpt = checkpointer_from_args(args, ckpt_path, sig)
        if rank == 0:
            lock_outputs(outputs.values(), outputs)
        start = time.perf_counter()
        result = run(data, split, args.teacher, preset, methods, seed=args.seed, device=device, progress=not args.no_progress,
                     mini_batch=mini_batch, memory_budget=budget, checkpoint=ckpt)  # fmt: skip
        elapsed = time.perf_counter() - start
        student = result.students[saved_methods[-1]][0]
        latency = None if mini_batch else {"teacher": inference_seconds(result.teacher_model, data), "mlp": inference_seconds(student, data)}
        meta = dict(dataset=args.dataset, setting=args.setting, seed=args.seed, preset=args.preset, versions=package_versions())
        if rank:
            return 0
        atomic_save(
            dict(format=TEACHER_FORMAT, model=args.teacher, in_dim=data.num_features, out_dim=int(data.y.max()) + 1,
                 model_kwargs=preset.teacher.model_kwargs(), state_dict=result.teacher_model.cpu().state_dict(),
                 logits=result.teacher.logits, scores=result.teacher.scores, **meta),
            teacher_out,
        )
        saved = []
        for method, (student, res) in result.students.items():
            if method not in saved_methods:
                continue
            path = student_outs[method]
            save_student(path, student.cpu(), model_kwargs=preset.student.model_kwargs(), class_names=result.serving["class_names"],
                         feature_preprocessing=result.serving["feature_preprocessing"], teacher_checksum=result.serving["teacher_checksum"],
                         method=method, teacher=args.teacher, scores=res.scores, lamb=preset.lamb, tau=preset.tau,
                         config=result.serving["preset"], **meta)  # fmt: skip
            saved.append(path)
        drop_default_checkpoint(args, ckpt)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = [(f"teacher:{args.teacher}", result.teacher.scores)] + [(m, r.scores) for m, (_, r) in result.students.items()]
    print(f"dataset={args.dataset} setting={args.setting} preset={args.preset} ({preset.source}) seed={args.seed} "
          f"lamb={preset.lamb} tau={preset.tau} time={elapsed:.1f}s  accuracy (%) at best validation:")
    print(format_table(rows))
    print(result.serving["training"])
    if latency is None:
        print("inference: the full-graph latency comparison is skipped in --mini-batch mode (the teacher needs layer-wise inference)")
    else:
        print(f"inference, all {data.num_nodes} nodes in one batch (median of 5, {device}): teacher {args.teacher.upper()} "
              f"{1000 * latency['teacher']:.2f} ms, MLP student {1000 * latency['mlp']:.2f} ms -> the MLP is "
              f"{latency['teacher'] / latency['mlp']:.1f}x faster (it needs no graph: single-node serving skips the neighbourhood fetch too)")
    print(f"saved teacher -> {teacher_out}")
    for path in saved:
        print(f"saved student -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
