"""Device check: per-method cost and memory, unroll modes, evaluation, graph inference, and device-vs-CPU correctness.

The one-shot GPU check, written so that CI runs the same code paths on a CPU:

    python -m experiments.bench_device --device cuda          # <= 8 min on one GPU; writes experiments/results/bench_device.{md,json}
    python -m experiments.bench_device --device cpu --smoke   # toy sizes, seconds; part of the test suite

Sections (every number comes from the project's public APIs: ``condense.methods.get_method``,
``condense.unroll``, ``condense.evaluate``, ``synth``, ``graphs``):

* **methods** - DM, DataDAM, DC, DSA, MTT, AST (IPC 10, ConvNet-128), DAFL and the meta-learned
  generator (ResNet-18 teacher and student), Mirage training (GIN on the embedded motif set's
  distilled trees), GLNN and FF-G2M (GCN teacher, CSBM graph): seconds per iteration =
  ``(t(1 + n) - t(1)) / n`` of the real training functions (set-up cancels), peak device memory
  (``torch.cuda.max_memory_allocated``; CPU: not measured), host synchronisations per iteration
  counted three ways on the difference of a 2- and a 1-iteration run - scalar reads of the device's
  tensors (``.item()``, ``float()``, ``.tolist()``, ``.cpu()``, ``nonzero`` ...; :class:`DeviceAudit`,
  with the library line of each read), the profiler's ``cudaStreamSynchronize`` /
  ``cudaDeviceSynchronize`` events and, on CUDA, the warnings of
  ``torch.cuda.set_sync_debug_mode("warn")`` by library line (it also flags blocking host-to-device
  copies, which a scalar-read audit cannot see; ``--no-sync-debug`` skips it) - and a device audit:
  every convolution / linear / matmul / normalisation / scatter call made during a run is recorded
  with its output's device (a ``TorchFunctionMode``) and a
  call on another device fails the check - nothing may silently fall back to the CPU.
* **unroll** - one MTT outer iteration (ConvNet-128, 100 images 3x32x32, whole set per step, no
  DSA) at N = 30 / 50 / 80 in ``full`` and ``constant_memory`` mode: seconds and peak memory.
* **evaluation** - five ConvNets trained 300 epochs on 500 images (``condense.evaluate.evaluate_images``), one by
  one and batched as one vmapped model (:mod:`condense.batched`): seconds, peak memory, largest accuracy difference.
* **inference** - GCN vs MLP on a 10^6-node CSBM graph (full-graph forward, median of 5).
* **correctness** - the outer gradient of a float64 unroll (full and constant memory) on the device
  equals the CPU one to 1e-8; one DM and one MTT iteration on the device equal the CPU within float32
  tolerance (TF32 switched off for these comparisons only).

Sizes are fixed by ``--smoke`` (toy) or not (paper widths); the methods' own hyper-parameters are
their published defaults except the iteration counts and the deviations listed in :data:`NOTES`.
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import contextlib
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile

from condense.data import ImageDataset
from condense.evaluate import evaluate_images
from condense.experts import RECIPES, train_experts
from condense.methods import get_method
from condense.nets import get_network
from condense.unroll import functional_loss, unroll_backward
from condense.safeio import CLIParser, cli_main, output_flag
from condense.utils import UserError, atomic_write_text, make_generator, resolve_device, timed
from experiments.bench_matching import random_dataset
from graphs.data.csbm import csbm
from graphs.g2m.pipeline import load_task, make_task_split, run as run_g2m
from graphs.g2m.presets import get_preset
from graphs.mirage.distill import mirage_distill
from graphs.mirage.presets import load_graph_dataset, mirage_preset, train_preset
from graphs.mirage.train import train_restarts
from graphs.models.node import build_node_model
from synth.generator_kd import GeneratorKDConfig, train_generator_kd
from synth.meta import MetaConfig, train_meta_generator
from synth.teachers import build_network as synth_network
from synth.teachers import random_teacher

__all__ = ["Sizes", "SIZES", "DeviceAudit", "per_iteration", "run_all", "to_markdown", "main"]

RESULTS = Path(__file__).resolve().parent / "results" / "bench_device.md"
_ROOT, _LIBRARY = Path(__file__).resolve().parents[1], ("condense", "graphs", "synth")
SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
SCALAR_READS = ("item", "__float__", "__int__", "__bool__", "__index__", "tolist", "cpu", "numpy", "nonzero", "masked_select", "unique")
HEAVY_CALLS = ("conv", "linear", "matmul", "mm", "bmm", "addmm", "einsum", "norm", "scatter", "index_add", "spmm", "grid_sample")


@dataclass(frozen=True)
class Sizes:
    image: tuple[int, int, int]  # C, H, W of the random CIFAR-shaped data
    per_class: int  # real images per class (10 classes)
    width: int  # ConvNet width
    ipc: int
    batch_real: int
    timed: int  # n in (t(1 + n) - t(1)) / n
    expert_epochs: int  # MTT/AST experts: max_start_epoch = expert_epochs - 1, expert_epochs (M) = 2
    syn_steps: int  # MTT/AST student steps N
    mtt_lr_lr: float  # MTT/AST lr of the learnable student lr (paper 1e-5; tiny at toy size so it stays > 0)
    kd_teacher: str
    kd_student: str
    kd_kwargs: dict[str, Any]
    kd_batch: int
    meta_kd_steps: int
    unroll_steps: tuple[int, ...]
    eval_images: int
    eval_epochs: int
    graph_nodes: int
    graph_features: int
    motif_graphs: int
    g2m_csbm: dict[str, Any]


SIZES = {
    "paper": Sizes(image=(3, 32, 32), per_class=500, width=128, ipc=10, batch_real=256, timed=2, expert_epochs=4,
                   syn_steps=30, mtt_lr_lr=1e-5, kd_teacher="resnet18_bn", kd_student="resnet18", kd_kwargs={}, kd_batch=256,
                   meta_kd_steps=20, unroll_steps=(30, 50, 80), eval_images=500, eval_epochs=300,
                   graph_nodes=1_000_000, graph_features=128, motif_graphs=400,
                   g2m_csbm=dict(num_nodes=3000, num_features=500)),  # fmt: skip
    "smoke": Sizes(image=(3, 8, 8), per_class=12, width=8, ipc=1, batch_real=4, timed=1, expert_epochs=2,
                   syn_steps=3, mtt_lr_lr=1e-9, kd_teacher="convnet_bn", kd_student="convnet", kd_kwargs={"width": 4}, kd_batch=8,
                   meta_kd_steps=2, unroll_steps=(2, 3), eval_images=20, eval_epochs=2,
                   graph_nodes=2_000, graph_features=16, motif_graphs=40,
                   g2m_csbm=dict(num_nodes=300, num_features=16)),  # fmt: skip
}

NOTES = (
    "DAFL / meta generator: ResNet-18 (BatchNorm) random teacher, ResNet-18 student (the papers' CIFAR teacher is "
    "ResNet-34, not in the model zoo); DAFL with its MNIST loss weights at batch 256; meta generator with "
    "`kd_steps` = 20 per round instead of 400 (one round = one iteration) and no warm-up.",
    "MTT / AST: experts trained here for a few epochs on the random data (max_start_epoch = epochs - 1, M = 2), "
    "N = 30 student steps (cifar10-ipc10 preset); AST with its own defaults (representative init, momentum, "
    "balance, intermediate matching, weight perturbation).",
    "DM / DataDAM / DC / DSA: published configs at IPC 10 except a real batch of 256 per class for all four; "
    "DC/DSA iterations are the official outer/inner loops of IPC 10.",
    "Mirage: one training epoch of GIN on the distilled computation trees of the embedded motif set = one iteration; "
    "GLNN / FF-G2M: one student epoch on the default CSBM graph (GCN teacher trained for one epoch, its cost cancels).",
    "Times on a GPU include kernel launches of the first iteration only in t(1), which cancels.",
)


# ----------------------------------------------------------------------------- measurement helpers
def _measure(fn: Callable[[], object], device: torch.device) -> tuple[float, float | None]:
    """``(seconds, peak device MB)`` of ``fn()``; the peak is ``None`` off CUDA."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    secs = timed(fn, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return secs, peak


