"""Benchmark of distillation on torch.distributed: k = 1, 2, ... ranks of one thread each (or one GPU each).

For every rank count the script spawns that many processes (gloo on CPU, NCCL with ``--device
cuda``), which run the same cells in step:

* MTT and AST (``ASTConfig`` switches, ``init=real``) at N = 20 and 80 student steps, unroll modes
  ``full`` and ``constant_memory``, on digits resized to 32x32, IPC 2 (20 images, the whole set is
  each step's batch), ConvNet width 32, one expert trained once before the runs;
* MTT and AST at N = 20, ``full``, IPC 10 (100 images per student step: compute, not the step's fixed
  costs, dominates);
* DM and DataDAM at IPC 10 (ConvNet width 128, 32x32, published batch sizes 256 / 64).

Per cell: seconds of one outer iteration (``(t(1 + EXTRA iterations) - t(1 iteration)) / EXTRA``, so
set-up cancels; the fastest of ``REPEATS`` repetitions, after one warm-up run), as wall time and as the busiest rank's CPU time (with one thread per rank
and other jobs on the machine, CPU time is what k free cores would give; wall time is what this
machine gave),
the per-rank peak of tensor memory during one iteration (CPU: ``torch.profiler`` allocation replay,
as ``experiments.bench_unroll``; CUDA: ``max_memory_allocated``; the largest rank is reported) and
the communication volume: the bytes this rank hands to all-reduce calls per outer iteration (counted
by wrapping ``torch.distributed.all_reduce``; a ring all-reduce moves about ``2 (k-1)/k`` times that
per rank over the wire). Every rank must end with the same images (checked).

Usage::

    python -m experiments.bench_distributed --ranks 1 2 --out experiments/results/bench_distributed.md
    python -m experiments.bench_distributed --device cuda --ranks 1 2 4 8 --out results_gpu.md   # a GPU node
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from condense.data import load_dataset
from condense.distributed import DistContext, gather_object
from condense.experts import RECIPES, train_experts
from condense.methods import get_method
from condense.methods.mtt import ASTConfig, MTTConfig
from condense.safeio import CLIParser, cli_main, output_flag
from condense.utils import UserError, atomic_write_text, markdown_table

from .bench_unroll import peak_memory_bytes

__all__ = ["cells", "main"]

REPEATS, EXTRA = 2, 2  # per cell: REPEATS times, t(1 + EXTRA iterations) - t(1 iteration), divided by EXTRA; the fastest kept
TM = dict(expert_epochs=2, max_start_epoch=2, lr_img=100.0, lr_lr=1e-7, lr_teacher=0.01, width=32)


def cells(quick: bool) -> list[tuple[str, str, int, dict[str, Any]]]:
    """``(label, method, ipc, config kwargs)`` of every benchmarked cell."""
    steps = (4,) if quick else (20, 80)
    out = []
    for method, cls in (("mtt", MTTConfig), ("ast", ASTConfig)):
        extra = {"init": "real"} if cls is ASTConfig else {}
        for n in steps:
            for mode in ("full", "constant_memory"):
                out.append((f"{method.upper()} N={n} {mode}", method, 2, dict(TM, syn_steps=n, unroll_mode=mode, **extra)))
        # 100 images per student step: the compute of a step, not its fixed costs, dominates
        out.append((f"{method.upper()} N={steps[0]} full, IPC 10", method, 10, dict(TM, syn_steps=steps[0], unroll_mode="full", **extra)))
    width = 16 if quick else 128
    out.append(("DM IPC 10", "dm", 10, dict(width=width)))
    out.append(("DataDAM IPC 10", "datadam", 10, dict(width=width)))
    return out


class _CommCounter:
    """Bytes handed to ``dist.all_reduce`` (patched in for the benchmark's processes)."""

    def __init__(self) -> None:
        self.bytes = 0
        self._orig = dist.all_reduce

        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.bytes += tensor.numel() * tensor.element_size()
            return self._orig(tensor, *args, **kwargs)

        dist.all_reduce = counted


def _peak(fn: Callable[[], Any], device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    return peak_memory_bytes(fn)


def _worker(rank: int, world: int, port: int, device_type: str, experts: str, quick: bool, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))  # fmt: skip
    torch.set_num_threads(1)
    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    counter = _CommCounter()
    ctx = DistContext(rank, world)
    ds = load_dataset("digits", None, resize=32)
    rows = []
    for label, method, ipc, kwargs in cells(quick):
        spec = get_method(method)
        kw = dict(kwargs, experts=experts) if method in ("mtt", "ast") else kwargs

        def run(iterations: int):
            return spec.distill(ds, ipc, spec.config_cls(**dict(kw, iterations=iterations)), device=device, seed=0, progress=False)

        if not rows:
            run(1)  # warm-up: lazy initialisation of kernels and the process group

        def timed(iterations: int) -> tuple[float, float, int, Any]:
            dist.barrier()
            t0, c0, sent = time.perf_counter(), time.process_time(), counter.bytes
            s = run(iterations)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dist.barrier()  # the wall time of the slowest rank
            return time.perf_counter() - t0, time.process_time() - c0, counter.bytes - sent, s

        per_it = []  # (wall, cpu, bytes) of one outer iteration, from each repetition
        for _ in range(REPEATS):
            w1, c1, b1, _s = timed(1)
            w2, c2, b2, s = timed(1 + EXTRA)
            per_it.append(((w2 - w1) / EXTRA, (c2 - c1) / EXTRA, (b2 - b1) / EXTRA))
        secs, cpus, comm = min(p[0] for p in per_it), min(p[1] for p in per_it), per_it[0][2]
        cpu = gather_object(ctx, cpus)
        peak = _peak(lambda: run(1), device)
        same = torch.tensor([float(s.images.double().sum()), float(s.images.double().square().sum())])
        gathered = [torch.zeros(2, dtype=same.dtype) for _ in range(world)]
        dist.all_gather(gathered, same.to(device) if device.type == "cuda" else same)
        rows.append({"cell": label, "ranks": world, "seconds": secs, "cpu_seconds": max(cpu), "peak_mb": peak / 2**20,
                     "comm_mb": comm / 2**20, "ranks_agree": all(torch.equal(g.cpu(), gathered[0].cpu()) for g in gathered)})  # fmt: skip
        if rank == 0:
            print(f"k={world} {label:28s} {rows[-1]['seconds']:7.2f}s (CPU {rows[-1]['cpu_seconds']:.2f}s)  peak {rows[-1]['peak_mb']:8.1f} MB  "
                  f"all-reduce {rows[-1]['comm_mb']:7.2f} MB/it", file=sys.stderr, flush=True)  # fmt: skip
    peaks = gather_object(ctx, [r["peak_mb"] for r in rows])
    for i, r in enumerate(rows):
        r["peak_mb"] = max(p[i] for p in peaks)  # the largest rank
    if rank == 0:
        Path(out).write_text(json.dumps(rows))
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(ranks: list[int], device: str, quick: bool) -> list[dict[str, Any]]:
    """Spawn each rank count in turn; returns one row per (cell, ranks)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        ds = load_dataset("digits", None, resize=32)
        with torch.random.fork_rng(devices=[]):
            train_experts(ds, tmp, num_experts=1, epochs=TM["max_start_epoch"] + TM["expert_epochs"], recipe=RECIPES["mtt"],
                          model_kwargs={"width": TM["width"]}, seed=1, progress=False)  # fmt: skip
        for k in ranks:
            out = Path(tmp) / f"rows_{k}.json"
            torch.multiprocessing.spawn(_worker, args=(k, _free_port(), device, tmp, quick, str(out)), nprocs=k, join=True)
            rows += json.loads(out.read_text())
    return rows


def report(rows: list[dict[str, Any]], device: str, command: str) -> str:
    """Markdown: one row per cell, k-rank figures against the 1-rank ones."""
    base = {r["cell"]: r for r in rows if r["ranks"] == 1}
    table = []
    for r in rows:
        b = base.get(r["cell"])
        speed = f"{b['seconds'] / r['seconds']:.2f}x" if b else "-"
        cpu_speed = f"{b['cpu_seconds'] / r['cpu_seconds']:.2f}x" if b else "-"
        mem = f"{b['peak_mb'] / r['peak_mb']:.2f}x" if b and r["peak_mb"] > 0 else "-"
        table.append([r["cell"], r["ranks"], f"{r['seconds']:.2f}", speed, f"{r['cpu_seconds']:.2f}", cpu_speed, f"{r['peak_mb']:.1f}", mem, f"{r['comm_mb']:.2f}",
                      "yes" if r["ranks_agree"] else "NO"])  # fmt: skip
    head = ["cell", "ranks k", "wall s / outer it.", "wall throughput vs k=1", "CPU s (busiest rank)", "CPU throughput vs k=1",
            "peak MB per rank", "memory fall vs k=1",
            "all-reduce MB per rank per it.", "ranks agree"]  # fmt: skip
    return f"device: {device}, one thread per rank\n\ncommand: `{command}`\n\n" + markdown_table(head, table) + "\n"


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = CLIParser(prog="python -m experiments.bench_distributed", description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="rank counts to run (default: 1 2)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny cells (a smoke test, not a measurement)")
    p.add_argument("--out", default=None, help="markdown file to write (default: print)", **output_flag())
    args = p.parse_args(argv)
    if any(k < 1 for k in args.ranks):
        raise UserError("--ranks must be >= 1")
    if args.device == "cuda" and max(args.ranks) > torch.cuda.device_count():
        raise UserError(f"--ranks {max(args.ranks)} needs that many GPUs; {torch.cuda.device_count()} visible")
    rows = run(args.ranks, args.device, args.quick)
    text = report(rows, args.device, "python -m experiments.bench_distributed " + " ".join(argv if argv is not None else sys.argv[1:]))
    if args.out:
        atomic_write_text(text, args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
