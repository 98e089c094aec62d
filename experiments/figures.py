"""Figures of every experiment, drawn from the JSON the experiment writes (``--figure-only`` redraws them).

One function per experiment, ``FIGURES[kind](payload, stem) -> [png paths]``; ``stem`` is the JSON path
without its suffix, so ``runs/g2m.json`` gives ``runs/g2m.png`` (or ``runs/g2m_<panel>.png``). The
experiments call :func:`finish` after writing their JSON and :func:`redraw` for ``--figure-only``.
Drawing uses :mod:`condense.plotting` (Agg canvas, atomic PNG writes). Accuracies are plotted in %
with the tables' convention: mean ± population std over networks / seeds / splits.

JSON files transcribed from a committed markdown table (``experiments/results/*.json`` with a
``"transcribed_from"`` key) follow the same schema; where a table has only mean ± std, rows carry
``"summary_pct": {arch: [mean, std]}`` (matching) or ``"aggregated"`` records (mirage) instead of
per-network values.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from matplotlib.ticker import FuncFormatter, NullFormatter

from condense.plotting import errorbar_series, mean_std, new_figure, reference_line, save_png, wrapped_suptitle
from condense.safeio import output_flag
from condense.utils import UserError

__all__ = ["FIGURES", "write_figures", "finish", "redraw", "load_json"]

Payload = dict[str, Any]


def load_json(path: str | os.PathLike) -> Payload:
    """Read a results JSON; a missing or malformed file is a one-line :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"results JSON not found: {path}")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(payload).__name__}")
    return payload


def _stem(path: Path) -> Path:
    return path.with_suffix("") if path.suffix == ".json" else path


#: plain dataset names for figure titles (the experiments' keys otherwise)
DATASET_NAMES = {"digits": "Digits (8×8)", "fashion_mnist": "Fashion-MNIST (28×28)", "mnist": "MNIST", "cifar10": "CIFAR-10",
                 "cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed", "csbm": "CSBM"}  # fmt: skip


def _dataset_name(key: str) -> str:
    return DATASET_NAMES.get(key, key)


def _scale_text(payload: Payload) -> str:
    """``scale cpu`` for a preset name, the payload's own words for a described setting."""
    scale = str(payload.get("scale", "?"))
    return scale if " " in scale else f"scale {scale}"


# ------------------------------------------------------------------------------------------------ matching
MATCHING_ARCHS = {"convnet": "ConvNet", "mlp": "MLP", "lenet": "LeNet", "resnet18_bn": "ResNet-18 (BN)"}
MATCHING_LABELS = {"random": "random real", "herding": "herding", "dc": "DC", "dsa": "DSA", "dm": "DM",
                   "datadam": "DataDAM (paper p=4)", "datadam_official": "DataDAM (official p=1)"}  # fmt: skip


def _matching_cell(row: dict, arch: str) -> tuple[float, float] | None:
    """``(mean %, std %)`` of one method/arch: from per-network accuracies, or a transcribed summary."""
    if arch in row.get("accs", {}):
        return mean_std([100 * a for a in row["accs"][arch]])
    if arch in row.get("summary_pct", {}):
        m, s = row["summary_pct"][arch][:2]
        return float(m), float(s)
    return None