class DeviceAudit(TorchFunctionMode):
    """Record the output device of every heavy torch call and count scalar reads of the device's tensors.

    Heavy calls (:data:`HEAVY_CALLS`: conv / linear / matmul / norm / scatter ...) are recorded as
    ``(name, output device type)``; one on another device than the run's is a silent fallback.
    Scalar reads (:data:`SCALAR_READS`: ``.item()``, ``float()``, ``.tolist()``, ``nonzero`` ...) of a
    tensor on the run's device are host synchronisations on a GPU. On a CPU run they also count
    scalars of CPU-side generators, which cost nothing on a GPU (an upper bound there).
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device_type = device.type
        self.calls: Counter[tuple[str, str]] = Counter()
        self.scalar_reads = 0
        self.read_sites: Counter[str] = Counter()  # "path:line read" of the innermost project frame making each read

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in SCALAR_READS and args and isinstance(args[0], torch.Tensor) and args[0].device.type == self.device_type:
            self.scalar_reads += 1
            self.read_sites[f"{_project_frame(sys._getframe(1))} {name}"] += 1
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and any(h in name for h in HEAVY_CALLS):
            self.calls[(name, out.device.type)] += 1
        return out

    def off_device(self) -> dict[str, int]:
        """Heavy calls whose output lives on another device type than the run's."""
        return {f"{name}@{dev}": n for (name, dev), n in self.calls.items() if dev != self.device_type}


