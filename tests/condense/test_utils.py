"""condense.utils: atomic writes leave either the old file or the complete new one."""
from __future__ import annotations

import os

import pytest
import torch

from condense.utils import UserError, atomic_save, atomic_write_text, safe_load


def test_atomic_write_text_replaces_and_creates_parents(tmp_path):
    path = tmp_path / "new" / "dir" / "table.md"
    atomic_write_text("first ü\n", path)
    atomic_write_text("second\n", path)
    assert path.read_text(encoding="utf-8") == "second\n"
    assert [p.name for p in path.parent.iterdir()] == ["table.md"]  # no temp files left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would create it, not mkstemp's 0600


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.pt"
    atomic_save({"format": "x", "v": torch.ones(2)}, path)

    def boom(obj, fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"format": "x", "v": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(safe_load(path, expected_format="x")["v"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_safe_load_rejects_foreign_format(tmp_path):
    atomic_save({"format": "other"}, tmp_path / "f.pt")
    with pytest.raises(UserError):
        safe_load(tmp_path / "f.pt", expected_format="x")
