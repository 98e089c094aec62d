"""Mirage versus full data, random graphs and herding at equal bytes, for GCN, GIN and GAT.

For each dataset: distil once with the dataset's preset (model-agnostic: the same distilled set
trains every architecture), pick random and herding subsets of the training graphs with at
most the distilled set's bytes, then train each model on each set with the restart protocol
of :mod:`graphs.mirage.train` and evaluate on the real validation/test graphs.

Equal bytes, equal recipe: every equal-bytes row (mirage, random, herding) trains the same network
and schedule -- Mirage's training preset at depth L (``--scale``), so the data is the only variable --
and the ``full`` row trains the dataset family's full-data recipe (GIN paper / OGB example) as the
reference beside them.  ``--baseline-network recipe`` gives the random/herding rows the full-data
recipe instead (how tables made before this rule were computed; architecture and data then differ
at once).  A distilled set at or above the training set's bytes is refused (``--allow-no-reduction``
runs it, labelled in the table and the JSON), and so is one that lacks a class.

    python -m experiments.mirage                                  # --scale cpu, shared data
    python -m experiments.mirage --datasets ogbg-molbace --methods mirage --scale paper
    python -m experiments.mirage --sweep MUTAG                    # support/hops chosen on validation
    python -m experiments.mirage --datasets MUTAG --split-seeds 0 1 2 3 4   # 5 random splits, aggregated
    python -m experiments.mirage --cv --datasets NCI1 PROTEINS MUTAG --scale paper   # full data, GIN-paper 10-fold CV

    python -m experiments.mirage --datasets NCI1 --split official --threshold-sweep   # the official protocol
    python -m experiments.mirage --datasets IMDB-BINARY --root DIR    # any TU (DIR/NAME/raw) / OGB (DIR/ogbg_*) set
    python -m experiments.mirage --datasets MUTAG --hops 3 --support 0.5   # mining settings instead of the preset/sweep

Every table shows the untrained network, Spearman(score, |V|) and per-class graph counts; each
dataset prints its size-only score and the Mirage set's tree roots per class.  A dataset without a
preset gets hops/support from a validation sweep (hops 1-3 x support 0.3/0.5/0.7, the most compact
set within 0.01 of the best validation score -- the rule used for MUTAG), printed; the sweep only
chooses among sets that cover every class and are smaller than the training set, and says which
classes each other set lacks.  ``--hops``/``--support`` override the preset (both: no sweep; one:
the sweep runs over the other); per-class thresholds: ``--support 0.27,0.35``.  When a class mines
more itemsets than ``--max-itemsets``, the error names the smallest support that fits.

``--cv``: full-data baselines only, with the dataset family's recipe (:data:`graphs.mirage.presets.RECIPES`)
under the GIN paper's 10-fold stratified CV (:mod:`graphs.mirage.cv`); ``--cv-state DIR`` keeps
finished folds so an interrupted run resumes, and ``--cv-jobs N`` trains N folds at once (one core
each, the same result).  ``--cv-hidden 16 32 --cv-batch-size 32 128 --cv-dropout 0 0.5`` runs the
GIN paper's hyper-parameter grid and reports the point of best mean validation accuracy (and,
labelled, the paper's test-selected point).

``--split-seeds``: TU datasets have no official split and MUTAG's test set holds 19 graphs, so one
split cannot separate methods a few points apart; each seed draws a new 80/10/10 split (and seeds
the random subset and the restarts), and a second table gives the mean ± std over splits of each
split's top-k test@best-val score.

Read-only dataset roots are copied to a temporary directory first (loaders write processed/).
Results (JSON) go to ``--json``; the markdown table is printed.
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import torch

from condense.checkpoint import RunState, default_state_path, resumes_on_rerun
from condense.safeio import CLIParser, check_outputs, cli_main, input_flag, lock_outputs, output_flag
from condense.utils import UserError, atomic_write_text, package_versions, seed_everything
from experiments import figures
from graphs.data.graphsets import GraphDataset, graphs_nbytes
from graphs.mirage.baselines import herding_subset, random_subset
from graphs.mirage.distill import MirageConfig, byte_share, check_classes, check_reduction, missing_classes, mirage_distill
from graphs.mirage.cv import config_grid, cross_validate, select_config
from graphs.mirage.presets import (NODE_ATTR, PRESETS, SCALES, SPLITS, load_graph_dataset, mining_features, mirage_preset,
                                   parse_floats, recipe, train_preset)
from graphs.mirage.sanity import ROW_COLUMNS, result_record, roots_per_class, row_cells, size_only
from graphs.mirage.train import RestartSummary, TrainConfig, train_restarts

__all__ = ["run_dataset", "run_cv", "method_config", "split_name", "split_counts", "aggregate_splits", "sweep", "pick_from_sweep", "choose_mirage_config",
           "missing_classes", "build_parser", "main"]

DATASETS = ("MUTAG", "PROTEINS", "NCI1", "ogbg-molbace")
MODELS = ("gcn", "gin", "gat")
METHODS = ("full", "random", "herding", "mirage")
#: what the equal-bytes random/herding rows train: Mirage's network and schedule (the default) or the full-data recipe
BASELINE_NETWORKS = ("same", "recipe")
DEFAULT_SHARED = Path(os.environ.get("CONDENSE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def _writable_root(name: str, shared: Path, tmp: Path, root: Path | None = None) -> Path | None:
    """Copy the dataset's directory into ``tmp`` and return the loader root (None for embedded sets).

    Looked up as ``root/NAME`` (TU) or ``root/ogbg_*`` (OGB) when ``root`` is given, else in the
    shared layout ``shared/tu/NAME`` or ``shared/ogb/ogbg_*`` -- any TU or OGB molecule dataset.
    """
    if name == "motifs":
        return None
    sub = name.replace("-", "_") if name.startswith("ogbg-") else name
    src = root / sub if root is not None else shared / ("ogb" if name.startswith("ogbg-") else "tu") / sub
    if not src.is_dir():
        raise UserError(f"{name!r} not found: expected the directory {src} (TU: NAME/raw/NAME_*.txt; OGB: ogbg_NAME/raw + split)")
    dst = tmp / (root.name if root is not None else "shared") / src.relative_to(root if root is not None else shared)
    if not dst.exists():
        shutil.copytree(src, dst)
    return dst.parent


def _training_sets(ds: GraphDataset, mcfg: MirageConfig, methods, seed: int, progress: bool,
                   allow_no_reduction: bool = False) -> tuple[dict, dict]:
    train = ds.subset("train")
    distilled = mirage_distill(train, ds.num_classes, mcfg, progress=progress)
    check_classes(distilled.graphs, ds.num_classes, allow=False,
                  hint=f"{ds.name} at hops {mcfg.hops}, support {list(mcfg.support)}: lower their support (--support, one value per class) "
                       "or choose --hops", allow_flag=None)  # fmt: skip
    label = check_reduction(distilled.nbytes, graphs_nbytes(train), allow=allow_no_reduction,
                            hint=f"{ds.name} at hops {mcfg.hops}, support {list(mcfg.support)}: raise --support or lower --hops")
    budget = distilled.nbytes
    sets = {"full": train, "mirage": distilled.graphs}
    if "random" in methods:
        sets["random"] = [train[i] for i in random_subset(train, budget, seed=seed)]
    if "herding" in methods:
        sets["herding"] = [train[i] for i in herding_subset(train, budget)]
    meta = dict(distilled.meta, roots_per_class=roots_per_class(distilled.graphs, ds.num_classes))
    if label:
        meta["no_reduction"] = label
    return {m: sets[m] for m in methods}, meta


def method_config(method: str, scale: str, name: str, model: str, hops: int, *, restarts: int | None = None,
                  baseline_epochs: int | None = None, baseline_network: str = "same") -> TrainConfig:
    """The network and schedule a row trains.

    Equal-bytes rows (mirage, random, herding) all train Mirage's official settings at depth L (the
    trees are L deep), so only their data differ; ``full`` trains the dataset family's full-data
    recipe (its own depth) as the reference.  ``baseline_network="recipe"`` gives random/herding the
    recipe too (the earlier tables).  Every row uses the Mirage preset's restarts/top so it averages
    the same number of runs.

    ``restarts`` (every row; top = min(top, restarts)) and ``baseline_epochs`` (the recipe rows
    only; the learning-rate schedule is unchanged) shorten a run that does not fit -- label them.
    """
    if baseline_network not in BASELINE_NETWORKS:
        raise UserError(f"--baseline-network must be one of {', '.join(BASELINE_NETWORKS)}, got {baseline_network!r}")
    mirage = train_preset(scale, name, model=model, layers=max(hops, 1))
    if restarts is not None:
        mirage = replace(mirage, restarts=int(restarts), top=min(mirage.top, int(restarts)))
    if method == "mirage" or (method != "full" and baseline_network == "same"):
        return mirage
    return recipe(scale, name, model=model, restarts=mirage.restarts, top=mirage.top, epochs=baseline_epochs)


def run_dataset(name: str, root: Path | None, *, scale: str, models, methods, seed: int, device: str, progress: bool,
                split: str = "random", max_itemsets: int | None = None, threshold_sweep: bool = False,
                restarts: int | None = None, baseline_epochs: int | None = None, node_attr: str = "drop",
                bins: int | None = None, hops: int | None = None, support: tuple[float, ...] | None = None,
                allow_no_reduction: bool = False, baseline_network: str = "same", state: RunState | None = None) -> dict:
    """All methods x models on one dataset; returns a JSON-able record.

    ``hops``/``support`` override the preset (or fix one axis of the sweep); ``allow_no_reduction`` runs
    a distilled set at or above the training bytes, labelled; ``baseline_network``: see :func:`method_config`;
    ``state`` keeps each finished (model, method) row so that a rerun skips it.
    """
    state = state or RunState(None)
    seed_everything(seed)
    ds = load_graph_dataset(name, root, seed=seed, split=split, node_attr=node_attr)
    mining, mined_on = mining_features(ds, bins)
    split = split_name(ds, split)
    print(f"<!-- {ds.summary()}; split {split} {split_counts(ds)}; Mirage mines {mined_on} -->", flush=True)
    if max_itemsets is not None:
        mining = dict(mining, max_itemsets=int(max_itemsets))
    mcfg = choose_mirage_config(ds, scale=scale, seed=seed, device=device, progress=progress, threshold_sweep=threshold_sweep,
                                mining=mining, hops=hops, support=support, allow_no_reduction=allow_no_reduction)
    sets, meta = _training_sets(ds, mcfg, methods, seed, progress, allow_no_reduction)
    label = meta.get("no_reduction", "")
    train, test = ds.subset("train"), ds.subset("test")
    train_bytes = graphs_nbytes(train)
    record = {"dataset": name, "summary": ds.summary(), "split": split, "mirage_config": asdict(mcfg), "split_counts": split_counts(ds), "metric": ds.metric,
              "node_attr": node_attr, "mining_features": mined_on, "baseline_network": baseline_network,
              "no_reduction": label, "scale": scale, "seed": seed, "mirage_meta": meta, "train_bytes": train_bytes,
              "size_only": size_only(train, test, ds.num_classes), "results": []}
    so = record["size_only"]
    print(f"<!-- {name}: size-only test {ds.metric} {so.get(ds.metric, so['accuracy']):.3f} (accuracy {so['accuracy']:.3f}); "
          f"Mirage tree roots per class {meta['roots_per_class']} -->", flush=True)
    for model in models:
        for method, graphs in sets.items():
            key = f"{name}/{split}/{seed}/{model}/{method}"
            if key not in state.rows:
                tcfg = method_config(method, scale, name, model, mcfg.hops, restarts=restarts, baseline_epochs=baseline_epochs,
                                     baseline_network=baseline_network)
                s = train_restarts(graphs, ds.subset("valid"), test, dims=(ds.in_dim, ds.edge_dim),
                                   num_classes=ds.num_classes, metric=ds.metric, config=tcfg, seed=seed,
                                   device=device, progress=progress, desc=f"{name} {model} {method}", test_curves=False)
                state.keep(key, _row(model, method, graphs, train_bytes, s, tcfg, ds.num_classes, "" if method == "full" else label))
            record["results"].append(state.rows[key])
            print(_md_row(name, record["results"][-1]), flush=True)
    return record


def split_name(ds: GraphDataset, split: str) -> str:
    """The split a record names: the one the loader used (``info["split_kind"]``: ``--split`` for TU sets,
    ``"scaffold"`` for OGB sets, which always use it), else ``split``."""
    return ds.info.get("split_kind", split)


def split_counts(ds: GraphDataset) -> dict[str, list[int]]:
    """Graphs per class in each split part."""
    return {part: torch.bincount(ds.labels(part), minlength=ds.num_classes).tolist() for part in ("train", "valid", "test")}


def _row(model: str, method: str, graphs, train_bytes: int, s: RestartSummary, tcfg: TrainConfig, num_classes: int,
         label: str = "") -> dict:
    return {"model": model, "method": method, **result_record(graphs, train_bytes, s, num_classes, label=label),
            "restarts": tcfg.restarts, "config": asdict(tcfg), "per_restart": {
                "best_val": s.best_val, "test_at_best_val": s.test_at_best_val, "final_test": s.final_test,
                "best_epoch": s.best_epoch, "untrained_test": s.untrained_test, "spearman_size": s.spearman_size}}


def _md_row(name: str, r: dict) -> str:
    return f"| {name} | {r['model']} | {r['method']} | {' | '.join(row_cells(r))} |"


def run_cv(name: str, root: Path | None, *, scale: str, models, seed: int, device: str, progress: bool,
           state_dir: Path | None, node_attr: str = "drop", grid: dict | None = None, jobs: int = 1) -> dict:
    """Full-data 10-fold CV of each model with the dataset family's recipe; prints one row per model.

    ``grid`` (``hidden`` / ``batch_size`` / ``dropout`` value lists) runs the GIN paper's
    hyper-parameter grid around the recipe and prints the validation-selected point
    (:func:`graphs.mirage.cv.select_config`).
    """
    ds = load_graph_dataset(name, root, seed=seed, node_attr=node_attr)
    print(f"<!-- {ds.summary()} -->", flush=True)
    record = {"dataset": name, "summary": ds.summary(), "scale": scale, "seed": seed, "node_attr": node_attr, "cv": [], "grid": []}
    attr_tag = "" if node_attr == "drop" else f"_attr-{node_attr}"  # the default keeps the state names of earlier runs
    for model in models:
        base = recipe(scale, name, model=model)
        points = []
        for cfg in config_grid(base, **(grid or {})):
            tag = attr_tag + ("" if cfg == base else f"_h{cfg.hidden}_b{cfg.batch_size}_d{cfg.dropout:g}")
            state = None if state_dir is None else state_dir / f"{name}_{model}_{scale}_seed{seed}{tag}.json"
            out = cross_validate(ds, cfg, seed=seed, device=device, progress=progress, state=state, jobs=jobs)
            record["cv"].append({"model": model, "config": asdict(cfg), **out})
            points.append((cfg, out["summary"]))
            print(_cv_md_row(name, f"{model} {_grid_label(cfg)}", out["summary"]), flush=True)
        if len(points) > 1:
            choice = select_config([s for _, s in points])
            record["grid"].append({"model": model, **choice})
            print(f"<!-- {name} {model} grid of {len(points)}: validation selects {_grid_label(points[choice['selected']][0])} "
                  f"(mean val {_pct(choice['val_at_selected'])}) -> test {_pct(choice['accuracy_val_selected'])}; by the mean "
                  f"val curve {_grid_label(points[choice['val_curve_selected']][0])} epoch {choice['val_curve_epoch']} -> "
                  f"{_pct(choice['accuracy_val_curve'])}; the GIN paper's "
                  f"test-selected choice {_grid_label(points[choice['paper_protocol_selected']][0])} epoch "
                  f"{choice['paper_protocol_epoch']} -> {_pct(choice['accuracy_paper_protocol'])} -->", flush=True)
    return record


def _grid_label(cfg: TrainConfig) -> str:
    return f"(hidden {cfg.hidden}, batch {cfg.batch_size}, dropout {cfg.dropout:g})"


def _pct(ms) -> str:
    """``(mean, std)`` of fractions as ``"mean ± std"`` in percent."""
    return f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}"


def _cv_md_row(name: str, model: str, s: dict) -> str:
    acc, auc = s["accuracy"], s.get("rocauc")
    auc_txt = _pct(auc["val_selected"]) if auc else "-"
    return (f"| {name} | {model} | {s['folds']} | {_pct(acc['val_selected'])} | {_pct(acc['val_curve'])} (epoch {s['val_curve_epoch']}) "
            f"| {_pct(acc['paper_protocol'])} (epoch {acc['paper_protocol_epoch']}) | {_pct(acc['final'])} | {_pct(acc['untrained'])} | {auc_txt} | "
            f"{s['spearman_size'][0]:+.2f} | {s['train_time_s']:.0f} |")


def aggregate_splits(records: list[dict]) -> list[dict]:
    """Mean ± std over split seeds of each (dataset, model, method)'s top-k test@best-val mean."""
    groups: dict[tuple, list] = {}
    for rec in records:
        for r in rec["results"]:
            groups.setdefault((rec["dataset"], r["model"], r["method"]), []).append((rec["seed"], r))
    out = []
    for (name, model, method), runs in groups.items():
        top = torch.tensor([r["top"][0] for _, r in runs], dtype=torch.float64)
        final = torch.tensor([r["final"][0] for _, r in runs], dtype=torch.float64)
        out.append({"dataset": name, "model": model, "method": method, "splits": [s for s, _ in runs],
                    "top": (float(top.mean()), float(top.std(unbiased=False))),
                    "final": (float(final.mean()), float(final.std(unbiased=False))),
                    "fraction": float(sum(r["fraction"] for _, r in runs) / len(runs)),
                    "graphs": float(sum(r["graphs"] for _, r in runs) / len(runs))})
    return out


