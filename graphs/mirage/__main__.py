"""``python -m graphs.mirage``: distil a graph-classification dataset with Mirage, train, report.

With no arguments it runs the embedded synthetic ``motifs`` dataset end to end.  Examples::

    python -m graphs.mirage
    python -m graphs.mirage --dataset MUTAG --root DIR --hops 2 --support 0.5 --model gin --out distilled.pt
    python -m graphs.mirage --dataset ogbg-molbace --root DIR --scale paper --model gat
    python -m graphs.mirage train distilled.pt --model gcn      # train another GNN on a saved set

A distilled set at or above the training set's bytes is refused (it distils nothing, and the
equal-bytes random baseline would be the whole training set); ``--allow-no-reduction`` runs it
with every output labelled.  The table gives each trained set's per-class graph counts, the
untrained network's score and Spearman(score, |V|) -- the sanity columns of ``experiments.mirage``.
``train SET`` reloads the set's dataset (name, split and split seed from the set; ``--root`` where
the set's recorded root moved) and trains ``--model`` on it with root pooling.

``--support`` takes one value for all classes or one per class (comma separated); a value
``>= 1`` is an absolute count of graphs, a value in ``(0, 1)`` a fraction of the class.
Without ``--hops``/``--support`` the dataset's published (or documented) preset is used.
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import argparse
import hashlib
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from condense.checkpoint import (Checkpointer, Stages, add_checkpoint_flags, checkpoint_path, checkpointer_from_args, drop_default_checkpoint,
                                 user_cache)
from condense.safeio import CLIParser, check_outputs, fingerprint_tensors, cli_main, input_flag, lock_outputs, output_flag
from condense.utils import UserError, resolve_device, seed_everything
from graphs.data.graphsets import GraphDataset, graphs_nbytes
from graphs.mirage.baselines import random_subset
from graphs.mirage.distill import CODERS, DistilledSet, MirageConfig, check_classes, check_reduction, load_set, mirage_distill
from graphs.mirage.presets import (NODE_ATTR, PRESETS, SCALES, SPLITS, load_graph_dataset, mining_features, mirage_preset,
                                   parse_floats, train_preset)
from graphs.mirage.sanity import ROW_COLUMNS, result_record, roots_per_class, row_cells, size_only
from graphs.mirage.train import SAMPLING, TrainConfig, train_restarts
from graphs.models.graph import GRAPH_MODELS, JK_MODES


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


#: datasets whose preset is the Mirage paper's / official configs' (the others were chosen on validation by us)
PAPER_PRESETS = ("ogbg-molhiv", "ogbg-molbace", "ogbg-molbbbp", "DD", "NCI1")
MODEL_PAPERS = {"gcn": "Kipf & Welling, ICLR 2017", "gin": "Xu et al., ICLR 2019", "gat": "Velickovic et al., ICLR 2018",
                "sage": "Hamilton et al., NeurIPS 2017"}  # fmt: skip


def _epilog() -> str:
    presets = "\n".join(
        f"  {name:13s} L={c.hops}, support {', '.join(f'{v:g}' for v in c.support)}" + (", shared-itemset filter" if c.filter_shared else "")
        + ("  (paper / official config)" if name in PAPER_PRESETS else "  (ours, chosen on validation)")
        for name, c in PRESETS.items()
    )  # fmt: skip
    models = ", ".join(f"{m} ({MODEL_PAPERS[m]})" for m in GRAPH_MODELS if m in MODEL_PAPERS)
    return (
        "method: Mirage (Gupta, Manchanda, Kodamana & Ranu, \"Mirage: Model-Agnostic Graph Distillation for Graph\n"
        "Classification\", ICLR 2024): mine frequent sets of L-hop computation trees per class (no GNN needed), train any GNN\n"
        "on them; compared with a random subset of real training graphs of at most the same bytes (--no-baseline skips it).\n\n"
        "default dataset: motifs (embedded, no files: 400 graphs, house-majority vs 6-cycle-majority, ROC-AUC).\n"
        f"presets (--hops/--support override them):\n{presets}\n"
        f"models (--model): {models}\n"
        "training (--scale): cpu (hidden 64, 40 epochs, 4 restarts, top 2: minutes) or paper (official molbace/molhiv configs)\n"
        "a set at or above the training bytes is refused (--allow-no-reduction: run it, labelled in every output), and so is\n"
        "a set without a graph of some class (--allow-missing-classes).\n\n"
        "saved sets: python -m graphs.mirage train SET --model gcn trains any GNN on a set written by --out\n"
        "(train --help); in Python graphs.mirage.load_set(path) loads it back"
    )


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    """The GNN training flags shared by the distil run and ``train SET``."""
    p.add_argument("--model", choices=GRAPH_MODELS, default="gin")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="training preset (cpu: minutes; paper: published)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--restarts", type=int, default=None)
    p.add_argument("--top", type=int, default=None, help="report test mean over the top-k restarts by validation")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--jk", choices=JK_MODES, default=None, help="jumping knowledge: last (default) or sum over layers")
    p.add_argument("--sampling", choices=SAMPLING, default=None, help="list (released code) or support (paper)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    add_checkpoint_flags(p, "epochs (all restarts and rows counted together)", "OUT.ckpt, or a file under ~/.cache/condense/mirage named after the run")


def build_parser() -> argparse.ArgumentParser:
    p = CLIParser(prog="python -m graphs.mirage", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_epilog())  # fmt: skip
    p.add_argument("--dataset", default="motifs", help="motifs (default: embedded, no files), a TU name (MUTAG, PROTEINS, NCI1, DD) or ogbg-mol*")
    p.add_argument("--root", default=None, help="directory holding the dataset (TU: ROOT/NAME/raw, OGB: ROOT/ogbg_*)", **input_flag(directory=True))
    p.add_argument("--split", choices=SPLITS, default="random",
                   help="TU datasets: random (seeded 80/10/10) or official (Mirage's PyG shuffle after manual_seed(0)); OGB: always scaffold")
    p.add_argument("--hops", type=int, default=None, help="computation-tree depth L (= GNN layers); default: preset")
    p.add_argument("--support", type=parse_floats, default=None, help="per-class support theta_c; default: preset")
    p.add_argument("--filter-shared", action="store_true", default=None, help="drop itemsets frequent in several classes")
    p.add_argument("--coder", choices=CODERS, default="wl", help="tree coding: wl (fast) or trees (explicit reference)")
    p.add_argument("--label-columns", type=_ints, default=None, help="feature columns that label tree nodes (default all)")
    p.add_argument("--node-attr", choices=NODE_ATTR, default="drop",
                   help="continuous TU node attributes: drop (the official code) or concat to the one-hot labels as GNN input")
    p.add_argument("--bins", type=int, default=None,
                   help="with --node-attr concat: mine the attributes cut into this many quantile bins (fitted on the training graphs)")
    p.add_argument("--max-itemsets", type=int, default=None, help="per-class cap on mined itemsets (guard at low support)")
    p.add_argument("--allow-no-reduction", action="store_true",
                   help="run a distilled set at or above the training set's bytes (refused by default), labelled in every output")
    p.add_argument("--allow-missing-classes", action="store_true",
                   help="run a distilled set without a graph of some class (refused by default), labelled in every output")
    _add_training_flags(p)
    p.add_argument("--no-baseline", action="store_true", help="skip the random-subset baseline at equal bytes")
    p.add_argument("--out", default=None, help="save the distilled set here (atomic; load it back with graphs.mirage.load_set)", **output_flag())
    p.add_argument("--seed", type=int, default=0)
    return p


def build_train_parser() -> argparse.ArgumentParser:
    p = CLIParser(prog="python -m graphs.mirage train",
                  description="Train a GNN on a saved Mirage distilled set and evaluate it on its dataset's real graphs.")
    p.add_argument("set", metavar="SET", help="a distilled set written by python -m graphs.mirage --out", **input_flag())
    p.add_argument("--root", default=None, help="the dataset's directory (default: the one recorded in the set)", **input_flag(directory=True))
    _add_training_flags(p)
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the restarts (default: the set's); the split always uses the set's seed")
    return p


def _train_config(args: argparse.Namespace, dataset: str, hops: int) -> TrainConfig:
    tcfg = train_preset(args.scale, dataset, model=args.model, layers=hops or 1, epochs=args.epochs, restarts=args.restarts,
                        top=args.top, lr=args.lr, weight_decay=args.weight_decay, dropout=args.dropout, jk=args.jk,
                        sampling=args.sampling)
    tcfg.validate()
    return tcfg


def _print_table(ds: GraphDataset, model: str, rows: list[tuple[str, dict]], tcfg: TrainConfig) -> None:
    """One row per trained set with the sanity columns (:mod:`graphs.mirage.sanity`)."""
    print(f"\n| set | model | {' | '.join(ROW_COLUMNS)} |".replace("top-k", f"top-{rows[0][1]['k']} of {tcfg.restarts} ({ds.metric})"))
    print("|" + "---|" * (len(ROW_COLUMNS) + 2))
    for name, r in rows:
        print(f"| {name} | {model} | {' | '.join(row_cells(r))} |")


def _checkpointer(args: argparse.Namespace, out: str | None, signature: dict) -> Checkpointer | None:
    """The training checkpoint (checked before work): ``--checkpoint``, ``OUT.ckpt``, or a file in the user's cache named after the run."""
    key = hashlib.sha256(repr(sorted(signature.items())).encode()).hexdigest()[:16]
    path = checkpoint_path(args, Path(out + ".ckpt") if out else user_cache("mirage") / f"{signature['command']}-{key}.ckpt")
    check_outputs({"--checkpoint": path}, {"--out": out})
    return checkpointer_from_args(args, path, signature)


