"""Mirage runs are what they claim: no-reduction sets refused or labelled, sweeps cover every class,
errors name real flags, the itemset cap names a support that fits, sanity columns in the user CLI,
and a saved set loads back in one call and trains any GNN."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from condense.utils import UserError
from graphs.data.graphsets import GraphDataset, random_split
from graphs.data.motifs import make_motif_dataset
from graphs.mirage.__main__ import build_parser, main
from graphs.mirage.distill import MirageConfig, mirage_distill
from graphs.mirage.mining import TooManyItemsets, fp_growth
from tests.graphs._generated import size_dataset, size_graph, write_tu

TINY = ["--epochs", "1", "--restarts", "1", "--no-progress"]


def _three_classes() -> GraphDataset:
    """Classes 0/1 draw node labels from 2 values, class 2 from 40: at support 0.3-0.5 class 2 mines nothing."""
    gen = torch.Generator().manual_seed(0)
    graphs = [size_graph(8, i % 3, gen, n_labels=40 if i % 3 == 2 else 2) for i in range(60)]
    return GraphDataset("three", graphs, 3, random_split(60, 0), (40,), None)


def _tiny_experiment(monkeypatch, ds: GraphDataset):
    import experiments.mirage as exp
    from graphs.mirage import presets

    monkeypatch.setattr(exp, "load_graph_dataset", lambda name, root, **_: ds)
    monkeypatch.setattr(exp, "_writable_root", lambda *a: None)
    monkeypatch.setitem(presets.SCALES, "cpu", presets.TrainConfig(hidden=8, epochs=1, restarts=1, top=1))
    monkeypatch.setitem(presets.RECIPES["tu-bio"], "cpu", presets.replace(presets.RECIPES["tu-bio"]["cpu"], hidden=8, epochs=1,
                                                                          iters_per_epoch=1))
    return exp


def _flags_exist(message: str, parser) -> None:
    options = {o for a in parser._actions for o in a.option_strings}
    named = set(re.findall(r"--[a-z][a-z-]*", message))
    assert named and named <= options, (named - options, message)


def test_cli_refuses_a_set_at_or_above_the_training_bytes_and_labels_it_when_allowed(tmp_path: Path, capsys):
    root = write_tu(tmp_path / "data", "SIZES", size_dataset(20, seed=0).graphs)
    argv = ["--dataset", "SIZES", "--root", str(root), "--hops", "1", "--support", "0.2", *TINY]  # above the training bytes
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    share = re.search(r"(\d+) % of the training bytes", err).group(1)
    assert int(share) >= 100 and "--allow-no-reduction" in err and len(err.splitlines()) == 1
    out = tmp_path / "big.pt"
    assert main([*argv, "--allow-no-reduction", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    label = f"NO REDUCTION: {share} % of the training bytes"
    rows = [line for line in captured.out.splitlines() if line.startswith(("| mirage", "| random"))]
    assert len(rows) == 2 and all(label in r for r in rows) and "NO REDUCTION" in captured.err
    assert label in captured.out.splitlines()[-1]  # the saved-set line too
    from graphs.mirage import load_set

    assert load_set(out).meta["no_reduction"] == label


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:Degrees of freedom")  # one restart of one epoch: no spread
def test_cli_refuses_a_set_lacking_a_class_and_labels_it_when_allowed(tmp_path: Path, capsys):
    root = write_tu(tmp_path / "data", "THREE", _three_classes().graphs)
    argv = ["--dataset", "THREE", "--root", str(root), "--hops", "1", "--support", "0.5", "--no-baseline", *TINY]  # class 2 mines nothing
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "no graph of class(es) [2]" in err and len(err.splitlines()) == 1
    _flags_exist(err, build_parser())
    out = tmp_path / "two.pt"
    assert main([*argv, "--allow-missing-classes", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if line.startswith("| mirage")]
    assert len(rows) == 1 and "MISSING CLASSES: [2]" in rows[0] and "--allow-missing-classes" in captured.err
    from graphs.mirage import load_set

    assert load_set(out).meta["missing_classes"] == "MISSING CLASSES: [2]"
    assert main(["train", str(out), "--root", str(root), "--model", "gin", *TINY]) == 0
    assert "MISSING CLASSES: [2]" in capsys.readouterr().out


def test_experiment_refuses_no_reduction_and_labels_every_row_when_allowed(monkeypatch, tmp_path: Path, capsys):
    exp = _tiny_experiment(monkeypatch, size_dataset(20, seed=0))
    argv = ["--datasets", "sizes", "--models", "gin", "--methods", "full", "random", "mirage", "--hops", "1", "--support", "0.3",
            "--no-progress"]  # 118 % of the training bytes
    assert exp.main(argv) == 2
    err = capsys.readouterr().err
    assert "no reduction" in err and "118 %" in err
    _flags_exist(err, exp.build_parser())
    assert exp.main([*argv, "--allow-no-reduction"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| sizes |")]
    assert len(rows) == 3 and all(("NO REDUCTION" in r) == (" full " not in r) for r in rows)
    rec = json.loads(json.dumps(exp.run_dataset("sizes", None, scale="cpu", models=["gin"], methods=["full", "random", "mirage"],
                                                seed=0, device="cpu", progress=False, hops=1, support=(0.3,),
                                                allow_no_reduction=True)))  # the JSON record
    assert rec["no_reduction"].startswith("NO REDUCTION") and rec["mirage_config"]["support"] == [0.3]
    assert [("label" in r) for r in rec["results"]] == [False, True, True]


def test_sweep_chooses_only_among_sets_covering_every_class(monkeypatch, capsys):
    exp = _tiny_experiment(monkeypatch, _three_classes())
    ds = _three_classes()
    rows = exp.sweep(ds, scale="cpu", seed=0, device="cpu", progress=False, hops=(1,), supports=(0.5, 0.3, (0.5, 0.5, 2)))
    assert [r["val"] is None for r in rows] == [True, True, False] and rows[0]["missing"] == [2]
    assert exp.pick_from_sweep(rows)["support"] == (0.5, 0.5, 2)
    assert "skipped: no graph of class(es) [2]" in capsys.readouterr().out
    with pytest.raises(UserError, match=r"no set of the hops/support sweep covers every class.*no class \[2\]") as info:
        exp.choose_mirage_config(ds, scale="cpu", seed=0, device="cpu", progress=False, hops=1)  # supports 0.3/0.5/0.7
    _flags_exist(str(info.value), exp.build_parser())
    cfg = exp.choose_mirage_config(ds, scale="cpu", seed=0, device="cpu", progress=False, hops=1, support=(0.5, 0.5, 2))
    assert (cfg.hops, cfg.support) == (1, (0.5, 0.5, 2))  # --hops/--support: no sweep
    # an explicit support that drops a class is refused before any baseline is built, naming --support
    argv = ["--datasets", "three", "--models", "gin", "--methods", "random", "mirage", "--hops", "1", "--support", "0.5", "--no-progress"]
    with pytest.warns(UserWarning, match=r"mined no itemset for classes \[2\]"):
        assert exp.main(argv) == 2
    err = capsys.readouterr().err
    assert "has no graph of class(es) [2]" in err
    _flags_exist(err, exp.build_parser())


def test_itemset_cap_names_the_smallest_support_that_fits():
    train = make_motif_dataset(seed=0).subset("train")
    with pytest.raises(UserError, match="the smallest supports that fit are") as info:
        mirage_distill(train, 2, MirageConfig(hops=2, support=(0.05,), max_itemsets=2000), progress=False)
    msg = str(info.value)
    assert "--max-itemsets" in msg
    fits = [int(v) for v in re.search(r"pass --support (\d+),(\d+),", msg).groups()]
    from graphs.mirage.distill import decompose

    dec = decompose(train, MirageConfig(hops=2))
    requested = MirageConfig(support=(0.05,)).thresholds([sum(int(g.y) == c for g in train) for c in range(2)])
    assert any(k > r for k, r in zip(fits, requested))
    for c, (k, r) in enumerate(zip(fits, requested)):
        transactions = [set(it.tolist()) for it, g in zip(dec.items, train) if int(g.y) == c]
        fp_growth(transactions, k, max_itemsets=2000)  # fits ...
        if k > r:  # ... and, where raised above the requested 5 %, is the smallest that does
            with pytest.raises(TooManyItemsets):
                fp_growth(transactions, k - 1, max_itemsets=2000)
    d = mirage_distill(train, 2, MirageConfig(hops=2, support=tuple(fits), max_itemsets=2000), progress=False)
    assert d.graphs  # the suggested supports run


def test_cli_split_official_sanity_columns_and_byte_share_digits(tmp_path: Path, capsys):
    root = write_tu(tmp_path, "SIZES", size_dataset(60, seed=0).graphs)
    assert main(["--dataset", "SIZES", "--root", str(root), "--split", "official", "--hops", "1", "--support", "0.3", *TINY]) == 0
    out = capsys.readouterr().out
    assert "split official (PyG shuffle, seed 0)" in out and "size-only test rocauc" in out
    header = next(line for line in out.splitlines() if line.startswith("| set |"))
    for column in ("graphs (per class)", "untrained", "Spearman(score, |V|)", "% train bytes"):
        assert column in header
    rows = [line.split("|") for line in out.splitlines() if line.startswith(("| mirage", "| random"))]
    assert len(rows) == 2 and all(re.fullmatch(r" \d+ \(\d+/\d+\) ", r[3]) for r in rows)
    from graphs.mirage.distill import byte_share

    assert [byte_share(f) for f in (0.000101, 0.0956, 1.31, 12.8)] == ["0.0101", "9.56", "131", "1280"]


def test_saved_set_loads_in_one_call_and_trains_any_gnn(tmp_path: Path, capsys):
    import graphs.mirage

    root = write_tu(tmp_path / "data", "SIZES", size_dataset(60, seed=0).graphs)
    out = tmp_path / "set.pt"
    assert main(["--dataset", "SIZES", "--root", str(root), "--hops", "1", "--support", "0.3", "--seed", "3", *TINY,
                 "--no-baseline", "--out", str(out)]) == 0
    capsys.readouterr()
    d = graphs.mirage.load_set(out)
    assert d.graphs and all(g.root_mask.any() for g in d.graphs) and d.meta["dataset"] == "SIZES" and d.meta["seed"] == 3
    for model in ("gcn", "gat", "sage"):
        assert main(["train", str(out), "--model", model, *TINY]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| mirage"))
        assert f"| mirage | {model} | {len(d.graphs)} (" in row
    moved = tmp_path / "moved"
    (tmp_path / "data").rename(moved)
    assert main(["train", str(out), *TINY]) == 2  # the recorded root is gone: one line naming it
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert main(["train", str(out), "--root", str(moved), *TINY]) == 0
