"""Cost of one distillation iteration: DM, DataDAM, DC and DSA at IPC 1 / 10 / 50.

One *iteration* is one fresh random network: a single image update for DM and DataDAM, and
``outer_loop`` image updates with ``inner_loop`` epochs of network training in between for DC/DSA
(official ``get_loops``). Seconds per iteration = ``(t(1 + n iterations) - t(1 iteration)) / n`` of
the real ``distill`` functions, so set-up (initialisation, data) cancels; the same difference of
process CPU time (user + sys) is reported too - with one thread it is the work done, the better
comparison on a shared, loaded machine. Peak memory = peak tensor
memory allocated during a one-iteration run above what was alive before (``torch.profiler``
replay, :func:`experiments.bench_unroll.peak_memory_bytes`). DM and DataDAM use the same real
batch per class (``--batch-real``) so that their costs are comparable.

    python -m experiments.bench_matching                  # digits, ConvNet-32, minutes on a CPU
    python -m experiments.bench_matching --scale paper    # 3x32x32 CIFAR-shaped data, ConvNet-128 (GPU)
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from condense.data import ImageDataset, load_dataset
from condense.methods import get_method
from condense.safeio import CLIParser, cli_main
from condense.utils import UserError, atomic_write_text, make_generator, markdown_table, resolve_device, synchronize
from experiments import figures
from experiments.bench_unroll import peak_memory_bytes

__all__ = ["BenchScale", "SCALES", "random_dataset", "bench_method", "main"]

METHODS = ("dm", "datadam", "datadam_per_class", "dc", "dsa")
# Benchmark rows that run a registered method with extra switches.
VARIANTS = {"datadam_per_class": ("datadam", {"class_by_class": True})}


@dataclass(frozen=True)
class BenchScale:
    dataset: str  # "digits" or "random:<channels>x<size>" (CIFAR-shaped random tensors)
    width: int
    batch_real: int
    ipcs: tuple[int, ...]
    repeats: dict[str, int]  # timed iterations per method


SCALES = {
    "cpu": BenchScale("digits", 32, 64, (1, 10, 50), {"dm": 5, "datadam": 5, "datadam_per_class": 5, "dc": 1, "dsa": 1}),
    "paper": BenchScale("random:3x32", 128, 256, (1, 10, 50), {"dm": 10, "datadam": 10, "datadam_per_class": 10, "dc": 2, "dsa": 2}),
}


def random_dataset(channels: int, size: int, num_classes: int = 10, per_class: int = 500, seed: int = 0) -> ImageDataset:
    """A standard-normal dataset of the given shape (timing needs no real pixels)."""
    gen = make_generator(seed)
    n = num_classes * per_class
    x = torch.randn(n, channels, size, size, generator=gen)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    return ImageDataset(f"random{channels}x{size}", x, y, x[:10], y[:10], num_classes, (0.0,) * channels, (1.0,) * channels)


def _dataset(spec: str) -> ImageDataset:
    if spec.startswith("random:"):
        c, s = spec.split(":", 1)[1].split("x")
        return random_dataset(int(c), int(s))
    return load_dataset(spec)


def bench_method(method: str, dataset: ImageDataset, ipc: int, *, width: int, batch_real: int, repeats: int,
                 device: torch.device) -> dict:  # fmt: skip
    """``{"seconds": per iteration, "peak_mb": peak tensor memory of a 1-iteration run}``."""
    name, switches = VARIANTS.get(method, (method, {}))
    spec = get_method(name)
    base = spec.config_cls(width=width, batch_real=batch_real, **switches)

    def run(iterations: int) -> tuple[float, float]:
        cfg = dataclasses.replace(base, iterations=iterations)
        synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        spec.distill(dataset, ipc, cfg, device=device, seed=0, progress=False)
        synchronize(device)
        return time.perf_counter() - t0, time.process_time() - c0

    peak = peak_memory_bytes(lambda: run(1))  # also the warm-up
    (t1, c1), (tn, cn) = run(1), run(1 + repeats)
    return {"seconds": max(tn - t1, 0.0) / repeats, "cpu_seconds": max(cn - c1, 0.0) / repeats, "peak_mb": peak / 2**20}


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = CLIParser(prog="python -m experiments.bench_matching", description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="cpu", choices=SCALES, help="cpu (default) or paper")
    p.add_argument("--ipcs", default=None, help="comma-separated IPCs (default: 1,10,50)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--repeats", type=int, default=None, help="timed iterations per method (default: by scale)")
    p.add_argument("--width", type=int, default=None, help="ConvNet width (default: by scale)")
    p.add_argument("--batch-real", type=int, default=None, help="real images per class (default: by scale)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    figures.add_flags(p, "the measurements", "timing", figure="the seconds/memory figure")
    args = p.parse_args(argv)
    if args.figure_only:
        return figures.redraw("bench_matching", args.json)
    try:
        device = resolve_device(args.device)
        scale = SCALES[args.scale]
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        bad = [m for m in methods if m not in METHODS]
        if bad or not methods:
            raise UserError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
        try:
            ipcs = tuple(int(i) for i in args.ipcs.split(",")) if args.ipcs else scale.ipcs
        except ValueError as exc:
            raise UserError(f"--ipcs must be comma-separated integers, got {args.ipcs!r}") from exc
        if args.repeats is not None and args.repeats < 1:
            raise UserError(f"--repeats must be >= 1, got {args.repeats}")
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        for flag in ("width", "batch_real"):
            if getattr(args, flag) is not None:
                if getattr(args, flag) < 1:
                    raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
                scale = dataclasses.replace(scale, **{flag: getattr(args, flag)})
        torch.set_num_threads(args.threads)
        dataset = _dataset(scale.dataset)
        rows, records, start = [], [], time.perf_counter()
        for ipc in ipcs:
            res = {}
            for m in methods:
                reps = args.repeats or scale.repeats[m]
                res[m] = bench_method(m, dataset, ipc, width=scale.width, batch_real=scale.batch_real, repeats=reps, device=device)
                print(f"ipc={ipc} {m}: {res[m]['seconds']:.3f} s/it (CPU {res[m]['cpu_seconds']:.3f} s/it), peak {res[m]['peak_mb']:.1f} MB", file=sys.stderr, flush=True)
            for m in methods:
                ratios = [f"{res[m][k] / res['dm'][k]:.2f}" if "dm" in res and res["dm"][k] > 0 else "-" for k in ("seconds", "cpu_seconds")]
                rows.append([ipc, m, f"{res[m]['seconds']:.3f}", f"{res[m]['cpu_seconds']:.3f}", *ratios, f"{res[m]['peak_mb']:.1f}"])
                records.append({"ipc": ipc, "method": m, **res[m]})
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(["IPC", "method", "s / iteration", "CPU s / iteration", "time / DM", "CPU time / DM", "peak MB"], rows))
    print(f"\nscale={args.scale} ({scale.dataset}, ConvNet-{scale.width}, real batch {scale.batch_real}/class), "
          f"threads={args.threads}, wall={time.perf_counter() - start:.0f}s; shared CPU, timings are noisy")  # fmt: skip
    if args.json:
        payload = {"scale": args.scale, "bench_scale": dataclasses.asdict(scale), "threads": args.threads,
                   "wall_seconds": time.perf_counter() - start, "rows": records}  # fmt: skip
        atomic_write_text(json.dumps(payload, indent=1), args.json)
    return figures.finish("bench_matching", args.json)


if __name__ == "__main__":
    sys.exit(main())
