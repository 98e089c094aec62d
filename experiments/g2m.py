"""GNN-to-MLP grid: datasets x teachers x {teacher, MLP, GLNN, LFD, HFD, FF-G2M} x settings.

Test accuracy of the best-validation checkpoint (never max over test), mean +- std over seeds.
``--scale paper``: Cora, CiteSeer, PubMed (skipped with a message when its raw files are absent)
and CSBM x {GCN, SAGE, GAT} x {tran, ind}, 5 seeds (0-4), the official FF-G2M presets (``--preset``),
<= 500 epochs, patience 50. ``--scale cpu`` (default) keeps every hyper-parameter but only the GCN
teacher and one seed (0): the official Cora/CiteSeer presets are 512-2048 wide on 1433/3703 dense
bag-of-words inputs, i.e. minutes per model on a shared 2-core CPU. Narrow the grid with
``--datasets/--teachers/--settings/--seeds``.

    python -m experiments.g2m [--scale cpu|paper] [--root PLANETOID_ROOT] [--json out.json]
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from condense.checkpoint import DEFAULT_INTERVAL, RunState, default_state_path, resumes_on_rerun
from condense.safeio import CLIParser, check_outputs, cli_main, input_flag, lock_outputs, output_flag
from condense.utils import UserError, atomic_write_text, resolve_device
from experiments import figures
from graphs.data.planetoid import planetoid_available
from graphs.g2m.pipeline import inference_seconds, load_task, make_task_split, run
from graphs.g2m.presets import PROTOCOLS, TEACHERS, get_preset
from graphs.g2m.student import METHODS

SCALES = {
    "cpu": dict(seeds=(0,), datasets=("cora", "citeseer", "pubmed", "csbm"), teachers=("gcn",), settings=("tran", "ind")),
    "paper": dict(seeds=(0, 1, 2, 3, 4), datasets=("cora", "citeseer", "pubmed", "csbm"), teachers=TEACHERS, settings=("tran", "ind")),
}
COLUMNS = ("teacher",) + METHODS


def _default_planetoid_root() -> Path | None:
    env = os.environ.get("CONDENSE_SHARED_DATA")
    repo = Path(__file__).resolve().parents[1]
    for cand in ([Path(env)] if env else []) + [repo.parent / "shared" / "data"]:
        if (cand / "planetoid").is_dir():
            return cand / "planetoid"
    return None


def _state_path(args, scale: dict) -> Path:
    """Default ``--state``: a file in the user's cache named after the grid."""
    return default_state_path("g2m", (sorted(scale.items()), args.preset, str(args.root)))


def run_grid(datasets, teachers, settings, seeds, *, root, preset, device, progress, log=print, state: RunState | None = None) -> dict:
    """Nested results ``[dataset][teacher][setting][column] -> list of score dicts`` (one per seed).

    ``state`` keeps every finished run and checkpoints the one in progress (see :class:`condense.checkpoint.RunState`)."""
    state = state or RunState(None)
    results: dict = {}
    for dataset in datasets:
        if dataset != "csbm" and (root is None or not planetoid_available(dataset, root)):
            log(f"skipping {dataset}: raw Planetoid files not found under {root}")
            continue
        data, labelled = load_task(dataset, root)
        for teacher in teachers:
            for setting in settings:
                cell = results.setdefault(dataset, {}).setdefault(teacher, {}).setdefault(setting, {c: [] for c in COLUMNS})
                for seed in seeds:
                    start, key = time.perf_counter(), f"{dataset}/{teacher}/{setting}/{seed}"
                    if key not in state.rows:
                        config = get_preset(dataset, teacher, preset)
                        split = make_task_split(data, labelled, setting, seed=seed, observed=config.observed)
                        ck = state.checkpoint(key)
                        out = run(data, split, teacher, config, METHODS, seed=seed, device=device, progress=progress, checkpoint=ck)
                        # full-graph inference seconds (every node's logits; median of 5) for the accuracy-vs-latency figure
                        row = {"teacher": {**out.teacher.scores, "latency_s": inference_seconds(out.teacher_model, data)}}
                        for method, (student, res) in out.students.items():
                            row[method] = {**res.scores, "latency_s": inference_seconds(student, data)}
                        state.keep(key, row, ck)
                    for c in COLUMNS:
                        cell[c].append(state.rows[key][c])
                    key = "tran" if setting == "tran" else "ind"
                    summary = " ".join(f"{c}={100 * cell[c][-1][key]:.1f}" for c in COLUMNS)
                    log(f"{dataset:9s} {teacher:5s} {setting:4s} seed={seed} [{key}] {summary} ({time.perf_counter() - start:.0f}s)")
    return results