def matching(payload: Payload, stem: Path) -> list[Path]:
    """Per dataset: ConvNet accuracy vs IPC per method (random real as reference), one cross-architecture panel per IPC."""
    rows = payload.get("rows") or []
    if not rows:
        raise UserError("matching JSON has no rows")
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        drows = [r for r in rows if r["dataset"] == dataset]
        ipcs = sorted({int(r["ipc"]) for r in drows})
        methods = [m for m in MATCHING_LABELS if any(r["method"] == m for r in drows)]
        methods += [m for m in dict.fromkeys(r["method"] for r in drows) if m not in methods]
        archs = [a for a in MATCHING_ARCHS if any(_matching_cell(r, a) for r in drows)]
        curve = len(ipcs) > 1  # an accuracy-vs-IPC panel needs at least two IPCs
        fig, axes = new_figure(int(curve) + len(ipcs), cols=3)
        ax = axes[0]
        for i, method in enumerate(methods if curve else ()):
            pts = [(r["ipc"], c) for r in sorted(drows, key=lambda r: r["ipc"]) if r["method"] == method and (c := _matching_cell(r, "convnet"))]
            if not pts:
                continue
            style = {"linestyle": "--", "color": "0.3", "marker": "s"} if method == "random" else {"color": f"C{i}"}
            errorbar_series(ax, [p[0] for p in pts], [p[1][0] for p in pts], [p[1][1] for p in pts], MATCHING_LABELS.get(method, method), **style)
        if curve:  # no full-data line: experiments.matching does not train on the full set
            ax.set_xscale("log")
            ax.set_xticks(ipcs, [str(i) for i in ipcs])
            ax.set_xlabel("images per class (IPC, log scale)")
            ax.set_ylabel("test accuracy % (final checkpoint)")
            ax.set_title("ConvNet trained on each set", fontsize=10)
            ax.legend(fontsize=7)
        for ax, ipc in zip(axes[int(curve) :], ipcs):
            width = 0.8 / max(1, len(archs))
            for j, arch in enumerate(archs):
                cells = [(k, c) for k, m in enumerate(methods) if (c := _matching_cell(_find(drows, m, ipc) or {}, arch))]
                ax.bar([k + (j - (len(archs) - 1) / 2) * width for k, _ in cells], [c[0] for _, c in cells], width,
                       yerr=[c[1] for _, c in cells], capsize=2, label=MATCHING_ARCHS[arch], color=f"C{j}")  # fmt: skip
            ax.set_xticks(range(len(methods)), [MATCHING_LABELS.get(m, m) for m in methods], rotation=35, ha="right", fontsize=7)
            ax.set_ylabel("test accuracy % (final checkpoint)")
            ax.set_ylim(0, 119)
            ax.set_yticks(range(0, 101, 20))
            ax.set_title(f"IPC {ipc}: the same sets, other networks", fontsize=10)
            ax.legend(fontsize=7, ncols=len(archs), loc="upper center")
        wrapped_suptitle(fig, f"{_dataset_name(dataset)}: test accuracy of networks trained on condensed sets (distilled with a "
                              f"ConvNet; mean ± std over networks; scale {payload.get('scale', '?')}, seed {payload.get('seed', '?')})")  # fmt: skip
        out.append(save_png(fig, stem.with_name(f"{stem.name}_{dataset}.png")))
    return out


def _find(rows: list[dict], method: str, ipc: int) -> dict | None:
    return next((r for r in rows if r["method"] == method and int(r["ipc"]) == ipc), None)


