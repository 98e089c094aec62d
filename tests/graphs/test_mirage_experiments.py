"""Experiment drivers: the benchmark measurement and the experiment's error path."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from condense.utils import UserError
from experiments.bench_mirage import measure
from experiments.mirage import main
from graphs.data.motifs import make_motif_dataset
from graphs.mirage.distill import MirageConfig, mirage_distill
from graphs.mirage.presets import mirage_preset, train_preset


def test_bench_measure_reports_phases_and_memory():
    ds = make_motif_dataset(60, seed=0)
    r = measure(ds.graphs, 2, MirageConfig(hops=2, support=(0.5,)))
    assert r["total_s"] >= r["decompose_s"] > 0 and r["peak_mb"] > 0 and r["trees"] > 0 and r["itemsets"] > 0


def test_experiment_missing_dataset_is_one_line_error(tmp_path: Path, capsys):
    assert main(["--datasets", "NCI1", "--shared", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "NCI1" in err and len(err.splitlines()) == 1


def test_presets_published_settings():
    assert train_preset("paper", "ogbg-molbace").epochs == 30 and train_preset("paper", "NCI1").epochs == 100
    assert train_preset("cpu", model="gat", epochs=None).model == "gat"
    bace = mirage_preset("ogbg-molbace")
    assert (bace.hops, bace.support) == (3, (150, 104)) and mirage_preset("NCI1").filter_shared
    with pytest.raises(UserError):
        mirage_preset("CIFAR10")


def test_split_seeds_run_each_split_and_aggregate(monkeypatch, capsys):
    """``--split-seeds`` runs the dataset once per seed and reports mean ± std of the per-split top-k means."""
    import experiments.mirage as exp

    seen = []

    def fake_run(name, root, *, seed, **_):
        seen.append(seed)
        res = lambda m, top: {"model": "gin", "method": m, "graphs": 3, "fraction": 0.1, "top": (top, 0.0), "final": (top / 2, 0.0)}  # noqa: E731
        return {"dataset": name, "seed": seed, "results": [res("mirage", 0.8 + 0.1 * seed), res("random", 0.5)],
                "mirage_meta": {k: 0.0 for k in ("time_total_s", "time_decompose_s", "time_mine_s")} | {
                    "unique_trees_per_class": [], "itemsets_mined_per_class": [], "itemsets_kept_per_class": []}}

    monkeypatch.setattr(exp, "run_dataset", fake_run)
    assert main(["--datasets", "motifs", "--split-seeds", "0", "2", "--no-progress"]) == 0
    assert seen == [0, 2]
    out = capsys.readouterr().out
    assert "| motifs | gin | mirage | 3.0 | 10% | 0.900 ± 0.100 | 0.450 ± 0.050 |" in out
    assert "| motifs | gin | random | 3.0 | 10% | 0.500 ± 0.000 |" in out


def test_official_split_reproduces_the_official_nci1_class_counts(writable_shared):
    from experiments.mirage import split_counts
    from graphs.data.tu import load_tu

    root = writable_shared("tu/NCI1").parent
    ds = load_tu("NCI1", root, split="official")
    counts = split_counts(ds)
    assert counts["train"] == [1627, 1661]
    assert sum(counts["test"]) == sum(counts["valid"]) == 411
    assert set(ds.split["train"].tolist()).isdisjoint(ds.split["test"].tolist())


def test_size_only_baseline_sees_a_planted_size_signal():
    from graphs.mirage.sanity import roots_per_class, size_only
    from tests.graphs._generated import size_dataset

    ds = size_dataset(120, seed=0)
    so = size_only(ds.subset("train"), ds.subset("test"), 2)
    assert so["rocauc"] > 0.99 and so["accuracy"] > 0.95
    flipped = size_dataset(120, seed=0, flip_eval=True)
    assert size_only(flipped.subset("train"), flipped.subset("test"), 2)["rocauc"] < 0.01
    d = mirage_distill(ds.subset("train"), 2, MirageConfig(hops=1, support=(0.15,)), progress=False)
    roots = roots_per_class(d.graphs, 2)
    assert sum(roots) == sum(int(g.root_mask.sum()) for g in d.graphs) and min(roots) > 0


@pytest.mark.slow
def test_experiment_rows_show_size_only_spearman_and_class_counts(monkeypatch, tmp_path: Path, capsys):
    """End to end on a planted size signal: the trained model's output follows |V| (Spearman near
    +1), and the table carries the untrained, Spearman and per-class columns."""
    import json

    import experiments.mirage as exp
    from graphs.mirage import presets
    from tests.graphs._generated import size_dataset

    monkeypatch.setattr(exp, "load_graph_dataset", lambda name, root, **_: size_dataset(160, seed=1))
    monkeypatch.setitem(presets.PRESETS, "sizes", MirageConfig(hops=1, support=(0.15,)))
    monkeypatch.setattr(exp, "_writable_root", lambda *a: None)
    tiny = presets.TrainConfig(hidden=16, epochs=8, restarts=1, top=1)
    monkeypatch.setitem(presets.SCALES, "cpu", tiny)
    monkeypatch.setitem(presets.RECIPES["tu-bio"], "cpu", presets.replace(presets.RECIPES["tu-bio"]["cpu"], hidden=16, epochs=8,
                                                                          iters_per_epoch=4))
    out_json = tmp_path / "r.json"
    assert exp.main(["--datasets", "sizes", "--models", "gin", "--methods", "full", "random", "mirage", "--no-progress",
                     "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "size-only test rocauc 1.000" in out and "Spearman(score, |V|)" in out
    rec = json.loads(out_json.read_text())["records"][0]
    assert rec["size_only"]["rocauc"] > 0.99
    full = next(r for r in rec["results"] if r["method"] == "full")
    assert full["spearman_size"][0] > 0.8 and full["top"][0] > 0.9
    rand = next(r for r in rec["results"] if r["method"] == "random")
    assert set(rand["per_class"]) == {"0", "1"} and rand["bytes"] <= rec["results"][-1]["bytes"]
    assert all(e >= 1 for r in rec["results"] for e in r["per_restart"]["best_epoch"])


def test_unlabelled_tu_dataset_gets_degree_labels(tmp_path: Path):
    from graphs.data.tu import load_tu
    from tests.graphs._generated import size_dataset, write_tu

    graphs = size_dataset(40, seed=0).graphs
    for g in graphs:
        g.x = None
    ds = load_tu("NOLAB", write_tu(tmp_path, "NOLAB", graphs))
    assert "node degrees" in ds.summary()
    g = ds.graphs[0]
    deg = torch.bincount(g.edge_index[0], minlength=g.num_nodes)
    assert torch.equal(torch.unique(deg, return_inverse=True)[1].unique(), g.x.view(-1).unique()) or ds.node_cardinalities[0] > 1


@pytest.mark.slow
def test_any_tu_layout_dataset_runs_without_a_preset(monkeypatch, tmp_path: Path, capsys):
    import json

    import experiments.mirage as exp
    from graphs.mirage import presets
    from tests.graphs._generated import size_dataset, write_tu

    root = write_tu(tmp_path / "data", "PLANTED", size_dataset(100, seed=2).graphs)
    monkeypatch.setitem(presets.SCALES, "cpu", presets.TrainConfig(hidden=8, epochs=2, restarts=1, top=1))
    monkeypatch.setitem(presets.RECIPES["tu-bio"], "cpu", presets.replace(presets.RECIPES["tu-bio"]["cpu"], hidden=8, epochs=2,
                                                                          iters_per_epoch=2))
    monkeypatch.setattr(exp, "SWEEP_HOPS", (1,))
    monkeypatch.setattr(exp, "SWEEP_SUPPORTS", (0.1, 0.3))
    out_json = tmp_path / "r.json"
    assert exp.main(["--datasets", "PLANTED", "--root", str(root), "--models", "gin", "--methods", "random", "mirage",
                     "--max-itemsets", "5000", "--no-progress", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "PLANTED: no Mirage preset" in out and "chose hops 1, support" in out
    rec = json.loads(out_json.read_text())["records"][0]
    assert rec["mirage_config"]["max_itemsets"] == 5000 and rec["mirage_config"]["hops"] == 1 and rec["split"] == "random"
    assert {r["method"] for r in rec["results"]} == {"random", "mirage"}


def test_threshold_sweep_keeps_the_best_validation_candidate(monkeypatch, capsys):
    import experiments.mirage as exp
    from graphs.mirage import presets
    from tests.graphs._generated import size_dataset

    ds = size_dataset(80, seed=0)
    monkeypatch.setitem(presets.PRESETS, "sizes", MirageConfig(hops=1, support=(0.3,), filter_shared=True))
    monkeypatch.setitem(exp.THRESHOLD_SWEEPS, "sizes", ((0.3, 0.3), (0.1, 0.2)))
    monkeypatch.setitem(presets.SCALES, "cpu", presets.TrainConfig(hidden=8, epochs=2, restarts=1, top=1))
    cfg = exp.choose_mirage_config(ds, scale="cpu", seed=0, device="cpu", progress=False, threshold_sweep=True)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| sizes |")]
    vals = {line.split("|")[3].strip(): float(line.split("|")[6]) for line in rows}
    assert cfg.filter_shared and cfg.hops == 1 and str(cfg.support) == max(vals, key=vals.get)
    with pytest.raises(UserError, match="no official threshold sweep"):
        exp.choose_mirage_config(make_motif_dataset(20, seed=0), scale="cpu", seed=0, device="cpu", progress=False,
                                 threshold_sweep=True)


def _tiny_cv(monkeypatch):
    """``experiments.mirage`` on a 60-graph generated set with a 2-epoch TU recipe: the CV CLI in seconds."""
    import experiments.mirage as exp
    from graphs.mirage import presets
    from tests.graphs._generated import size_dataset

    monkeypatch.setattr(exp, "load_graph_dataset", lambda name, root, **_: size_dataset(60, seed=0))
    monkeypatch.setattr(exp, "_writable_root", lambda *a: None)
    monkeypatch.setitem(presets.RECIPES["tu-bio"], "cpu", presets.replace(presets.RECIPES["tu-bio"]["cpu"], hidden=8, epochs=2,
                                                                          iters_per_epoch=2))
    return exp

def test_cv_cli_runs_resumes_and_labels_the_test_selected_number(monkeypatch, tmp_path: Path, capsys):
    import json

    from graphs.mirage import cv
    from tests.graphs._generated import size_dataset

    exp = _tiny_cv(monkeypatch)
    args = ["--cv", "--datasets", "sizes", "--models", "gin", "--no-progress", "--cv-state", str(tmp_path / "state"),
            "--json", str(tmp_path / "cv.json")]
    assert exp.main(args) == 0
    assert "GIN paper protocol" in capsys.readouterr().out
    summary = json.loads((tmp_path / "cv.json").read_text())["records"][0]["cv"][0]["summary"]
    assert summary["folds"] == 10 and min(summary["best_epoch"]) >= 1
    calls = []
    monkeypatch.setattr(cv, "train_restarts", lambda *a, **k: calls.append(1))
    assert exp.main([*args, "--overwrite"]) == 0 and not calls  # every fold is resumed from the state file
    state = next((tmp_path / "state").glob("*.json"))
    saved = json.loads(state.read_text())
    saved["key"]["config"].pop("readout_dropout")  # a state written before a TrainConfig field existed
    state.write_text(json.dumps(saved))
    before = state.read_bytes()
    assert exp.main([*args, "--overwrite"]) == 2 and not calls  # refused before any training, the old folds kept
    assert "config.readout_dropout" in capsys.readouterr().err and state.read_bytes() == before
    folds = cv.stratified_folds(size_dataset(60, seed=0).labels())
    assert sorted(torch.cat(folds).tolist()) == list(range(60)) and all(len(f) == 6 for f in folds)


def test_cv_parallel_folds_equal_the_sequential_run_and_resume_out_of_order(tmp_path: Path):
    import json

    from graphs.mirage import cv, presets
    from tests.graphs._generated import size_dataset

    ds = size_dataset(60, seed=0)
    cfg = presets.replace(presets.RECIPES["tu-bio"]["cpu"], hidden=8, epochs=2, iters_per_epoch=2, restarts=1, top=1)
    untimed = lambda folds: [{k: v for k, v in f.items() if k != "train_time_s"} for f in folds]  # noqa: E731
    seq = cv.cross_validate(ds, cfg, folds=4, progress=False, state=tmp_path / "seq.json")
    saved = json.loads((tmp_path / "seq.json").read_text())
    saved["folds"] = [saved["folds"][k] for k in (3, 1)]  # a parallel run stopped with folds 3 and 1 done
    (tmp_path / "part.json").write_text(json.dumps(saved))
    par = cv.cross_validate(ds, cfg, folds=4, progress=False, state=tmp_path / "part.json", jobs=3)  # folds 0, 2 in workers
    assert [f["fold"] for f in par["folds"]] == list(range(4)) and untimed(par["folds"]) == untimed(seq["folds"])
    assert par["folds"][3] == saved["folds"][0]  # kept, not retrained
    assert {k: v for k, v in par["summary"].items() if k != "train_time_s"} == \
        {k: v for k, v in seq["summary"].items() if k != "train_time_s"}
    assert untimed(json.loads((tmp_path / "part.json").read_text())["folds"]) == untimed(seq["folds"])  # saved in fold order
    with pytest.raises(UserError, match="jobs"):
        cv.cross_validate(ds, cfg, jobs=0)


def test_cv_workers_are_spawned_ignoring_ctrl_c_and_without_multiprocessing_tqdm_locks():
    """Workers inherit SIG_IGN at exec (a Ctrl-C while they import torch prints nothing) and use a
    thread lock for tqdm (a terminated worker leaves no semaphore to the resource tracker)."""
    import signal
    import threading

    from tqdm import tqdm as tqdm_std
    from tqdm.auto import tqdm

    from graphs.mirage import cv

    seen = {}

    class Ctx:  # records the parent's SIGINT disposition at the moment the pool spawns its workers
        def Pool(self, processes, initializer):
            seen.update(during=signal.getsignal(signal.SIGINT), processes=processes, initializer=initializer)
            return "pool"

    before = signal.getsignal(signal.SIGINT)
    assert cv._quiet_pool(Ctx(), 2) == "pool"
    assert seen["during"] is signal.SIG_IGN and seen["processes"] == 2 and seen["initializer"] is cv._init_worker
    assert signal.getsignal(signal.SIGINT) is before  # restored in the parent
    lock = tqdm_std.get_lock()
    try:
        cv._init_worker()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert type(tqdm_std.get_lock()) is type(threading.RLock())
        if "_lock" not in vars(tqdm):  # tqdm.auto's class inherits the base's lock unless it set its own
            assert tqdm.get_lock() is tqdm_std.get_lock()
    finally:
        signal.signal(signal.SIGINT, before)
        tqdm_std.set_lock(lock)


def test_cv_summary_val_selected_versus_test_selected():
    from graphs.mirage.cv import summarise_folds

    folds = [{"best_epoch": 1, "train_time_s": 1.0, "curves": {"test_accuracy": [0.5, 0.6, 0.9], "val": [0.4, 0.7, 0.6],
                                                          "spearman": [0, 0.2, 0.4]}},
             {"best_epoch": 2, "train_time_s": 1.0, "curves": {"test_accuracy": [0.5, 0.8, 0.7], "val": [0.4, 0.5, 0.9],
                                                          "spearman": [0, 0.1, 0.3]}}]
    full = summarise_folds(folds)
    s = full["accuracy"]
    assert full["val_at_selected"][0] == pytest.approx((0.7 + 0.9) / 2)
    assert s["val_selected"][0] == pytest.approx((0.6 + 0.7) / 2)  # each fold at its own validation epoch
    assert s["paper_protocol_epoch"] == 2 and s["paper_protocol"][0] == pytest.approx(0.8)  # max of the mean test curve
    assert s["untrained"][0] == 0.5 and s["final"][0] == pytest.approx(0.8)
    # the paper's one-epoch rule on the mean *validation* curve: (0.6, 0.75) -> epoch 2, test (0.9 + 0.7) / 2
    assert full["val_curve_epoch"] == 2 and full["val_curve_max"][0] == pytest.approx(0.75) and s["val_curve"][0] == pytest.approx(0.8)


def test_restarts_and_baseline_epochs_shorten_the_rows_they_name():
    from experiments.mirage import method_config

    base, mirage = method_config("full", "cpu", "NCI1", "gin", 2), method_config("mirage", "cpu", "NCI1", "gin", 2)
    short = method_config("full", "cpu", "NCI1", "gin", 2, restarts=1, baseline_epochs=3)
    short_mirage = method_config("mirage", "cpu", "NCI1", "gin", 2, restarts=1, baseline_epochs=3)
    assert (short.restarts, short.top, short.epochs) == (1, 1, 3) and short.layers == base.layers == 4
    assert short.lr_step == base.lr_step and (short_mirage.epochs, short_mirage.restarts) == (mirage.epochs, 1)
    recipe_rows = method_config("random", "cpu", "NCI1", "gin", 2, restarts=1, baseline_epochs=3, baseline_network="recipe")
    assert recipe_rows == short  # --baseline-network recipe: the earlier tables' random/herding rows
    assert main(["--datasets", "motifs", "--restarts", "0", "--no-progress"]) == 2


def test_cv_grid_selects_on_validation_and_labels_the_test_selected_point(monkeypatch, tmp_path: Path, capsys):
    import json

    from graphs.mirage import cv

    exp = _tiny_cv(monkeypatch)
    args = ["--cv", "--datasets", "sizes", "--models", "gin", "--no-progress", "--cv-state", str(tmp_path / "state"),
            "--cv-hidden", "4", "8", "--cv-dropout", "0", "--json", str(tmp_path / "cv.json")]
    assert exp.main(args) == 0
    out = capsys.readouterr().out
    assert "(hidden 4, batch 32, dropout 0)" in out and "(hidden 8, batch 32, dropout 0)" in out and "validation selects" in out
    rec = json.loads((tmp_path / "cv.json").read_text())["records"][0]
    points = [c["summary"] for c in rec["cv"]]
    assert [c["config"]["hidden"] for c in rec["cv"]] == [4, 8] and {c["config"]["dropout"] for c in rec["cv"]} == {0.0}
    choice = rec["grid"][0]
    assert choice["selected"] == int(max(range(2), key=lambda i: (points[i]["val_at_selected"][0], -i)))
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["sizes_gin_cpu_seed0_h4_b32_d0.json",
                                                                     "sizes_gin_cpu_seed0_h8_b32_d0.json"]
    calls = []
    monkeypatch.setattr(cv, "train_restarts", lambda *a, **k: calls.append(1))
    assert exp.main([*args, "--overwrite"]) == 0 and not calls  # each grid point resumes from its own state file
    assert exp.main(["--datasets", "sizes", "--cv-hidden", "16"]) == 2
    assert exp.main(["--cv", "--datasets", "sizes", "--cv-dropout", "1.0"]) == 2
    assert exp.main(["--cv", "--datasets", "sizes", "--cv-hidden", "16", "16"]) == 2
    assert exp.main(["--cv", "--datasets", "sizes", "--cv-jobs", "0"]) == 2
    assert exp.main(["--datasets", "sizes", "--cv-jobs", "2"]) == 2
    assert exp.main(["--datasets", "sizes", "--cv-jobs", "1"]) == 2  # named without --cv: refused, not ignored


def test_select_config_prefers_validation_and_reports_the_paper_point_separately():
    from graphs.mirage.cv import select_config

    def point(val, test_sel, paper, curve_val, curve_test):
        return {"val_at_selected": (val, 0.0), "val_curve_max": (curve_val, 0.0), "val_curve_epoch": 5,
                "accuracy": {"val_selected": (test_sel, 0.0), "paper_protocol": (paper, 0.0), "paper_protocol_epoch": 7,
                             "val_curve": (curve_test, 0.0)}}

    c = select_config([point(0.70, 0.71, 0.80, 0.66, 0.72), point(0.75, 0.69, 0.74, 0.60, 0.73), point(0.75, 0.60, 0.70, 0.62, 0.74)])
    assert c["selected"] == 1 and c["accuracy_val_selected"][0] == 0.69  # validation wins; ties go to the earlier point
    assert c["val_curve_selected"] == 0 and c["accuracy_val_curve"][0] == 0.72 and c["val_curve_epoch"] == 5
    assert c["paper_protocol_selected"] == 0 and c["accuracy_paper_protocol"][0] == 0.80


def test_equal_bytes_rows_train_one_network_and_the_full_recipe_row_is_the_reference():
    from experiments.mirage import method_config

    for name, hops in (("NCI1", 2), ("ogbg-molbace", 3), ("MUTAG", 1)):
        mirage = method_config("mirage", "cpu", name, "gin", hops)
        assert method_config("random", "cpu", name, "gin", hops) == mirage == method_config("herding", "cpu", name, "gin", hops)
        full = method_config("full", "cpu", name, "gin", hops)
        assert full != mirage and (full.layers, full.norm) != (mirage.layers, mirage.norm)  # the full-data recipe
    with pytest.raises(UserError, match="--baseline-network must be one of same, recipe"):
        method_config("random", "cpu", "NCI1", "gin", 2, baseline_network="other")


def test_experiment_rows_are_kept_and_a_rerun_trains_only_the_missing_ones(monkeypatch, tmp_path: Path, capsys):
    """The default mode keeps each finished (model, method) row in --state: a rerun after an interruption
    trains only the rows not yet kept, and the record equals the uninterrupted run's."""
    import json

    import experiments.mirage as exp
    from graphs.mirage import presets
    from tests.graphs._generated import size_dataset

    monkeypatch.setattr(exp, "load_graph_dataset", lambda name, root, **_: size_dataset(120, seed=1))
    monkeypatch.setitem(presets.PRESETS, "sizes", MirageConfig(hops=1, support=(0.15,)))
    monkeypatch.setattr(exp, "_writable_root", lambda *a: None)
    monkeypatch.setitem(presets.SCALES, "cpu", presets.TrainConfig(hidden=8, epochs=3, restarts=1, top=1))
    trained, real = [], exp.train_restarts

    def counting(*a, **k):
        trained.append(k["desc"])
        if len(trained) == stop_at[0]:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(exp, "train_restarts", counting)
    state, out = tmp_path / "rows.json", tmp_path / "r.json"
    args = ["--datasets", "sizes", "--models", "gin", "--methods", "random", "mirage", "--no-progress", "--state", str(state)]
    stop_at = [0]
    assert exp.main([*args, "--json", str(out)]) == 0 and len(trained) == 2
    reference = json.loads(out.read_text())["records"][0]["results"]
    state.unlink()
    trained.clear()
    stop_at[0] = 2  # interrupted while training the second row: the first is kept
    assert exp.main([*args, "--json", str(out), "--overwrite"]) == 130
    assert "finished rows" in capsys.readouterr().err
    assert list(json.loads(state.read_text())) == ["sizes/random/0/gin/random"]
    trained.clear()
    stop_at[0] = 0
    assert exp.main([*args, "--json", str(out), "--overwrite"]) == 0
    assert trained == ["sizes gin mirage"]  # only the missing row
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_time_s"} for r in rows]  # noqa: E731
    assert strip(json.loads(out.read_text())["records"][0]["results"]) == strip(reference)
    capsys.readouterr()
