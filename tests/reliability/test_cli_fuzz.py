"""CLI fuzz: every command line, >= 60 bad argument sets, each rejected before any work.

Asserted per case: exit status 2, stderr is exactly one line starting with ``error:``, no traceback,
and no file that existed in the working directory changed (sha256 before/after). The commands run
in-process through their ``main(argv)`` (the subprocess is not the point here; exit codes and Ctrl-C
of real processes are pinned in ``test_interrupt.py``).
"""
from __future__ import annotations

import importlib

import pytest

from .fuzz_table import CASES, MODULES, make_workdir, snapshot


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    make_workdir(root)
    return root, snapshot(root)


def test_table_covers_every_cli():
    assert len(CASES) >= 60
    assert {m for m, _ in CASES} >= {"condense", "graphs.mirage", "graphs.g2m", "synth", "experiments.matching",
                                     "experiments.trajectory", "experiments.mirage", "experiments.g2m", "experiments.synth"}
    assert {a[0] for m, a in CASES if m == "condense"} >= {"distill", "evaluate", "show", "demo", "experts"}


@pytest.mark.parametrize("module,argv", CASES, ids=[f"{i:03d}-{m}-{' '.join(a)[:60]}" for i, (m, a) in enumerate(CASES)])
def test_bad_arguments_are_one_clean_line(workdir, monkeypatch, capsys, module, argv):
    root, before = workdir
    monkeypatch.chdir(root)
    main = importlib.import_module(MODULES[module]).main
    rc = main(list(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, f"exit {rc}; stderr: {err[-400:]}"
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err[-800:]
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before, "a pre-existing file changed"
    assert not any("PWNED" in k for k in after), "a data file ran code"