def _sanity_lines(ds: GraphDataset, graphs) -> None:
    so = size_only(ds.subset("train"), ds.subset("test"), ds.num_classes)
    print(f"size-only test {ds.metric} {so.get(ds.metric, so['accuracy']):.3f} (accuracy {so['accuracy']:.3f}); "
          f"Mirage tree roots per class {roots_per_class(graphs, ds.num_classes)}")


@cli_main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        return _train(argv[1:])
    args = build_parser().parse_args(argv)
    outputs = check_outputs({"--out": args.out}, roots={"--root": args.root})
    resolve_device(args.device)
    seed_everything(args.seed)
    ds = load_graph_dataset(args.dataset, args.root, seed=args.seed, split=args.split, node_attr=args.node_attr)
    mining, mined_on = mining_features(ds, args.bins)
    explicit = args.hops is not None and args.support is not None
    mcfg = MirageConfig(hops=args.hops, support=args.support) if explicit else mirage_preset(ds.name)
    for key, value in mining.items():
        setattr(mcfg, key, value)
    for key in ("hops", "support", "filter_shared", "label_columns", "max_itemsets"):
        if getattr(args, key) is not None:
            setattr(mcfg, key, getattr(args, key))
    mcfg.coder = args.coder
    tcfg = _train_config(args, ds.name, mcfg.hops)  # fail on training/model options before spending time on mining
    tcfg.build_model((ds.in_dim, ds.edge_dim), ds.num_classes)
    sig = {"command": "distil", "dataset": ds.name, "root": None if args.root is None else str(Path(args.root).resolve()), "split": args.split,
           "node_attr": args.node_attr, "mining": repr(mcfg), "train": asdict(tcfg), "seed": args.seed, "baseline": not args.no_baseline}
    ckpt = _checkpointer(args, args.out, sig)
    lock_outputs(outputs.values(), outputs)
    progress = not args.no_progress
    print(f"{ds.summary()}; split {ds.info.get('split', args.split)}; Mirage mines {mined_on}")
    train = ds.subset("train")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distilled = mirage_distill(train, ds.num_classes, mcfg, progress=progress)
    if not distilled.graphs:
        raise UserError(f"no itemset reaches support {list(mcfg.support)}; lower --support")
    missing = check_classes(distilled.graphs, ds.num_classes, allow=args.allow_missing_classes)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    total = distilled.meta["train_nbytes"]
    no_reduction = check_reduction(distilled.nbytes, total, allow=args.allow_no_reduction)
    if no_reduction:
        print(f"warning: {no_reduction} (--allow-no-reduction): this run distils nothing", file=sys.stderr)
        distilled.meta["no_reduction"] = no_reduction
    if missing:
        print(f"warning: {missing} (--allow-missing-classes): a network trained on this set cannot predict them", file=sys.stderr)
        distilled.meta["missing_classes"] = missing
    label = _labels(distilled.meta)
    distilled.meta.update(dataset=ds.name, seed=args.seed, split=args.split, node_attr=args.node_attr,
                          root=None if args.root is None else str(Path(args.root).resolve()), train_config=asdict(tcfg))
    if args.out:
        distilled.save(args.out)
        load_set(args.out)  # round-trip check of the artifact
    m = distilled.meta
    print(f"trees per class {m['unique_trees_per_class']}, itemsets mined {m['itemsets_mined_per_class']}, "
          f"kept {m['itemsets_kept_per_class']}, thresholds {m['thresholds']}, distillation {m['time_total_s']:.2f}s")
    common = dict(dims=(ds.in_dim, ds.edge_dim), num_classes=ds.num_classes, metric=ds.metric, config=tcfg,
                  seed=args.seed, device=args.device, progress=progress, test_curves=False, stages=Stages(ckpt))
    valid, test = ds.subset("valid"), ds.subset("test")
    rows = [("mirage", result_record(distilled.graphs, total, train_restarts(distilled.graphs, valid, test, desc="mirage", **common),
                                     ds.num_classes, label=label))]
    if not args.no_baseline:
        subset = [train[i] for i in random_subset(train, distilled.nbytes, seed=args.seed)]
        rows.append(("random", result_record(subset, total, train_restarts(subset, valid, test, desc="random", **common),
                                              ds.num_classes, label=label)))
    _sanity_lines(ds, distilled.graphs)
    _print_table(ds, args.model, rows, tcfg)
    drop_default_checkpoint(args, ckpt)
    if args.out:
        print(f"\nsaved distilled set to {args.out}" + (f" ({label})" if label else "")
              + f"; train another GNN on it: python -m graphs.mirage train {args.out} --model gcn")
    return 0


