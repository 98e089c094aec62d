"""``python -m graphs.mirage``: distil a graph-classification dataset with Mirage, train, report.

With no arguments it runs the embedded synthetic ``motifs`` dataset end to end.  Examples::

    python -m graphs.mirage
    python -m graphs.mirage --dataset MUTAG --root DIR --hops 2 --support 0.3 --model gin --out distilled.pt
    python -m graphs.mirage --dataset ogbg-molbace --root DIR --scale paper --model gat

``--support`` takes one value for all classes or one per class (comma separated); a value
``>= 1`` is an absolute count of graphs, a value in ``(0, 1)`` a fraction of the class.
Without ``--hops``/``--support`` the dataset's published (or documented) preset is used.
"""
from __future__ import annotations

import condense.threads  # noqa: F401  (thread policy before torch)

import argparse
import sys
import warnings
from dataclasses import asdict

from condense.safeio import CLIParser, check_outputs, cli_main, lock_outputs
from condense.utils import UserError, resolve_device, seed_everything
from graphs.data.graphsets import graphs_nbytes
from graphs.mirage.baselines import random_subset
from graphs.mirage.distill import CODERS, DistilledSet, MirageConfig, mirage_distill
from graphs.mirage.presets import NODE_ATTR, PRESETS, SCALES, load_graph_dataset, mining_features, mirage_preset, train_preset
from graphs.mirage.train import SAMPLING, RestartSummary, train_restarts
from graphs.models.graph import GRAPH_MODELS, JK_MODES


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


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
        "training (--scale): cpu (hidden 64, 40 epochs, 4 restarts, top 2: minutes) or paper (official molbace/molhiv configs)"
    )


def build_parser() -> argparse.ArgumentParser:
    p = CLIParser(prog="python -m graphs.mirage", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_epilog())  # fmt: skip
    p.add_argument("--dataset", default="motifs", help="motifs (default: embedded, no files), a TU name (MUTAG, PROTEINS, NCI1, DD) or ogbg-mol*")
    p.add_argument("--root", default=None, help="directory holding the dataset (TU: ROOT/NAME/raw, OGB: ROOT/ogbg_*)")
    p.add_argument("--hops", type=int, default=None, help="computation-tree depth L (= GNN layers); default: preset")
    p.add_argument("--support", type=_floats, default=None, help="per-class support theta_c; default: preset")
    p.add_argument("--filter-shared", action="store_true", default=None, help="drop itemsets frequent in several classes")
    p.add_argument("--coder", choices=CODERS, default="wl", help="tree coding: wl (fast) or trees (explicit reference)")
    p.add_argument("--label-columns", type=_ints, default=None, help="feature columns that label tree nodes (default all)")
    p.add_argument("--node-attr", choices=NODE_ATTR, default="drop",
                   help="continuous TU node attributes: drop (the official code) or concat to the one-hot labels as GNN input")
    p.add_argument("--bins", type=int, default=None,
                   help="with --node-attr concat: mine the attributes cut into this many quantile bins (fitted on the training graphs)")
    p.add_argument("--max-itemsets", type=int, default=None, help="per-class cap on mined itemsets (guard at low support)")
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
    p.add_argument("--no-baseline", action="store_true", help="skip the random-subset baseline at equal bytes")
    p.add_argument("--out", default=None, help="save the distilled set here (atomic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    return p


def _fmt(s: RestartSummary) -> tuple[str, str, str]:
    return tuple(f"{m:.3f} ± {sd:.3f}" for m, sd in (s.top_mean_std, s.all_mean_std, s.final_mean_std))


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        outputs = check_outputs({"--out": args.out}, roots={"--root": args.root})
        resolve_device(args.device)
        seed_everything(args.seed)
        ds = load_graph_dataset(args.dataset, args.root, seed=args.seed, node_attr=args.node_attr)
        mining, mined_on = mining_features(ds, args.bins)
        explicit = args.hops is not None and args.support is not None
        mcfg = MirageConfig(hops=args.hops, support=args.support) if explicit else mirage_preset(ds.name)
        for key, value in mining.items():
            setattr(mcfg, key, value)
        for key in ("hops", "support", "filter_shared", "label_columns", "max_itemsets"):
            if getattr(args, key) is not None:
                setattr(mcfg, key, getattr(args, key))
        mcfg.coder = args.coder
        tcfg = train_preset(args.scale, ds.name, model=args.model, layers=mcfg.hops or 1, epochs=args.epochs, restarts=args.restarts,
                            top=args.top, lr=args.lr, weight_decay=args.weight_decay, dropout=args.dropout, jk=args.jk,
                            sampling=args.sampling)
        tcfg.validate()  # fail on training/model options before spending time on mining
        tcfg.build_model((ds.in_dim, ds.edge_dim), ds.num_classes)
        lock_outputs(outputs.values(), outputs)
        progress = not args.no_progress
        print(f"{ds.summary()}; Mirage mines {mined_on}")
        train = ds.subset("train")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            distilled = mirage_distill(train, ds.num_classes, mcfg, progress=progress)
        if not distilled.graphs:
            raise UserError(f"no itemset reaches support {list(mcfg.support)}; lower --support")
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        distilled.meta.update(dataset=ds.name, seed=args.seed, train_config=asdict(tcfg))
        if args.out:
            distilled.save(args.out)
            DistilledSet.load(args.out)  # round-trip check of the artifact
        common = dict(dims=(ds.in_dim, ds.edge_dim), num_classes=ds.num_classes, metric=ds.metric, config=tcfg,
                      seed=args.seed, device=args.device, progress=progress, test_curves=False)
        valid, test = ds.subset("valid"), ds.subset("test")
        rows = [("mirage", distilled.nbytes, len(distilled.graphs), train_restarts(distilled.graphs, valid, test, desc="mirage", **common))]
        if not args.no_baseline:
            idx = random_subset(train, distilled.nbytes, seed=args.seed)
            subset = [train[i] for i in idx]
            rows.append(("random", graphs_nbytes(subset), len(subset), train_restarts(subset, valid, test, desc="random", **common)))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = distilled.meta
    print(f"trees per class {m['unique_trees_per_class']}, itemsets mined {m['itemsets_mined_per_class']}, "
          f"kept {m['itemsets_kept_per_class']}, thresholds {m['thresholds']}, distillation {m['time_total_s']:.2f}s")
    total = m["train_nbytes"]
    k = rows[0][3].top
    print(f"\n| set | graphs | bytes | % of train | {ds.metric} top-{k} | all {tcfg.restarts} | final epoch | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, nbytes, n, s in rows:
        top, allr, fin = _fmt(s)
        print(f"| {name} | {n} | {nbytes} | {100 * nbytes / total:.2f} | {top} | {allr} | {fin} | {s.train_time_s:.1f} |")
    if args.out:
        print(f"\nsaved distilled set to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