def _project_frame(frame) -> str:
    """``path:line`` (relative to the repository) of the innermost frame in the library packages, else ``"?"``."""
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(_ROOT) and path.relative_to(_ROOT).parts[0] in _LIBRARY:
            return f"{path.relative_to(_ROOT)}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


@contextlib.contextmanager
def _sync_debug(device: torch.device, enabled: bool):
    """Count CUDA's own synchronising-call warnings (``torch.cuda.set_sync_debug_mode("warn")``) by call site.

    Yields a ``Counter`` of ``"path:line"`` (innermost library frame, as :class:`DeviceAudit`); it
    stays empty off CUDA or when ``enabled`` is false (the mode exists only for CUDA).
    """
    sites: Counter[str] = Counter()
    if device.type != "cuda" or not enabled:
        yield sites
        return
    previous = torch.cuda.get_sync_debug_mode()

    def show(message, category, filename, lineno, file=None, line=None):
        if "synchronizing" in str(message):
            sites[_project_frame(sys._getframe(1))] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield sites
        finally:
            torch.cuda.set_sync_debug_mode(previous)


def _audited(fn: Callable[[], object], device: torch.device, sync_debug: bool) -> tuple[DeviceAudit, int, Counter[str]]:
    """Run ``fn()`` under a :class:`DeviceAudit`, the profiler and (CUDA) the sync debug mode.

    Returns the audit, the profiler's sync events and the sync-debug warnings by call site.
    """
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    audit = DeviceAudit(device)
    with profile(activities=activities) as prof, _sync_debug(device, sync_debug) as sites, audit:
        fn()
    return audit, sum(1 for e in prof.events() if e.name in SYNC_EVENTS), sites


def _sites_per_iteration(two: Counter[str], one: Counter[str]) -> dict[str, int]:
    """Call sites counted more often in the 2-iteration run than in the 1-iteration one, most frequent first."""
    return dict((two - one).most_common())


