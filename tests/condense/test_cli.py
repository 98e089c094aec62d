"""The CLI end to end on digits, and every bad input: one line on stderr, exit code 2, nothing written."""
import subprocess
import sys

import pytest
import torch

from condense.cli import main
from condense.synset import SyntheticSet
from condense.utils import atomic_save

TINY = ["--iterations", "2", "--batch-real", "8", "--width", "8", "--no-progress"]


def _run(*argv):
    return main(list(argv))


def test_distill_evaluate_show_end_to_end(tmp_path, capsys):
    out = tmp_path / "dm.pt"
    assert _run("distill", "--method", "dm", "--ipc", "2", "--out", str(out), "--png", str(tmp_path / "g.png"), *TINY) == 0
    s = SyntheticSet.load(out)
    assert len(s) == 20 and s.meta["method"] == "dm" and s.meta["config"]["width"] == 8
    assert (tmp_path / "g.png").exists()
    capsys.readouterr()
    assert _run("evaluate", str(out), "--models", "mlp,lenet", "--num-evals", "1", "--epochs", "2", "--no-dsa", "--no-progress") == 0
    table = capsys.readouterr().out
    assert "| mlp" in table and "| lenet" in table and "±" in table
    assert _run("show", str(out), "--png", str(tmp_path / "show.png")) == 0
    shown = capsys.readouterr().out
    assert "| method " in shown and "| dm " in shown and (tmp_path / "show.png").exists()


def test_checkpoint_and_resume_via_cli(tmp_path):
    out = tmp_path / "r.pt"
    args = ["distill", "--method", "dm", "--ipc", "1", "--out", str(out), "--checkpoint-every", "1", *TINY]
    assert _run(*args) == 0
    first = SyntheticSet.load(out).images
    assert (tmp_path / "r.pt.ckpt").exists()
    assert _run(*args, "--resume") == 0  # checkpoint already at the last iteration: same result
    assert torch.equal(SyntheticSet.load(out).images, first)
    bad = ["distill", "--method", "dm", "--ipc", "2", "--out", str(out), "--checkpoint-every", "1", "--resume", *TINY]
    assert _run(*bad) == 2  # IPC mismatch on resume


@pytest.mark.parametrize(
    "argv,message",
    [
        (["distill", "--method", "magic", "--ipc", "1"], "unknown method"),
        (["distill", "--method", "dm", "--ipc", "1", "--dataset", "imagenet"], "unknown dataset"),
        (["distill", "--method", "dm", "--ipc", "1", "--dataset", "mnist", "--root", "/does/not/exist"], "does not exist"),
        (["distill", "--method", "dm", "--ipc", "0"], "ipc"),
        (["distill", "--method", "dm", "--ipc", "500"], "smallest class"),
        (["distill", "--method", "dm", "--ipc", "1", "--device", "cuda:7"], "not available"),
        (["distill", "--method", "dm", "--ipc", "1", "--lr-img", "nan"], "--lr-img"),
        (["distill", "--method", "dm", "--ipc", "1", "--lr-img", "inf"], "--lr-img"),
        (["distill", "--method", "dm", "--ipc", "1", "--resume"], "no checkpoint"),
        (["distill", "--method", "dm", "--ipc", "1", "--model", "resnet18"], "1x1 feature map"),
        (["distill", "--method", "dsa", "--ipc", "1", "--model", "convnetd4"], "1x1 feature map"),
    ],
)
def test_bad_distill_inputs(tmp_path, capsys, argv, message):
    out = tmp_path / "x.pt"
    assert _run(*argv, "--out", str(out), *TINY) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_bad_artifacts_and_models(tmp_path, capsys):
    corrupt = tmp_path / "c.pt"
    corrupt.write_bytes(b"\x00garbage")
    foreign = tmp_path / "f.pt"
    atomic_save({"state_dict": {}}, foreign)
    good = tmp_path / "g.pt"
    assert _run("distill", "--method", "random", "--ipc", "1", "--out", str(good), "--no-progress") == 0
    before = good.read_bytes()
    for argv, msg in [
        (["evaluate", str(corrupt)], "not a readable"),
        (["evaluate", str(foreign)], "expected format"),
        (["evaluate", str(tmp_path / "missing.pt")], "not found"),
        (["evaluate", str(good), "--models", "convnet,vgg99"], "unknown model"),
        (["show", str(corrupt), "--png", str(tmp_path / "p.png")], "not a readable"),
    ]:
        capsys.readouterr()
        assert _run(*argv, *(["--no-progress"] if argv[0] == "evaluate" else [])) == 2
        assert msg in capsys.readouterr().err
    assert good.read_bytes() == before and not (tmp_path / "p.png").exists()


def test_help_lists_method_flags():
    res = subprocess.run([sys.executable, "-m", "condense", "distill", "--method", "dm", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--lr-img" in res.stdout and "--batch-real" in res.stdout and "--ipc" in res.stdout
    res = subprocess.run([sys.executable, "-m", "condense", "distill", "--method", "dm"], capture_output=True, text=True)
    assert res.returncode == 2 and "required" in res.stderr and "Traceback" not in res.stderr


def test_demo_runs_end_to_end_at_tiny_scale(tmp_path, capsys):
    argv = ["demo", "--ipc", "1", "--iterations", "2", "--width", "8", "--num-evals", "1", "--eval-epochs", "2",
            "--full-epochs", "1", "--out-dir", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    for row in ("dm synthetic set", "random real images", "full training set"):
        assert row in out
    assert (tmp_path / "digits_dm_ipc1.pt").exists() and (tmp_path / "digits_dm_ipc1.png").exists()


def test_evaluate_protocol_flag_and_labelled_max_column(tmp_path, capsys):
    out = tmp_path / "dm.pt"
    assert _run("distill", "--method", "dm", "--ipc", "1", "--out", str(out), *TINY) == 0
    s = SyntheticSet.load(out)
    assert s.protocol == "dc" and s.meta["dsa"]["strategy"] == "color_crop_cutout_scale_rotate"  # digits: no flip
    capsys.readouterr()
    assert _run("evaluate", str(out), "--models", "mlp", "--num-evals", "1", "--epochs", "2", "--protocol", "ast", "--no-progress") == 0
    captured = capsys.readouterr()
    assert "AST max-over-test" in captured.out and "protocol ast" in captured.err and "color_crop_cutout_scale_rotate" in captured.err
    assert _run("evaluate", str(out), "--models", "mlp", "--num-evals", "1", "--epochs", "1", "--dsa-strategy", "warp", "--no-progress") == 2
    assert "unknown DSA operation" in capsys.readouterr().err
    assert _run("evaluate", str(out), "--models", "mlp", "--num-evals", "1", "--epochs", "1", "--dc-aug", "--no-progress") == 0
    assert "augmentation mlp: none" in capsys.readouterr().err  # DC's protocol: no DSA, and no augmentation on digits
    assert _run("evaluate", str(out), "--num-evals", "1", "--epochs", "1", "--dc-aug", "--dsa", "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --dc-aug is DC's protocol without DSA") and len(err.splitlines()) == 1
