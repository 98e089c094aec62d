"""``python -m synth``: teacher + distill round trip, one-line user errors with exit code 2."""
import json
import subprocess
import sys

import pytest

from condense.synset import SyntheticSet
from synth.cli import main
from synth.teachers import load_model, save_model


@pytest.fixture(scope="module")
def teacher_file(teacher, digits, tmp_path_factory):
    return str(save_model(teacher, tmp_path_factory.mktemp("cli") / "T.pt", dataset=digits))


def test_teacher_command_subprocess(tmp_path):
    out = tmp_path / "R.pt"
    proc = subprocess.run([sys.executable, "-m", "synth", "teacher", "--random", "--arch", "lenet5", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["kind"] == "random"
    assert load_model(out).meta["kind"] == "random"


@pytest.mark.parametrize("method,flags", [
    ("dafl", ["--iterations", "3", "--batch-size", "16", "--ngf", "4"]),
    ("meta", ["--rounds", "2", "--warmup", "1", "--batch-size", "16", "--ngf", "4", "--kd-steps", "2", "--meta", "exact", "--crop-pad", "1", "--no-flip"]),
])  # fmt: skip
def test_distill_writes_student_and_synset(teacher_file, tmp_path, capsys, method, flags):
    out, syn = tmp_path / "S.pt", tmp_path / "syn.pt"
    rc = main(["distill", "--method", method, "--teacher", teacher_file, "--out", str(out), "--synset", str(syn),
               "--synset-size", "12", "--no-progress", *flags])  # fmt: skip
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 <= report["student_test_acc"] <= 1 and report["teacher_test_acc"] > 0.9
    student = load_model(out, what="student checkpoint")
    assert student.meta["kind"] == "student" and student.arch == "lenet5_half"
    s = SyntheticSet.load(syn)
    assert s.soft and len(s) == 12 and s.images.shape[1:] == (1, 8, 8) and s.meta["method"] == method


def test_hard_and_random_methods(teacher_file, tmp_path, capsys):
    assert main(["distill", "--method", "hard", "--teacher", teacher_file, "--student", "mlp", "--epochs", "1", "--out", str(tmp_path / "h.pt"), "--no-progress"]) == 0
    assert main(["distill", "--method", "random", "--teacher", teacher_file, "--epochs", "1", "--out", str(tmp_path / "r.pt"), "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"student_knn", "teacher_knn", "student_linear_probe"} <= set(report)


@pytest.mark.parametrize("argv,needle", [
    (["--resize", "16"], "input"),
    (["--temperature", "0"], "temperature"),
    (["--student", "nonet"], "unknown model"),
    (["--synset", "x.pt", "--method", "hard"], "generator method"),
])  # fmt: skip
def test_user_errors(teacher_file, tmp_path, capsys, argv, needle):
    method = argv[argv.index("--method") + 1] if "--method" in argv else "dafl"
    argv = [a for i, a in enumerate(argv) if a != "--method" and (i == 0 or argv[i - 1] != "--method")]
    rc = main(["distill", "--method", method, "--teacher", teacher_file, "--out", str(tmp_path / "S.pt"), "--iterations" if method == "dafl" else "--epochs", "1", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and needle in err and len(err.splitlines()) == 1


def test_missing_teacher_file(tmp_path, capsys):
    assert main(["distill", "--method", "dfad", "--teacher", str(tmp_path / "none.pt"), "--out", str(tmp_path / "S.pt")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [(["--dataset", "mnist"], "--root"), (["--val-fraction", "1.5"], "fraction"),
                                           (["--teacher-epochs", "0"], "--teacher-epochs"),
                                           (["--only", "meta", "--meta-k", "3"], "--meta-k"),
                                           (["--set", "dafl.lr_g"], "GROUP.KEY=VALUE"), (["--set", "real.epochs=3"], "GROUP.KEY=VALUE"),
                                           (["--set", "dafl.nope=3"], "'nope'"), (["--set", "meta.lr_meta=0.1"], "--meta-grid"),
                                           (["--set", "dafl.schedule=linear"], "schedule"),
                                           (["--meta-grid", "fomaml:2"], "MODE:K:LR_META"), (["--meta-grid", "fomaml:x:0.1"], "MODE:K:LR_META"),
                                           (["--toy", "hard", "--set", "dafl.lr_g=0.1"], "--toy")])
def test_experiment_user_errors_are_one_line(capsys, argv, needle):
    from experiments.synth import main as experiment_main

    assert experiment_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and len(err.splitlines()) == 1


def test_experiment_only_selects_row_groups(tmp_path, capsys):
    from experiments.synth import main as experiment_main

    out = tmp_path / "t.md"
    assert experiment_main(["--only", "real", "--teacher-epochs", "1", "--seeds", "0", "--resize", "16", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "acc %" not in line]
    assert [r.split("|")[1].strip() for r in rows] == [
        "teacher LeNet-5 (no BN; for DAFL/DFAD/ZSKT)", "teacher LeNet-5 (BN; for the meta-generator)", "student on real data"]
    assert "teacher epochs 1" in out.read_text()


def _accuracies(table: str) -> dict[str, str]:
    """Row name -> accuracy cell of an experiment table (the seconds column differs between runs)."""
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ") and "acc %" not in line]
    return {r[1].strip(): r[2].strip() for r in rows}


def test_experiment_cache_resumes_and_test_split_rescores_the_validation_run(tmp_path, monkeypatch):
    """--cache: a --split test run loads what the --split val run trained and equals a run without the cache."""
    import experiments.synth as exp

    argv = ["--only", "real", "dafl", "--set", "dafl.iterations=2", "--teacher-epochs", "2", "--seeds", "0", "--resize", "16"]
    assert exp.main([*argv, "--out", str(tmp_path / "plain.md")]) == 0
    cache = tmp_path / "cache"
    assert exp.main([*argv, "--split", "val", "--cache", str(cache), "--out", str(tmp_path / "val.md")]) == 0
    assert len(list(cache.glob("*.pt"))) == 4 and not list(cache.glob("*.ckpt"))  # two teachers, real student, DAFL
    assert "DAFL [iterations=2]" in _accuracies((tmp_path / "val.md").read_text())

    def refuse(*_a, **_k):
        raise AssertionError("a cached network was trained again")

    monkeypatch.setattr(exp, "train_teacher", refuse)
    monkeypatch.setattr(exp, "train_generator_kd", refuse)
    assert exp.main([*argv, "--cache", str(cache), "--out", str(tmp_path / "test.md")]) == 0
    assert _accuracies((tmp_path / "test.md").read_text()) == _accuracies((tmp_path / "plain.md").read_text())
    other = [*argv[:4], "dafl.iterations=3", *argv[5:]]  # other settings -> a new key -> trained (and refused here)
    with pytest.raises(AssertionError, match="trained again"):
        exp.main([*other, "--cache", str(cache), "--out", str(tmp_path / "other.md")])


def test_experiment_cache_refuses_a_file_stored_for_other_settings(tmp_path, capsys):
    import experiments.synth as exp

    cache = tmp_path / "cache"
    argv = ["--only", "real", "--teacher-epochs", "1", "--seeds", "0", "--resize", "16", "--cache", str(cache)]
    assert exp.main(argv) == 0
    a, b, *_ = sorted(cache.glob("*.pt"))
    b.write_bytes(a.read_bytes())
    capsys.readouterr()
    assert exp.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "other settings" in err[-1] and not any("Traceback" in line for line in err)


def test_experiment_keeps_trained_networks_by_default_and_a_rerun_loads_them(tmp_path, monkeypatch, capsys):
    from experiments import synth as exp

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    argv = ["--only", "real", "--teacher-epochs", "1", "--seeds", "0", "--resize", "16"]
    assert exp.main(argv) == 0
    first = capsys.readouterr()
    stored = sorted((tmp_path / "cache" / "condense" / "synth").glob("*.pt"))
    assert stored and "cached" not in first.err  # the default cache holds what the run trained
    assert exp.main(argv) == 0
    second = capsys.readouterr()
    assert "cached" in second.err and second.out.split("total")[1].split("\n", 1)[1] == first.out.split("total")[1].split("\n", 1)[1]
    assert exp.main([*argv, "--no-cache"]) == 0 and "cached" not in capsys.readouterr().err  # --no-cache: trains again
    assert exp.main([*argv, "--no-cache", "--cache", str(tmp_path / "c")]) == 2
    assert "contradict" in capsys.readouterr().err
