"""Benchmark of the unroll engine: seconds and peak memory of one outer iteration versus N.

For every N in ``--steps``, mode (full / truncated(k) / constant_memory) and backend (func /
higher; higher has no constant-memory mode) one MTT-style outer iteration is timed: N inner SGD
steps of a ConvNet on a synthetic batch, the normalised parameter distance to a target, and the
gradient with respect to the images and the learning rate. The ratio column divides that time by
N ordinary training steps (forward, backward, ``optimizer.step``) of the same network on the same
batches.

Peak memory is measured with ``torch.profiler`` (``profile_memory=True``): every allocation and
free of tensor memory during the iteration is replayed in time order and the maximum of the
running total is reported, i.e. the peak of tensor memory allocated *during* the iteration on top
of what was alive before it (model, data). A separate run without the profiler gives the time.

    python -m experiments.bench_unroll                    # --scale cpu, a few minutes
    python -m experiments.bench_unroll --official-shape   # ConvNet-128, 100 images 1x28x28, N = 10/20/40/80
    python -m experiments.bench_unroll --scale paper      # ConvNet-128 on 3x32x32, IPC 10 (needs a GPU)

``--official-shape`` is the side-by-side setting of the official shape (func backend, full vs constant_memory).
Each cell runs in a fresh process, so one run gives both its time and its peak resident memory
(``ru_maxrss``; full mode at N = 40 peaks ~13.5 GB, so it is measured once, not twice as with the
profiler). Before a full-mode cell the memory it needs is extrapolated from the previous full cell
(linear in N); a cell that would not fit in 80 % of ``MemAvailable`` is skipped with the reason
printed (full mode at N = 80 needs ~24 GB).
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import json
import multiprocessing
import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from condense.nets import get_network
from condense.unroll import functional_loss, unroll_backward
from condense.safeio import CLIParser, check_outputs, cli_main, lock_outputs, output_flag
from condense.utils import UserError, atomic_write_text, make_generator, resolve_device, timed
from experiments import figures

__all__ = ["SCALES", "peak_memory_bytes", "run", "main"]


@dataclass(frozen=True)
class Scale:
    width: int
    channels: int
    image_size: int
    num_classes: int
    ipc: int
    steps: tuple[int, ...]
    truncate: int


SCALES = {
    "cpu": Scale(width=32, channels=1, image_size=28, num_classes=10, ipc=5, steps=(10, 20, 40, 80), truncate=10),
    "official": Scale(width=128, channels=1, image_size=28, num_classes=10, ipc=10, steps=(10, 20, 40, 80), truncate=10),
    "paper": Scale(width=128, channels=3, image_size=32, num_classes=10, ipc=10, steps=(10, 20, 40, 80), truncate=10),
}
CONFIGS = (("func", "full"), ("func", "truncated"), ("func", "constant_memory"), ("higher", "full"), ("higher", "truncated"))


def peak_memory_bytes(fn: Callable[[], object]) -> int:
    """Peak tensor memory allocated while ``fn()`` runs, above what was alive before (CPU profiler)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def _problem(scale: Scale, device: torch.device, seed: int):
    gen = make_generator(seed)
    net = get_network("convnet", scale.channels, scale.num_classes, scale.image_size, width=scale.width).to(device)
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    target = {k: (v + 0.01 * torch.randn(v.shape, generator=gen).to(device)) for k, v in params.items()}
    n = scale.num_classes * scale.ipc
    images = torch.randn(n, scale.channels, scale.image_size, scale.image_size, generator=gen).to(device).requires_grad_()
    labels = torch.arange(scale.num_classes, device=device).repeat_interleave(scale.ipc)
    return net, params, target, images, labels


def _outer_iteration(scale: Scale, problem, steps: int, backend: str, mode: str) -> Callable[[], object]:
    net, params, target, images, labels = problem
    lr = torch.tensor(0.01, device=images.device, requires_grad=True)
    denominator = sum(((params[k] - target[k]) ** 2).sum() for k in params)

    def outer(rec):
        return sum(((rec[steps][k] - target[k]) ** 2).sum() for k in target) / denominator

    def once():
        images.grad = lr.grad = None
        return unroll_backward(outer, functional_loss(net), params, lr, steps, lambda i: (images, labels), backend=backend, mode=mode,
                        truncate=min(scale.truncate, steps) if mode == "truncated" else None)  # fmt: skip

    return once


def _plain_training(problem, steps: int) -> Callable[[], object]:
    net, _, _, images, labels = problem
    x = images.detach()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def once():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), labels).backward()
            opt.step()

    return once