def _train(argv: list[str]) -> int:
    """``train SET``: the set's dataset and split, a fresh ``--model`` trained on the set, scored on real graphs."""
    args = build_train_parser().parse_args(argv)
    resolve_device(args.device)
    distilled = load_set(args.set)
    meta = distilled.meta
    if not distilled.graphs or "dataset" not in meta:
        raise UserError(f"{args.set} holds no graphs or does not name its dataset (write it with python -m graphs.mirage --out)")
    split_seed = int(meta.get("seed", 0))
    seed = split_seed if args.seed is None else args.seed
    seed_everything(seed)
    ds = load_graph_dataset(meta["dataset"], args.root or meta.get("root"), seed=split_seed, split=meta.get("split", "random"),
                            node_attr=meta.get("node_attr", "drop"))
    _check_layout(distilled, ds, args.set)
    tcfg = _train_config(args, ds.name, int(meta["config"]["hops"]))
    tcfg.build_model((ds.in_dim, ds.edge_dim), ds.num_classes)
    sig = {"command": "train", "set": fingerprint_tensors({f"{i}.{k}": v for i, g in enumerate(distilled.graphs) for k, v in g.items()
                                                          if torch.is_tensor(v)}),
           "dataset": ds.name, "train": asdict(tcfg), "seed": seed}  # fmt: skip
    ckpt = _checkpointer(args, None, sig)
    label = _labels(meta)
    print(f"{ds.summary()}; split {ds.info.get('split', meta.get('split', 'random'))}; set {args.set}: {len(distilled.graphs)} graphs, "
          f"hops {meta['config']['hops']}, support {meta['config']['support']}" + (f" ({label})" if label else ""))
    s = train_restarts(distilled.graphs, ds.subset("valid"), ds.subset("test"), dims=(ds.in_dim, ds.edge_dim), num_classes=ds.num_classes,
                       metric=ds.metric, config=tcfg, seed=seed, device=args.device, progress=not args.no_progress, desc="mirage",
                       test_curves=False, stages=Stages(ckpt))
    total = int(meta.get("train_nbytes") or graphs_nbytes(ds.subset("train")))
    _sanity_lines(ds, distilled.graphs)
    _print_table(ds, args.model, [("mirage", result_record(distilled.graphs, total, s, ds.num_classes, label=label))], tcfg)
    drop_default_checkpoint(args, ckpt)
    return 0