SWEEP_HOPS, SWEEP_SUPPORTS = (1, 2, 3), (0.3, 0.5, 0.7)


#: the official two-step threshold sweeps (NCI1 notebook: 440/570, then 420/550), selected on validation
THRESHOLD_SWEEPS = {"NCI1": ((440, 570), (420, 550))}


def sweep(ds: GraphDataset, *, scale: str, seed: int, device: str, progress: bool,
          hops=SWEEP_HOPS, supports=SWEEP_SUPPORTS, filter_shared: bool = False, mining: dict | None = None,
          allow_no_reduction: bool = False) -> list[dict]:
    """Validation score of GIN trained on Mirage sets over a hops x support grid (no test).

    A support entry is one value for all classes or a tuple with one per class; ``mining``: the
    :func:`~graphs.mirage.presets.mining_features` fields of the dataset (and ``max_itemsets``).  A set
    that lacks a class or is not smaller than the training set (unless ``allow_no_reduction``) is not
    trained: its row says why and carries ``missing`` (the absent classes) or ``no_reduction``.
    """
    name, out = ds.name, []
    train = ds.subset("train")
    train_bytes = graphs_nbytes(train)
    for h in hops:
        for sup in supports:
            support = tuple(sup) if isinstance(sup, (tuple, list)) else (sup,)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # classes without itemsets: reported in the row below
                    d = mirage_distill(train, ds.num_classes, MirageConfig(hops=h, support=support, filter_shared=filter_shared,
                                                                           **(mining or {})), progress=False)
            except UserError as exc:  # too many itemsets at this support (the message names the support that fits)
                print(f"| {name} | {h} | {sup} | - | - | skipped: {exc} |", flush=True)
                continue
            row = {"hops": h, "support": sup, "graphs": len(d.graphs), "bytes": d.nbytes, "val": None}
            missing = missing_classes(d.graphs, ds.num_classes)
            if missing or (d.nbytes >= train_bytes and not allow_no_reduction):
                row.update(missing=missing, no_reduction=d.nbytes >= train_bytes)
                why = (f"no graph of class(es) {missing}" if missing else
                       f"{byte_share(d.nbytes / train_bytes)} % of the training bytes: no reduction")
                print(f"| {name} | {h} | {sup} | {len(d.graphs)} | {d.nbytes} | skipped: {why} |", flush=True)
                out.append(row)
                continue
            tcfg = train_preset(scale, name, model="gin", layers=max(h, 1))
            s = train_restarts(d.graphs, ds.subset("valid"), ds.subset("valid"), dims=(ds.in_dim, ds.edge_dim),
                               num_classes=ds.num_classes, metric=ds.metric, config=tcfg, seed=seed, device=device,
                               progress=progress, desc=f"sweep L={h} s={sup}", test_curves=False)
            row["val"] = float(torch.tensor(s.best_val).mean())
            out.append(row)
            print(f"| {name} | {h} | {sup} | {len(d.graphs)} | {d.nbytes} | {row['val']:.3f} |", flush=True)
    return out


