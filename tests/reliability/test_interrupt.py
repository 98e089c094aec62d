"""Class 5 (processes): Ctrl-C is one line naming where the run stopped, exit status 130, in every CLI."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from condense.data import load_dataset
from synth.teachers import random_teacher, save_model

REPO = Path(__file__).resolve().parents[2]


def _interrupt(argv: list[str], cwd: Path, ready) -> subprocess.CompletedProcess:
    """Start ``python -m ...``, wait until ``ready()`` holds, send SIGINT, collect the result."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    stdout = open(cwd / "stdout.txt", "w")  # noqa: SIM115 - polled by ready()
    # A shell starts background jobs with SIGINT ignored and children inherit that (Python then keeps
    # it ignored): restore the default so the test does not depend on how pytest was launched.
    proc = subprocess.Popen([sys.executable, "-m", *argv], cwd=cwd, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 240
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before the interrupt: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    stdout.close()
    return subprocess.CompletedProcess(proc.args, proc.returncode, (cwd / "stdout.txt").read_text(), err)


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err[-1500:]
    return lines[0]


@pytest.mark.slow
def test_sigint_condense_distill_names_iteration_and_checkpoint(tmp_path):
    ckpt = tmp_path / "o.pt.ckpt"
    res = _interrupt(["condense", "distill", "--method", "dm", "--ipc", "1", "--out", "o.pt", "--iterations", "100000",
                      "--batch-real", "4", "--width", "8", "--checkpoint-every", "1", "--no-progress"], tmp_path, ckpt.exists)  # fmt: skip
    line = _one_line(res.stderr)
    assert res.returncode == 130 and line.startswith("interrupted at iteration ") and "the last checkpoint is" in line
    assert "o.pt.ckpt" in line and "--resume" in line and not (tmp_path / "o.pt").exists()


def _raise_interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_in_synth_and_mirage_is_one_line_and_130(tmp_path, monkeypatch, capsys):
    """The same wrapper (cli_main) serves every CLI; in-process here, the subprocess case is above."""
    import graphs.mirage.__main__ as mirage_cli
    import synth.cli as synth_cli

    save_model(random_teacher("lenet5", (1, 32, 32), 10), tmp_path / "t.pt", dataset=load_dataset("digits", resize=32))
    monkeypatch.setattr(synth_cli, "train_generator_kd", _raise_interrupt)
    monkeypatch.setattr(mirage_cli, "mirage_distill", _raise_interrupt)
    rc = synth_cli.main(["distill", "--method", "dfad", "--teacher", str(tmp_path / "t.pt"), "--resize", "32", "--out",
                         str(tmp_path / "s.pt"), "--no-progress"])  # fmt: skip
    assert rc == 130 and _one_line(capsys.readouterr().err).startswith("interrupted")
    assert mirage_cli.main(["--no-progress"]) == 130 and _one_line(capsys.readouterr().err).startswith("interrupted")