# ------------------------------------------------------------------------------------------------ trajectory
def trajectory(payload: Payload, stem: Path) -> list[Path]:
    """Per dataset: accuracy vs IPC (random real / MTT / AST); sections with ablation rows get a bar panel."""
    sections = payload.get("sections") or []
    if not sections:
        raise UserError("trajectory JSON has no sections")
    by_dataset = {d: sorted((s for s in sections if s["dataset"] == d), key=lambda s: s["ipc"]) for d in dict.fromkeys(s["dataset"] for s in sections)}
    datasets = [d for d, secs in by_dataset.items() if len(secs) > 1]  # accuracy vs IPC needs two IPCs
    bars = [s for d, secs in by_dataset.items() for s in secs if len(s["rows"]) > 3 or len(secs) == 1]
    fig, axes = new_figure(len(datasets) + len(bars), cols=2, panel_size=(5.2, 3.6))
    for ax, dataset in zip(axes, datasets):
        secs = by_dataset[dataset]
        for i, name in enumerate(dict.fromkeys(r["name"] for s in secs for r in s["rows"][:3])):
            pts = [(s["ipc"], r) for s in secs for r in s["rows"] if r["name"] == name]
            style = {"linestyle": "--", "color": "0.3", "marker": "s"} if name == "random real" else {"color": f"C{i}"}
            errorbar_series(ax, [p for p, _ in pts], [r["mean"] for _, r in pts], [r["std"] for _, r in pts], name, **style)
        ipcs = [s["ipc"] for s in secs]
        ax.set_xscale("log")
        ax.set_xticks(ipcs, [str(i) for i in ipcs])
        ax.set_xlim(min(ipcs) / 1.6, max(ipcs) * 1.6)
        ax.set_xlabel("images per class (IPC, log scale)")
        ax.set_ylabel("test accuracy % (final checkpoint)")
        ax.set_title(f"{_dataset_name(dataset)}: ConvNet trained on each set", fontsize=10)
        ax.legend(fontsize=8)
    for ax, sec in zip(axes[len(datasets) :], bars):
        rows = sec["rows"]
        ys = list(range(len(rows)))[::-1]
        ax.barh(ys, [r["mean"] for r in rows], xerr=[r["std"] for r in rows], capsize=2,
                color=["0.6" if r["name"] == "random real" else "C0" for r in rows])  # fmt: skip
        ax.set_yticks(ys, [r["name"] for r in rows], fontsize=7)
        base = next((r for r in rows if r["name"] == "random real"), None)
        if base:
            reference_line(ax, base["mean"], "random real", std=base["std"], vertical=True, color="C3")
        lo = min(r["mean"] - r["std"] for r in rows)
        ax.set_xlim(max(0.0, lo - 3), min(100.0, max(r["mean"] + r["std"] for r in rows) + 1.5))
        ax.set_xlabel("test accuracy % (final checkpoint)")
        ax.set_title(f"{_dataset_name(sec['dataset'])}, IPC {sec['ipc']}: ablations\n(dashed: random real ± std; AST - x removes one ingredient)", fontsize=9)
    wrapped_suptitle(fig, f"Trajectory matching (MTT, AST): test accuracy of a ConvNet trained on the distilled set (mean ± std over "
                          f"networks; scale {payload.get('scale', '?')}, seed {payload.get('seed', '?')})")  # fmt: skip
    return [save_png(fig, stem.with_suffix(".png"))]


# ------------------------------------------------------------------------------------------------ mirage
#: the sets of a panel, left to right: label, colour, marker
MIRAGE_SETS = {"random": ("random", "C0", "s"), "herding": ("herding", "C2", "^"), "mirage": ("Mirage", "C3", "o"),
               "full": ("full data", "k", "D")}  # fmt: skip
METRIC_NAMES = {"rocauc": "ROC-AUC", "roc_auc": "ROC-AUC", "acc": "accuracy", "accuracy": "accuracy"}


def _mirage_points(payload: Payload) -> list[dict]:
    """``{dataset, model, method, fraction, top: (mean, std), splits}`` per cell: transcribed
    ``aggregated`` records as they are; several split seeds aggregated over splits; one split as is
    (std over the top-k restarts)."""
    from experiments.mirage import aggregate_splits

    points = [dict(p, splits=len(p.get("splits", [0]))) for p in payload.get("aggregated", [])]
    records = payload.get("records") or []
    done = {(p["dataset"], p["model"], p["method"]) for p in points}
    by_dataset: dict[str, list[dict]] = {}
    for rec in records:
        by_dataset.setdefault(rec["dataset"], []).append(rec)
    for name, recs in by_dataset.items():
        if len(recs) > 1:
            cells = [dict(a, splits=len(a["splits"])) for a in aggregate_splits(recs)]
        else:
            cells = [{"dataset": name, "model": r["model"], "method": r["method"], "fraction": r["fraction"], "top": r["top"],
                      "splits": 1, "k": r.get("k")} for r in recs[0]["results"]]  # fmt: skip
        points += [c for c in cells if (c["dataset"], c["model"], c["method"]) not in done]
    if not points:
        raise UserError("mirage JSON has no records")
    return points


def _size_only_levels(payload: Payload) -> dict[str, float]:
    """Per dataset, the size-only test score in its better direction (mean over split seeds), where recorded."""
    levels: dict[str, list[float]] = {}
    for rec in payload.get("records") or []:
        s = (rec.get("size_only") or {}).get(rec.get("metric", ""))
        if s is not None:
            levels.setdefault(rec["dataset"], []).append(max(s, 1 - s) if rec["metric"] == "rocauc" else s)
    return {d: sum(v) / len(v) for d, v in levels.items()}


def _mirage_tick(method: str, point: dict) -> str:
    """The x label of one set: its name and its share of the training bytes (the seed count of a full-data level)."""
    if method == "full":
        seeds = point.get("seeds")
        return "full data\n100 %" + (f", {seeds} seeds" if seeds else "")
    return f"{MIRAGE_SETS[method][0]}\n{100 * point['fraction']:.2g} %"


