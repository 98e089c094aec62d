"""Interrupted work is kept: checkpoints on a time interval by default, SIGINT/SIGTERM save the last
completed iteration and print the command that resumes; MTT/AST stop with the last valid set when the
learned learning rate leaves (0, inf); AST warns on non-smooth experts."""
from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from condense import checkpoint as ck
from condense.checkpoint import Checkpointer, deferred_interrupts
from condense.cli import main as condense_main
from condense.data import load_dataset
from condense.experts import RECIPES, train_experts
from condense.methods.base import run_loop
from condense.synset import SyntheticSet
from condense.utils import safe_load

REPO = Path(__file__).resolve().parents[2]
TINY = ["--batch-real", "4", "--width", "8", "--no-progress"]


def _loop(checkpoint: Checkpointer, iterations: int, signal_at: int, signum: int) -> list[int]:
    """A checkpointed loop whose state is the list of completed iterations; a signal arrives mid-iteration."""
    done: list[int] = []
    checkpoint.load()
    for it in range(iterations):
        if it == signal_at:
            os.kill(os.getpid(), signum)
        done.append(it)  # the rest of the iteration still runs
        if checkpoint.due(it + 1):
            checkpoint.save(it + 1, {"done": list(done)})
    return done


@pytest.fixture
def sigint_default():
    """Python's own SIGINT handler for the test, however pytest was started (a background job ignores SIGINT)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_the_iteration_it_interrupted(tmp_path, signum, sigint_default):
    path = tmp_path / "c.ckpt"
    with deferred_interrupts():
        c = Checkpointer(path, None, {"run": 1}, interval=600)  # nothing would be due for ten minutes
        with pytest.raises(KeyboardInterrupt) as exc:
            _loop(c, 100, 3, signum)
    assert exc.value.args == (signum,)
    assert c.saved == 4 and c.on_interrupt
    obj = safe_load(path, what="checkpoint")
    assert obj["iteration"] == 4 and obj["state"]["done"] == [0, 1, 2, 3]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_a_background_job_ignoring_sigint_still_saves_on_sigterm(tmp_path):
    """``nohup CMD &`` starts CMD with SIGINT ignored: it stays ignored, and SIGTERM still saves and stops."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with deferred_interrupts():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # left alone
            c = Checkpointer(tmp_path / "c.ckpt", None, {"run": 1}, interval=600)
            with pytest.raises(KeyboardInterrupt) as exc:
                _loop(c, 100, 3, signal.SIGTERM)
        assert exc.value.args == (signal.SIGTERM,) and c.saved == 4
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    finally:
        signal.signal(signal.SIGINT, before)


def test_time_interval_saves_without_an_iteration_count(tmp_path):
    c = Checkpointer(tmp_path / "c.ckpt", None, {}, interval=0.05)
    c.load()
    assert not c.due(1)
    time.sleep(0.06)
    assert c.due(2)
    c.save(2, {})
    assert not c.due(3)


def test_an_interrupt_after_the_loop_is_not_swallowed(tmp_path, monkeypatch, sigint_default):
    monkeypatch.setattr(ck, "GRACE_SECONDS", 0.2)
    with deferred_interrupts():
        c = Checkpointer(tmp_path / "c.ckpt", None, {}, interval=600)
        _loop(c, 3, -1, signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # deferred: no loop will reach another iteration boundary
        with pytest.raises(KeyboardInterrupt):
            time.sleep(10)  # the grace alarm interrupts
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):  # a second signal interrupts at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)


def _distill(tmp_path: Path, *extra: str) -> list[str]:
    return ["distill", "--method", "dm", "--ipc", "1", "--out", str(tmp_path / "o.pt"), "--iterations", "3", *TINY, *extra]


def test_default_checkpoint_is_kept_on_time_and_removed_after_success(tmp_path, capsys):
    assert condense_main(_distill(tmp_path)) == 0
    assert (tmp_path / "o.pt").exists() and not (tmp_path / "o.pt.ckpt").exists()
    assert condense_main(_distill(tmp_path, "--no-checkpoint", "--resume")) == 2
    assert "--no-checkpoint contradicts" in capsys.readouterr().err
    assert condense_main(_distill(tmp_path / "..", "--checkpoint-interval", "0")) == 2
    assert "--checkpoint-interval must be > 0" in capsys.readouterr().err


