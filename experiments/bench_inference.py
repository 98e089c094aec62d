"""Inference throughput: graph-free MLP student vs GNN teachers on CSBM graphs of growing size.

Two regimes, as in GLNN Section 5.5 / Figure 1:

* **full graph** - logits for every node in one batch: ``MLP(X)`` vs ``GNN(X, edge_index)``.
* **single node** - one node at a time, as in online serving: the GNN first fetches the node's
  L-hop neighbourhood (``torch_geometric.utils.k_hop_subgraph`` on the edge list, L = number of
  layers) and runs on that subgraph; the MLP reads the node's feature row only.

Throughput is nodes per second (median over repeats for full graph; total over ``--queries``
random nodes for single node). Weights are untrained (timing does not depend on their values); all
models have the same depth and width. Timings on a shared CPU are noisy.

**Serving latency** (the second table): milliseconds per request of ``B`` random nodes (``B = 1``:
single node; ``--batch-sizes``), median over requests. The student is served as deployed: the
``torch.export`` program that ``python -m graphs.g2m export`` writes (:func:`graphs.g2m.serve.export_student`),
called on the requested rows of the feature matrix (the eager MLP beside it). The teacher first
fetches the requested nodes' complete L-hop neighbourhood from a CSR index built once beforehand
(:func:`graphs.g2m.sampling.sample_blocks` with every neighbour, as DGL's samplers do for GLNN's
timing, Section 5.5), gathers those nodes' features and runs on the blocks
(``forward_blocks``); fetch and forward are timed separately.

    python -m experiments.bench_inference [--scale cpu|paper]

``--scale cpu`` (default): 10^4, 3*10^4, 10^5, 3*10^5 nodes, 100 single-node queries.
``--scale paper``: 10^4, 10^5, 10^6 nodes, 1000 queries.
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch_geometric.utils import k_hop_subgraph

from condense.safeio import CLIParser, cli_main
from condense.utils import UserError, atomic_write_text, make_generator, resolve_device, timed
from experiments import figures
from graphs.data.csbm import csbm
from graphs.g2m.sampling import CSR, sample_blocks
from graphs.g2m.serve import ServedStudent, export_student, load_exported
from graphs.models.node import build_node_model

SCALES = {
    "cpu": dict(sizes=(10_000, 30_000, 100_000, 300_000), queries=100, repeats=3),
    "paper": dict(sizes=(10_000, 100_000, 1_000_000), queries=1000, repeats=5),
}


def _seconds(fn, repeats: int, device: torch.device) -> float:
    """Median wall seconds of ``fn()``, the device synchronised before each clock read (CUDA is asynchronous)."""
    return statistics.median(timed(fn, device) for _ in range(repeats))


@torch.no_grad()
def full_graph_rate(model, x, edge_index, repeats: int) -> float:
    """Nodes per second when predicting every node at once."""
    model(x, edge_index)  # warm-up
    return x.size(0) / _seconds(lambda: model(x, edge_index), repeats, x.device)


@torch.no_grad()
def single_node_rate(model, x, edge_index, nodes: torch.Tensor, hops: int) -> float:
    """Nodes per second when predicting one node at a time (GNNs fetch their ``hops``-hop subgraph)."""
    n = x.size(0)

    def one(v: int) -> None:
        if model.uses_graph:
            subset, ei, mapping, _ = k_hop_subgraph(v, hops, edge_index, relabel_nodes=True, num_nodes=n)
            model(x[subset], ei)[mapping]
        else:
            model(x[v : v + 1])

    one(int(nodes[0]))  # warm-up
    return len(nodes) / timed(lambda: [one(v) for v in nodes.tolist()], x.device)


def exported_student(features: int, classes: int, hidden: int, layers: int, workdir: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(eager MLP, torch.export program)`` of an untrained student, exported and loaded back as
    ``python -m graphs.g2m export`` does (no feature preprocessing)."""
    mlp = build_node_model("mlp", features, classes, hidden=hidden, num_layers=layers).eval()
    student = ServedStudent(mlp, "none", {"in_dim": features, "out_dim": classes, "class_names": [str(c) for c in range(classes)]})
    export_student(student, workdir / "student.pt2")
    return mlp, load_exported(workdir / "student.pt2")[0]