def mirage(payload: Payload, stem: Path) -> list[Path]:
    """Small multiples, rows = datasets, columns = GNNs: the test score (at the best-validation epoch) of a GNN
    trained on each set, one x position per set labelled with its share of the training bytes; the size-only
    (node count) classifier as a dotted level."""
    points = _mirage_points(payload)
    metrics = {r["dataset"]: r.get("metric", "") for r in payload.get("records", [])} | payload.get("metrics", {})
    notes = payload.get("notes", {})
    size_only = _size_only_levels(payload)
    first = [(r["dataset"], x["model"]) for r in payload.get("records") or [] for x in r.get("results", [])]  # records' order first
    datasets = list(dict.fromkeys([d for d, _ in first] + [p["dataset"] for p in points]))
    models = list(dict.fromkeys([m for _, m in first] + [p["model"] for p in points]))
    fig, axes = new_figure(len(datasets) * len(models), cols=len(models), panel_size=(3.7, 2.9))
    for i, dataset in enumerate(datasets):
        metric = METRIC_NAMES.get(metrics.get(dataset, ""), metrics.get(dataset) or "score")
        for j, model in enumerate(models):
            ax = axes[i * len(models) + j]
            cell = {p["method"]: p for p in points if p["dataset"] == dataset and p["model"] == model}
            if not cell:  # this model was not run on this dataset
                ax.text(0.5, 0.5, f"{dataset}, {model.upper()}: not run", transform=ax.transAxes, ha="center", fontsize=8, color="0.4")
                ax.set_axis_off()
                continue
            sets = [m for m in MIRAGE_SETS if m in cell]
            for k, method in enumerate(sets):
                _, color, marker = MIRAGE_SETS[method]
                p = cell[method]
                ax.errorbar([k], [p["top"][0]], yerr=[p["top"][1]], color=color, marker=marker, capsize=3, linestyle="none", markersize=7)
            if dataset in size_only:  # the node count as the classifier: a set whose model only learns size sits on it
                reference_line(ax, size_only[dataset], "size-only (node count)", color="0.45", linestyle=":")
            ax.set_xticks(range(len(sets)), [_mirage_tick(m, cell[m]) for m in sets], fontsize=7)
            ax.set_xlim(-0.6, len(sets) - 0.4)
            ax.set_ylabel(f"test {metric}")
            ax.set_title(f"{dataset}, {model.upper()}" + (f" ({notes[dataset]})" if dataset in notes else ""), fontsize=8)
    names = sorted({METRIC_NAMES.get(m, m or "score") for m in metrics.values()})
    title = (f"Graph classification: test {' / '.join(names)} of a GNN trained on a random subset, a herding subset, the Mirage "
             "set (all three at about the same share of the training bytes, under each label) and the full data; mean ± std "
             "over splits where several, else over the best restarts" + ("; dotted line: a classifier that sees only the node count" if size_only else ""))
    wrapped_suptitle(fig, title)
    out = [save_png(fig, stem.with_suffix(".png"))]
    if len(datasets) > 1 and len(names) == 1:  # the overview needs one metric on its shared axis
        out.append(_mirage_summary(points, datasets, models, names[0], size_only, stem.with_name(f"{stem.name}_summary.png")))
    return out