def pick_from_sweep(rows: list[dict], tolerance: float = 0.01) -> dict:
    """The rule used for MUTAG: the most compact set (bytes) whose validation score is within
    ``tolerance`` of the best, among the sets that were trained (every class present, smaller than
    the training set)."""
    trained = [r for r in rows if r.get("val") is not None]
    if not trained:
        lacking = "; ".join(f"hops {r['hops']} support {r['support']}: " + (f"no class {r['missing']}" if r.get("missing")
                            else "no reduction") for r in rows)
        raise UserError("no set of the hops/support sweep covers every class with fewer bytes than the training set"
                        + (f" ({lacking})" if lacking else " (no itemset mined)")
                        + "; choose --hops/--support (per-class supports: --support 0.3,0.1) or --sweep-hops/--sweep-supports")
    best = max(r["val"] for r in trained)
    return min((r for r in trained if r["val"] >= best - tolerance), key=lambda r: (r["bytes"], -r["val"]))


def choose_mirage_config(ds: GraphDataset, *, scale: str, seed: int, device: str, progress: bool,
                         threshold_sweep: bool = False, mining: dict | None = None, hops: int | None = None,
                         support: tuple[float, ...] | None = None, allow_no_reduction: bool = False) -> MirageConfig:
    """The dataset's preset, or -- when it has none -- the validation sweep's choice (printed), with
    the ``mining`` feature fields (:func:`~graphs.mirage.presets.mining_features`, ``max_itemsets``) applied.

    ``hops``/``support`` (``--hops``/``--support``) override the preset; without a preset, both fix the
    config and one of them fixes that axis of the sweep.  ``threshold_sweep``: run the official per-class
    threshold candidates (:data:`THRESHOLD_SWEEPS`) at the preset's hops and keep the one with the best
    validation score (printed).
    """
    mining = mining or {}
    overrides = {k: v for k, v in (("hops", hops), ("support", None if support is None else tuple(support))) if v is not None}
    if threshold_sweep and overrides:
        raise UserError("--threshold-sweep chooses the support itself: drop --hops/--support")
    if (ds.name in PRESETS and not threshold_sweep) or len(overrides) == 2:
        base = mirage_preset(ds.name) if ds.name in PRESETS else MirageConfig()
        return replace(base, **overrides, **mining)
    if threshold_sweep:
        if ds.name not in THRESHOLD_SWEEPS or ds.name not in PRESETS:
            raise UserError(f"no official threshold sweep for {ds.name!r} (known: {', '.join(THRESHOLD_SWEEPS)})")
        base = mirage_preset(ds.name)
        rows = sweep(ds, scale=scale, seed=seed, device=device, progress=progress, hops=(base.hops,),
                     supports=THRESHOLD_SWEEPS[ds.name], filter_shared=base.filter_shared, mining=mining,
                     allow_no_reduction=allow_no_reduction)
        choice = pick_from_sweep(rows, tolerance=0.0)
        print(f"<!-- {ds.name}: threshold sweep {list(THRESHOLD_SWEEPS[ds.name])} -> support {choice['support']} "
              f"(val {choice['val']:.3f}) -->", flush=True)
        return MirageConfig(hops=base.hops, support=tuple(choice["support"]), filter_shared=base.filter_shared, **mining)
    grid_hops = (hops,) if hops is not None else SWEEP_HOPS
    grid_supports = (tuple(support),) if support is not None else SWEEP_SUPPORTS
    print(f"<!-- {ds.name}: no Mirage preset; validation sweep over hops {list(grid_hops)} x support {list(grid_supports)} -->")
    choice = pick_from_sweep(sweep(ds, scale=scale, seed=seed, device=device, progress=progress, hops=grid_hops,
                                   supports=grid_supports, mining=mining, allow_no_reduction=allow_no_reduction))
    print(f"<!-- {ds.name}: chose hops {choice['hops']}, support {choice['support']} (val {choice['val']:.3f}, "
          f"{choice['graphs']} graphs, {choice['bytes']} bytes; most compact within 0.01 of the best) -->", flush=True)
    sup = choice["support"]
    return MirageConfig(hops=choice["hops"], support=tuple(sup) if isinstance(sup, (tuple, list)) else (sup,), **mining)