def per_iteration(run: Callable[[int], object], timed: int, device: torch.device, sync_debug: bool = True) -> dict[str, Any]:
    """s/iteration, peak MB, host syncs / iteration (counts and call sites) and the device audit of ``run(k)``.

    The audited, profiled runs (1 and 2 iterations; their difference is one iteration) come first and
    also warm up kernels and the allocator; then ``t(1)`` and ``t(1 + timed)`` without instrumentation.
    """
    (a1, p1, s1), (a2, p2, s2) = _audited(lambda: run(1), device, sync_debug), _audited(lambda: run(2), device, sync_debug)
    t1, _ = _measure(lambda: run(1), device)
    tn, peak = _measure(lambda: run(1 + timed), device)
    off = a2.off_device()
    row = {"seconds": max(tn - t1, 0.0) / timed, "peak_mb": peak, "scalar_reads_per_iteration": a2.scalar_reads - a1.scalar_reads,
           "profiler_syncs_per_iteration": p2 - p1, "off_device": off, "heavy_calls": sum(a2.calls.values()),
           "scalar_read_sites": _sites_per_iteration(a2.read_sites, a1.read_sites)}  # fmt: skip
    if device.type == "cuda" and sync_debug:
        row["sync_debug_per_iteration"] = sum(s2.values()) - sum(s1.values())
        row["sync_debug_sites"] = _sites_per_iteration(s2, s1)
    return row


# ----------------------------------------------------------------------------- workloads
def _image_data(sizes: Sizes, seed: int) -> ImageDataset:
    c, h, _ = sizes.image
    return random_dataset(c, h, per_class=sizes.per_class, seed=seed)


def _distill_runner(name: str, dataset: ImageDataset, sizes: Sizes, device: torch.device, seed: int,
                    **overrides: Any) -> Callable[[int], object]:  # fmt: skip
    spec = get_method(name)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    base = {"width": sizes.width, **({"batch_real": sizes.batch_real} if "batch_real" in fields else {}), **overrides}
    config = spec.config_cls(**base)

    def run(k: int) -> object:
        return spec.distill(dataset, sizes.ipc, dataclasses.replace(config, iterations=k), device=device, seed=seed, progress=False)

    return run


def _mtt_overrides(experts: str, sizes: Sizes) -> dict[str, Any]:
    return dict(experts=experts, syn_steps=sizes.syn_steps, expert_epochs=2, max_start_epoch=sizes.expert_epochs - 1,
                lr_img=1000.0, lr_lr=sizes.mtt_lr_lr, lr_teacher=0.01)  # fmt: skip


def _train_experts(dataset: ImageDataset, sizes: Sizes, directory: str, device: torch.device, seed: int) -> None:
    epochs = sizes.expert_epochs + 1
    train_experts(dataset, directory, num_experts=1, epochs=epochs, recipe=RECIPES["mtt"], model="convnet",
                  model_kwargs={"width": sizes.width}, device=device, seed=seed, progress=False)  # fmt: skip


def _kd_runners(sizes: Sizes, device: torch.device, seed: int) -> dict[str, Callable[[int], object]]:
    shape = sizes.image
    teacher = random_teacher(sizes.kd_teacher, shape, 10, seed=seed, arch_kwargs=sizes.kd_kwargs)
    stats = ((0.0,) * shape[0], (1.0,) * shape[0])

    def student() -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return synth_network(sizes.kd_student, shape, 10, sizes.kd_kwargs)

    def dafl(k: int) -> object:
        cfg = GeneratorKDConfig(preset="dafl", iterations=k, batch_size=sizes.kd_batch)
        return train_generator_kd(teacher, student(), cfg, device=device, seed=seed, progress=False, pixel_stats=stats)

    def meta(k: int) -> object:
        cfg = MetaConfig(rounds=k, warmup=0, batch_size=sizes.kd_batch, kd_batch_size=sizes.kd_batch,
                         kd_steps=sizes.meta_kd_steps)  # fmt: skip
        return train_meta_generator(teacher, student(), cfg, pixel_stats=stats, device=device, seed=seed, progress=False)

    return {"DAFL": dafl, "meta generator": meta}


