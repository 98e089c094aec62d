"""Ctrl-C during ``graphs.*`` runs keeps the last completed epoch; the printed command resumes bit for bit.

Each run is interrupted (SIGINT) once its checkpoint exists, so the signal lands inside the loop; the
resumed run's outputs must equal an uninterrupted run's exactly.
"""
from __future__ import annotations

import importlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run ``-m MODULE ARGS...`` in this process (the reference and the resumed runs); ``(exit code, stdout)``."""
    assert args[0] == "-m"
    main = importlib.import_module(f"{args[1]}.__main__").main
    capsys.readouterr()
    rc = main(args[2:])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return rc, out.out


def _interrupt(args: list[str], cwd: Path, ckpt: Path) -> tuple[int, str]:
    """Start ``args``, send SIGINT as soon as ``ckpt`` exists; returns ``(exit code, stderr)``."""
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background job's children ignore SIGINT
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    return proc.returncode, err


def _resume_line(err: str) -> list[str]:
    line = next(x for x in err.splitlines() if "resume with: " in x)
    words = shlex.split(line.split("resume with: ", 1)[1])
    assert words[:2] == ["python", "-m"]
    return words[1:]


G2M = ["-m", "graphs.g2m", "--nodes", "600", "--features", "50", "--max-epochs", "100", "--no-progress"]
EVERY = ["--checkpoint-every", "1"]  # the interrupted run: its checkpoint exists once the loop runs


@pytest.mark.slow
def test_g2m_sigint_resumes_bit_for_bit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    _run([*G2M, "--out", str(ref / "s.pt")], capsys)
    rc, err = _interrupt([*G2M, *EVERY, "--out", str(cut / "s.pt")], tmp_path, cut / "s.pt.ckpt")
    assert rc == 130, err
    assert "written on the interrupt" in err and "--resume" in err, err
    assert not (cut / "s.pt").exists()
    _run(_resume_line(err), capsys)
    for name in ("s.pt", "teacher.pt"):
        a, b = torch.load(ref / name, weights_only=True), torch.load(cut / name, weights_only=True)
        for key, value in a["state_dict"].items():
            assert torch.equal(value, b["state_dict"][key]), (name, key)
        assert a.get("scores") == b.get("scores")
    assert torch.equal(torch.load(ref / "teacher.pt", weights_only=True)["logits"], torch.load(cut / "teacher.pt", weights_only=True)["logits"])

def _table(stdout: str) -> list[str]:
    """The result rows without their wall-time column."""
    return [line.rsplit("|", 2)[0] for line in stdout.splitlines() if line.startswith("| mirage") or line.startswith("| random")]


MIRAGE = ["-m", "graphs.mirage", "--epochs", "20", "--restarts", "2", "--no-progress"]


@pytest.mark.slow
def test_mirage_sigint_resumes_bit_for_bit(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ENV, "XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _, done = _run(MIRAGE, capsys)
    ckpt = tmp_path / "cut.ckpt"
    rc, err = _interrupt([*MIRAGE, *EVERY, "--checkpoint", str(ckpt)], tmp_path, ckpt)
    assert rc == 130, err
    assert "written on the interrupt" in err and "--resume" in err, err
    _, resumed = _run(_resume_line(err), capsys)
    assert len(_table(done)) == 2 and _table(resumed) == _table(done)

def test_experiment_interrupt_line_says_a_rerun_resumes(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in ``experiments.g2m`` between runs: the line names the state file and the command whose rerun resumes."""
    import experiments.g2m as grid

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(grid, "run_grid", interrupted)
    state = tmp_path / "state.json"
    assert grid.main(["--datasets", "csbm", "--state", str(state)]) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (f"interrupted; finished work is kept in {state} (finished runs) - "
                    f"resume with: python -m experiments.g2m --datasets csbm --state {state}")
