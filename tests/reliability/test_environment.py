"""The environment a command runs in: one line each, exit 2 or 130, never a traceback.

Non-UTF-8 file names (valid on Linux, surrogate-escaped by Python) are written and read; a ``--root``
or an output inside a symlink loop, and an unknown ``MPLBACKEND``, are one ``error:`` line; Ctrl-C
while an entry point is still importing torch is one line and exit status 130.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from condense.cli import main as condense_main

from .fuzz_table import make_workdir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def work(tmp_path, monkeypatch):
    make_workdir(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _one_error(capsys, *words: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and all(w in err[0] for w in words), err


def test_non_utf8_file_names_are_written_and_read(work, capsys):
    png, copy = "\udcff.png", "\udcfe.pt"  # the bytes b"\xff.png" / b"\xfe.pt" as Python sees them
    assert condense_main(["show", "syn.pt", "--png", png]) == 0
    shutil.copy("syn.pt", copy)
    assert condense_main(["show", copy, "--png", "g.png"]) == 0
    names = set(os.listdir(b"."))
    assert {b"\xff.png", b"\xfe.pt", b"g.png"} <= names


def test_symlink_loops_are_one_line(work, capsys):
    assert Path("loop").is_symlink()  # make_workdir's symlink loop
    argv = ["distill", "--method", "random", "--ipc", "1", "--no-progress"]
    assert condense_main([*argv, "--out", "loop/o.pt"]) == 2
    _one_error(capsys, "--out", "loop")
    assert condense_main([*argv, "--out", "o.pt", "--dataset", "mnist", "--root", "loop"]) == 2
    _one_error(capsys, "--root", "loop")
    assert not Path("o.pt").exists()


def test_invalid_mplbackend_is_one_line(work, capsys, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "no-such-backend")
    assert condense_main(["show", "syn.pt", "--png", "g.png"]) == 2
    _one_error(capsys, "MPLBACKEND", "no-such-backend")
    assert not Path("g.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["condense", "show", "syn.pt"], ["graphs.mirage", "--no-progress"]])
def test_ctrl_c_during_startup_imports(work, argv):
    """SIGINT as soon as libtorch is mapped, i.e. while ``import torch`` (after ``condense.threads``) runs."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text():
                break
        except OSError:
            pass
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = err.decode(errors="replace").strip().splitlines()
    assert proc.returncode == 130 and len(lines) == 1 and lines[0].startswith("interrupted"), err.decode()[-600:]
