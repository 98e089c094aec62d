"""Evaluation cost side by side: the old default, the protocol-true default, batched networks, bf16.

One process, one run per variant on the same sets and seeds (``dc`` protocol with DSA, ``num_evals``
ConvNet-128 networks, real images drawn at random per class as the set):

* ``old default`` - one network at a time, testing the whole test split every ``E // 10`` passes for
  the maximum-over-checkpoints column (``test_every=max(1, E // 10)``: what evaluation did before it
  became protocol-true);
* ``protocol sequential`` - one network at a time, tested once after the last pass (the ``dc`` protocol);
* ``batched`` - the networks trained together as one vmapped model (:mod:`condense.batched`);
* ``bf16`` - ``protocol sequential`` under bf16 autocast (bf16 autocast does not reach operations inside
  :func:`torch.func.vmap`, so the batched engine trains in float32 only; asked for both, evaluation
  trains one by one and says so).

Reported per variant: CPU seconds of this process (``time.process_time``), wall seconds, the final
accuracy (mean ± std over the networks) and the ratio to the old default. ``--test-size`` evaluates on
the first N test images and ``--epochs`` sets E, to fit a small machine; the table then also
extrapolates to the full scale (``--full-epochs`` passes, the whole test split) from the measured
costs of training and of one test pass.

    env OMP_NUM_THREADS=1 python -m experiments.bench_evaluate --root DATA/fashion_mnist \\
        --epochs 10 --test-size 1000 --out experiments/results/bench_evaluate.md
    python -m experiments.bench_evaluate --root DATA --device cuda --out bench_evaluate_cuda.md   # full scale on a GPU
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import dataclasses
import datetime
import platform
import subprocess
import sys
import time
from typing import Sequence

import torch

from condense.data import ImageDataset, load_dataset
from condense.evaluate import accuracy, evaluate_images
from condense.nets import get_network
from condense.safeio import CLIParser, cli_main, input_flag, output_flag, parse_list
from condense.utils import UserError, atomic_write_text, make_generator, resolve_device

__all__ = ["VARIANTS", "random_set", "bench", "to_markdown", "main"]

#: name -> evaluate_images keywords (``test_every="old"``: the old default, ``max(1, E // 10)``)
VARIANTS: dict[str, dict] = {
    "old default": {"batched": False, "test_every": "old", "test_batch_size": 1024},  # its test forwards: 1024 images
    "protocol sequential": {"batched": False},
    "batched": {"batched": True},
    "bf16": {"batched": False, "precision": "bf16"},
}


def random_set(dataset: ImageDataset, ipc: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``ipc`` real training images per class, drawn with ``seed``."""
    gen = make_generator(seed)
    idx = [c_idx[torch.randperm(len(c_idx), generator=gen)[:ipc]] for c in range(dataset.num_classes)
           for c_idx in [torch.nonzero(dataset.train_y == c)[:, 0]]]  # fmt: skip
    idx = torch.cat(idx)
    return dataset.train_x[idx], dataset.train_y[idx]


