"""Experiment drivers: the benchmark measurement and the experiment's error path."""
from __future__ import annotations

from pathlib import Path

import pytest

from condense.utils import UserError
from experiments.bench_mirage import measure
from experiments.mirage import main
from graphs.data.motifs import make_motif_dataset
from graphs.mirage.distill import MirageConfig
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
    assert "| motifs | gin | mirage | 3.0 | 10.00% | 0.900 ± 0.100 | 0.450 ± 0.050 |" in out
    assert "| motifs | gin | random | 3.0 | 10.00% | 0.500 ± 0.000 |" in out
