"""CLIs: ``python -m graphs.g2m``, ``experiments.g2m`` and ``experiments.bench_inference``."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from condense.utils import UserError, safe_load
from experiments import bench_inference
from experiments import g2m as g2m_experiment
from graphs.g2m.__main__ import STUDENT_FORMAT, TEACHER_FORMAT, load_student, main

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
TINY = ["--nodes", "300", "--features", "20", "--max-epochs", "40", "--no-progress"]



def test_cli_all_methods_inductive_saves_artifacts_and_table(tmp_path, capsys):
    out = tmp_path / "run" / "student.pt"
    assert main(TINY + ["--method", "all", "--setting", "ind", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for row in ("teacher:gcn", "mlp", "glnn", "lfd", "hfd", "ff-g2m"):
        assert f"\n{row} " in text
    assert "prod" in text and "ind" in text
    teacher = safe_load(tmp_path / "run" / "teacher.pt", expected_format=TEACHER_FORMAT)
    assert teacher["logits"].shape == (300, 2) and set(teacher["scores"]) == {"val", "tran", "ind", "prod"}
    student = load_student(tmp_path / "run" / "student_ff-g2m.pt")
    assert student(torch.randn(5, 20)).shape == (5, 2)
    art = safe_load(tmp_path / "run" / "student_glnn.pt", expected_format=STUDENT_FORMAT)
    assert art["method"] == "glnn" and art["setting"] == "ind"
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_cli_default_shows_teacher_baselines_ff_g2m_and_speedup(tmp_path, capsys):
    """The no-argument run's table: teacher, plain MLP, GLNN and FF-G2M rows, and the measured speed-up."""
    assert main(TINY + ["--out", str(tmp_path / "s.pt")]) == 0
    text = capsys.readouterr().out
    rows = [line.split()[0] for line in text.splitlines()[2:6]]
    assert rows == ["teacher:gcn", "mlp", "glnn", "ff-g2m"]
    assert "x faster" in text and "MLP student" in text


def test_cli_single_method_writes_out_path(tmp_path, capsys):
    out = tmp_path / "s.pt"
    assert main(TINY + ["--method", "glnn", "--teacher", "sage", "--out", str(out), "--teacher-out", str(tmp_path / "t.pt")]) == 0
    assert out.is_file() and (tmp_path / "t.pt").is_file()
    with pytest.raises(UserError):
        load_student(tmp_path / "t.pt")  # a teacher artifact is not a student


@pytest.mark.parametrize("argv, needle", [
    (["--dataset", "cora"], "needs --root"),
    (["--dataset", "cora", "--root", "{tmp}"], "raw files missing"),
    (["--nodes", "300", "--csbm-lambda", "99"], "lam"),
    (["--max-epochs", "0"], "max-epochs"),
    (["--device", "cuda:7"], "device"),
])
def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, needle):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv + ["--out", str(tmp_path / "s.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]


def test_module_entry_point_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "graphs.g2m", "--dataset", "citeseer", "--root", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: dataset 'citeseer'")


@pytest.mark.shared_data
def test_cli_on_cora(writable_shared, tmp_path, capsys):
    root = writable_shared("planetoid")
    assert main(["--dataset", "cora", "--root", str(root), "--method", "glnn", "--max-epochs", "2", "--no-progress", "--out", str(tmp_path / "s.pt")]) == 0
    text = capsys.readouterr().out
    assert "dataset=cora" in text and "lamb=0.4" in text and "tau=1.5" in text
    assert safe_load(tmp_path / "teacher.pt", expected_format=TEACHER_FORMAT)["logits"].shape == (2708, 7)


def test_experiment_tables_and_skip(tmp_path, capsys):
    scores = {"val": 0.5, "tran": 0.6, "ind": 0.4, "prod": 0.56}
    results = {"cora": {"gcn": {"ind": {c: [scores, {**scores, "ind": 0.6}] for c in g2m_experiment.COLUMNS}}}}
    table = g2m_experiment.markdown_tables(results)
    assert "| cora | gcn | 50.00 ± 10.00 |" in table and "score `prod`" in table
    assert g2m_experiment.main(["--datasets", "pubmed", "--root", str(tmp_path), "--seeds", "0"]) == 0
    assert "skipping pubmed" in capsys.readouterr().out


def test_bench_inference_reports_speedups(capsys):
    assert bench_inference.main(["--sizes", "300", "--queries", "3", "--teachers", "gcn"]) == 0
    text = capsys.readouterr().out
    assert "speed-up vs GCN" in text and "| 300 |" in text and "| full |" in text and "| single |" in text
    assert bench_inference.main(["--sizes", "10"]) == 2