def _mirage_runner(sizes: Sizes, device: torch.device, seed: int) -> Callable[[int], object]:
    from graphs.data.motifs import make_motif_dataset

    ds = make_motif_dataset(sizes.motif_graphs, seed=seed) if sizes.motif_graphs != 400 else load_graph_dataset("motifs", seed=seed)
    distilled = mirage_distill(ds.subset("train"), ds.num_classes, mirage_preset("motifs"), progress=False)
    valid, test = ds.subset("valid"), ds.subset("test")

    def run(k: int) -> object:
        cfg = train_preset("cpu", "motifs", epochs=k, restarts=1)
        return train_restarts(distilled.graphs, valid, test, dims=(ds.in_dim, ds.edge_dim), num_classes=ds.num_classes,
                              metric=ds.metric, config=cfg, seed=seed, device=device, progress=False, threads=None)  # fmt: skip

    return run


def _g2m_runners(sizes: Sizes, device: torch.device, seed: int) -> dict[str, Callable[[int], object]]:
    data, labelled = load_task("csbm", csbm_kwargs=sizes.g2m_csbm, data_seed=seed)
    split = make_task_split(data, labelled, "tran", seed=seed)
    preset = get_preset("csbm", "gcn")

    def runner(method: str) -> Callable[[int], object]:
        def run(k: int) -> object:
            p = dataclasses.replace(
                preset, teacher=dataclasses.replace(preset.teacher, max_epochs=1, patience=1),
                student=dataclasses.replace(preset.student, max_epochs=k, patience=k),
            )  # fmt: skip
            return run_g2m(data, split, "gcn", p, methods=(method,), seed=seed, device=device)

        return run

    return {"GLNN": runner("glnn"), "FF-G2M": runner("ff-g2m")}


def bench_methods(sizes: Sizes, device: torch.device, seed: int, log: Callable[[str], None],
                  sync_debug: bool = True) -> tuple[list[dict], str]:  # fmt: skip
    """One row per method; also returns the expert directory's parent (kept for the correctness check)."""
    dataset = _image_data(sizes, seed)
    tmp = tempfile.mkdtemp(prefix="bench-device-experts-")
    _train_experts(dataset, sizes, tmp, device, seed)
    runners: dict[str, Callable[[int], object]] = {
        "DM": _distill_runner("dm", dataset, sizes, device, seed),
        "DataDAM": _distill_runner("datadam", dataset, sizes, device, seed),
        "DC": _distill_runner("dc", dataset, sizes, device, seed),
        "DSA": _distill_runner("dsa", dataset, sizes, device, seed),
        "MTT": _distill_runner("mtt", dataset, sizes, device, seed, **_mtt_overrides(tmp, sizes)),
        "AST": _distill_runner("ast", dataset, sizes, device, seed, **_mtt_overrides(tmp, sizes)),
        **_kd_runners(sizes, device, seed),
        "Mirage training": _mirage_runner(sizes, device, seed),
        **_g2m_runners(sizes, device, seed),
    }
    rows = []
    for name, run in runners.items():
        t0 = time.perf_counter()
        row = {"method": name, **per_iteration(run, sizes.timed, device, sync_debug), "wall_s": 0.0}
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        log(f"{name:16s} {row['seconds']:.4f} s/it  peak {row['peak_mb']} MB  scalar reads/it {row['scalar_reads_per_iteration']}  "
            f"profiler syncs/it {row['profiler_syncs_per_iteration']}  "
            f"off-device {row['off_device'] or 'none'}  ({row['wall_s']:.0f} s)")  # fmt: skip
    return rows, tmp