@torch.no_grad()
def serving_latency(program, teacher, x: torch.Tensor, csr: CSR, batches: list[torch.Tensor], hops: int) -> dict:
    """Median ms per request for the exported student and for the teacher (CSR neighbourhood fetch + forward)."""
    scratch = torch.full((csr.num_nodes,), -1, dtype=torch.long)
    fetched: list = []

    def fetch(b):
        fetched.append(sample_blocks(csr, b, [-1] * hops, None, scratch))

    def forward():
        blocks = fetched.pop()
        teacher.forward_blocks(x[blocks[0].nodes], blocks)

    program(x[batches[0]]), fetch(batches[0]), forward()  # warm-up
    student_s, fetch_s, forward_s = [], [], []
    for b in batches:
        student_s.append(timed(lambda: program(x[b]), x.device))
        fetch_s.append(timed(lambda: fetch(b), x.device))
        forward_s.append(timed(forward, x.device))
    ms = lambda v: 1000 * statistics.median(v)  # noqa: E731
    return dict(student=ms(student_s), fetch=ms(fetch_s), forward=ms(forward_s), teacher=ms([a + b for a, b in zip(fetch_s, forward_s)]))


def bench(sizes, *, queries: int, repeats: int, teachers=("gcn", "sage", "gat"), features: int = 128, hidden: int = 128,
          layers: int = 2, degree: float = 10.0, seed: int = 0, device=None, log=print, batch_sizes=(), workdir: Path | None = None,
          serving: list | None = None) -> list[dict]:  # fmt: skip
    """Throughput rows (returned); with ``batch_sizes`` also serving-latency rows appended to ``serving``
    (the exported student is written under ``workdir``)."""
    device = resolve_device(device)
    rows = []
    if batch_sizes:
        mlp, program = exported_student(features, 2, hidden, layers, workdir)
    for n in sizes:
        data = csbm(n, features, avg_degree=degree, lam=2.0, mu=4.0, seed=seed)
        x, ei = data.x.to(device), data.edge_index.to(device)
        nodes = torch.randint(0, n, (queries,), generator=make_generator(seed))
        models = {name: build_node_model(name, features, 2, hidden=hidden, num_layers=layers).to(device).eval() for name in ("mlp",) + tuple(teachers)}
        full = {name: full_graph_rate(m, x, ei, repeats) for name, m in models.items()}
        single = {name: single_node_rate(m, x, ei, nodes, layers) for name, m in models.items()}
        row = dict(nodes=n, edges=ei.size(1), full=full, single=single)
        rows.append(row)
        log(f"n={n:>9,d}  full " + " ".join(f"{k}={v:,.0f}/s" for k, v in full.items()) + "  single " + " ".join(f"{k}={v:,.0f}/s" for k, v in single.items()))
        if batch_sizes:
            csr = CSR.from_edge_index(data.edge_index, n)
            xc = data.x
            for size in batch_sizes:
                gen = make_generator(seed + size)
                batches = [torch.randint(0, n, (size,), generator=gen) for _ in range(max(10, queries // size))]
                eager = statistics.median(timed(lambda b=b: mlp(xc[b]), torch.device("cpu")) for b in batches) * 1000
                for t in teachers:
                    lat = serving_latency(program, models[t].cpu(), xc, csr, batches, layers)
                    serving.append(dict(nodes=n, batch=size, teacher=t, requests=len(batches), student_eager_ms=eager,
                                        student_ms=lat["student"], teacher_ms=lat["teacher"], fetch_ms=lat["fetch"], forward_ms=lat["forward"]))
                    log(f"n={n:>9,d}  batch {size:>5d}  exported student {lat['student']:.3f} ms  {t} {lat['teacher']:.3f} ms "
                        f"(fetch {lat['fetch']:.3f} + forward {lat['forward']:.3f})")
    return rows


def serving_markdown(rows: list[dict]) -> str:
    """The serving-latency table: one line per graph size, request size and teacher."""
    lines = ["| nodes | batch | requests | exported student ms | eager MLP ms | teacher | teacher ms (fetch + forward) | fetch ms | forward ms | speed-up |",
             "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['nodes']:,d} | {r['batch']:,d} | {r['requests']} | {r['student_ms']:.3f} | {r['student_eager_ms']:.3f} | "
                     f"{r['teacher'].upper()} | {r['teacher_ms']:.3f} | {r['fetch_ms']:.3f} | {r['forward_ms']:.3f} | "
                     f"{r['teacher_ms'] / r['student_ms']:,.1f}x |")  # fmt: skip
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    teachers = [k for k in rows[0]["full"] if k != "mlp"]
    head = "| nodes | edges | regime | MLP nodes/s | " + " | ".join(f"{t.upper()} nodes/s | speed-up vs {t.upper()}" for t in teachers) + " |"
    lines = [head, "|" + "---|" * (4 + 2 * len(teachers))]
    for r in rows:
        for regime in ("full", "single"):
            rate = r[regime]
            cells = " | ".join(f"{rate[t]:,.0f} | {rate['mlp'] / rate[t]:,.1f}x" for t in teachers)
            lines.append(f"| {r['nodes']:,d} | {r['edges']:,d} | {regime} | {rate['mlp']:,.0f} | {cells} |")
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = CLIParser(prog="python -m experiments.bench_inference", description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="cpu", choices=SCALES)
    p.add_argument("--sizes", nargs="+", type=int, default=None, help="override the scale's graph sizes")
    p.add_argument("--queries", type=int, default=None, help="single-node queries per size")
    p.add_argument("--teachers", nargs="+", default=["gcn", "sage", "gat"], choices=("gcn", "sage", "gat"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-sizes", nargs="*", type=int, default=[1, 64, 1024],
                   help="request sizes of the serving-latency table (exported student vs teacher with CSR neighbourhood fetch; "
                        "measured on the CPU); none: skip that table")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    figures.add_flags(p, "the rows", "timing", figure="the speed-up figure")
    args = p.parse_args(argv)
    if args.figure_only:
        return figures.redraw("bench_inference", args.json)
    scale = dict(SCALES[args.scale])
    try:
        sizes = tuple(args.sizes or scale["sizes"])
        queries = args.queries or scale["queries"]
        if min(sizes) < 100 or queries < 1:
            raise UserError("--sizes must be >= 100 and --queries >= 1")
        if args.batch_sizes and min(args.batch_sizes) < 1:
            raise UserError(f"--batch-sizes must be >= 1, got {min(args.batch_sizes)}")
        torch.set_num_threads(max(1, args.threads))
        start = time.perf_counter()
        serving: list[dict] = []
        with tempfile.TemporaryDirectory() as workdir:
            rows = bench(sizes, queries=queries, repeats=scale["repeats"], teachers=tuple(args.teachers), seed=args.seed, device=args.device,
                         batch_sizes=tuple(args.batch_sizes), workdir=Path(workdir), serving=serving)  # fmt: skip
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - start
    print(f"\nscale={args.scale} threads={args.threads} queries={queries} wall={wall:.0f}s")
    print(markdown(rows))
    if serving:
        print("\nserving latency (CPU), ms per request of `batch` random nodes, median over `requests`:")
        print(serving_markdown(serving))
    if args.json:
        payload = {"scale": args.scale, "threads": args.threads, "queries": queries, "seed": args.seed, "wall_seconds": wall, "rows": rows,
                   "batch_sizes": args.batch_sizes, "serving": serving}  # fmt: skip
        atomic_write_text(json.dumps(payload, indent=1), args.json)
    return figures.finish("bench_inference", args.json)


if __name__ == "__main__":
    sys.exit(main())