def _mirage_summary(points: list[dict], datasets: list[str], models: list[str], metric: str, size_only: dict[str, float],
                    path: Path) -> Path:  # fmt: skip
    """One panel per GNN (stacked), one x slot per dataset; in each slot the sets side by side (each with its error bar),
    the size-only level as a grey dash across the slot."""
    fig, axes = new_figure(len(models), cols=1, panel_size=(0.95 * len(datasets) + 1.6, 2.7))
    sets = [m for m in MIRAGE_SETS if any(p["method"] == m for p in points)]
    offsets = {m: (k - (len(sets) - 1) / 2) * 0.2 for k, m in enumerate(sets)}
    for ax, model in zip(axes, models):
        for method in sets:
            label, color, marker = MIRAGE_SETS[method]
            cells = [(i, p) for i, d in enumerate(datasets) for p in points if p["dataset"] == d and p["model"] == model and p["method"] == method]
            if cells:
                ax.errorbar([i + offsets[method] for i, _ in cells], [p["top"][0] for _, p in cells], yerr=[p["top"][1] for _, p in cells],
                            color=color, marker=marker, capsize=2, linestyle="none", markersize=6, label=label)  # fmt: skip
        levels = [(i, size_only[d]) for i, d in enumerate(datasets) if d in size_only]
        if levels:
            ax.hlines([v for _, v in levels], [i - 0.42 for i, _ in levels], [i + 0.42 for i, _ in levels], colors="0.45",
                      linestyles=":", linewidth=1.6, label="size-only (node count)")  # fmt: skip
        ax.set_xticks(range(len(datasets)), [d.replace(" (", "\n(") for d in datasets], fontsize=7)
        ax.set_xlim(-0.6, len(datasets) - 0.4)
        ax.set_ylabel(f"test {metric}")
        ax.set_title(f"trained: {model.upper()}", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    wrapped_suptitle(fig, f"Graph classification at equal bytes: test {metric} of a GNN trained on each set, per dataset "
                          "(mean ± std over the best restarts or over splits; the Mirage set's share of the training bytes is on "
                          "the detailed figure)")  # fmt: skip
    return save_png(fig, path)


# ------------------------------------------------------------------------------------------------ g2m
G2M_STYLE = {"teacher": ("k", "*"), "mlp": ("0.5", "s"), "glnn": ("C0", "o"), "ff-g2m": ("C3", "D")}
G2M_TITLE = {"tran": "transductive", "ind": "inductive, held-out test nodes"}  # a setting is plotted by its own score


def g2m(payload: Payload, stem: Path) -> list[Path]:
    """Per dataset: test accuracy vs full-graph inference latency, log x -- the transductive setting where run,
    else the inductive one scored on its held-out nodes (``ind``); the panel title says which."""
    results = payload.get("results") or {}
    cells = [(d, t, s, cols) for d, bt in results.items() for t, bs in bt.items() for s, cols in bs.items()]
    if not cells:
        raise UserError("g2m JSON has no results")
    if not all("latency_s" in score for *_, cols in cells for c in G2M_STYLE if c in cols for score in cols[c]):
        raise UserError("g2m JSON has no latencies (written by experiments.g2m since the figure was added); re-run the grid")
    datasets = list(results)
    fig, axes = new_figure(len(datasets), cols=3)
    for ax, dataset in zip(axes, datasets):
        for t, teacher in enumerate(results[dataset]):
            by_setting = results[dataset][teacher]
            setting = "tran" if "tran" in by_setting else next(iter(by_setting))
            cols = by_setting[setting]
            for col, (color, marker) in G2M_STYLE.items():
                if col not in cols or not cols[col]:
                    continue
                acc = mean_std([100 * s[setting] for s in cols[col]])
                lat = mean_std([1000 * s["latency_s"] for s in cols[col]])
                label = f"teacher {teacher.upper()}" if col == "teacher" else f"{col.upper()} student" if col != "mlp" else "plain MLP"
                ax.errorbar([lat[0]], [acc[0]], xerr=[lat[1]], yerr=[acc[1]], color=color if col != "teacher" else f"C{4 + t}",
                            marker=marker, markersize=8, capsize=3, linestyle="none", label=label if t == 0 or col == "teacher" else None)  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("inference latency, all nodes in one batch (ms, log scale)")
        ax.set_ylabel("test accuracy % (best-val checkpoint)")
        ax.set_title(f"{_dataset_name(dataset)}: {G2M_TITLE[setting]}", fontsize=10)
        ax.legend(fontsize=7)
    seeds = ", ".join(str(v) for v in payload.get("seeds") or ["?"])
    title = (f"GNN-to-MLP distillation: test accuracy against inference latency (scale {payload.get('scale', '?')}, seeds {seeds}; "
             "CPU, 1 thread, median of 5 passes; the MLP students share one architecture, so their latency spread is timing noise)")
    wrapped_suptitle(fig, title)
    return [save_png(fig, stem.with_suffix(".png"))]


def bench_inference(payload: Payload, stem: Path) -> list[Path]:
    """MLP speed-up over each GNN vs graph size, full-graph and single-node regimes (log-log)."""
    rows = payload.get("rows") or []
    if not rows:
        raise UserError("bench_inference JSON has no rows")
    teachers = [k for k in rows[0]["full"] if k != "mlp"]
    fig, (ax,) = new_figure(1, panel_size=(6.2, 4.0))
    nodes = [r["nodes"] for r in rows]
    for i, t in enumerate(teachers):
        for regime, ls in (("full", "-"), ("single", "--")):
            speedup = [r["speedup"][regime][t] if "speedup" in r else r[regime]["mlp"] / r[regime][t] for r in rows]
            ax.plot(nodes, speedup, linestyle=ls, marker="o", color=f"C{i}",
                    label=f"vs {t.upper()}, {'full graph' if regime == 'full' else 'single node (L-hop fetch)'}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("graph size (nodes, log scale; CSBM, average degree 10)")
    ax.set_ylabel("MLP speed-up (× the GNN's nodes/s, log)")
    ax.set_title(f"How much faster an MLP student infers than its GNN teacher (scale {payload.get('scale', '?')})", fontsize=9)
    ax.legend(fontsize=7)
    return [save_png(fig, stem.with_suffix(".png"))]


# ------------------------------------------------------------------------------------------------ synth
def synth(payload: Payload, stem: Path) -> list[Path]:
    """Student accuracy per method (mean ± std over seeds); real-data and noise students as reference lines."""
    rows = payload.get("rows") or []
    if not rows:
        raise UserError("synth JSON has no rows")
    bars = [r for r in rows if not r["name"].startswith("teacher")]  # teachers are not students
    if not bars:
        raise UserError("synth JSON has no student rows to plot")
    fig, (ax,) = new_figure(1, panel_size=(10.0, 0.36 * len(bars) + 2.6))
    ys = list(range(len(bars)))[::-1]
    stats = [mean_std(r["accs"]) for r in bars]
    ref = [r["name"].startswith("student on") for r in bars]
    ax.barh(ys, [m for m, _ in stats], xerr=[s for _, s in stats], capsize=3, color=["0.65" if f else "C0" for f in ref], alpha=0.9)
    ax.set_yticks(ys, [r["name"] for r in bars], fontsize=8)
    for y, (m, sd) in zip(ys, stats):
        ax.text(min(m + sd, 100) + 0.8, y, f"{m:.1f}", va="center", fontsize=7)
    for k, (r, (m, sd)) in enumerate((r, st) for r, st, f in zip(bars, stats, ref) if f):
        style = {"color": "C2", "linestyle": "-"} if "real data" in r["name"] else {"color": f"C{3 + k % 4}", "linestyle": "--"}
        reference_line(ax, m, f"{r['name'].split(' (')[0]}: {m:.1f} ± {sd:.1f}", std=sd, vertical=True, **style)
    ax.set_xlim(0, 106)
    seeds = ", ".join(str(v) for v in payload.get("seeds") or ["?"])
    ax.set_xlabel(f"student {payload.get('split', 'test')} accuracy % (final checkpoint, mean ± std over seeds {seeds})")
    size = "×".join(str(v) for v in payload.get("image_size") or [])
    ax.set_title(f"Data-free distillation: test accuracy of students, {_dataset_name(payload.get('dataset', '?')).split(' (')[0]} {size} "
                 f"(scale {payload.get('scale', '?')})", fontsize=9)  # fmt: skip
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=7, ncols=2)
    return [save_png(fig, stem.with_suffix(".png"))]


# ------------------------------------------------------------------------------------------------ benchmarks
def _cost_panels(rows: list[dict], x: str, series: Callable[[dict], str], xlabel: str, title: str, stem: Path) -> list[Path]:
    """Time and peak memory vs ``x``; time is CPU seconds where every row has them (less load-sensitive), else wall."""
    fig, axes = new_figure(2, cols=2)
    names = list(dict.fromkeys(series(r) for r in rows))
    cpu = all("cpu_seconds" in r for r in rows)
    panels = (("cpu_seconds", "CPU seconds per iteration (log)") if cpu else ("seconds", "seconds per iteration (log)"),
              ("peak_mb", "peak tensor memory, MB (log)"))
    for ax, (key, ylabel) in zip(axes, panels):
        for i, name in enumerate(names):
            pts = sorted((r[x], r[key]) for r in rows if series(r) == name)
            ax.plot([p[0] for p in pts], [max(p[1], 1e-4) for p in pts], marker="osD^v"[i % 5], linestyle=("-", "--", ":")[i % 3],
                    color=f"C{i}", label=name, markersize=6 - i % 3)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        xs = sorted({r[x] for r in rows})
        ax.set_xticks(xs, [str(v) for v in xs])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))  # 2 and 5 of each decade
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    wrapped_suptitle(fig, title)
    return [save_png(fig, stem.with_suffix(".png"))]


