"""Memory and speed of the on-disk uint8 data path (``condense.data``): not a timed test.

``python -m experiments.bench_data [--images 1000000] [--workdir /tmp/condense_bench_data]``
(run it alone on the machine: it times iterations and measures peak memory).

1. Writes ``--images`` random 32x32x3 uint8 images (labels ``i mod 10``) as an ``arrays`` ``.npz``
   (streamed into the zip member, never whole in memory) plus a 10,000-image test split.
2. In a fresh process each: builds the uint8 cache (the one-time decode cost per 10^5 images), then
   DM at IPC 10 (published config: ConvNet-128, 256 real images per class) for ``--dm-iterations``
   iterations, then MTT expert training (MTT recipe, batch 256, DSA) for ``--expert-batches`` batches
   of its first epoch (a wrapper stops the epoch there). Each reports its peak RSS (``ru_maxrss``:
   anonymous memory plus the cache pages it touched).
3. On a CIFAR-size set (50,000 + 10,000 images, the same generator) DM per-iteration time on the
   in-memory float tensors and on the uint8 cache read per batch, side by side in one process, after one
   warm-up iteration each; the two runs' images must be bit-identical.

Writes ``--out`` (markdown: command, date, commit, numbers) and deletes the generated data.
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from condense.safeio import CLIParser, cli_main, output_flag
from condense.utils import UserError, atomic_write_text, markdown_table

SIZE, CLASSES, TEST = 32, 10, 10_000


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_npz(path: Path, n: int, n_test: int = TEST, seed: int = 0, chunk: int = 50_000) -> None:
    """An ``arrays`` .npz of ``n`` random NHWC uint8 images, written member by member in chunks."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, count in (("x_train", n), ("x_test", n_test)):
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": (count, SIZE, SIZE, 3)})
                for i in range(0, count, chunk):
                    fh.write(rng.integers(0, 256, (min(chunk, count - i), SIZE, SIZE, 3), dtype=np.uint8).tobytes())
        for key, count in (("y_train", n), ("y_test", n_test)):
            with zf.open(f"{key}.npy", "w") as fh:
                np.lib.format.write_array(fh, np.arange(count, dtype=np.int64) % CLASSES)


class _StopAfter:
    """Tensor-like wrapper of ``train_x`` that ends an expert epoch after ``n`` batch reads."""

    class Done(Exception):
        pass

    def __init__(self, x: Any, n: int) -> None:
        self.x, self.left, self.shape = x, n, x.shape

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx: Any):
        if self.left == 0:
            raise self.Done
        self.left -= 1
        return self.x[idx]


# ------------------------------------------------------------------------------------------ phases (child processes)
def phase_cache(npz: Path, cache: Path) -> dict[str, Any]:
    from condense.data import load_dataset

    t0 = time.perf_counter()
    ds = load_dataset("arrays", npz, cache_dir=cache)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    load_dataset("arrays", npz, cache_dir=cache)
    return {"seconds": seconds, "reopen_seconds": time.perf_counter() - t1, "images": len(ds.train_y) + len(ds.test_y),
            "storage": ds.describe().get("storage"), "cache_bytes": Path(ds.describe()["cache"]).stat().st_size, "rss_mib": _peak_rss_mib()}  # fmt: skip


def phase_dm(npz: Path, cache: Path, iterations: int) -> dict[str, Any]:
    import torch

    from condense.data import load_dataset
    from condense.methods import get_method

    ds = load_dataset("arrays", npz, cache_dir=cache)
    spec = get_method("dm")
    t0 = time.perf_counter()
    synset = spec.distill(ds, 10, spec.config_cls(iterations=iterations), seed=0, progress=False)
    assert torch.isfinite(synset.images).all()
    return {"seconds": time.perf_counter() - t0, "iterations": iterations, "storage": ds.describe().get("storage"), "rss_mib": _peak_rss_mib()}


