"""Integrity of our own artifacts and of their final save.

* Every artifact written through :func:`condense.utils.atomic_save` stores a content checksum that
  :func:`condense.utils.safe_load` verifies: a file with flipped tensor bytes is refused with one
  line naming it; ``set_verify(False)`` (``--no-verify``, ``CONDENSE_NO_VERIFY=1``) loads it anyway;
  a file written before checksums were stored loads with a warning.
* Disk full during the final save: the one save path turns ENOSPC into one line that says how much
  space the file needs, removes its temporary file and leaves the previous file untouched.
"""
from __future__ import annotations

import errno
import os
import zipfile
from pathlib import Path
from typing import Callable

import pytest
import torch

from condense import utils
from condense.checkpoint import Checkpointer
from condense.cli import main as condense_main
from condense.synset import SyntheticSet
from condense.utils import UserError, atomic_save, atomic_write_text, safe_load


def _synset() -> SyntheticSet:
    g = torch.Generator().manual_seed(0)
    return SyntheticSet(torch.randn(6, 1, 8, 8, generator=g), torch.arange(6) % 3, meta={"dataset": {"num_classes": 3}})


def _save_synset(p: Path) -> None:
    _synset().save(p)


def _load_synset(p: Path) -> None:
    SyntheticSet.load(p)


def _save_ckpt(p: Path) -> None:
    Checkpointer(p, 1, {"run": 1}).save(3, {"images": torch.randn(4, 3, 4, 4), "rng": torch.get_rng_state()})


def _load_ckpt(p: Path) -> None:
    Checkpointer(p, 1, {"run": 1}).load()


def _save_teacher(p: Path) -> None:
    from synth.teachers import random_teacher, save_model

    save_model(random_teacher("lenet5_half", (1, 32, 32), 10, seed=0), p)


def _load_teacher(p: Path) -> None:
    from synth.teachers import load_model

    load_model(p)


def _save_mirage(p: Path) -> None:
    from torch_geometric.data import Data

    from graphs.mirage.distill import DistilledSet

    g = Data(x=torch.randn(3, 4), edge_index=torch.tensor([[0, 1], [1, 2]]), root_mask=torch.tensor([True, False, False]),
             y=torch.tensor(1), weight=2, num_nodes=3)  # fmt: skip
    DistilledSet([g], {"dataset": "toy"}).save(p)


def _load_mirage(p: Path) -> None:
    from graphs.mirage.distill import DistilledSet

    DistilledSet.load(p)


ARTIFACTS: dict[str, tuple[Callable[[Path], None], Callable[[Path], None]]] = {
    "synthetic set": (_save_synset, _load_synset),
    "checkpoint": (_save_ckpt, _load_ckpt),
    "teacher": (_save_teacher, _load_teacher),
    "mirage set": (_save_mirage, _load_mirage),
}


def _flip_tensor_byte(path: Path) -> None:
    """Flip one bit in the middle of the largest tensor record of a ``torch.save`` zip (not in the pickle)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with zipfile.ZipFile(path) as z, z.open(info) as fh:  # stored uncompressed: find the payload's bytes
        payload = fh.read()
    data = bytearray(path.read_bytes())
    start = data.index(payload, info.header_offset)
    data[start + len(payload) // 2] ^= 0x04
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", list(ARTIFACTS))
def test_flipped_bytes_are_refused_naming_the_file(kind: str, tmp_path: Path) -> None:
    save, load = ARTIFACTS[kind]
    p = tmp_path / "artifact.pt"
    save(p)
    load(p)  # intact: loads
    _flip_tensor_byte(p)
    with pytest.raises(UserError, match="checksum mismatch") as err:
        load(p)
    assert str(p) in str(err.value) and "\n" not in str(err.value)
    utils.set_verify(False)  # forensic use: load as it is
    try:
        load(p)
    finally:
        utils.set_verify(True)


def test_checksum_is_stripped_and_old_files_load_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = tmp_path / "a.pt"
    obj = {"format": "x/1", "t": torch.arange(5)}
    atomic_save(obj, p)
    assert "checksum" not in obj  # the caller's dict is untouched
    assert set(safe_load(p, expected_format="x/1")) == {"format", "t"}
    torch.save(obj, tmp_path / "old.pt")  # written without a checksum
    assert torch.equal(safe_load(tmp_path / "old.pt")["t"], obj["t"])
    assert "stores no checksum" in capsys.readouterr().err


def test_no_verify_flag_reaches_every_loading_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = tmp_path / "syn.pt"
    _save_synset(p)
    _flip_tensor_byte(p)
    assert condense_main(["show", str(p)]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    try:
        assert condense_main(["show", str(p), "--no-verify"]) == 0
    finally:
        utils.set_verify(True)


def _disk_full(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("kind", list(ARTIFACTS))
def test_disk_full_during_final_save(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save, _ = ARTIFACTS[kind]
    p = tmp_path / "artifact.pt"
    p.write_bytes(b"previous result")
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(UserError, match=r"no space left.*needs \d") as err:
        save(p)
    assert "\n" not in str(err.value)
    assert p.read_bytes() == b"previous result"  # nothing replaced
    assert sorted(x.name for x in tmp_path.iterdir()) == ["artifact.pt"]  # temporary removed


def test_disk_full_text_and_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(UserError, match="needs 11 bytes"):
        atomic_write_text("hello world", tmp_path / "t.txt")
    syn = tmp_path / "syn.pt"
    monkeypatch.undo()
    _save_synset(syn)
    monkeypatch.setattr(os, "fsync", _disk_full)
    assert condense_main(["show", str(syn), "--png", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write") and "no space left" in err[0]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["syn.pt"]
