"""Expert trajectories: recipes, files, streaming buffer validation, 2-rank training."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from condense.cli import main as cli_main
from condense.data import load_dataset
from condense.evaluate import evaluate_images
from condense.experts import (
    FORMAT, RECIPES, DistContext, ExpertBuffer, ExpertRecipe, _gradient_penalty, evaluate_distributed, train_expert,
    train_experts,
)  # fmt: skip
from condense.nets import get_network
from condense.utils import UserError, safe_load

REPO = Path(__file__).resolve().parents[2]
TINY = {"width": 8}
FAST = replace(RECIPES["mtt"], dsa=False)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def expert_dir(digits, tmp_path_factory):
    """Reference files; 1 thread like every test here (float reductions differ across thread counts)."""
    out, before = tmp_path_factory.mktemp("experts"), torch.get_num_threads()
    torch.set_num_threads(1)
    train_experts(digits, out, num_experts=3, epochs=3, recipe=FAST, model_kwargs=TINY, seed=5, progress=False)
    torch.set_num_threads(before)
    return out


def test_recipes_match_the_papers():
    mtt, ast = RECIPES["mtt"], RECIPES["ast"]
    assert (mtt.lr, mtt.momentum, mtt.weight_decay, mtt.grad_penalty, mtt.clip_loss, mtt.dsa) == (0.01, 0.0, 0.0, 0.0, False, True)
    assert (ast.lr, ast.momentum, ast.weight_decay, ast.lr_decay, ast.grad_penalty) == (0.003, 0.9, 1e-3, 0.6, 2.0)
    assert [round(ast.loss_scale(e), 10) for e in range(12)] == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.0]
    assert mtt.loss_scale(0) == 1.0
    with pytest.raises(UserError, match="momentum"):
        ExpertRecipe(momentum=1.0)


def test_gradient_penalty_value():
    """A 1x1 conv whose logit-sum gradient per pixel is c * (3, 4)/5 -> penalty lam * (c - 1)^2."""
    net = nn.Sequential(nn.Conv2d(2, 1, 1, bias=False), nn.Flatten())
    x = torch.randn(4, 2, 5, 5)
    for c in (1.0, 3.0):
        with torch.no_grad():
            net[0].weight.copy_(torch.tensor([3.0, 4.0]).view(1, 2, 1, 1) * c / 5)
        assert float(_gradient_penalty(net, x, 2.0).detach()) == pytest.approx(2.0 * (c - 1) ** 2, abs=1e-6)


def test_train_expert_trajectory(digits):
    payload = train_expert(digits, FAST, 2, model_kwargs=TINY, seed=3)
    traj = payload["trajectory"]
    assert payload["format"] == FORMAT and payload["epochs"] == 2 and payload["model_kwargs"] == TINY
    assert all(v.shape[0] == 3 for v in traj.values())
    assert not torch.equal(traj["classifier.weight"][0], traj["classifier.weight"][2])
    torch.manual_seed(3)
    init = get_network("convnet", 1, 10, (8, 8), **TINY).state_dict()
    assert torch.equal(traj["classifier.weight"][0], init["classifier.weight"]), "snapshot 0 is the seeded initialisation"
    assert 0.0 <= payload["test_acc"] <= 1.0 and len(payload["train_loss"]) == 2


def test_ast_recipe_runs_with_penalty_and_decay(digits):
    payload = train_expert(digits, replace(RECIPES["ast"], dsa=False), 3, model_kwargs=TINY, seed=0)
    assert len(payload["train_loss"]) == 3 and payload["recipe"]["grad_penalty"] == 2.0


def test_files_are_deterministic_and_resumable(digits, expert_dir, tmp_path):
    train_experts(digits, tmp_path, num_experts=2, epochs=3, recipe=FAST, model_kwargs=TINY, seed=5, progress=False)
    for i in range(2):
        a = safe_load(tmp_path / f"expert_{i:05d}.pt")["trajectory"]
        b = safe_load(expert_dir / f"expert_{i:05d}.pt")["trajectory"]
        assert all(torch.equal(a[k], b[k]) for k in a)
    before = (tmp_path / "expert_00000.pt").stat().st_mtime_ns
    train_experts(digits, tmp_path, num_experts=2, epochs=3, recipe=FAST, model_kwargs=TINY, seed=5, progress=False)
    assert (tmp_path / "expert_00000.pt").stat().st_mtime_ns == before, "complete files are not retrained"


def test_buffer_streams_and_orders(digits, expert_dir):
    buf = ExpertBuffer(expert_dir, digits, model_kwargs=TINY)
    assert len(buf) == 3 and buf.epochs == 3 and not buf._cache
    order = [buf.index_at(it, seed=1) for it in range(6)]
    assert sorted(order[:3]) == [0, 1, 2] and sorted(order[3:]) == [0, 1, 2]
    assert order == [buf.index_at(it, seed=1) for it in range(6)]
    assert buf.trajectory(order[0])["classifier.weight"].shape[0] == 4
    buf.require_epochs(3)
    with pytest.raises(UserError, match="exceeds the 3 epochs"):
        buf.require_epochs(4)
    assert len(ExpertBuffer(expert_dir, digits, model_kwargs=TINY, load_all=True)._cache) == 3


def test_buffer_rejects_bad_directories(digits, expert_dir, tmp_path):
    with pytest.raises(UserError, match="no expert files"):
        ExpertBuffer(tmp_path, digits, model_kwargs=TINY)
    with pytest.raises(UserError, match="not found"):
        ExpertBuffer(tmp_path / "missing", digits, model_kwargs=TINY)
    with pytest.raises(UserError, match="does not match"):
        ExpertBuffer(expert_dir, digits, model_kwargs={"width": 16})
    with pytest.raises(UserError, match="image_size"):
        ExpertBuffer(expert_dir, load_dataset("digits", resize=12), model_kwargs=TINY)
    (tmp_path / "expert_00000.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a readable"):
        ExpertBuffer(tmp_path, digits, model_kwargs=TINY)


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_cli_experts_under_torchrun(digits, expert_dir, tmp_path):
    out = tmp_path / "tr"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "condense", "experts", "--dataset", "digits",
           "--num-experts", "3", "--epochs", "3", "--out", str(out), "--width", "8", "--no-dsa", "--seed", "5", "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rank 0/2" in proc.stderr and "rank 1/2" in proc.stderr
    for i in range(3):
        a, b = safe_load(out / f"expert_{i:05d}.pt"), safe_load(expert_dir / f"expert_{i:05d}.pt")
        assert all(torch.equal(a["trajectory"][k], b["trajectory"][k]) for k in a["trajectory"])


def test_cli_experts_bad_input(tmp_path, capsys):
    assert cli_main(["experts", "--num-experts", "0", "--epochs", "1", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: --num-experts")
    (tmp_path / "file").write_text("x")
    assert cli_main(["experts", "--num-experts", "1", "--epochs", "1", "--out", str(tmp_path / "file")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_evaluate_distributed_single_process_equals_evaluate_images(digits):
    kw = dict(num_evals=2, epochs=2, progress=False, model_kwargs={"convnet": TINY})
    a = evaluate_distributed(digits.train_x[:50], digits.train_y[:50], digits, context=DistContext(), **kw)["convnet"]
    b = evaluate_images(digits.train_x[:50], digits.train_y[:50], digits, **kw)["convnet"]
    assert a.accs == b.accs and DistContext(1, 3).share(7) == [1, 4]


_DIST_EVAL_SCRIPT = """
import json, sys
import torch
from condense.data import load_dataset
from condense.experts import distributed_context, evaluate_distributed
torch.set_num_threads(1)
ds = load_dataset("digits")
ctx = distributed_context()
s = evaluate_distributed(ds.train_x[:50], ds.train_y[:50], ds, num_evals=3, epochs=2, progress=False,
                         model_kwargs={"convnet": {"width": 8}}, context=ctx)["convnet"]
if ctx.rank == 0:
    json.dump(s.accs, open(sys.argv[1], "w"))
"""


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_evaluate_distributed_two_ranks_gathers_the_single_process_accuracies(digits, tmp_path):
    script, out = tmp_path / "dist_eval.py", tmp_path / "accs.json"
    script.write_text(_DIST_EVAL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(["torchrun", "--standalone", "--nproc-per-node", "2", str(script), str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    single = evaluate_images(digits.train_x[:50], digits.train_y[:50], digits, num_evals=3, epochs=2, progress=False,
                             model_kwargs={"convnet": {"width": 8}})["convnet"]  # fmt: skip
    assert json.loads(out.read_text()) == single.accs  # network i is seeded seed + i on any rank, gathered in network order
