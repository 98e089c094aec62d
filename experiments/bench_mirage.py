"""Benchmark of Mirage distillation: decomposition + mining time and peak memory versus size and L.

For each number of graphs N (NCI1 graphs in a fixed random order, cycled when N exceeds the
dataset, or the embedded motif generator with ``--dataset motifs``) and each depth L, times
the two distillation phases with the fast WL coder, and -- up to ``--explicit-max`` graphs --
the explicit-tree reference coder (BFS trees + canonical strings, what the official code does in networkx/C++).  Peak
memory is the Python heap peak (``tracemalloc``, which sees numpy buffers and Python objects;
torch tensors are small here).  Timings on a shared 2-core machine are noisy.

    python -m experiments.bench_mirage                      # --scale cpu: N up to 4000, L 1..3
    python -m experiments.bench_mirage --scale paper        # N up to 32000 (cycled NCI1)
    python -m experiments.bench_mirage --selection 41000    # random/herding at 0.5 % / 5 % of the bytes

``--selection N``: times the equal-bytes baselines (:mod:`graphs.mirage.baselines`) on N cycled
graphs (ogbg-molhiv has ~41k) instead of the distillation phases.
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import shutil
import sys
import tempfile
import time
import tracemalloc
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from condense.safeio import CLIParser, cli_main, input_flag
from condense.utils import UserError, make_generator
from graphs.data.motifs import make_motif_dataset
from graphs.data.tu import load_tu
from graphs.data.graphsets import graphs_nbytes
from graphs.mirage.baselines import class_counts, herding_subset, random_subset
from graphs.mirage.distill import MirageConfig, mirage_distill

__all__ = ["SCALES", "measure", "measure_selection", "main"]

SCALES = {"cpu": (250, 500, 1000, 2000, 4000), "paper": (1000, 4000, 16000, 32000)}
DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# per-class supports as fractions of the class, close to the published NCI1 thresholds (440/570 of ~1640)
SUPPORT = (0.27, 0.35)


def measure(graphs, num_classes: int, config: MirageConfig) -> dict:
    """Seconds for decomposition and mining, total, and Python heap peak in MB.

    Time and memory come from two separate runs: tracing every allocation slows the
    allocation-heavy coders several-fold.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class without itemsets is fine for timing
        t0 = time.perf_counter()
        d = mirage_distill(graphs, num_classes, config, progress=False)
        total = time.perf_counter() - t0
        tracemalloc.start()
        mirage_distill(graphs, num_classes, config, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    m = d.meta
    return {"decompose_s": m["time_decompose_s"], "mine_s": m["time_mine_s"], "total_s": total,
            "peak_mb": peak / 2**20, "trees": m["unique_trees_total"], "itemsets": sum(m["itemsets_mined_per_class"])}


def measure_selection(graphs, fractions=(0.005, 0.05)) -> list[dict]:
    """Seconds of random and herding selection at each budget fraction of the graphs' bytes."""
    total = graphs_nbytes(graphs)
    rows = []
    for frac in fractions:
        for name, fn in (("random", lambda b: random_subset(graphs, b, seed=0)), ("herding", lambda b: herding_subset(graphs, b))):
            t0 = time.perf_counter()
            idx = fn(frac * total)
            rows.append({"method": name, "fraction": frac, "picked": len(idx), "per_class": class_counts(graphs, idx),
                         "seconds": time.perf_counter() - t0})
    return rows


def _pool(dataset: str, shared: Path, tmp: Path):
    if dataset == "motifs":
        ds = make_motif_dataset(2000, seed=0)
        return ds.graphs, ds.num_classes
    src = shared / "tu" / "NCI1"
    if not src.is_dir():
        raise UserError(f"NCI1 not found in {shared} (use --dataset motifs)")
    shutil.copytree(src, tmp / "NCI1")
    ds = load_tu("NCI1", tmp)
    return ds.graphs, ds.num_classes


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = CLIParser(prog="python -m experiments.bench_mirage", description=__doc__.split("\n")[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    p.add_argument("--dataset", choices=("NCI1", "motifs"), default="NCI1")
    p.add_argument("--hops", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--explicit-max", type=int, default=1000, help="largest N also timed with the explicit-tree coder")
    p.add_argument("--shared", type=Path, default=DEFAULT_SHARED, **input_flag(directory=True))
    p.add_argument("--selection", type=int, default=None, metavar="N", help="time random/herding selection on N graphs")
    args = p.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="mirage-bench-") as tmp:
            pool, num_classes = _pool(args.dataset, args.shared, Path(tmp))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    order = torch.randperm(len(pool), generator=make_generator(0)).tolist()  # NCI1 is sorted by class
    if args.selection:
        graphs = [pool[order[i % len(pool)]] for i in range(args.selection)]
        print("| N graphs | budget (% bytes) | method | graphs picked | per class | seconds |\n|---|---|---|---|---|---|")
        for r in measure_selection(graphs):
            print(f"| {args.selection} | {100 * r['fraction']:.1f} | {r['method']} | {r['picked']} | {r['per_class']} | {r['seconds']:.2f} |", flush=True)
        return 0
    print("| N graphs | L | coder | decompose s | mine s | total s | peak MB | unique trees | itemsets |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in SCALES[args.scale]:
        graphs = [pool[order[i % len(pool)]] for i in range(n)]
        for hops in args.hops:
            base = MirageConfig(hops=hops, support=SUPPORT)
            coders = ("wl", "trees") if n <= args.explicit_max else ("wl",)
            for coder in coders:
                r = measure(graphs, num_classes, replace(base, coder=coder))
                print(f"| {n} | {hops} | {coder} | {r['decompose_s']:.3f} | {r['mine_s']:.3f} | {r['total_s']:.3f} | "
                      f"{r['peak_mb']:.1f} | {r['trees']} | {r['itemsets']} |", flush=True)
    print("table printed above (stdout); no files written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
