"""`python -m condense distill --method datadam|dc|dsa`, the matching experiment and its benchmark."""
import json
import subprocess
import sys

import pytest
import torch

from condense.cli import main
from condense.evaluate import Summary
from condense.synset import SyntheticSet
from experiments import bench_matching, matching

TINY = ["--iterations", "1", "--batch-real", "8", "--width", "8", "--no-progress"]


@pytest.mark.parametrize(
    "method,extra",
    [("datadam", ["--power", "1", "--norm", "batchnorm", "--class-by-class"]), ("dc", ["--batch-train", "8", "--outer-loop", "1", "--inner-loop", "1"]),
     ("dsa", ["--dis-metric", "mse", "--outer-loop", "2", "--inner-loop", "1"])],
)  # fmt: skip
def test_distill_each_matching_method(tmp_path, method, extra):
    out = tmp_path / f"{method}.pt"
    assert main(["distill", "--method", method, "--ipc", "2", "--out", str(out), "--png", str(tmp_path / "g.png"), *TINY, *extra]) == 0
    s = SyntheticSet.load(out)
    assert len(s) == 20 and s.meta["method"] == method and s.meta["config"]["width"] == 8
    assert (tmp_path / "g.png").exists()


@pytest.mark.parametrize(
    "argv,message",
    [(["--method", "datadam", "--norm", "layernorm"], "norm"), (["--method", "dc", "--dis-metric", "l1"], "dis_metric"),
     (["--method", "dsa", "--outer-loop", "3"], "both")],
)  # fmt: skip
def test_bad_method_flags_are_one_line_errors(tmp_path, capsys, argv, message):
    out = tmp_path / "x.pt"
    assert main(["distill", "--ipc", "1", "--out", str(out), *argv, *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_module_entry_point_reports_missing_loop_table_without_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "condense", "distill", "--method", "dc", "--ipc", "3", "--out", str(tmp_path / "x.pt"), *TINY],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "no official outer/inner loop" in r.stderr and "Traceback" not in r.stderr


def test_matching_experiment_end_to_end(tmp_path, capsys):
    argv = ["--methods", "random", "--ipcs", "1", "--archs", "mlp", "--out-dir", str(tmp_path), "--no-progress"]
    assert matching.main(argv) == 0
    out = capsys.readouterr().out
    assert "| digits" in out and "random" in out and "MLP %" in out and "±" in out
    (result,) = tmp_path.glob("results_cpu_*.json")
    rows = json.loads(result.read_text())["rows"]
    assert rows[0]["method"] == "random" and len(rows[0]["accs"]["mlp"]) == matching.SCALES["cpu"].cross_evals
    assert (tmp_path / "digits_ipc1.png").exists() and (tmp_path / "digits_ipc1_random.pt").exists()
    assert matching.main(["--figure-only", "--ipcs", "1", "--out-dir", str(tmp_path)]) == 0


def test_matching_variant_config():
    cfg = matching.method_config("datadam_official", matching.SCALES["cpu"], 10)
    assert (cfg.power, cfg.norm, cfg.width) == (1.0, "batchnorm", 32)
    assert matching.method_config("dc", matching.SCALES["cpu"], 10).iterations == matching.SCALES["cpu"].gm_iterations[10]


@pytest.mark.parametrize("argv", [["--methods", "foo"], ["--ipcs", "0"], ["--datasets", "fashion_mnist"], ["--ipcs", "x"]])
def test_matching_experiment_bad_input(tmp_path, capsys, argv):
    assert matching.main([*argv, "--out-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_bench_matching_reports_time_and_memory(capsys):
    assert bench_matching.main(["--methods", "dm,datadam", "--ipcs", "1", "--repeats", "1", "--width", "16"]) == 0
    out = capsys.readouterr().out
    assert "time / DM" in out and "CPU time / DM" in out and "| 1   | datadam" in out and "peak MB" in out and "ConvNet-16" in out
    assert bench_matching.main(["--methods", "mtt"]) == 2
    assert bench_matching.main(["--batch-real", "0"]) == 2


@pytest.mark.slow
def test_matching_evaluate_only_reevaluates_the_saved_sets(tmp_path, capsys):
    argv = ["--methods", "random", "--ipcs", "1", "--archs", "mlp", "--out-dir", str(tmp_path), "--no-progress"]
    assert matching.main(argv) == 0
    first = json.loads(next(tmp_path.glob("results_cpu_*.json")).read_text())["rows"][0]
    (tmp_path / "digits_ipc1_random.pt").rename(tmp_path / "kept.pt")
    assert matching.main([*argv, "--evaluate-only"]) == 2 and "no saved set" in capsys.readouterr().err
    (tmp_path / "kept.pt").rename(tmp_path / "digits_ipc1_random.pt")
    assert matching.main([*argv, "--evaluate-only"]) == 0
    again = json.loads(next(tmp_path.glob("results_cpu_*.json")).read_text())["rows"][0]
    assert again["accs"] == first["accs"] and again["distill_seconds"] == pytest.approx(first["distill_seconds"], abs=0.1)


@pytest.mark.parametrize("published", [False, True])
def test_matching_columns_protocols_and_epochs(monkeypatch, published):
    """Shared dc+DSA columns for every arch; DC adds dc without DSA, DataDAM its own protocol; published: protocol epochs."""
    calls = []

    def record(synset, dataset, *, models, **kw):
        calls.append((models[0], kw["protocol"], kw["dsa"], kw["epochs"], kw["num_evals"]))
        return {models[0]: Summary(models[0], [0.5] * kw["num_evals"], [0.5] * kw["num_evals"])}

    monkeypatch.setattr(matching, "evaluate_synset", record)
    scale = matching.SCALES["cpu"]
    e, x = (None, None) if published else (scale.eval_epochs, scale.cross_epochs)
    n, c = scale.num_evals, scale.cross_evals
    kw = dict(archs=("convnet", "lenet"), published=published, device=torch.device("cpu"), seed=0, progress=False)
    for method, own in [("dm", []), ("dc", [("convnet", "dc", False, e, n)]), ("datadam_official", [("convnet", "datadam", True, e, n)])]:
        calls.clear()
        accs = matching.evaluate_row(None, None, method, scale, **kw)
        assert calls == [("convnet", "dc", True, e, n), ("lenet", "dc", True, x, c), *own], method
        assert set(accs) == {"convnet", "lenet"} | ({matching.OWN_COLUMNS[method.split("_")[0]][0]} if own else set())