def phase_expert(npz: Path, cache: Path, batches: int) -> dict[str, Any]:
    from condense.data import load_dataset
    from condense.experts import RECIPES, train_expert

    ds = load_dataset("arrays", npz, cache_dir=cache)
    ds.train_x = _StopAfter(ds.train_x, batches)
    t0 = time.perf_counter()
    try:
        train_expert(ds, RECIPES["mtt"], 1, seed=0)
    except _StopAfter.Done:
        pass
    return {"seconds": time.perf_counter() - t0, "batches": batches, "rss_mib": _peak_rss_mib()}


def phase_ratio(npz: Path, cache: Path, iterations: int) -> dict[str, Any]:
    """DM per-iteration time, in-memory vs memory-mapped, interleaved in one process; results must agree bit for bit."""
    import torch

    from condense.data import load_dataset
    from condense.methods import get_method

    spec = get_method("dm")
    sets = {s: load_dataset("arrays", npz, cache_dir=cache, storage=s) for s in ("memory", "memmap")}
    times: dict[str, list[float]] = {s: [] for s in sets}
    images = {}
    for rep in range(iterations + 1):  # rep 0 is the warm-up
        for s, ds in sets.items():
            t0 = time.perf_counter()
            out = spec.distill(ds, 10, spec.config_cls(iterations=1), seed=rep, progress=False)
            if rep:
                times[s].append(time.perf_counter() - t0)
            images[s] = out.images
    assert torch.equal(images["memory"], images["memmap"]), "DM on the cache differs from in-memory DM"
    med = {s: float(np.median(t)) for s, t in times.items()}
    return {"memory_s": med["memory"], "memmap_s": med["memmap"], "ratio": med["memmap"] / med["memory"], "iterations": iterations,
            "all": times, "bit_identical": True}  # fmt: skip


PHASES = {"cache": phase_cache, "dm": phase_dm, "expert": phase_expert, "ratio": phase_ratio}