def _unroll_problem(width: int, image: tuple[int, int, int], n_images: int, device: torch.device, dtype: torch.dtype, seed: int):
    gen = make_generator(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = get_network("convnet", image[0], 10, image[1:], width=width).to(device=device, dtype=dtype)
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    target = {k: v + 0.01 * torch.randn(v.shape, generator=gen, dtype=dtype).to(device) for k, v in params.items()}
    images = torch.randn(n_images, *image, generator=gen, dtype=dtype).to(device).requires_grad_()
    labels = (torch.arange(n_images) % 10).to(device)
    lr = torch.tensor(0.01, dtype=dtype, device=device, requires_grad=True)
    return net, params, target, images, labels, lr


def _outer_gradient(problem, steps: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One MTT-style outer iteration; returns the gradients of the images and the lr."""
    net, params, target, images, labels, lr = problem
    images.grad = lr.grad = None
    denominator = sum(((params[k] - target[k]) ** 2).sum() for k in params)

    def outer(rec):
        return sum(((rec[steps][k] - target[k]) ** 2).sum() for k in target) / denominator

    unroll_backward(outer, functional_loss(net), params, lr, steps, lambda i: (images, labels), mode=mode, inputs=[images, lr])
    return images.grad, lr.grad


def bench_unroll(sizes: Sizes, device: torch.device, seed: int, log: Callable[[str], None]) -> list[dict]:
    problem = _unroll_problem(sizes.width, sizes.image, 10 * sizes.ipc, device, torch.float32, seed)
    _outer_gradient(problem, 2, "full")  # warm-up
    rows = []
    for n in sizes.unroll_steps:
        for mode in ("full", "constant_memory"):
            secs, peak = _measure(lambda: _outer_gradient(problem, n, mode), device)
            rows.append({"N": n, "mode": mode, "seconds": secs, "peak_mb": peak})
            log(f"unroll N={n} {mode:15s} {secs:.3f} s  peak {peak} MB")
    return rows


def bench_evaluation(sizes: Sizes, device: torch.device, seed: int) -> dict:
    dataset = _image_data(sizes, seed)
    x, y = dataset.train_x[: sizes.eval_images], dataset.train_y[: sizes.eval_images]
    out, accs = {"images": len(x), "epochs": sizes.eval_epochs, "networks": 5}, {}
    for batched, key in ((False, ""), (True, "batched_")):

        def run(batched: bool = batched) -> None:
            accs[batched] = evaluate_images(x, y, dataset, models=("convnet",), num_evals=5, epochs=sizes.eval_epochs, device=device,
                                            seed=seed, progress=False, batched=batched)["convnet"].accs  # fmt: skip

        out[f"{key}seconds"], out[f"{key}peak_mb"] = _measure(run, device)
    out["max_acc_diff"] = max(abs(a - b) for a, b in zip(accs[False], accs[True]))
    return out


@torch.no_grad()
def bench_inference(sizes: Sizes, device: torch.device, seed: int) -> dict:
    t0 = time.perf_counter()
    data = csbm(sizes.graph_nodes, sizes.graph_features, avg_degree=10.0, lam=2.0, mu=4.0, seed=seed)
    generate = time.perf_counter() - t0
    x, ei = data.x.to(device), data.edge_index.to(device)
    out = {"nodes": data.num_nodes, "edges": int(ei.size(1)), "generate_s": generate}
    for name in ("mlp", "gcn"):
        model = build_node_model(name, sizes.graph_features, 2, hidden=128, num_layers=2).to(device).eval()
        audit = DeviceAudit(device)
        with audit:
            model(x, ei)  # warm-up
        times = [_measure(lambda: model(x, ei), device)[0] for _ in range(5)]
        out[name] = {"seconds": statistics.median(times), "off_device": audit.off_device()}
    out["speedup"] = out["gcn"]["seconds"] / max(out["mlp"]["seconds"], 1e-12)
    return out


@contextlib.contextmanager
def _no_tf32():
    """Full float32 matmuls/convolutions on CUDA for the CPU comparisons (TF32 rounds to 10 mantissa bits)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max|b|`` (both moved to the CPU, float64)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def check_correctness(sizes: Sizes, device: torch.device, seed: int, experts: str) -> list[dict]:
    """Device vs CPU: float64 unroll gradients to 1e-8, one DM and one MTT iteration within float32 tolerance."""
    cpu, rows = torch.device("cpu"), []
    for mode in ("full", "constant_memory"):
        got = [_outer_gradient(_unroll_problem(8, (1, 8, 8), 12, dev, torch.float64, seed), 4, mode) for dev in (device, cpu)]
        err = max(_max_rel(a, b) for a, b in zip(*got))
        rows.append({"check": f"float64 unroll outer gradient ({mode}), images + lr", "max_rel_err": err, "tol": 1e-8})
        for g in got[0]:
            if g.device.type != device.type:
                raise AssertionError(f"unroll gradient on {g.device}, expected {device}")
    dataset = _image_data(sizes, seed)
    for name, overrides in (("dm", {"lr_img": 1.0}), ("mtt", _mtt_overrides(experts, sizes))):
        # the first SGD step moves the (identical) initial images by -lr_img * grad, so the image update
        # is img(2 lr) - img(lr) and the device's error on it is img_device(lr) - img_cpu(lr)
        doubled = {**overrides, "lr_img": 2 * overrides["lr_img"]}
        with _no_tf32():
            on_device, on_cpu, on_cpu_2 = (_distill_runner(name, dataset, sizes, dev, seed, **kw)(1).images
                                           for dev, kw in ((device, overrides), (cpu, overrides), (cpu, doubled)))  # fmt: skip
        err = _max_rel(on_device - on_cpu + (on_cpu_2 - on_cpu), on_cpu_2 - on_cpu)
        rows.append({"check": f"one {name.upper()} iteration: image update vs CPU (relative to its max)", "max_rel_err": err,
                     "tol": 1e-3})  # fmt: skip
    return rows


def run_all(device: str | torch.device, *, smoke: bool, seed: int = 0, log: Callable[[str], None] = print,
            sync_debug: bool = True) -> dict:  # fmt: skip
    """Every section; the returned dict is the JSON report (``sync_debug``: CUDA's sync warnings by call site)."""
    dev = resolve_device(device)
    sizes = SIZES["smoke" if smoke else "paper"]
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": _device_name(dev), "smoke": smoke,
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
        "python": platform.python_version(), "threads": torch.get_num_threads(), "seed": seed, "sizes": dataclasses.asdict(sizes),
        "notes": list(NOTES),
    }  # fmt: skip
    report["methods"], experts = bench_methods(sizes, dev, seed, log, sync_debug)
    report["unroll"] = bench_unroll(sizes, dev, seed, log)
    report["evaluation"] = bench_evaluation(sizes, dev, seed)
    log(f"evaluation {report['evaluation']['seconds']:.1f} s")
    report["inference"] = bench_inference(sizes, dev, seed)
    log(f"inference GCN/MLP x{report['inference']['speedup']:.1f}")
    report["correctness"] = check_correctness(sizes, dev, seed, experts)
    for row in report["correctness"]:
        row["ok"] = row["max_rel_err"] <= row["tol"]
        log(f"{row['check']}: {row['max_rel_err']:.2e} (tol {row['tol']:g}) {'ok' if row['ok'] else 'FAILED'}")
    off = {r["method"]: r["off_device"] for r in report["methods"] if r["off_device"]}
    off.update({f"inference {k}": report["inference"][k]["off_device"] for k in ("mlp", "gcn") if report["inference"][k]["off_device"]})
    report["off_device"] = off
    report["ok"] = not off and all(r["ok"] for r in report["correctness"])
    report["wall_s"] = time.perf_counter() - t0
    return report


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.processor() or platform.machine()})"


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def to_markdown(report: dict) -> str:
    """The results document: environment, one table per section, the notes."""
    lines = [
        f"# Device check (`experiments.bench_device`{' --smoke' if report['smoke'] else ''})",
        "",
        f"Run {report['date']} on **{report['device']}**; torch {report['torch']}, CUDA {report['cuda']}, cuDNN "
        f"{report['cudnn']}, Python {report['python']}, {report['threads']} CPU threads, seed {report['seed']}. "
        f"Wall time {report['wall_s']:.0f} s. Overall: **{'ok' if report['ok'] else 'FAILED'}**.",
        "",
        "## Methods (CIFAR-shaped random data; s / iteration = (t(1+n) - t(1)) / n)",
        "",
        "| method | s / iteration | peak MB | scalar reads / iteration | profiler syncs / iteration "
        "| sync-debug warnings / iteration | heavy calls audited | off-device calls |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["methods"]:
        off = ", ".join(f"{k} x{v}" for k, v in r["off_device"].items()) or "none"
        lines.append(f"| {r['method']} | {r['seconds']:.4f} | {_mb(r['peak_mb'])} | {r['scalar_reads_per_iteration']} | "
                     f"{r['profiler_syncs_per_iteration']} | {r.get('sync_debug_per_iteration', '-')} | {r['heavy_calls']} | {off} |")  # fmt: skip
    lines += ["", "### Host synchronisations per iteration by call site", "",
              "Scalar reads recorded by the audit (`path:line read`; on a CPU run an upper bound: reads of CPU-side "
              "tensors cost nothing on a GPU) and, on CUDA, the sites of `torch.cuda.set_sync_debug_mode(\"warn\")`'s "
              "warnings; counts are those of one iteration (2-iteration run minus 1-iteration run).", "",
              "| method | scalar reads: site x count | sync-debug warnings: site x count |", "| --- | --- | --- |"]  # fmt: skip
    for r in report["methods"]:
        reads = "<br>".join(f"`{k}` x{v}" for k, v in r["scalar_read_sites"].items()) or "none"
        warned = "<br>".join(f"`{k}` x{v}" for k, v in r.get("sync_debug_sites", {}).items()) or ("none" if "sync_debug_sites" in r else "-")
        lines.append(f"| {r['method']} | {reads} | {warned} |")
    lines += ["", "## Unroll: one MTT outer iteration, full vs constant_memory", "",
              "| N | mode | seconds | peak MB |", "| ---: | --- | ---: | ---: |"]  # fmt: skip
    lines += [f"| {r['N']} | {r['mode']} | {r['seconds']:.3f} | {_mb(r['peak_mb'])} |" for r in report["unroll"]]
    ev, inf = report["evaluation"], report["inference"]
    lines += [
        "", "## Evaluation and graph inference", "",
        f"- {ev['networks']} ConvNets trained {ev['epochs']} epochs on {ev['images']} images: one by one {ev['seconds']:.1f} s "
        f"(peak {_mb(ev['peak_mb'])} MB), batched {ev['batched_seconds']:.1f} s (peak {_mb(ev['batched_peak_mb'])} MB), "
        f"largest final-accuracy difference {100 * ev['max_acc_diff']:.2f} points.",
        f"- CSBM graph with {inf['nodes']:,} nodes and {inf['edges']:,} edges (generated in {inf['generate_s']:.1f} s): "
        f"full-graph forward MLP {inf['mlp']['seconds'] * 1e3:.2f} ms, GCN {inf['gcn']['seconds'] * 1e3:.2f} ms "
        f"(MLP x{inf['speedup']:.1f} faster).",
        "", "## Correctness (device vs CPU)", "", "| check | max relative error | tolerance | result |", "| --- | ---: | ---: | --- |",
    ]  # fmt: skip
    lines += [f"| {r['check']} | {r['max_rel_err']:.2e} | {r['tol']:g} | {'ok' if r['ok'] else 'FAILED'} |" for r in report["correctness"]]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = CLIParser(prog="python -m experiments.bench_device", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--smoke", action="store_true", help="toy sizes (seconds on a CPU): checks that every code path runs")
    p.add_argument("--out", default=None, help=f"markdown report (+ .json next to it); default {RESULTS.relative_to(RESULTS.parents[2])} "
                                               "for a full run, none for --smoke", **output_flag())  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-sync-debug", action="store_true",
                   help="CUDA: skip counting synchronising calls with torch.cuda.set_sync_debug_mode('warn') (on by default)")
    args = p.parse_args(argv)
    try:
        report = run_all(args.device, smoke=args.smoke, seed=args.seed, log=lambda m: print(m, file=sys.stderr, flush=True),
                         sync_debug=not args.no_sync_debug)  # fmt: skip
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = to_markdown(report)
    out = args.out or (None if args.smoke else str(RESULTS))
    if out:
        atomic_write_text(text, out)
        atomic_write_text(json.dumps(report, indent=1, default=str) + "\n", str(Path(out).with_suffix(".json")))
    print(text)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
