"""Data-free distillation benchmark: ``python -m experiments.synth [--scale cpu|paper] [--dataset digits|fashion_mnist]``.

Rows: teacher, student on real data (upper reference), student distilled on Gaussian-noise inputs
(lower bound), DAFL, DFAD, ZSKT, Fast-DFKD meta-generator (k and exact/fomaml), and the
random-teacher control (DAFL from an untrained teacher). Every student is LeNet-5-half and every
teacher LeNet-5: without BatchNorm for DAFL/DFAD/ZSKT (their papers' teacher), with BatchNorm for
the meta-generator (its BN-statistics loss needs running statistics). The
reported number is the final-checkpoint test accuracy, mean ± std over seeds.

A class-stratified 20 % of the training split is held out (``condense.data.split_validation``,
seed 0): every model trains on the remaining 80 %. ``--split val`` scores on the held-out images --
use it to choose hyper-parameters -- and ``--split test`` (default) scores the same runs on the test
split for the final table. ``--set GROUP.KEY=VALUE`` and ``--meta-grid MODE:K:LR_META`` change a
scale's settings for a selection candidate (named in the row label); every trained network is stored
in the cache (``--cache DIR``, default the user's cache directory ``condense/synth``; ``--no-cache``
keeps none), so a killed run resumes and the ``--split test`` run of the chosen settings re-scores the
networks their ``--split val`` run trained (:class:`ModelCache`).

Images are resized to 32x32 by default, the input LeNet-5 was designed for and the MNIST setting of
the DAFL / DFAD papers: below 32 px LeNet-5's third conv needs padding, and at 16x16 its second conv
leaves a 2x2 map and the third sees a single pixel; there the DFAD / ZSKT students were 9-13 points
worse than at 32x32 (experiments/results/synth.md).

``--scale cpu`` shrinks generators and iteration counts (see ``SCALES``) so the whole table takes
minutes; ``--scale paper`` uses the published settings (MNIST 32x32: DAFL 24k iterations of batch
512, DFAD 2k x 5 steps, ZSKT 8k pseudo batches, Fast-DFKD 220 rounds x 400 KD steps) and is far
beyond a laptop CPU.
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import dataclasses
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from condense.checkpoint import Checkpointer, user_cache
from condense.data import ImageDataset, load_dataset, split_validation
from condense.evaluate import accuracy
from condense.checkpoint import resumes_on_rerun
from condense.safeio import CLIParser, check_outputs, cli_main, fingerprint_tensors, input_flag, lock_outputs, output_flag
from condense.utils import UserError, atomic_write_text, markdown_table
from experiments import figures
from synth.baselines import train_on_noise
from synth.generator_kd import GeneratorKDConfig, train_generator_kd
from synth.hard import HardConfig, train_hard, translate
from synth.meta import MetaConfig, train_meta_generator
from synth.teachers import Model, build_network, load_model, random_teacher, save_model, train_teacher

# cpu: chosen on the validation split (``--split val``; candidates and scores in
# experiments/results/synth.md). The generator-KD rows use a LeNet-5 *without* BatchNorm, as in the
# DAFL / DFAD / ZSKT papers (with the BN teacher their students reached only 0.42-0.62 validation
# accuracy); the meta-generator needs the BN teacher (its DeepInversion loss matches BN statistics).
# DAFL uses the paper's natural-log entropy term (the official code's log10 collapsed on validation
# seed 3) with cosine annealing; DFAD an Adam student with cosine annealing (3 validation seeds).
# Those were chosen on 16x16 digits; at LeNet-5's own 32x32 input (the default ``--resize``) DAFL's
# validation accuracy is flat after ~600 iterations, so its iteration count was cut to 1500 there
# (validation seeds 0 / 3: 0.936 / 0.900 at 1500 vs 0.936 / 0.884 at 6000). The teachers (and the
# real-data student) use DAFL's published teacher recipe, Adam 1e-3, batch 256, 200 epochs: with the
# earlier, harsher recipe (Adam 3e-3, batch 64, 60 epochs; equally accurate teachers) DAFL reached only
# 0.944 / 0.976 / 0.768 / 0.804 on validation seeds 0-3, with the published one 0.972 / 0.972 / 0.964 / 0.836.
# Fashion-MNIST uses these with the overrides chosen on its own validation split (--set / --meta-grid;
# the commands are in experiments/results/synth.md).
#: DAFL's published teacher recipe (both scales)
DAFL_TEACHER = dict(epochs=200, lr=1e-3, batch_size=256)
SCALES: dict[str, dict[str, Any]] = {
    "cpu": {
        "teacher": DAFL_TEACHER,
        "noise_steps": 1000, "noise_lr": 5e-3,
        "dafl": dict(iterations=1500, batch_size=128, ngf=16, lr_g=0.2, lr_s=5e-3, schedule="cosine", entropy_log="ln"),
        "dfad": dict(iterations=1500, batch_size=64, ngf=8, student_optimizer="adam", lr_s=3e-3, weight_decay=0.0, schedule="cosine"),
        "zskt": dict(iterations=400, batch_size=64, ngf=8),
        "meta": dict(rounds=200, warmup=2, batch_size=64, nz=32, ngf=8, lr_g=0.2, lr_z=0.05, crop_pad=1, flip=False,
                     kd_steps=30, kd_batch_size=64, lr_s=5e-3, student_optimizer="adam", temperature=4.0),
        "meta_grid": [("fomaml", 2, 0.02), ("exact", 2, 0.005), ("fomaml", 5, 0.02), ("exact", 5, 0.005),
                      ("fomaml", 10, 0.02), ("exact", 10, 0.005)],
    },
    "paper": {
        "teacher": DAFL_TEACHER,
        "noise_steps": 24000, "noise_lr": 2e-3,
        "dafl": {}, "dfad": {}, "zskt": {},
        "meta": dict(crop_pad=4, flip=False),
        "meta_grid": [(m, k, 5e-3) for k in (2, 5, 10) for m in ("fomaml", "exact")],
    },
}  # fmt: skip
#: the HARD toy's teacher recipe (fixed when the toy was run; independent of the benchmark's presets)
HARD_TOY_TEACHER = dict(epochs=60, lr=3e-3, batch_size=64)
#: teacher normalisation per family: the generator-KD papers' LeNet-5 has none; Fast-DFKD needs BN
TEACHER_NORMS = {"kd": "none", "meta": "batchnorm"}
#: row groups ``--only`` can select (the two teachers are always trained and reported)
GROUPS = ("real", "noise", "dafl", "dfad", "zskt", "meta", "control")


def _student(ds: ImageDataset, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network("lenet5_half", (ds.channels, *ds.image_size), ds.num_classes)


#: groups whose settings ``--set GROUP.KEY=VALUE`` may override, and the config each one builds
OVERRIDABLE: dict[str, type] = {"dafl": GeneratorKDConfig, "dfad": GeneratorKDConfig, "zskt": GeneratorKDConfig, "meta": MetaConfig}


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``GROUP.KEY=VALUE`` (VALUE read as JSON, else as a string) -> ``{group: {key: value}}``; bad items are a :class:`UserError`."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, eq, raw = item.partition("=")
        group, dot, key = target.partition(".")
        if not (eq and dot and key) or group not in OVERRIDABLE:
            raise UserError(f"--set {item!r}: expected GROUP.KEY=VALUE with GROUP one of {', '.join(OVERRIDABLE)}")
        names = {f.name for f in dataclasses.fields(OVERRIDABLE[group])} - {"preset", "meta", "k", "lr_meta"}
        if key not in names:
            raise UserError(f"--set {item!r}: {group} has no setting {key!r} (one of {', '.join(sorted(names))}; "
                            "the meta grid's mode, k and lr_meta come from --meta-grid)")  # fmt: skip
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(group, {})[key] = value
    return out


def parse_meta_grid(items: Sequence[str]) -> list[tuple[str, int, float]]:
    """``MODE:K:LR_META`` items (e.g. ``fomaml:2:0.02``) -> meta-grid entries; bad items are a :class:`UserError`."""
    grid = []
    for item in items:
        parts = item.split(":")
        try:
            mode, k, lr = parts[0], int(parts[1]), float(parts[2])
            if len(parts) != 3:
                raise ValueError
        except (IndexError, ValueError):
            raise UserError(f"--meta-grid {item!r}: expected MODE:K:LR_META, e.g. fomaml:2:0.02") from None
        grid.append((mode, k, lr))
    return grid


def _label(name: str, overrides: dict[str, Any]) -> str:
    return name + (" [" + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) + "]" if overrides else "")


class ModelCache:
    """``--cache DIR``: every network a run trains, stored (atomically) under a hash of what determines its weights.

    A rerun loads the networks it finds instead of training them, so a killed run resumes at the row it
    was training (the generator and meta rows also checkpoint inside the row, every 100 iterations),
    and a ``--split test`` run re-scores the networks its ``--split val`` run trained: both train on
    the same 80 % of the training split with the same seeds and settings, and training is
    deterministic, so retraining would only reproduce the same weights. Each file records its key and
    training seconds; a file whose key differs is refused (:class:`UserError`).
    """

    def __init__(self, root: str | Path | None, base: dict[str, Any]) -> None:
        self.root, self.base = (Path(root) if root is not None else None), base

    def _stem(self, root: Path, key: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
        full = {**self.base, **key}
        digest = hashlib.sha256(json.dumps(full, sort_keys=True, default=repr).encode()).hexdigest()[:20]
        return root / f"{digest}", json.loads(json.dumps(full, sort_keys=True, default=repr))

    def checkpoint(self, key: dict[str, Any]) -> Checkpointer | None:
        """The in-row training checkpoint for ``key`` (``None`` without a cache)."""
        if self.root is None:
            return None
        stem, full = self._stem(self.root, key)
        ckpt = Checkpointer(stem.with_suffix(".ckpt"), 100, {"key": full})
        ckpt.check()
        return ckpt

    def get(self, key: dict[str, Any], train: Callable[[], Model], dataset: ImageDataset) -> tuple[Model, float, bool]:
        """``(model, training seconds, loaded from the cache)``: the stored model for ``key``, else ``train()`` (and store it)."""
        if self.root is not None:
            stem, full = self._stem(self.root, key)
            path = stem.with_suffix(".pt")
            if path.exists():
                model = load_model(path, dataset=dataset, what="cached model")
                if model.meta.get("cache_key") != full:
                    raise UserError(f"{path} was stored for other settings; remove it or point --cache elsewhere")
                return model, float(model.meta["train_seconds"]), True
        t0 = time.perf_counter()
        model = train()
        seconds = time.perf_counter() - t0
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            model.meta.update(cache_key=full, train_seconds=seconds)
            save_model(model, path, dataset=dataset)
            stem.with_suffix(".ckpt").unlink(missing_ok=True)
        return model, seconds, False


def run(dataset: ImageDataset, scale: str, seeds: list[int], progress: bool = False, teacher_epochs: int | None = None,
        only: Sequence[str] = GROUPS, meta_ks: Sequence[int] | None = None, overrides: dict[str, dict[str, Any]] | None = None,
        meta_grid: Sequence[tuple[str, int, float]] | None = None, cache: str | Path | None = None) -> list[dict]:
    """All rows for ``seeds`` (accuracies in %, one per seed); ``only`` restricts the row groups, ``meta_ks`` the meta grid's k.

    ``overrides`` (``{group: {key: value}}``, see :func:`parse_overrides`) change a group's settings and
    are named in its row label (the control row follows DAFL's); ``meta_grid`` replaces the scale's
    meta grid; ``cache`` is a :class:`ModelCache` directory. Seconds are training seconds (those of the
    run that trained a cached network).
    """
    sc = dict(SCALES[scale])
    overrides = overrides or {}
    if teacher_epochs is not None:  # teachers and the real-data student
        sc["teacher"] = {**sc["teacher"], "epochs": teacher_epochs}
    grid = [g for g in (meta_grid if meta_grid is not None else sc["meta_grid"]) if meta_ks is None or g[1] in meta_ks]
    if not grid and "meta" in only:
        raise UserError(f"--meta-k {list(meta_ks or [])}: the {scale} grid has k in {sorted({g[1] for g in sc['meta_grid']})}")
    settings = {g: {**sc[g], **overrides.get(g, {})} for g in OVERRIDABLE}
    kd_cfgs = {p: GeneratorKDConfig.from_preset(p, **settings[p]) for p in ("dafl", "dfad", "zskt")}
    meta_cfgs = {(mode, k, lr): MetaConfig(meta=mode, k=k, lr_meta=lr, **settings["meta"]) for mode, k, lr in grid}
    for cfg in (*kd_cfgs.values(), *meta_cfgs.values()):
        cfg.validate()  # before any training
    stats = (dataset.mean, dataset.std)
    shape = (dataset.channels, *dataset.image_size)
    store = ModelCache(cache, {"data": fingerprint_tensors({"x": dataset.train_x, "y": dataset.train_y}), "teacher": sc["teacher"]})
    results: dict[str, list[tuple[float, float]]] = {}

    def student(net: torch.nn.Module) -> Model:
        return Model(net, "lenet5_half", dataset.num_classes, shape, meta={"kind": "student"})

    def record(name: str, key: Any, fn: Callable[[Any], Model]) -> Model:
        """Train (or load) the row's network, score it on the scored split; ``fn`` gets the row's in-row checkpoint."""
        k = {"row": name, "seed": seed, "settings": key}
        model, seconds, cached = store.get(k, lambda: fn(store.checkpoint(k)), dataset)
        acc = accuracy(model.net, dataset.test_x, dataset.test_y, device="cpu")
        results.setdefault(name, []).append((acc, seconds))
        print(f"{name:32s} seed {seed}: {100 * acc:.2f} ({seconds:.0f}s{', cached' if cached else ''})", file=sys.stderr, flush=True)
        return model

    for seed in seeds:
        teachers: dict[str, Model] = {}
        for family, name in (("kd", "teacher LeNet-5 (no BN; for DAFL/DFAD/ZSKT)"), ("meta", "teacher LeNet-5 (BN; for the meta-generator)")):
            norm = TEACHER_NORMS[family]
            teachers[family] = record(name, norm, lambda _c, norm=norm: train_teacher(
                dataset, "lenet5", arch_kwargs={"norm": norm}, seed=seed, progress=progress, **sc["teacher"]))
        if "real" in only:
            record("student on real data", None, lambda _c: train_teacher(dataset, "lenet5_half", seed=seed, progress=progress, **sc["teacher"]))
        for family, label in (("kd", "no-BN"), ("meta", "BN")) if "noise" in only else ():
            record(f"student on Gaussian noise (KD, {label} teacher)", [sc["noise_steps"], sc["noise_lr"]], lambda _c, f=family: student(
                train_on_noise(teachers[f], _student(dataset, seed), steps=sc["noise_steps"], lr=sc["noise_lr"], batch_size=64, seed=seed)))
        for preset in [p for p in ("dafl", "dfad", "zskt") if p in only]:
            cfg = kd_cfgs[preset]
            record(_label(preset.upper(), overrides.get(preset, {})), repr(cfg), lambda c, cfg=cfg: student(train_generator_kd(
                teachers["kd"], _student(dataset, seed), cfg, pixel_stats=stats, seed=seed, progress=progress, checkpoint=c).student))
        for (mode, k, lr_meta), cfg in meta_cfgs.items() if "meta" in only else ():
            name = _label(f"meta-generator {mode} k={k}", {**overrides.get("meta", {}), **({"lr_meta": lr_meta} if meta_grid is not None else {})})
            record(name, repr(cfg), lambda c, cfg=cfg: student(train_meta_generator(
                teachers["meta"], _student(dataset, seed), cfg, pixel_stats=stats, seed=seed, progress=progress, checkpoint=c).student))
        if "control" in only:
            rnd = random_teacher("lenet5", shape, dataset.num_classes, seed=seed, arch_kwargs={"norm": TEACHER_NORMS["kd"]})
            record(_label("control: DAFL from random teacher", overrides.get("dafl", {})), repr(kd_cfgs["dafl"]), lambda c: student(
                train_generator_kd(rnd, _student(dataset, seed), kd_cfgs["dafl"], pixel_stats=stats, seed=seed, progress=progress, checkpoint=c).student))
    return [{"name": name, "seeds": list(seeds), "accs": [100 * a for a, _ in vals], "seconds": [t for _, t in vals]}
            for name, vals in results.items()]  # fmt: skip


def _cells(row: dict) -> list[str]:
    """Table cells of one :func:`run` row: name, mean ± population std over seeds (%), mean seconds."""
    std = statistics.pstdev(row["accs"]) if len(row["accs"]) > 1 else 0.0
    return [row["name"], f"{statistics.fmean(row['accs']):.2f} ± {std:.2f}", f"{statistics.fmean(row['seconds']):.0f}"]


def hard_toy(dataset: ImageDataset, seeds: list[int], shift: int, epochs: int) -> list[list[str]]:
    """HARD's shift toy: CNN teacher -> MLP student; test accuracy on clean and on translated test digits."""
    shape = (dataset.channels, *dataset.image_size)
    moved = translate(dataset.test_x, shift, torch.Generator().manual_seed(123))
    res: dict[str, list[tuple[float, float]]] = {}
    for seed in seeds:
        teacher = train_teacher(dataset, "lenet5", arch_kwargs={"norm": "batchnorm"}, seed=seed, progress=False, **HARD_TOY_TEACHER)
        nets = {"teacher LeNet-5 (CNN)": teacher.net}
        for name, augment in (("MLP student, KD on real inputs", False), ("MLP student, KD + HARD", True)):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                student = build_network("mlp", shape, dataset.num_classes)
            nets[name] = train_hard(teacher, student, dataset.train_x, HardConfig(epochs=epochs, augment=augment), seed=seed, progress=False)[0]
        for name, net in nets.items():
            res.setdefault(name, []).append((accuracy(net, dataset.test_x, dataset.test_y, device="cpu"), accuracy(net, moved, dataset.test_y, device="cpu")))
    rows = []
    for name, vals in res.items():
        cells = []
        for j in (0, 1):
            accs = [100 * v[j] for v in vals]
            cells.append(f"{statistics.fmean(accs):.2f} ± {statistics.pstdev(accs) if len(accs) > 1 else 0.0:.2f}")
        rows.append([name, *cells])
    return rows


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = CLIParser(prog="python -m experiments.synth", description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    p.add_argument("--dataset", default="digits", help="digits (embedded) or fashion_mnist (needs --root)")
    p.add_argument("--root", default=None, **input_flag(directory=True))
    p.add_argument("--resize", type=int, default=32,
                   help="input side length (default 32: LeNet-5's input; below it conv3 runs on padding)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", default=None, help="write the markdown table here", **output_flag())
    figures.add_flags(p, "per-seed accuracies", "training")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--toy", choices=["hard"], default=None, help="run HARD's shift toy instead of the benchmark")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="score on the test split (final table) or on a held-out validation split (model selection)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="class-stratified share of the training split held out")
    p.add_argument("--teacher-epochs", type=int, default=None,
                   help="override the scale's epochs for the teachers and the real-data student (e.g. 20 on Fashion-MNIST)")
    p.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS),
                   help="run only these row groups (the teachers are always trained and reported)")
    p.add_argument("--meta-k", type=int, nargs="+", default=None, help="run only the meta-generator rows with these k")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="GROUP.KEY=VALUE",
                   help="override a setting of the scale (dafl, dfad, zskt or meta), e.g. dafl.lr_g=0.02; named in the row label")
    p.add_argument("--meta-grid", nargs="+", default=None, metavar="MODE:K:LR_META",
                   help="replace the scale's meta grid, e.g. fomaml:2:0.005 exact:2:0.002 (lr_meta is named in the row label)")
    p.add_argument("--cache", default=None, help="directory for the trained networks, each stored under a hash of its settings: a rerun "
                   "resumes, and --split test re-scores what --split val trained (same training images, seeds and settings) "
                   "(default: $XDG_CACHE_HOME or ~/.cache, then condense/synth)", **output_flag(directory=True))
    p.add_argument("--no-cache", action="store_true", help="keep no trained network (an interrupted run starts over)")
    p.add_argument("--shift", type=int, default=2, help="toy: max translation of the test digits in pixels")
    args = p.parse_args(argv)
    if args.no_cache and args.cache:
        raise UserError("--cache and --no-cache contradict each other: drop one")
    if args.toy and args.cache:
        raise UserError("--cache is for the benchmark, not the --toy")
    cache = None if args.no_cache or args.toy else args.cache or str(user_cache("synth"))
    lock_outputs(check_outputs({"--out": args.out, "--cache": cache}, roots={"--root": args.root}, directories=["--cache"]).values())
    if args.figure_only:
        return figures.redraw("synth", args.json)
    torch.set_num_threads(1)
    try:
        if args.teacher_epochs is not None and args.teacher_epochs < 1:
            raise UserError(f"--teacher-epochs must be >= 1, got {args.teacher_epochs}")
        overrides = parse_overrides(args.overrides)
        meta_grid = parse_meta_grid(args.meta_grid) if args.meta_grid is not None else None
        if args.toy and args.json:
            raise UserError("--json (results JSON and figure) is for the benchmark; the --toy table has no figure")
        if args.toy and (overrides or meta_grid):
            raise UserError("--set and --meta-grid are for the benchmark, not the --toy")
        full = load_dataset(args.dataset, args.root, resize=args.resize)
        fit, val = split_validation(full, args.val_fraction, seed=0)
        ds = val if args.split == "val" else fit  # same training images either way; only the scored split differs
        t0 = time.perf_counter()
        if args.toy == "hard":  # fixed settings, no selection: the toy trains on the whole training split
            ds = full
            rows = hard_toy(ds, args.seeds, args.shift, epochs=30 if args.scale == "cpu" else 200)
            headers = ["row", "clean test acc %", f"translated (±{args.shift} px) test acc %"]
        else:
            if cache:
                resumes_on_rerun(f"--cache {cache} (finished networks)")
            results = run(ds, args.scale, args.seeds, progress=args.progress, teacher_epochs=args.teacher_epochs,
                          only=args.only, meta_ks=args.meta_k, overrides=overrides, meta_grid=meta_grid, cache=cache)
            rows = [_cells(r) for r in results]
            headers = ["row", f"{args.split} acc % (final, mean ± std)", "seconds / seed"]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = markdown_table(headers, rows)
    epochs = f" · teacher epochs {args.teacher_epochs}" if args.teacher_epochs is not None else ""
    text = (f"{args.dataset} {list(ds.image_size)} · scale {args.scale}{epochs} · seeds {args.seeds} · scored on {args.split} "
            f"({len(ds.test_y)} images; training on {len(ds.train_y)}) · total {time.perf_counter() - t0:.0f}s\n\n{table}\n")
    print(text)
    if args.out:
        atomic_write_text(text, args.out)
    if args.json and args.toy is None:
        payload = {"dataset": args.dataset, "image_size": list(ds.image_size), "scale": args.scale, "seeds": args.seeds, "split": args.split,
                   "teacher_epochs": args.teacher_epochs, "only": args.only, "wall_seconds": time.perf_counter() - t0, "rows": results}
        atomic_write_text(json.dumps(payload, indent=1), args.json)
    return figures.finish("synth", args.json, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
