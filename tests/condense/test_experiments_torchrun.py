"""experiments.matching and experiments.trajectory under a 2-rank gloo launch (torchrun's environment).

Each test starts both ranks as ``python -c`` processes with ``RANK``/``WORLD_SIZE``/``MASTER_*`` set,
a tiny scale patched in, and ``os.replace`` (the rename every atomic write of the project ends with)
logged per rank; the rows must equal an in-process one-process run, and rank 1 must write nothing
but its share of the experts.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from condense.synset import SyntheticSet
from experiments import matching, trajectory

REPO = Path(__file__).resolve().parents[2]
MATCHING_TINY = matching.Scale(width=8, eval_epochs=3, num_evals=3, cross_evals=2, cross_epochs=2,
                               overrides={"dm": {"iterations": 4, "batch_real": 16}})  # fmt: skip
TRAJECTORY_TINY = trajectory.Setting((1,), 4, 2, 2, dict(iterations=1, syn_steps=2, expert_epochs=1, max_start_epoch=1, lr_img=10.0),
                                     num_evals=3, eval_epochs=2, expert_batch=64)  # fmt: skip
# each rank: log every file it writes (atomic writes end with os.replace), patch the tiny scale in, run the CLI
RANK_SCRIPT = """
import os, sys
log, real = os.environ["WRITES_LOG"] + "." + os.environ["RANK"], os.replace
def logged(src, dst, *args, **kwargs):
    with open(log, "a") as fh:
        fh.write(os.path.abspath(dst) + "\\n")
    return real(src, dst, *args, **kwargs)
os.replace = logged
from experiments import matching, trajectory
matching.SCALES["cpu"] = {matching!r}
trajectory.SCALES["cpu"]["digits"] = {trajectory!r}
sys.exit({module}.main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(module: str, argv: list[str], log: Path, cwds: tuple[Path, Path] = (REPO, REPO)) -> list[subprocess.CompletedProcess]:
    script = RANK_SCRIPT.format(matching=MATCHING_TINY, trajectory=TRAJECTORY_TINY, module=module).replace(
        "Scale(", "matching.Scale(").replace("Setting(", "trajectory.Setting(")  # fmt: skip
    port, procs = _free_port(), []
    for rank in range(2):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   LOCAL_WORLD_SIZE="2", OMP_NUM_THREADS="1", WRITES_LOG=str(log), PYTHONPATH=str(REPO))  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-c", script, *argv], cwd=cwds[rank], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return done


def _writes(log: Path, rank: int) -> set[str]:
    path = Path(f"{log}.{rank}")
    return set(path.read_text().split()) if path.exists() else set()


def _without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