def _seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    return min(timed(fn, device) for _ in range(repeats))


def run(scale_name: str = "cpu", *, steps: Sequence[int] | None = None, configs: Sequence[tuple[str, str]] = CONFIGS,
        repeats: int = 1, device: str | torch.device | None = "cpu", seed: int = 0, progress: bool = True) -> list[dict]:  # fmt: skip
    """One row per (N, backend, mode): seconds, peak MB, and the ratio to N plain training steps."""
    if scale_name not in SCALES:
        raise UserError(f"unknown scale {scale_name!r}; choose from {', '.join(SCALES)}")
    scale, dev = SCALES[scale_name], resolve_device(device)
    problem = _problem(scale, dev, seed)
    _outer_iteration(scale, problem, 2, "func", "full")()  # warm-up (torch.func / allocator)
    rows = []
    for n in steps or scale.steps:
        plain = _seconds(_plain_training(problem, n), repeats, dev)
        for backend, mode in configs:
            fn = _outer_iteration(scale, problem, n, backend, mode)
            secs = _seconds(fn, repeats, dev)
            peak = peak_memory_bytes(fn)
            rows.append({"N": n, "backend": backend, "mode": mode, "seconds": secs, "peak_mb": peak / 2**20, "ratio": secs / plain})
            if progress:
                print(f"N={n:3d} {backend:6s} {mode:15s} {secs:7.2f}s {peak / 2**20:9.1f} MB  x{secs / plain:.1f}", file=sys.stderr)
    return rows


def _isolated_cell(scale_name: str, n: int, mode: str, seed: int, threads: int) -> dict:
    """One (N, mode) cell in this (fresh) process: seconds, peak RSS, and N plain steps' seconds."""
    torch.set_num_threads(threads)
    scale = SCALES[scale_name]
    problem = _problem(scale, torch.device("cpu"), seed)
    _outer_iteration(scale, problem, 2, "func", mode)()  # warm-up
    plain = _seconds(_plain_training(problem, n), 1, torch.device("cpu"))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    res = _outer_iteration(scale, problem, n, "func", mode)()
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"N": n, "backend": "func", "mode": mode, "seconds": secs, "cpu_seconds": cpu, "plain_seconds": plain,
            "ratio": secs / plain, "peak_rss_mb": peak / 2**20, "peak_mb": (peak - rss_before) / 2**20,
            "checkpoint_every": res.extra.get("checkpoint_every", "-"),
            "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}  # fmt: skip


def _mem_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_isolated(scale_name: str = "official", *, steps: Sequence[int] | None = None,
                 modes: Sequence[str] = ("full", "constant_memory"), seed: int = 0, threads: int = 1,
                 progress: bool = True) -> tuple[list[dict], list[str]]:  # fmt: skip
    """Every (N, mode) cell in its own spawned process; returns the rows and the skipped cells' reasons."""
    ctx = multiprocessing.get_context("spawn")
    rows, skipped = [], []
    full_per_step: float | None = None
    for n in steps or SCALES[scale_name].steps:
        for mode in modes:
            available = _mem_available_bytes()
            if mode == "full" and full_per_step is not None and available is not None and n * full_per_step > 0.8 * available:
                reason = (f"N={n} full skipped: needs ~{n * full_per_step / 2**30:.1f} GB (extrapolated from the previous "
                          f"full cell), {available / 2**30:.1f} GB available")  # fmt: skip
                skipped.append(reason)
                print(reason, file=sys.stderr)
                continue
            with ctx.Pool(1) as pool:
                row = pool.apply(_isolated_cell, (scale_name, n, mode, seed, threads))
            if mode == "full":
                full_per_step = row["peak_rss_mb"] * 2**20 / n
            rows.append(row)
            if progress:
                print(f"N={n:3d} {mode:15s} {row['seconds']:7.2f}s (CPU {row['cpu_seconds']:.2f}s)  peak RSS {row['peak_rss_mb']:8.1f} MB  "
                      f"x{row['ratio']:.1f} of N plain steps", file=sys.stderr)  # fmt: skip
    return rows, skipped