def bench(dataset: ImageDataset, ipcs: Sequence[int], variants: Sequence[str], *, epochs: int, num_evals: int, width: int,
          device: torch.device, seed: int, log=print) -> list[dict]:  # fmt: skip
    small = dataclasses.replace(dataset, test_x=dataset.test_x[:64], test_y=dataset.test_y[:64])
    for kw in VARIANTS.values():  # warm-up (first-call costs of every engine), not measured
        x, y = random_set(dataset, 1, seed)
        evaluate_images(x, y, small, models=("convnet",), num_evals=2, epochs=1, dsa=True, model_kwargs={"convnet": {"width": width}},
                        device=device, progress=False, **{**kw, "test_every": None})  # fmt: skip
    rows = []
    for ipc in ipcs:
        x, y = random_set(dataset, ipc, seed)
        for name in variants:
            kw = dict(VARIANTS[name])
            if kw.get("test_every") == "old":
                kw["test_every"] = max(1, epochs // 10)
            cpu, wall = time.process_time(), time.perf_counter()
            s = evaluate_images(x, y, dataset, models=("convnet",), num_evals=num_evals, epochs=epochs, dsa=True, protocol="dc",
                                model_kwargs={"convnet": {"width": width}}, device=device, seed=seed, progress=False, **kw)["convnet"]  # fmt: skip
            row = {"ipc": ipc, "variant": name, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
                   "accs": s.accs, "mean": s.mean, "std": s.std, "engine": s.engine, "test_every": s.test_every}  # fmt: skip
            rows.append(row)
            log(f"IPC {ipc} {name}: {row['cpu_s']:.1f} s CPU, {row['wall_s']:.1f} s wall, {100 * s.mean:.2f} ± {100 * s.std:.2f} %")
    return rows


def _tests(epochs: int, every: int) -> int:
    """Test passes of one network: every ``every`` passes (0-based, not the last) plus the final one."""
    return (len([ep for ep in range(epochs) if ep % every == 0]) if every else 0) + 1


def test_pass_seconds(dataset: ImageDataset, width: int, device: torch.device) -> float:
    """CPU seconds of one test pass of one ConvNet over ``dataset``'s test split (after a warm-up pass)."""
    net = get_network("convnet", dataset.channels, dataset.num_classes, dataset.image_size, width=width)
    accuracy(net, dataset.test_x[:256], dataset.test_y[:256], device=device)
    start = time.process_time()
    accuracy(net, dataset.test_x, dataset.test_y, device=device)
    return time.process_time() - start


def _extrapolate(r: dict, *, test_s: float, epochs: int, full_epochs: int, num_evals: int, test_scale: float) -> float:
    """Full-scale CPU seconds of one run: its training cost (the run minus its test passes at ``test_s``
    each) scaled to ``full_epochs`` passes, plus its test passes at full scale on the whole test split."""
    train = r["cpu_s"] - num_evals * _tests(epochs, r["test_every"]) * test_s
    full_every = max(1, full_epochs // 10) if r["test_every"] else 0
    return train * (full_epochs + 1) / (epochs + 1) + num_evals * _tests(full_epochs, full_every) * test_s * test_scale


def to_markdown(rows: list[dict], *, test_s: float, epochs: int, full_epochs: int, num_evals: int, test_size: int, full_test: int) -> str:
    lines = ["| IPC | variant | CPU s | wall s | final acc % (mean ± std) | CPU vs old default | full scale CPU s (extrapolated) | full-scale ratio |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    scale = dict(test_s=test_s, epochs=epochs, full_epochs=full_epochs, num_evals=num_evals, test_scale=full_test / test_size)
    for ipc in dict.fromkeys(r["ipc"] for r in rows):
        base = next((r for r in rows if r["ipc"] == ipc and r["variant"] == "old default"), None)
        for r in (r for r in rows if r["ipc"] == ipc):
            ratio = f"{base['cpu_s'] / r['cpu_s']:.2f}x" if base else "-"
            full = _extrapolate(r, **scale)
            fs = f"{full:.0f}"
            fr = f"{_extrapolate(base, **scale) / full:.2f}x" if base else "-"
            lines.append(f"| {ipc} | {r['variant']} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} "
                         f"| {ratio} | {fs} | {fr} |")  # fmt: skip
    lines.append("")
    lines.append("Per-network final accuracies (same seeds):")
    lines.append("")
    for r in rows:
        lines.append(f"- IPC {r['ipc']} {r['variant']} ({r['engine']}): " + ", ".join(f"{100 * a:.2f}" for a in r["accs"]))
    return "\n".join(lines)


def _machine() -> str:
    flags = open("/proc/cpuinfo").read() if platform.system() == "Linux" else ""
    bf16 = "AVX-512-BF16" if "avx512_bf16" in flags else ("AMX" if "amx_bf16" in flags else "no AVX-512-BF16/AMX (bf16 is emulated)")
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), {bf16}, torch {torch.__version__}"


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = CLIParser(prog="python -m experiments.bench_evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist", help="dataset (default: fashion_mnist)")
    p.add_argument("--root", default=None, help="directory holding the dataset's files", **input_flag(directory=True))
    p.add_argument("--ipcs", default="1,10", help="images per class, comma-separated (default: 1,10)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--epochs", type=int, default=1000, help="training passes E (default: 1000, dc with DSA)")
    p.add_argument("--full-epochs", type=int, default=1000, help="passes of the full-scale extrapolation (default: 1000)")
    p.add_argument("--num-evals", type=int, default=5, help="networks per variant (default: 5)")
    p.add_argument("--width", type=int, default=128, help="ConvNet width (default: 128)")
    p.add_argument("--test-size", type=int, default=None, help="test on the first N test images (default: all)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sets and networks (default: 0)")
    p.add_argument("--out", default=None, help="write the markdown report here", **output_flag())
    args = p.parse_args(argv)
    ipcs = parse_list("--ipcs", args.ipcs, int)
    variants = parse_list("--variants", args.variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    dataset = load_dataset(args.dataset, args.root)
    full_test = len(dataset.test_y)
    if args.test_size is not None:
        if not 1 <= args.test_size <= full_test:
            raise UserError(f"--test-size must be in 1..{full_test}, got {args.test_size}")
        dataset = dataclasses.replace(dataset, test_x=dataset.test_x[: args.test_size], test_y=dataset.test_y[: args.test_size])
    test_size = len(dataset.test_y)
    t0 = time.perf_counter()
    device = resolve_device(args.device)
    test_s = test_pass_seconds(dataset, args.width, device)
    rows = bench(dataset, ipcs, variants, epochs=args.epochs, num_evals=args.num_evals, width=args.width,
                 device=device, seed=args.seed, log=lambda m: print(m, file=sys.stderr, flush=True))  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    head = (f"`python -m experiments.bench_evaluate {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}, {_machine()}, device {args.device}.\n"
            f"{args.dataset}, ConvNet-{args.width}, {args.num_evals} networks, dc protocol with DSA, E = {args.epochs} passes, "
            f"test split {test_size} of {full_test} images; total wall {time.perf_counter() - t0:.0f} s. One test pass over "
            f"the {test_size} images: {test_s:.2f} s CPU (one network; the extrapolation's test cost, x{full_test / test_size:.0f} "
            f"for the whole split).\n\n")  # fmt: skip
    text = head + to_markdown(rows, test_s=test_s, epochs=args.epochs, full_epochs=args.full_epochs, num_evals=args.num_evals,
                              test_size=test_size, full_test=full_test) + "\n"  # fmt: skip
    print(text)
    if args.out:
        atomic_write_text(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