def _labels(meta: dict) -> str:
    """The labels a set's outputs must carry (no reduction, missing classes), joined."""
    return "; ".join(meta[k] for k in ("no_reduction", "missing_classes") if meta.get(k))


def _check_layout(distilled: DistilledSet, ds: GraphDataset, path: str) -> None:
    """The set's node/edge features and labels must fit the dataset it is evaluated on."""
    g, ref = distilled.graphs[0], ds.graphs[0]
    if g.x.dtype != ref.x.dtype or g.x.size(1) != ref.x.size(1):
        raise UserError(f"{path}: node features {tuple(g.x.shape[1:])} {g.x.dtype} do not match {ds.name}'s "
                        f"{tuple(ref.x.shape[1:])} {ref.x.dtype} (was it distilled with another --node-attr?)")
    labels = torch.tensor([int(d.y) for d in distilled.graphs])
    if int(labels.min()) < 0 or int(labels.max()) >= ds.num_classes:
        raise UserError(f"{path}: class labels {sorted(set(labels.tolist()))} do not fit {ds.name}'s {ds.num_classes} classes")
    if ds.node_cardinalities is not None:
        x = torch.cat([d.x for d in distilled.graphs])
        if bool((x >= torch.tensor(ds.node_cardinalities)).any()) or bool((x < 0).any()):
            raise UserError(f"{path}: node feature ids outside {ds.name}'s cardinalities {list(ds.node_cardinalities)}")


if __name__ == "__main__":
    sys.exit(main())