@pytest.mark.slow
def test_sigint_then_the_printed_command_resumes_to_the_uninterrupted_result(tmp_path):
    """A real Ctrl-C to ``condense distill`` (default checkpointing: nothing due yet), then the printed
    resume command; the result equals an uninterrupted run bit for bit."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    argv = ["distill", "--method", "dm", "--ipc", "1", "--out", "o.pt", "--iterations", "300", *TINY]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    started = tmp_path / "b" / "started"
    # the command as `python -m condense` runs it, plus a marker file when the checkpointed loop starts
    script = ("import pathlib, sys\nfrom condense import checkpoint\nload = checkpoint.Checkpointer.load\n"
              "def marked(self):\n    pathlib.Path(sys.argv[1]).touch()\n    return load(self)\n"
              "checkpoint.Checkpointer.load = marked\nfrom condense.cli import main\nsys.exit(main(sys.argv[2:]))")
    proc = subprocess.Popen([sys.executable, "-c", script, str(started), *argv], cwd=tmp_path / "b", env=env, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 120
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # inside the loop
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130 and len(lines) == 1, err
    line = lines[0]
    assert line.startswith("interrupted at iteration ") and "written on the interrupt" in line, line
    at = int(line.split()[3].rstrip(";"))
    assert 0 < at < 300 and safe_load(tmp_path / "b" / "o.pt.ckpt", what="checkpoint")["iteration"] == at
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[:3] == ["python", "-m", "condense"] and command[-1] == "--resume"
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path / "b", env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    whole = subprocess.run([sys.executable, "-m", "condense", *argv], cwd=tmp_path / "a", env=env, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert whole.returncode == 0, whole.stderr
    assert torch.equal(SyntheticSet.load(tmp_path / "a" / "o.pt").images, SyntheticSet.load(tmp_path / "b" / "o.pt").images)


def test_run_loop_stops_with_the_last_valid_learning_rate(capsys):
    """The learned lr is pushed down by 10 per step: 25 -> 15 -> 5 -> (-5: refused, back to 5)."""
    lr, images = torch.tensor(25.0, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([lr, images], lr=10.0)

    def step(it: int) -> float:
        loss = lr * 1.0 + images.sum()
        loss.backward()
        return float(loss.detach())

    history = run_loop(step, 10, tensors={"images": images, "lr": lr}, optimisers={"o": opt}, generators={}, progress=False,
                       desc="MTT", positive=("lr",))  # fmt: skip
    assert len(history) == 2 and float(lr.detach()) == 5.0 and torch.equal(images.detach(), torch.tensor([-20.0, -20.0]))
    err = capsys.readouterr().err
    assert "MTT: stopping at iteration 2: its update would make lr -5" in err and "2 completed iterations" in err


@pytest.mark.slow
def test_ast_warns_on_experts_trained_with_the_mtt_recipe(tmp_path, capsys):
    digits = load_dataset("digits")
    recipe = dataclasses.replace(RECIPES["mtt"], dsa=False)
    train_experts(digits, tmp_path / "e", num_experts=1, epochs=3, recipe=recipe, model_kwargs={"width": 4}, progress=False)
    argv = ["distill", "--method", "ast", "--ipc", "1", "--out", str(tmp_path / "s.pt"), "--experts", str(tmp_path / "e"),
            "--iterations", "1", "--syn-steps", "2", "--expert-epochs", "1", "--max-start-epoch", "2", "--width", "4", "--no-progress"]
    assert condense_main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: --method ast: the experts in" in err and "without AST's smoothing" in err


def test_a_rerun_does_not_discard_an_interrupted_runs_checkpoint(tmp_path, capsys):
    argv = _distill(tmp_path, "--checkpoint-every", "1")
    assert condense_main(argv) == 0
    (tmp_path / "o.pt").unlink()  # as after an interrupt: a checkpoint, no result
    before = (tmp_path / "o.pt.ckpt").read_bytes()
    capsys.readouterr()
    assert condense_main(argv) == 2
    assert "holds this run's checkpoint at iteration 3 (an interrupted run?): add --resume" in capsys.readouterr().err
    assert (tmp_path / "o.pt.ckpt").read_bytes() == before
    assert condense_main([*argv, "--overwrite"]) == 0  # starting over is a choice


@pytest.mark.slow
def test_synth_teacher_resumes_bit_for_bit(tmp_path, monkeypatch):
    from synth.cli import main as synth_main
    from synth.teachers import train_teacher

    assert synth_main(["teacher", "--resize", "32", "--epochs", "1", "--batch-size", "512", "--out", str(tmp_path / "t.pt"),
                       "--no-progress"]) == 0  # fmt: skip
    assert not (tmp_path / "t.pt.ckpt").exists()  # the default checkpoint is gone once the teacher is written
    ds = load_dataset("digits", resize=32)
    whole = train_teacher(ds, epochs=2, batch_size=512, progress=False).net.state_dict()
    save = Checkpointer.save

    def killed_after_one(self, iteration, state):
        save(self, iteration, state)
        if iteration == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(ds, epochs=2, batch_size=512, progress=False, checkpoint=Checkpointer(tmp_path / "c", 1))
    monkeypatch.setattr(Checkpointer, "save", save)
    resumed = train_teacher(ds, epochs=2, batch_size=512, progress=False, checkpoint=Checkpointer(tmp_path / "c", 1)).net.state_dict()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_sigterm_through_cli_main_is_143_with_the_resume_command(tmp_path, capsys):
    from condense.safeio import cli_main

    @cli_main
    def main(argv=None) -> int:
        _loop(Checkpointer(tmp_path / "c.ckpt", None, {}, interval=600, resume_args=("--resume",)), 50, 5, signal.SIGTERM)
        return 0

    assert main(["run", "--out", "x y"]) == 143
    err = capsys.readouterr().err.strip()
    assert err == (f"interrupted at iteration 6; the last checkpoint is {tmp_path / 'c.ckpt'} (iteration 6, written on the interrupt) - "
                   "resume with: python -m tests.reliability.test_checkpointing run --out 'x y' --resume")


def test_kept_result_is_done_again_while_the_output_it_needs_is_missing(tmp_path):
    from condense.checkpoint import kept_result

    row, out, calls = tmp_path / "row.json", tmp_path / "set.pt", []
    compute = lambda: calls.append(1) or {"acc": len(calls)}  # noqa: E731
    assert kept_result(row, "k", compute, needs=out) == ({"acc": 1}, False)
    assert kept_result(row, "k", compute, needs=out) == ({"acc": 2}, False)  # the set is missing: made again
    out.write_bytes(b"set")
    assert kept_result(row, "k", compute, needs=out) == ({"acc": 2}, True)
    assert kept_result(row, "other", compute) == ({"acc": 3}, False)  # other settings