def markdown_tables(results: dict) -> str:
    """One table per reported score: ``tran`` for transductive, ``ind`` and ``prod`` for inductive."""
    out = []
    for setting, key in (("tran", "tran"), ("ind", "tran"), ("ind", "ind"), ("ind", "prod")):
        rows = []
        for dataset, by_teacher in results.items():
            for teacher, by_setting in by_teacher.items():
                if setting not in by_setting:
                    continue
                cells = []
                for c in COLUMNS:
                    vals = 100 * np.array([s[key] for s in by_setting[setting][c]])
                    cells.append(f"{vals.mean():.2f} ± {vals.std():.2f}")
                rows.append(f"| {dataset} | {teacher} | " + " | ".join(cells) + " |")
        if rows:
            out.append(f"\n**setting `{setting}`, score `{key}`** (test accuracy %, best-validation checkpoint, mean ± std over seeds)\n")
            out.append("| dataset | teacher | " + " | ".join(COLUMNS) + " |")
            out.append("|---|---|" + "---|" * len(COLUMNS))
            out.extend(rows)
    return "\n".join(out)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = CLIParser(prog="python -m experiments.g2m", description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="cpu", choices=SCALES)
    p.add_argument("--root", default=None, help="Planetoid root (default: $CONDENSE_SHARED_DATA/planetoid, else shared/data/planetoid beside the checkout; only read)", **input_flag(directory=True))
    p.add_argument("--datasets", nargs="+", default=None)
    p.add_argument("--teachers", nargs="+", default=None, choices=TEACHERS)
    p.add_argument("--settings", nargs="+", default=None, choices=("tran", "ind"))
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--preset", default="ff-g2m", choices=PROTOCOLS)
    figures.add_flags(p, "raw per-seed scores and latencies (atomically)", "training")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription on shared CPUs)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--progress", action="store_true", help="per-epoch progress bars")
    p.add_argument("--state", default=None, help="file keeping the finished runs (and PATH.*.ckpt the one in progress) so that rerunning "
                   "the same command resumes (default: a file under ~/.cache/condense/experiments; removed when complete)",
                   **output_flag(resumable=True))  # fmt: skip
    p.add_argument("--checkpoint-interval", type=float, default=DEFAULT_INTERVAL, metavar="SECONDS",
                   help=f"checkpoint the run in progress every SECONDS of wall time (default: {DEFAULT_INTERVAL:g})")
    args = p.parse_args(argv)
    lock_outputs(check_outputs({"--json": args.json, "--state": args.state}, roots={"--root": args.root}).values())
    scale = dict(SCALES[args.scale])
    for key in ("datasets", "teachers", "settings", "seeds"):
        if getattr(args, key) is not None:
            scale[key] = tuple(getattr(args, key))
    if args.figure_only:
        return figures.redraw("g2m", args.json)
    try:
        device = resolve_device(args.device)
        torch.set_num_threads(max(1, args.threads))
        root = Path(args.root) if args.root else _default_planetoid_root()  # only read, never written
        state_path = Path(args.state) if args.state else _state_path(args, scale)
        state = RunState(state_path, args.checkpoint_interval)
        resumes_on_rerun(f"{state_path} (finished runs)")
        start = time.perf_counter()
        results = run_grid(scale["datasets"], scale["teachers"], scale["settings"], scale["seeds"], root=root, preset=args.preset, device=device,
                           progress=args.progress, state=state)  # fmt: skip
        wall = time.perf_counter() - start
        if not args.state:
            state_path.unlink(missing_ok=True)  # complete: nothing left to resume
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\nscale={args.scale} preset={args.preset} seeds={list(scale['seeds'])} wall={wall / 60:.1f} min")
    print(markdown_tables(results))
    if args.json:
        payload = json.dumps(dict(scale=args.scale, preset=args.preset, seeds=list(scale["seeds"]), wall_seconds=wall, results=results))
        atomic_write_text(payload, args.json)
    return figures.finish("g2m", args.json)


if __name__ == "__main__":
    sys.exit(main())
