"""Every flag that names a path is declared, and the output guard follows from the declarations.

* A walk over every parser of every command (each method's config flags included) fails when a flag
  that looks like a path is not declared with :func:`condense.safeio.output_flag` /
  :func:`~condense.safeio.input_flag`, so no future flag can be missed by the output guard.
* A second output of ``show`` (``--curve``) can no longer name the set or the other output.
* An existing result is never replaced without ``--overwrite`` (``--resume`` continues its own run).
"""
from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest
import torch

from condense.safeio import CLIParser, PathFlag

from .fuzz_table import MODULES, make_workdir, snapshot

#: option names or dests that say "this flag is a file or directory"
_PATHY = re.compile(r"(^|[-_])(out|output|png|pdf|svg|curve|json|csv|md|checkpoint|ckpt|cache|work|dir|root|shared|file|path|"
                    r"save|teacher|teachers|experts|set|synset|load|figure|plot|report|log|weights|model[-_]file)s?([-_]|$)")  # fmt: skip


#: flags whose names match :data:`_PATHY` but that take no path
NOT_PATHS = {
    "--set": "GROUP.KEY=VALUE overrides of experiments.synth",
    "--fan-out": "comma-separated neighbour counts of graphs.g2m",
    "--entropy-log": "a logarithm base (log10 or ln) of DAFL",
}


class _Captured(Exception):
    pass


def _argvs(module: str) -> list[list[str]]:
    """Command lines that make ``module``'s ``main`` build every parser it has (each method's flags)."""
    if module == "condense":
        from condense.methods import METHODS

        return [["--help"], *(["distill", "--method", m] for m in sorted(METHODS))]
    if module == "synth":
        from synth.cli import METHOD_HELP

        return [["--help"], *(["distill", "--method", m] for m in sorted(METHOD_HELP))]
    if module == "graphs.mirage":
        return [[], ["train", "x.pt"]]
    if module == "graphs.g2m":
        return [[], ["predict", "x.pt"], ["export", "x.pt"]]
    return [[]]


def all_parsers() -> dict[str, list[argparse.ArgumentParser]]:
    """module -> the parsers (sub-commands included) its ``main`` builds, captured at ``parse_args``."""
    found: dict[str, list[argparse.ArgumentParser]] = {}
    original = CLIParser.parse_args

    def capture(self, *a, **k):
        found.setdefault(current, []).append(self)
        raise _Captured

    CLIParser.parse_args = capture  # type: ignore[method-assign]
    try:
        for current, path in MODULES.items():
            main = importlib.import_module(path).main
            for argv in _argvs(current):
                try:
                    main(list(argv))
                except (_Captured, SystemExit):
                    pass
    finally:
        CLIParser.parse_args = original  # type: ignore[method-assign]
    out: dict[str, list[argparse.ArgumentParser]] = {}
    for module, parsers in found.items():
        stack, seen = list(parsers), []
        while stack:
            p = stack.pop()
            if any(p is q for q in seen):
                continue
            seen.append(p)
            for a in p._actions:
                if isinstance(a, argparse._SubParsersAction):
                    stack.extend(a.choices.values())
        out[module] = seen
    return out


@pytest.fixture(scope="module")
def parsers() -> dict[str, list[argparse.ArgumentParser]]:
    return all_parsers()


def _looks_like_path(a: argparse.Action) -> bool:
    if not isinstance(a, argparse._StoreAction) or a.choices is not None or a.type in (int, float) \
            or set(a.option_strings) & set(NOT_PATHS):
        return False
    names = [*a.option_strings, a.dest] if a.option_strings else [a.dest, str(a.metavar or "")]
    return any(_PATHY.search(n.lower().lstrip("-")) for n in names)


@pytest.mark.slow  # imports every command (torch_geometric included): ~20 s alone, little within the suite
def test_every_path_flag_is_declared(parsers):
    assert set(parsers) == set(MODULES), set(MODULES) - set(parsers)
    undeclared = sorted({f"{m}: {p.prog} {a.option_strings or a.dest}" for m, ps in parsers.items() for p in ps
                         for a in p._actions if _looks_like_path(a) and not isinstance(a, PathFlag)})  # fmt: skip
    assert not undeclared, "path flags missing output_flag()/input_flag(): " + "; ".join(undeclared)
    declared = [a for ps in parsers.values() for p in ps for a in p._actions if isinstance(a, PathFlag)]
    assert len(declared) >= 30