def _child(phase: str, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "experiments.bench_data", "--phase", phase, *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise UserError(f"phase {phase} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(args: argparse.Namespace) -> str:
    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        big, small, cache = work / "big.npz", work / "cifar_size.npz", work / "cache"
        t0 = time.perf_counter()
        write_npz(big, args.images)
        gen_s = time.perf_counter() - t0
        print(f"generated {args.images} images ({big.stat().st_size / 2**30:.2f} GiB) in {gen_s:.0f}s", file=sys.stderr, flush=True)
        res = {"cache": _child("cache", str(big), str(cache))}
        print(f"cache: {res['cache']}", file=sys.stderr, flush=True)
        res["dm"] = _child("dm", str(big), str(cache), str(args.dm_iterations))
        print(f"dm: {res['dm']}", file=sys.stderr, flush=True)
        res["expert"] = _child("expert", str(big), str(cache), str(args.expert_batches))
        print(f"expert: {res['expert']}", file=sys.stderr, flush=True)
        big.unlink()
        shutil.rmtree(cache)
        write_npz(small, args.ratio_images)
        res["ratio"] = _child("ratio", str(small), str(cache), str(args.ratio_iterations))
        print(f"ratio: {res['ratio']}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(args, res, gen_s)


def report(args: argparse.Namespace, res: dict[str, Any], gen_s: float) -> str:
    n = args.images + TEST
    float_gib = n * 3 * SIZE * SIZE * 4 / 2**30
    c, d, e, r = res["cache"], res["dm"], res["expert"], res["ratio"]
    per_1e5 = c["seconds"] / n * 1e5
    rows = [
        ["build the uint8 cache from the .npz (once)", f"{c['seconds']:.1f} s ({per_1e5:.2f} s per 10^5 images)", f"{c['rss_mib']:.0f}"],
        ["reopen the cache (fingerprint check, memory map)", f"{c['reopen_seconds']:.2f} s", "(same process)"],
        [f"DM, IPC 10, {d['iterations']} iterations (ConvNet-128, 256 real/class)", f"{d['seconds']:.1f} s", f"{d['rss_mib']:.0f}"],
        [f"MTT expert training, {e['batches']} batches of 256 (DSA)", f"{e['seconds']:.1f} s", f"{e['rss_mib']:.0f}"],
    ]
    thread = os.environ.get("OMP_NUM_THREADS", "default")
    cmd = (f"env OMP_NUM_THREADS={thread} " if thread != "default" else "") + "python -m experiments.bench_data " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in (("images", args.images), ("dm_iterations", args.dm_iterations),
                                                    ("expert_batches", args.expert_batches), ("ratio_images", args.ratio_images),
                                                    ("ratio_iterations", args.ratio_iterations)))  # fmt: skip
    lines = [
        "# Image data read per batch from a uint8 cache: flat memory at 10^6 images",
        "",
        f"Command: `{cmd}`  ",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, commit {_commit()}, {os.cpu_count()} CPU cores "
        f"(OMP_NUM_THREADS={thread}), CPU only.",
        "",
        f"## {args.images:,} random 32x32x3 images (+{TEST:,} test) in the `arrays` layout",
        "",
        f"The `.npz` is {args.images * 3 * SIZE * SIZE / 2**30:.2f} GiB of uint8; as float32 tensors (the in-memory path) the two splits "
        f"would take {float_gib:.1f} GiB. `load_dataset` keeps them in the uint8 cache and reads each batch's rows (`storage=auto`: above 2 GiB of float32). "
        f"Each row runs in a fresh process; peak RSS is `ru_maxrss` (anonymous memory plus the cache pages it touched). "
        f"Generating the file took {gen_s:.0f} s (not part of the library).",
        "",
        markdown_table(["step", "wall time", "peak RSS (MiB)"], rows),
        "",
        f"Target: peak RSS below 2 GiB (2048 MiB) in every step: "
        f"{'met' if max(c['rss_mib'], d['rss_mib'], e['rss_mib']) < 2048 else 'NOT met'} "
        f"(max {max(c['rss_mib'], d['rss_mib'], e['rss_mib']):.0f} MiB).",
        "",
        f"## CIFAR-size set ({args.ratio_images:,} + {TEST:,} images): in-memory vs the uint8 cache, side by side",
        "",
        f"DM (IPC 10, ConvNet-128, 256 real images per class), one iteration per run, {r['iterations']} runs per storage after one "
        "warm-up each, interleaved in one process; median wall time per iteration. Both storages produce bit-identical images.",
        "",
        markdown_table(["storage", "s / iteration (median)"], [["in-memory float32", f"{r['memory_s']:.3f}"], ["uint8 cache, rows read per batch", f"{r['memmap_s']:.3f}"]]),
        "",
        f"Ratio cache / in-memory: **{r['ratio']:.3f}** (target: within 1.2): {'met' if r['ratio'] <= 1.2 else 'NOT met'}.",
        "",
    ]
    return "\n".join(lines)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = CLIParser(prog="python -m experiments.bench_data", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1_000_000, help="training images of the big set (default: 1000000)")
    p.add_argument("--dm-iterations", type=int, default=3, help="DM iterations on the big set (default: 3)")
    p.add_argument("--expert-batches", type=int, default=20, help="expert training batches on the big set (default: 20)")
    p.add_argument("--ratio-images", type=int, default=50_000, help="training images of the CIFAR-size set (default: 50000)")
    p.add_argument("--ratio-iterations", type=int, default=5, help="timed DM iterations per storage on the CIFAR-size set (default: 5)")
    p.add_argument("--workdir", default="/tmp/condense_bench_data", help="generated data goes here and is deleted afterwards", **output_flag(directory=True))
    p.add_argument("--out", default="experiments/results/bench_data.md", help="markdown report", **output_flag(replaces_when="phase"))  # phase children never write it
    p.add_argument("--phase", choices=sorted(PHASES), default=None, help=argparse.SUPPRESS)
    p.add_argument("phase_args", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        a = args.phase_args
        fn = PHASES[args.phase]
        res = fn(Path(a[0]), Path(a[1])) if args.phase == "cache" else fn(Path(a[0]), Path(a[1]), int(a[2]))
        print(json.dumps(res))
        return 0
    if args.images < 1000:
        raise UserError(f"--images must be >= 1000, got {args.images}")
    text = run(args)
    atomic_write_text(text, args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