def build_parser() -> CLIParser:
    p = CLIParser(prog="python -m experiments.mirage", description=__doc__.split("\n")[0],
                  epilog="Equal bytes, equal recipe: the mirage, random and herding rows all train Mirage's network and schedule "
                         "(--scale) so the data is the only variable; the full row trains the dataset's full-data recipe as the "
                         "reference (--baseline-network recipe: the random/herding rows train the recipe, as tables made before "
                         "this rule).  A distilled set at or above the training bytes, or one lacking a class, is refused.")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS + ("sage",))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    p.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="read-only shared data directory (tu/NAME, ogb/ogbg_*)", **input_flag(directory=True))
    p.add_argument("--root", type=Path, default=None, help="directory holding NAME/raw (TU) or ogbg_* (OGB); overrides --shared", **input_flag(directory=True))
    p.add_argument("--state", type=Path, default=None, help="file keeping the finished (model, method) rows so that rerunning the "
                   "same command resumes (default: a file under ~/.cache/condense/experiments named after the settings; removed when complete)",
                   **output_flag(resumable=True))
    p.add_argument("--threshold-sweep", action="store_true",
                   help="official two-step per-class threshold sweep (NCI1: 440/570, 420/550), chosen on validation")
    p.add_argument("--max-itemsets", type=int, default=None,
                   help="per-class cap on mined itemsets (default: MirageConfig's); when hit, the error names the smallest support that fits")
    p.add_argument("--hops", type=int, default=None,
                   help="Mirage tree depth L for every dataset (default: the preset; without a preset: the sweep's)")
    p.add_argument("--support", type=parse_floats, default=None,
                   help="Mirage support, one value or one per class (comma separated; >= 1: a count, (0, 1): a fraction)")
    p.add_argument("--allow-no-reduction", action="store_true",
                   help="run a distilled set at or above the training set's bytes (refused by default), labelled in every output")
    p.add_argument("--baseline-network", choices=BASELINE_NETWORKS, default="same",
                   help="network of the equal-bytes random/herding rows: same (default: Mirage's network and schedule, the data "
                        "the only variable) or recipe (the full-data recipe, as tables made before this default)")
    p.add_argument("--restarts", type=int, default=None, help="restarts of every row (default: the scale's; top = min(top, N))")
    p.add_argument("--baseline-epochs", type=int, default=None,
                   help="epochs of the full-data recipe rows (full; random/herding with --baseline-network recipe) (default: the "
                        "recipe's; a shortened run, label it)")
    p.add_argument("--sweep", default=None, metavar="DATASET", help="only run the validation sweep for DATASET")
    p.add_argument("--sweep-hops", type=int, nargs="+", default=list(SWEEP_HOPS))
    p.add_argument("--sweep-supports", type=float, nargs="+", default=list(SWEEP_SUPPORTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seeds", type=int, nargs="+", default=None,
                   help="run every dataset on these split seeds (overrides --seed) and aggregate over them")
    p.add_argument("--split", choices=SPLITS, default="random",
                   help="TU datasets: random (seeded 80/10/10) or official (Mirage's PyG shuffle after manual_seed(0))")
    p.add_argument("--node-attr", choices=NODE_ATTR, default="drop",
                   help="continuous node attributes (TU): drop (default: the official Mirage and GIN code) or concat to the "
                        "one-hot labels as GNN input")
    p.add_argument("--bins", type=int, default=None,
                   help="with --node-attr concat: Mirage mines the attributes cut into this many quantile bins (fitted on the "
                        "training graphs; default: labels only)")
    p.add_argument("--cv", action="store_true", help="full-data 10-fold CV with the dataset's recipe (TU datasets)")
    p.add_argument("--cv-state", type=Path, default=None, help="directory for resumable per-fold CV state")
    p.add_argument("--cv-hidden", type=int, nargs="+", default=None,
                   help="with --cv: hidden sizes of the GIN paper's grid (paper: 16 32 for bioinformatics; default: the recipe's)")
    p.add_argument("--cv-batch-size", type=int, nargs="+", default=None,
                   help="with --cv: batch sizes of the grid (paper: 32 128; default: the recipe's)")
    p.add_argument("--cv-dropout", type=float, nargs="+", default=None,
                   help="with --cv: dropout values of the grid (paper: 0 0.5; default: the recipe's); the grid point of best "
                        "mean validation accuracy is reported")
    p.add_argument("--cv-jobs", type=int, default=None,
                   help="with --cv: folds trained at once, one process and one core each (default 1; the result is the same)")
    p.add_argument("--device", default="cpu")
    figures.add_flags(p, "all records", "mining, no training")
    p.add_argument("--no-progress", action="store_true")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag, value in (("--restarts", args.restarts), ("--baseline-epochs", args.baseline_epochs), ("--cv-jobs", args.cv_jobs)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    grid = {"hidden": args.cv_hidden, "batch_size": args.cv_batch_size, "dropout": args.cv_dropout}
    if not args.cv and (any(v is not None for v in grid.values()) or args.cv_jobs is not None):
        raise UserError("--cv-hidden/--cv-batch-size/--cv-dropout/--cv-jobs need --cv")
    config_grid(TrainConfig(), **grid)  # validate the grid values before any work
    lock_outputs(check_outputs({"--json": args.json, "--state": args.state}, roots={"--shared": args.shared}).values())
    if args.figure_only:
        return figures.redraw("mirage", args.json)
    progress = not args.no_progress
    try:
        with tempfile.TemporaryDirectory(prefix="mirage-exp-") as tmp:
            if args.cv:
                if args.cv_state is not None:
                    resumes_on_rerun(f"--cv-state {args.cv_state} (finished folds)")
                print("| dataset | model | folds | accuracy, val-selected (primary) | accuracy, epoch by mean val curve "
                      "| accuracy, epoch by mean CV test (GIN paper protocol) | final epoch | untrained | ROC-AUC val-selected "
                      "| Spearman(score, |V|) | train s |")
                print("|---|---|---|---|---|---|---|---|---|---|---|")
                records = [run_cv(name, _writable_root(name, args.shared, Path(tmp), args.root), scale=args.scale, models=args.models,
                                  seed=args.seed, device=args.device, progress=progress, state_dir=args.cv_state,
                                  node_attr=args.node_attr, grid=grid, jobs=args.cv_jobs or 1)
                           for name in args.datasets]
            elif args.sweep:
                print("| dataset | hops | support | graphs | bytes | val (mean best-val over restarts) |\n|---|---|---|---|---|---|")
                ds = load_graph_dataset(args.sweep, _writable_root(args.sweep, args.shared, Path(tmp), args.root), seed=args.seed,
                                        split=args.split, node_attr=args.node_attr)
                mining = mining_features(ds, args.bins)[0]
                if args.max_itemsets is not None:
                    mining["max_itemsets"] = args.max_itemsets
                records = sweep(ds, scale=args.scale, seed=args.seed, device=args.device, progress=progress,
                                hops=args.sweep_hops, supports=args.sweep_supports, mining=mining,
                                allow_no_reduction=args.allow_no_reduction)
            else:
                settings = {k: v for k, v in sorted(vars(args).items()) if k not in ("json", "state", "no_progress", "overwrite", "no_verify")}
                state_path = args.state or default_state_path("mirage", settings)
                state = RunState(state_path)
                resumes_on_rerun(f"{state_path} (finished rows)")
                print(f"| dataset | model | method | {' | '.join(ROW_COLUMNS)} |")
                print("|" + "---|" * (len(ROW_COLUMNS) + 3))
                records = []
                for name in args.datasets:
                    for seed in args.split_seeds or [args.seed]:
                        t0 = time.perf_counter()
                        rec = run_dataset(name, _writable_root(name, args.shared, Path(tmp), args.root), scale=args.scale,
                                          models=args.models, methods=args.methods, seed=seed, device=args.device, progress=progress,
                                          split=args.split, max_itemsets=args.max_itemsets, threshold_sweep=args.threshold_sweep,
                                          restarts=args.restarts, baseline_epochs=args.baseline_epochs,
                                          node_attr=args.node_attr, bins=args.bins, hops=args.hops, support=args.support,
                                          allow_no_reduction=args.allow_no_reduction, baseline_network=args.baseline_network,
                                          state=state)
                        rec["wall_time_s"] = time.perf_counter() - t0
                        m = rec["mirage_meta"]
                        print(f"<!-- {name} seed {seed}: distillation {m['time_total_s']:.2f}s (decompose {m['time_decompose_s']:.2f}s, "
                              f"mine {m['time_mine_s']:.2f}s), trees/class {m['unique_trees_per_class']}, itemsets mined "
                              f"{m['itemsets_mined_per_class']} kept {m['itemsets_kept_per_class']}, wall {rec['wall_time_s']:.0f}s -->", flush=True)
                        records.append(rec)
                if args.split_seeds and len(args.split_seeds) > 1:
                    f = lambda ms: f"{ms[0]:.3f} ± {ms[1]:.3f}"  # noqa: E731
                    print(f"\nOver split seeds {args.split_seeds} (mean ± std of each split's top-k test@best-val mean):\n")
                    print("| dataset | model | method | mean graphs | mean % train bytes | test@best-val top-k | final epoch |")
                    print("|---|---|---|---|---|---|---|")
                    for a in aggregate_splits(records):
                        print(f"| {a['dataset']} | {a['model']} | {a['method']} | {a['graphs']:.1f} | {byte_share(a['fraction'])}% | "
                              f"{f(a['top'])} | {f(a['final'])} |", flush=True)
                if args.state is None:
                    state_path.unlink(missing_ok=True)  # complete: nothing left to resume
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        payload = {"argv": sys.argv if argv is None else argv, "versions": package_versions(),
                   "train_config": asdict(replace(SCALES[args.scale])), "records": records}
        atomic_write_text(json.dumps(payload, indent=1, default=str), args.json)
    if args.sweep or args.cv:  # validation sweep / full-data CV: no figure
        print(("CV" if args.cv else "sweep") + " table printed above" + (f"; wrote results JSON: {args.json}" if args.json else ""), file=sys.stderr)
        return 0
    return figures.finish("mirage", args.json)


if __name__ == "__main__":
    sys.exit(main())
