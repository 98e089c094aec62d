"""Class 3: resume accepts only the same run (transform, data files, seed, teacher, student all in the signature)."""
from __future__ import annotations

import gzip

import pytest
import torch

from condense.cli import main as condense_main
from condense.data import load_dataset
from condense.safeio import fingerprint_files
from synth.cli import main as synth_main
from synth.teachers import random_teacher, save_model

TINY = ["--iterations", "2", "--batch-real", "4", "--width", "8", "--no-progress"]


def test_condense_resume_refuses_another_transform(tmp_path, capsys):
    base = ["distill", "--method", "dm", "--ipc", "1", "--out", str(tmp_path / "o.pt"), "--checkpoint-every", "1", *TINY]
    assert condense_main(base) == 0
    ckpt = (tmp_path / "o.pt.ckpt").read_bytes()
    for extra, key in ((["--zca"], "transform"), (["--resize", "16"], "transform"), (["--seed", "1"], "seed")):
        capsys.readouterr()
        assert condense_main([*base, "--resume", *extra]) == 2, extra
        err = capsys.readouterr().err
        assert f"belongs to a different run: {key}" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "o.pt.ckpt").read_bytes() == ckpt
    assert condense_main([*base, "--resume"]) == 0


def test_dataset_fingerprint_follows_file_content(tmp_path):
    idx = tmp_path / "f.gz"
    idx.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([1, 2, 3])))
    a = fingerprint_files([idx])
    idx.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([1, 2, 4])))
    assert fingerprint_files([idx]) != a
    assert load_dataset("digits").fingerprint == load_dataset("digits").fingerprint


@pytest.fixture()
def teachers(tmp_path):
    ds = load_dataset("digits", resize=32)
    paths = []
    for seed in (0, 1):
        path = tmp_path / f"t{seed}.pt"
        save_model(random_teacher("lenet5", (1, 32, 32), 10, seed=seed), path, dataset=ds)
        paths.append(path)
    return paths


def test_synth_resume_refuses_other_seed_teacher_and_student(tmp_path, teachers, capsys):
    ckpt = tmp_path / "s.ckpt"

    def run(*extra, teacher=teachers[0]):
        return synth_main(["distill", "--method", "dfad", "--teacher", str(teacher), "--resize", "32", "--out", str(tmp_path / "s.pt"),
                           "--iterations", "2", "--batch-size", "4", "--ngf", "4", "--checkpoint", str(ckpt), "--checkpoint-every", "1",
                           "--no-progress", *extra])  # fmt: skip

    assert run() == 0
    before = ckpt.read_bytes()
    for extra, teacher, key in ((["--seed", "9"], teachers[0], "seed"), ([], teachers[1], "teacher"),
                                (["--student", "lenet5"], teachers[0], "student")):  # fmt: skip
        capsys.readouterr()
        assert run(*extra, "--overwrite", teacher=teacher) == 2
        err = capsys.readouterr().err
        assert f"belongs to a different run: {key}" in err and len(err.strip().splitlines()) == 1, err
    assert ckpt.read_bytes() == before
    assert run() == 2 and "already exists" in capsys.readouterr().err  # a finished result is never replaced silently
    assert run("--overwrite") == 0  # the same run resumes from its checkpoint
    assert torch.load(tmp_path / "s.pt", weights_only=True)["meta"]["seed"] == 0