def bench_unroll(payload: Payload, stem: Path) -> list[Path]:
    """Seconds and peak memory of one outer iteration vs unrolled steps N, per backend/mode."""
    rows = payload.get("rows") or []
    if not rows:
        raise UserError("bench_unroll JSON has no rows")
    return _cost_panels(rows, "N", lambda r: f"{r['backend']} {r['mode']}", "unrolled inner steps N (log scale)",
                        f"Unroll engine: cost of one MTT-style outer iteration ({_scale_text(payload)})", stem)  # fmt: skip


def bench_matching(payload: Payload, stem: Path) -> list[Path]:
    """Seconds and peak memory of one distillation iteration vs IPC, per method."""
    rows = payload.get("rows") or []
    if not rows:
        raise UserError("bench_matching JSON has no rows")
    return _cost_panels(rows, "ipc", lambda r: r["method"], "images per class (IPC, log scale)",
                        f"Matching methods: cost of one distillation iteration (scale {payload.get('scale', '?')})", stem)  # fmt: skip


FIGURES: dict[str, Callable[[Payload, Path], list[Path]]] = {
    "matching": matching, "trajectory": trajectory, "mirage": mirage, "g2m": g2m, "bench_inference": bench_inference,
    "synth": synth, "bench_unroll": bench_unroll, "bench_matching": bench_matching,
}  # fmt: skip