@pytest.mark.slow
def test_matching_two_ranks_equal_one_process_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """DM (classes split, bit for bit) and random real images, ConvNet and MLP networks split over the ranks:
    the rows and sets of one process; only rank 0 writes; a rerun keeps every row on both ranks."""
    argv = ["--methods", "random,dm", "--ipcs", "1", "--archs", "convnet,mlp", "--no-progress"]
    monkeypatch.setitem(matching.SCALES, "cpu", MATCHING_TINY)
    assert matching.main([*argv, "--out-dir", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    (ref_json,) = (tmp_path / "one").glob("results_*.json")
    ref = json.loads(ref_json.read_text())["rows"]

    out, log = tmp_path / "two", tmp_path / "writes"
    ranks = _two_ranks("matching", [*argv, "--out-dir", str(out)], log)
    assert [r.returncode for r in ranks] == [0, 0], [r.stderr for r in ranks]
    got = json.loads((out / ref_json.name).read_text())["rows"]
    assert _without_times(got) == _without_times(ref)  # accuracies in network order, configs: bit for bit
    for method in ("random", "dm"):
        name = f"digits_ipc1_{method}.pt"
        assert torch.equal(SyntheticSet.load(out / name).images, SyntheticSet.load(tmp_path / "one" / name).images)
    assert "| digits" in ranks[0].stdout and "ranks=2" in ranks[0].stdout and ranks[1].stdout == ""
    assert not any(w in ranks[1].stderr for w in ("ipc=1", "wrote")), ranks[1].stderr  # rank 1 stays quiet
    assert _writes(log, 1) == set() and {f"{out}/{n}" for n in ("digits_ipc1_dm.pt", "digits_ipc1_dm.pt.row.json", ref_json.name)} <= _writes(log, 0)
    assert not list(out.glob("*.ckpt")) and not list(out.glob(".condense-shared-*"))

    ranks = _two_ranks("matching", [*argv, "--out-dir", str(out)], tmp_path / "again")
    assert [r.returncode for r in ranks] == [0, 0], [r.stderr for r in ranks]
    assert ranks[0].stderr.count("kept from an earlier run") == 2 and "kept" not in ranks[1].stderr
    assert _without_times(json.loads((out / ref_json.name).read_text())["rows"]) == _without_times(ref)
    assert not any(".row.json" in w or w.endswith(".pt") for w in _writes(tmp_path / "again", 0))  # rows and sets kept, not redone


@pytest.mark.slow
def test_trajectory_two_ranks_equal_one_process_and_share_the_experts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Each rank trains one of the two experts per recipe into the shared --work; MTT/AST split each student
    batch and the evaluation networks over the ranks: the rows of one process (summation order aside);
    rank 1 writes its experts only. A --work that rank 1 cannot see is refused on both ranks."""
    argv = ["--datasets", "digits", "--part", "main"]
    monkeypatch.setitem(trajectory.SCALES["cpu"], "digits", TRAJECTORY_TINY)
    assert trajectory.main([*argv, "--work", str(tmp_path / "one"), "--json", str(tmp_path / "one.json")]) == 0
    capsys.readouterr()
    ref = json.loads((tmp_path / "one.json").read_text())["sections"]

    log = tmp_path / "writes"
    ranks = _two_ranks("trajectory", [*argv, "--work", str(tmp_path / "two"), "--json", str(tmp_path / "two.json")], log)
    assert [r.returncode for r in ranks] == [0, 0], [r.stderr for r in ranks]
    got = json.loads((tmp_path / "two.json").read_text())["sections"]
    assert [r["name"] for r in got[0]["rows"]] == ["random real", "MTT", "AST"]
    assert _without_times(got[0]["rows"][:1]) == _without_times(ref[0]["rows"][:1])  # random real images: bit for bit
    for g, r in zip(got[0]["rows"][1:], ref[0]["rows"][1:]):  # MTT, AST: the same up to summation order
        assert g["images"] == r["images"]
        for k in ("mean", "std", "max_mean", "ast_mean", "ast_std", "ast_max_mean", "lr"):
            assert g[k] == pytest.approx(r[k], rel=1e-5, abs=1e-9), (g["name"], k)
    assert "### digits, IPC 1" in ranks[0].stdout and ranks[1].stdout == ""
    assert not any(w in ranks[1].stderr for w in ("experts ready", "ipc 1", "wrote")), ranks[1].stderr
    experts = {str(p) for p in (tmp_path / "two").glob("experts_*/expert_*.pt")}
    assert len(experts) == 4 and _writes(log, 1) == {e for e in experts if e.endswith("expert_00001.pt")}
    assert {str(tmp_path / "two.json"), str(tmp_path / "two" / "sets_digits_ipc1_mtt.pt")} <= _writes(log, 0)

    own = tmp_path / "rank1_cwd"
    own.mkdir()
    ranks = _two_ranks("trajectory", [*argv, "--work", "work"], tmp_path / "refused", cwds=(tmp_path, own))
    assert [r.returncode for r in ranks] == [2, 2], [r.stderr for r in ranks]
    for r in ranks:
        (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert "rank 1 cannot see the files rank 0 writes there" in line and "storage every machine mounts" in line
