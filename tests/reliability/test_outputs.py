"""Class 2: no user file is destroyed or silently replaced (output guard, locks, checkpoints, temporaries)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from condense.checkpoint import Checkpointer
from condense.cli import main as condense_main
from condense.safeio import check_outputs, lock_outputs, release_locks
from condense.utils import UserError, atomic_save

TINY = ["--iterations", "2", "--batch-real", "4", "--width", "8", "--no-progress"]


def test_guard_refuses_duplicates_inputs_root_files_and_directories(tmp_path):
    a = tmp_path / "a.pt"
    with pytest.raises(UserError, match="--out and --png are the same file"):
        check_outputs({"--out": a, "--png": tmp_path / "sub" / ".." / "a.pt"})
    a.write_bytes(b"x")
    os.link(a, tmp_path / "hard.pt")
    with pytest.raises(UserError, match="is also the input --teacher"):
        check_outputs({"--out": tmp_path / "hard.pt"}, {"--teacher": a})  # the same file under another name
    root = tmp_path / "data"
    (root / "raw").mkdir(parents=True)
    (root / "raw" / "train.gz").write_bytes(b"data")
    with pytest.raises(UserError, match="inside the dataset root"):
        check_outputs({"--out": root / "raw" / "train.gz"}, roots={"--root": root})
    with pytest.raises(UserError, match="is a directory"):
        check_outputs({"--out": tmp_path})
    with pytest.raises(UserError, match="not a directory"):
        check_outputs({"--out-dir": a}, directories=("--out-dir",))
    assert a.read_bytes() == b"x" and sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "data", "hard.pt"]
    ok = check_outputs({"--out": tmp_path / "new" / "deep" / "x.pt", "--png": None})
    assert list(ok) == ["--out"] and not (tmp_path / "new").exists()  # creatable, and nothing was created


def test_guard_refuses_unwritable_directories_even_as_root(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is not a directory"):
        check_outputs({"--out": tmp_path / "file" / "sub" / "o.pt"})
    with pytest.raises(UserError, match="cannot write into /proc"):
        check_outputs({"--out": "/proc/condense-test/o.pt"})


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_guard_refuses_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UserError, match="cannot write into"):
            check_outputs({"--out": ro / "o.pt"})
    finally:
        ro.chmod(0o700)


def test_second_writer_of_an_output_gets_a_clear_error(tmp_path):
    out = tmp_path / "o.pt"
    lock_outputs([out], ["--out"])
    try:
        code = textwrap.dedent(f"""
            from condense.safeio import lock_outputs
            from condense.utils import UserError
            try:
                lock_outputs([{str(out)!r}], ["--out"])
            except UserError as exc:
                print(exc)
        """)  # fmt: skip
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert "another process is writing --out" in res.stdout, res.stdout + res.stderr
    finally:
        release_locks()
    lock_outputs([out])  # free again once released
    release_locks()


def test_stale_temporaries_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    import fcntl

    out = tmp_path / "o.pt"
    stale = tmp_path / ".o.pt.abcd1234.tmp"
    stale.write_bytes(b"half a file")
    live = tmp_path / ".o.pt.live5678.tmp"  # a concurrent save still writing: holds its flock
    live.write_bytes(b"in progress")
    other = tmp_path / ".other.pt.abcd1234.tmp"
    other.write_bytes(b"another path's")
    with open(live, "rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        atomic_save({"x": torch.zeros(1)}, out)
    assert not stale.exists() and live.exists() and other.exists() and out.exists()


def _ckpt_args(tmp_path, *extra):
    return ["distill", "--method", "dm", "--ipc", "1", "--out", str(tmp_path / "o.pt"), "--checkpoint-every", "1", *TINY, *extra]


def test_checkpoint_of_another_run_is_refused_not_deleted(tmp_path, capsys):
    assert condense_main(_ckpt_args(tmp_path)) == 0
    ckpt = tmp_path / "o.pt.ckpt"
    before = ckpt.read_bytes()
    capsys.readouterr()
    assert condense_main(_ckpt_args(tmp_path, "--seed", "3")) == 2  # the result exists: refused without --overwrite
    assert "already exists" in capsys.readouterr().err and ckpt.read_bytes() == before
    assert condense_main(_ckpt_args(tmp_path, "--seed", "3", "--overwrite")) == 2  # another run, no --resume
    err = capsys.readouterr().err
    assert "belongs to a different run: seed" in err and "--resume" in err and ckpt.read_bytes() == before
    foreign = tmp_path / "notes.txt"
    foreign.write_text("mine")
    assert condense_main(_ckpt_args(tmp_path, "--overwrite", "--checkpoint", str(foreign))) == 2
    assert "refusing to overwrite it" in capsys.readouterr().err and foreign.read_text() == "mine"
    assert condense_main(_ckpt_args(tmp_path, "--overwrite", "--lr-img", "-1")) == 2  # bad config: the checkpoint is untouched
    assert ckpt.read_bytes() == before
    assert condense_main(_ckpt_args(tmp_path, "--overwrite")) == 0  # same run without --resume starts afresh (replaced at the first save)


def test_checkpointer_check_before_work(tmp_path):
    path = tmp_path / "c.ckpt"
    Checkpointer(path, 1, {"a": 1}).save(1, {})
    Checkpointer(path, 1, {"a": 1}, resume=False).check()
    with pytest.raises(UserError, match="a is 1 there but 2 now"):
        Checkpointer(path, 1, {"a": 2}, resume=False).check()
    atomic_save({"format": "something else"}, path)
    with pytest.raises(UserError, match="not a checkpoint of this project"):
        Checkpointer(path, 1, {"a": 1}).check()


def test_g2m_never_writes_the_student_over_the_teacher(tmp_path, capsys):
    from graphs.g2m.__main__ import main

    assert main(["--nodes", "300", "--features", "8", "--max-epochs", "1", "--no-progress", "--out", str(tmp_path / "k" / "teacher.pt")]) == 2
    assert "--out are the same file" in capsys.readouterr().err and not (tmp_path / "k").exists()
