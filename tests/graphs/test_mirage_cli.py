"""``python -m graphs.mirage``: embedded default end to end, shared-data run, one-line errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from graphs.mirage.__main__ import main
from graphs.mirage.distill import DistilledSet

REPO = Path(__file__).resolve().parents[2]


def test_module_runs_embedded_default_and_writes_artifact(tmp_path):
    out = tmp_path / "distilled.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "graphs.mirage", "--epochs", "3", "--restarts", "1", "--no-progress", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "motifs: 400 graphs" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| mirage") or line.startswith("| random")]
    assert len(rows) == 2
    d = DistilledSet.load(out)
    assert d.meta["dataset"] == "motifs" and len(d.graphs) == int(rows[0].split("|")[3].split()[0])


@pytest.mark.shared_data
def test_mutag_with_explicit_hops_and_support(writable_shared, tmp_path, capsys):
    root = writable_shared("tu/MUTAG").parent
    out = tmp_path / "mutag.pt"
    code = main(["--dataset", "MUTAG", "--root", str(root), "--hops", "2", "--support", "0.5", "--model", "gat",
                 "--epochs", "2", "--restarts", "1", "--no-baseline", "--no-progress", "--out", str(out)])
    assert code == 0
    d = DistilledSet.load(out)
    assert d.meta["config"]["hops"] == 2 and d.meta["train_graphs"] == 150 and d.graphs[0].edge_attr is not None
    assert "| mirage |" in capsys.readouterr().out


def test_training_options_fail_before_mining(monkeypatch, capsys):
    import graphs.mirage.__main__ as cli

    def mining(*args, **kwargs):
        raise AssertionError("mined before validating the training options")

    monkeypatch.setattr(cli, "mirage_distill", mining)
    for argv, needle in ((["--dropout", "1.5"], "dropout"), (["--epochs", "0"], "epochs must be >= 1")):
        assert cli.main(argv + ["--no-progress"]) == 2
        assert needle in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["--dataset", "MUTAG"], "needs --root"),
    (["--dataset", "MUTAG", "--root", "/nonexistent"], "root /nonexistent does not exist"),
    (["--hops", "2", "--support", "0.5,0.5,0.5"], "one support value"),
    (["--hops", "2", "--support", "1000", "--epochs", "1", "--restarts", "1"], "lower --support"),
    (["--dataset", "ENZYMES", "--root", "/nonexistent"], "ENZYMES"),
    (["--dropout", "1.5", "--epochs", "1", "--restarts", "1"], "dropout must lie in [0, 1)"),
])
def test_user_errors_are_one_line_exit_2(argv, needle, capsys):
    assert main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1