def isolated_markdown(rows: list[dict], skipped: list[str], scale_name: str) -> str:
    """Side-by-side table: full vs constant_memory seconds, their ratio, peak RSS per cell."""
    s = SCALES[scale_name]
    by = {(r["N"], r["mode"]): r for r in rows}
    lines = [
        f"ConvNet-{s.width} on {s.channels}x{s.image_size}x{s.image_size}, {s.num_classes * s.ipc} images per step "
        "(whole set), no augmentation, func backend; one fresh process per cell.",
        "",
        "| N | N plain steps s | full s (CPU s) peak RSS MB | constant_memory s (CPU s) peak RSS MB | checkpoint_every "
        "| constant / full (wall) | constant / full (CPU time) | load average (1 min) full; constant |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in sorted({r["N"] for r in rows}):
        f, c = by.get((n, "full")), by.get((n, "constant_memory"))
        cell = lambda r: "skipped" if r is None else f"{r['seconds']:.2f} ({r['cpu_seconds']:.2f}) {r['peak_rss_mb']:.0f}"  # noqa: E731
        load = lambda r: "-" if r is None or "load_avg_1min" not in r else "-".join(f"{x:.1f}" for x in r["load_avg_1min"])  # noqa: E731
        plain = (f or c)["plain_seconds"]
        ratio = f"{c['seconds'] / f['seconds']:.2f}" if f and c else "-"
        cpu_ratio = f"{c['cpu_seconds'] / f['cpu_seconds']:.2f}" if f and c else "-"
        every = c.get("checkpoint_every", "-") if c else "-"
        lines.append(f"| {n} | {plain:.2f} | {cell(f)} | {cell(c)} | {every} | {ratio} | {cpu_ratio} | {load(f)}; {load(c)} |")
    lines += [""] + [f"- {r}" for r in skipped]
    return "\n".join(lines)


def to_markdown(rows: list[dict], scale_name: str) -> str:
    s = SCALES[scale_name]
    lines = [
        f"ConvNet-{s.width} on {s.channels}x{s.image_size}x{s.image_size}, {s.num_classes * s.ipc} synthetic images per step, "
        f"truncated k = {s.truncate}.",
        "",
        "| N | backend | mode | s / outer iteration | peak MB | ratio to N plain steps |",
        "| ---: | --- | --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {r['N']} | {r['backend']} | {r['mode']} | {r['seconds']:.2f} | {r['peak_mb']:.1f} | {r['ratio']:.1f} |" for r in rows]
    cm = {r["N"]: r["peak_mb"] for r in rows if r["mode"] == "constant_memory"}
    if cm:
        lo, hi = min(cm), max(cm)
        lines += ["", f"constant-memory peak growth N={lo} -> N={hi}: x{cm[hi] / cm[lo]:.3f}"]
    return "\n".join(lines)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    parser = CLIParser(prog="python -m experiments.bench_unroll", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu", choices=sorted(SCALES))
    parser.add_argument("--official-shape", action="store_true",
                        help="the official shape: ConvNet-128, 100 images 1x28x28, N = 10/20/40/80, full vs "
                             "constant_memory, one process per cell (time and peak RSS)")
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="N values (default: the scale's 10 20 40 80)")
    parser.add_argument("--modes", nargs="+", default=["full", "constant_memory"], choices=["full", "constant_memory"],
                        help="--official-shape: the modes to measure (default both)")
    parser.add_argument("--repeats", type=int, default=1, help="timing repeats (the minimum is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the markdown table here", **output_flag())
    figures.add_flags(parser, "the rows", "timing", figure="the seconds/memory figure")
    args = parser.parse_args(argv)
    lock_outputs(check_outputs({"--out": args.out}).values())
    if args.figure_only:
        return figures.redraw("bench_unroll", args.json)
    try:
        if args.repeats < 1 or args.threads < 1 or any(n < 1 for n in args.steps or ()):
            raise UserError("--repeats, --threads and --steps must be >= 1")
        if args.official_shape and args.device != "cpu":
            raise UserError("--official-shape measures CPU time and resident memory; use --device cpu")
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        if args.official_shape:
            rows, skipped = run_isolated("official", steps=args.steps, modes=args.modes, seed=args.seed, threads=args.threads)
            table = isolated_markdown(rows, skipped, "official")
        else:
            rows = run(args.scale, steps=args.steps, repeats=args.repeats, device=args.device, seed=args.seed)
            table = to_markdown(rows, args.scale)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    text = table + f"\n\nwall time {wall:.0f} s, seed {args.seed}, threads {args.threads}\n"
    print(text)
    if args.out:
        atomic_write_text(text, args.out)
    if args.json:
        payload = {"scale": "official" if args.official_shape else args.scale, "seed": args.seed, "threads": args.threads,
                   "repeats": args.repeats, "wall_seconds": wall, "finished_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                   "argv": list(sys.argv[1:] if argv is None else argv), "rows": rows}  # fmt: skip
        atomic_write_text(json.dumps(payload, indent=1), args.json)
    return figures.finish("bench_unroll", args.json, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
