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
    python -m experiments.bench_unroll --scale paper      # ConvNet-128 on 3x32x32, IPC 10 (needs a GPU)
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from condense.nets import get_network
from condense.unroll import functional_loss, unroll_backward
from condense.safeio import CLIParser, check_outputs, cli_main, lock_outputs
from condense.utils import UserError, atomic_write_text, make_generator, resolve_device

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
        unroll_backward(outer, functional_loss(net), params, lr, steps, lambda i: (images, labels), backend=backend, mode=mode,
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


def _seconds(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


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
        plain = _seconds(_plain_training(problem, n), repeats)
        for backend, mode in configs:
            fn = _outer_iteration(scale, problem, n, backend, mode)
            secs = _seconds(fn, repeats)
            peak = peak_memory_bytes(fn)
            rows.append({"N": n, "backend": backend, "mode": mode, "seconds": secs, "peak_mb": peak / 2**20, "ratio": secs / plain})
            if progress:
                print(f"N={n:3d} {backend:6s} {mode:15s} {secs:7.2f}s {peak / 2**20:9.1f} MB  x{secs / plain:.1f}", file=sys.stderr)
    return rows


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
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="N values (default: the scale's 10 20 40 80)")
    parser.add_argument("--repeats", type=int, default=1, help="timing repeats (the minimum is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    lock_outputs(check_outputs({"--out": args.out}).values())
    try:
        if args.repeats < 1 or args.threads < 1 or any(n < 1 for n in args.steps or ()):
            raise UserError("--repeats, --threads and --steps must be >= 1")
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        rows = run(args.scale, steps=args.steps, repeats=args.repeats, device=args.device, seed=args.seed)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = to_markdown(rows, args.scale) + f"\n\nwall time {time.perf_counter() - t0:.0f} s, seed {args.seed}, threads {args.threads}\n"
    print(text)
    if args.out:
        atomic_write_text(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
