"""Serving a GNN-to-MLP student: the self-contained file, ``predict`` without a graph, ``torch.export``/ONNX."""
from __future__ import annotations

import importlib.util
import pickle
import zipfile

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from condense.safeio import fingerprint_tensors
from condense.utils import UserError, atomic_save, safe_load
from graphs.g2m import pipeline
from graphs.g2m.__main__ import main
from graphs.g2m.serve import STUDENT_FORMAT, export_student, load_exported, load_student, predict, save_student
from graphs.models.node import build_node_model
from tests.graphs._ogbn_layout import write_arxiv_layout

TINY = ["--nodes", "300", "--features", "20", "--max-epochs", "15", "--no-progress", "--no-baselines"]
HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))


def _student(path, in_dim: int = 6, classes: int = 3, prep: str = "none"):
    torch.manual_seed(0)
    mlp = build_node_model("mlp", in_dim, classes, hidden=8, num_layers=2)
    save_student(path, mlp, model_kwargs=dict(hidden=8, num_layers=2), class_names=[f"c{i}" for i in range(classes)],
                 feature_preprocessing=prep, teacher_checksum="0" * 64, method="glnn")  # fmt: skip
    return mlp.eval()


def test_cli_out_writes_a_servable_student_that_predict_and_export_reproduce(tmp_path, capsys):
    """train --out -> the file carries weights, preprocessing, class names, config and the teacher's checksum;
    predict (API and CLI, no graph) and the exported program give the student's logits."""
    out = tmp_path / "student.pt"
    assert main(TINY + ["--method", "glnn", "--out", str(out)]) == 0
    art = safe_load(out, expected_format=STUDENT_FORMAT)
    teacher = safe_load(tmp_path / "teacher.pt")
    assert art["teacher_checksum"] == fingerprint_tensors(teacher["state_dict"])
    assert art["class_names"] == ["0", "1"] and art["preprocessing"] == "none" and art["config"]["student"]["max_epochs"] == 15
    student = load_student(out)
    assert student.meta["method"] == "glnn" and "state_dict" not in student.meta
    x = np.random.default_rng(0).standard_normal((9, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    logits, classes = predict(student, x)
    with torch.no_grad():
        assert torch.equal(logits, student.mlp(torch.from_numpy(x))) and torch.equal(classes, logits.argmax(1))
    capsys.readouterr()
    assert main(["predict", str(out), "--features", str(tmp_path / "x.npy")]) == 0
    assert capsys.readouterr().out.split() == [str(c) for c in classes.tolist()]
    assert main(["predict", str(out), "--features", str(tmp_path / "x.npy"), "--out", str(tmp_path / "p.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "p.npy"), classes.numpy())
    assert main(["predict", str(out), "--features", str(tmp_path / "x.npy"), "--out", str(tmp_path / "l.npy"), "--logits"]) == 0
    assert np.array_equal(np.load(tmp_path / "l.npy"), logits.numpy())
    assert main(["export", str(out), "--out", str(tmp_path / "s.pt2")]) == 0
    program, meta = load_exported(tmp_path / "s.pt2")
    assert meta["teacher_checksum"] == art["teacher_checksum"] and meta["in_dim"] == 20
    for rows in (1, 9):  # the batch size is dynamic, a single node included
        torch.testing.assert_close(program(torch.from_numpy(x[:rows])), logits[:rows], rtol=1e-6, atol=1e-6)


def test_row_sum_preprocessing_is_applied_at_serving(tmp_path, monkeypatch):
    """A Planetoid-trained student takes raw bag-of-words rows: the loader's row normalisation is applied again."""
    raw = torch.tensor([[1.0, 3.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 6, [2.0, 2.0, 2.0, 2.0, 0.0, 0.0]])
    monkeypatch.setattr(pipeline, "load_planetoid", lambda name, root: Data(x=raw / raw.sum(1, keepdim=True).clamp_min(1e-12)))
    loaded = pipeline._planetoid("cora", tmp_path)
    mlp = _student(tmp_path / "s.pt", prep=loaded.feature_preprocessing)
    student = load_student(tmp_path / "s.pt")
    assert student.preprocessing == "row-sum"
    logits, _ = predict(student, raw.numpy())
    with torch.no_grad():
        assert torch.equal(logits, mlp(loaded.x))
    export_student(student, tmp_path / "s.pt2")
    torch.testing.assert_close(load_exported(tmp_path / "s.pt2")[0](raw), logits, rtol=1e-6, atol=1e-6)


def test_unknown_preprocessing_is_refused_before_writing(tmp_path):
    with pytest.raises(UserError, match="no serving transform"):
        _student(tmp_path / "s.pt", prep="standardised somehow")
    assert not (tmp_path / "s.pt").exists()


def _bad_inputs(tmp):
    np.save(tmp / "wide.npy", np.zeros((4, 7), np.float32))
    nan = np.zeros((4, 6)); nan[2, 3] = np.nan
    np.save(tmp / "nan.npy", nan)
    inf = np.zeros((4, 6), np.float32); inf[0, 0] = np.inf
    np.save(tmp / "inf.npy", inf)
    np.save(tmp / "complex.npy", np.zeros((4, 6), np.complex64))
    np.save(tmp / "text.npy", np.full((4, 6), "a"))
    np.save(tmp / "flat.npy", np.zeros(6, np.float32))
    np.save(tmp / "empty.npy", np.zeros((0, 6), np.float32))
    np.save(tmp / "ok.npy", np.ones((4, 6), np.float32))
    (tmp / "notes.txt").write_text("not a student")
    atomic_save(dict(format="condense.g2m.teacher/v1", state_dict={}), tmp / "teacher.pt")
    atomic_save(dict(format="condense.g2m.student/v1", state_dict={}), tmp / "old.pt")


@pytest.mark.parametrize("student, features, out, needle", [
    ("s.pt", "wide.npy", "p.npy", "7 feature columns, but the student was trained on 6"),
    ("s.pt", "nan.npy", "p.npy", "NaN or Inf"),
    ("s.pt", "inf.npy", "p.npy", "NaN or Inf"),
    ("s.pt", "complex.npy", "p.npy", "not numeric"),
    ("s.pt", "text.npy", "p.npy", "not numeric"),
    ("s.pt", "flat.npy", "p.npy", "expected a 2-D array"),
    ("s.pt", "empty.npy", "p.npy", "no rows"),
    ("s.pt", "notes.txt", "p.npy", "not a readable .npy"),
    ("teacher.pt", "ok.npy", "p.npy", "is not a g2m student"),
    ("old.pt", "ok.npy", "p.npy", "earlier format"),
    ("notes.txt", "ok.npy", "p.npy", "not a readable g2m student"),
    ("s.pt", "ok.npy", "s.pt", "also the input STUDENT"),
    ("s.pt", "ok.npy", "ok.npy", "also the input --features"),
])  # fmt: skip
def test_predict_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, student, features, out, needle):
    _student(tmp_path / "s.pt")
    _bad_inputs(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    argv = ["predict", str(tmp_path / student), "--features", str(tmp_path / features), "--out", str(tmp_path / out), "--overwrite"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and err.startswith("error: ")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_predict_api_refuses_bad_dtype_and_accepts_integer_counts(tmp_path):
    _student(tmp_path / "s.pt")
    student = load_student(tmp_path / "s.pt")
    with pytest.raises(UserError, match="not numeric"):
        predict(student, np.array([[object()] * 6]))
    with pytest.raises(UserError, match="2-D"):
        predict(student, torch.ones(2, 3, 6))
    counts = np.arange(12).reshape(2, 6)
    torch.testing.assert_close(predict(student, counts)[0], predict(student, counts.astype(np.float32))[0], rtol=0, atol=0)


def test_load_exported_refuses_other_files_and_pickled_payloads(tmp_path):
    _student(tmp_path / "s.pt")
    with pytest.raises(UserError, match="not an exported student"):
        load_exported(tmp_path / "s.pt")
    with pytest.raises(UserError, match="must end in .pt2"):
        export_student(load_student(tmp_path / "s.pt"), tmp_path / "s.bin")
    export_student(load_student(tmp_path / "s.pt"), tmp_path / "s.pt2")
    for tamper, needle in (("weights", "pickled payload"), ("sample", "not an exported student")):
        with zipfile.ZipFile(tmp_path / "s.pt2") as src, zipfile.ZipFile(tmp_path / "t.pt2", "w") as dst:
            for item in src.infolist():
                data = src.read(item)
                if tamper == "weights" and item.filename.endswith("model_weights_config.json"):
                    data = data.replace(b'"use_pickle": false', b'"use_pickle": true', 1)
                if tamper == "sample" and item.filename.endswith("sample_inputs/model.pt"):
                    data = pickle.dumps(print)  # anything beyond tensors must never reach an unpickler
                dst.writestr(item, data)
        with pytest.raises(UserError, match=needle):
            load_exported(tmp_path / "t.pt2")


@pytest.mark.skipif(HAS_ONNX, reason="onnx is installed here: the missing-extra refusal cannot be observed")
def test_onnx_without_the_extra_is_refused_before_writing(tmp_path, capsys):
    _student(tmp_path / "s.pt")
    assert main(["export", str(tmp_path / "s.pt"), "--out", str(tmp_path / "s.pt2"), "--onnx", str(tmp_path / "s.onnx")]) == 2
    assert "pip install 'condense[onnx]'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.pt"]


@pytest.mark.skipif(not HAS_ONNX, reason="the optional onnx extra (onnx, onnxscript, onnxruntime) is not installed")
def test_onnx_export_gives_the_same_logits(tmp_path):
    import onnxruntime

    mlp = _student(tmp_path / "s.pt")
    export_student(load_student(tmp_path / "s.pt"), tmp_path / "s.pt2", onnx_path=tmp_path / "s.onnx")
    x = torch.randn(5, 6)
    session = onnxruntime.InferenceSession(str(tmp_path / "s.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, mlp(x).numpy(), rtol=1e-5, atol=1e-5)


def test_arxiv_layout_loader_mini_batch_teacher_student_export_predict(tmp_path, capsys):
    """OGB layout -> neighbour-sampled SAGE teacher -> GLNN student in node batches -> export -> predict on raw features."""
    pieces = write_arxiv_layout(tmp_path / "data", nodes=400, edges=2400, features=8, classes=4)
    out = tmp_path / "student.pt"
    argv = ["--dataset", "ogbn-arxiv", "--root", str(tmp_path / "data"), "--teacher", "sage", "--preset", "glnn", "--mini-batch",
            "--method", "glnn", "--no-baselines", "--max-epochs", "2", "--batch-size", "128", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    np.save(tmp_path / "x.npy", pieces["x"].numpy())
    assert main(["export", str(out), "--out", str(tmp_path / "s.pt2")]) == 0
    assert main(["predict", str(out), "--features", str(tmp_path / "x.npy"), "--out", str(tmp_path / "l.npy"), "--logits"]) == 0
    assert "400 nodes" in capsys.readouterr().out
    logits = torch.from_numpy(np.load(tmp_path / "l.npy"))
    program, meta = load_exported(tmp_path / "s.pt2")
    assert logits.shape == (400, 4) and meta["class_names"] == ["0", "1", "2", "3"]
    torch.testing.assert_close(program(pieces["x"]), logits, rtol=1e-5, atol=1e-5)


def test_bench_inference_serving_latency_table(tmp_path, capsys):
    """The serving table times the exported student against the teacher's CSR fetch + forward, which
    computes the teacher's full-graph logits of the requested nodes."""
    from experiments import bench_inference
    from graphs.data.csbm import csbm
    from graphs.g2m.sampling import CSR, sample_blocks

    out = tmp_path / "bench.json"
    argv = ["--sizes", "300", "--queries", "3", "--teachers", "gcn", "--batch-sizes", "1", "8", "--json", str(out)]
    assert bench_inference.main(argv) == 0
    assert "| exported student ms |" in capsys.readouterr().out
    rows = __import__("json").loads(out.read_text())["serving"]
    assert [(r["batch"], r["teacher"]) for r in rows] == [(1, "gcn"), (8, "gcn")]
    assert all(r["student_ms"] > 0 and r["fetch_ms"] > 0 and r["teacher_ms"] > 0 for r in rows)
    assert bench_inference.main(["--sizes", "300", "--batch-sizes", "0"]) == 2
    data = csbm(300, 16, avg_degree=6.0, seed=1)
    teacher = build_node_model("gcn", 16, 2, hidden=8, num_layers=2).eval()
    batch = torch.tensor([3, 17, 250])
    blocks = sample_blocks(CSR.from_edge_index(data.edge_index, 300), batch, [-1, -1])
    with torch.no_grad():
        torch.testing.assert_close(teacher.forward_blocks(data.x[blocks[0].nodes], blocks), teacher(data.x, data.edge_index)[batch])