@pytest.mark.slow
def test_writers_offer_overwrite_and_readers_no_verify(parsers):
    from condense.safeio import _install_auto_flags

    for ps in parsers.values():
        for p in ps:
            _install_auto_flags(p)
            flags = [a for a in p._actions if isinstance(a, PathFlag)]
            if any(a.role == "output" and not a.directory and not a.resumable for a in flags):
                assert "--overwrite" in p._option_string_actions, p.prog
            if any(a.role == "input" for a in flags):
                assert "--no-verify" in p._option_string_actions, p.prog


@pytest.fixture()
def work(tmp_path, monkeypatch):
    make_workdir(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv,message", [
    (["show", "syn.pt", "--png", "g.png", "--curve", "g.png"], "--png and --curve are the same file"),
    (["show", "syn.pt", "--curve", "syn.pt"], "is also the input FILE"),
    (["show", "syn.pt", "--curve", "notes.txt"], "already exists"),
])  # fmt: skip
def test_show_outputs_are_guarded(work, capsys, argv, message):
    from condense.cli import main

    before = snapshot(work)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert snapshot(work) == before


@pytest.mark.parametrize("module,argv", [
    ("condense", ["distill", "--method", "random", "--ipc", "1", "--out", "notes.txt", "--no-progress"]),
    ("condense", ["distill", "--method", "random", "--ipc", "1", "--out", "o.pt", "--png", "notes.txt", "--no-progress"]),
    ("synth", ["teacher", "--random", "--out", "notes.txt"]),
    ("graphs.mirage", ["--hops", "1", "--support", "0.5", "--epochs", "1", "--restarts", "1", "--no-baseline", "--no-progress",
                       "--out", "notes.txt"]),
    ("graphs.g2m", ["--nodes", "300", "--features", "8", "--max-epochs", "1", "--no-progress", "--out", "notes.txt"]),
    ("experiments.synth", ["--out", "notes.txt"]),
])  # fmt: skip
def test_existing_result_needs_overwrite(work, capsys, module, argv):
    main = importlib.import_module(MODULES[module]).main
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "notes.txt already exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (work / "notes.txt").read_text() == "a user's notes, not an artifact\n"


def test_overwrite_replaces_and_resume_continues(work, capsys):
    from condense.cli import main

    argv = ["distill", "--method", "random", "--ipc", "1", "--out", "o.pt", "--no-progress"]
    assert main(argv) == 0
    first = Path("o.pt").read_bytes()
    assert main(argv) == 2 and Path("o.pt").read_bytes() == first
    assert main([*argv, "--seed", "1", "--overwrite"]) == 0 and Path("o.pt").read_bytes() != first
    assert torch.load("o.pt", weights_only=True)["meta"]["seed"] == 1


#: dests of flags that size an allocation (images, widths, batches, nodes, ...): the fuzz table must try each
_SIZE = re.compile(r"(^|_)(resize|ipcs?|batch_size|batch|width|nodes|features|synset_size|num_experts|max_per_class|image_size|"
                   r"images|hidden|size|max_itemsets|bins|hops)($|_)")  # fmt: skip


@pytest.mark.slow
def test_fuzz_table_tries_every_path_and_size_flag(parsers):
    from .fuzz_table import CASES

    missing = set()
    for module, ps in parsers.items():
        used = {a for m, argv in CASES if m == module for a in argv}
        for p in ps:
            for a in p._actions:
                key = a.dest[4:] if a.dest.startswith("cfg_") else a.dest
                sized = isinstance(a, argparse._StoreAction) and a.type is int and _SIZE.search(key)
                if a.option_strings and (isinstance(a, PathFlag) or sized) and not set(a.option_strings) & used:
                    missing.add(f"{module} {a.option_strings[-1]}")
    assert not missing, "flags no fuzz case tries: " + ", ".join(sorted(missing))