def write_figures(kind: str, result_json: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Draw ``kind``'s figure(s) from ``result_json`` into ``out_dir`` (default: next to the JSON)."""
    if kind not in FIGURES:
        raise UserError(f"no figure for {kind!r}; known: {', '.join(FIGURES)}")
    path = Path(result_json)
    stem = _stem(path) if out_dir is None else Path(out_dir) / _stem(path).name
    return FIGURES[kind](load_json(path), stem)


def finish(kind: str, result_json: str | os.PathLike | None, tables: str | os.PathLike | None = None) -> int:
    """End of an experiment: draw the figure(s) from the JSON just written and say where everything went."""
    if tables:
        print(f"wrote tables: {tables}", file=sys.stderr)
    if result_json is None:
        print("tables printed above; pass --json PATH to also write the results JSON and the figure", file=sys.stderr)
        return 0
    print(f"wrote results JSON: {result_json}", file=sys.stderr)
    return _draw(kind, result_json)


def _draw(kind: str, result_json: str | os.PathLike) -> int:
    """Write the figure(s) of ``result_json`` and say where; a user error is one line and exit 2."""
    try:
        for png in write_figures(kind, result_json):
            print(f"wrote figure: {png}", file=sys.stderr)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def add_flags(parser, what: str, skipped: str, *, figure: str = "the figure") -> None:
    """The ``--json PATH`` / ``--figure-only`` pair every experiment has: ``--json`` writes ``what`` (and
    ``figure`` next to it); ``--figure-only`` redraws from that JSON without the ``skipped`` work."""
    parser.add_argument("--json", default=None, help=f"write {what} here, and {figure} next to it", **output_flag(reads_when="figure_only"))
    parser.add_argument("--figure-only", action="store_true", help=f"only redraw {figure} from --json (no {skipped})")


def redraw(kind: str, result_json: str | os.PathLike | None) -> int:
    """``--figure-only``: redraw from an existing JSON without recomputing anything."""
    if result_json is None:
        print("error: --figure-only needs --json PATH (the results JSON to draw from)", file=sys.stderr)
        return 2
    return _draw(kind, result_json)
